//! The backend's middleware: turns the outcome of each run into an ack by the settle policy and
//! frees the run's slot. apalis places it outside the user's layers, so it sees what the whole
//! stack (timeouts and panics included) made of the run.
//!
//! An error is our [`JobError`] if the handler returned one (found by downcasting the boxed
//! error, then its `source()` chain), else apalis' own: `AbortError` is dead, `RetryAfterError`
//! a retry after its duration, `DeferredError` a retry at once (both burn an attempt). Anything
//! else is retryable.

use std::error::Error as StdError;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::error::{AbortError, BoxDynError, DeferredError, RetryAfterError};
use apalis_core::layers::{Layer, Service};
use apalis_core::task::Task;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::shared::Shared;
use crate::broker::Lease;
use crate::job::{Job, JobContext, JobError};
use crate::metrics;
use crate::settle::{Failure, Verdict, settle};

/// The delivery a task came from, kept in its data for the ack (a private type, so no user
/// layer can replace it).
#[derive(Clone)]
pub struct Receipt(pub Lease);

pub fn lease_of<J>(task: &Task<J>) -> Option<Lease> {
    task.data().get::<Receipt>().map(|r| r.0.clone())
}

#[derive(Clone)]
pub struct AckLayer {
    shared: Arc<Shared>,
}

impl AckLayer {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;

    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, J> Service<Task<J>> for AckService<S>
where
    J: Job,
    S: Service<Task<J>>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let ctx = task.data().get::<JobContext>().cloned();
        let lease = lease_of(&task);
        let run = self.inner.call(task);
        let (Some(ctx), Some(lease)) = (ctx, lease) else {
            // Not one of ours (cannot happen with this backend): nothing to ack.
            return async move { run.await.map_err(Into::into) }.boxed();
        };
        // Owned by the future from here on, so a future dropped before the run ends still
        // frees its slot and hands the job back.
        let slot = Slot {
            shared: self.shared.clone(),
            lease: Some(lease),
        };
        async move {
            let started = Instant::now();
            let result: Result<S::Response, BoxDynError> = run.await.map_err(Into::into);
            slot.finish(&ctx, started.elapsed(), result.as_ref().err());
            result
        }
        .boxed()
    }
}

/// A running delivery's slot: freed when the run's ack is left for sending, or, if the future
/// is dropped before that (worker torn down), freed and the job handed back.
struct Slot {
    shared: Arc<Shared>,
    lease: Option<Lease>,
}

impl Slot {
    fn finish(mut self, ctx: &JobContext, took: Duration, error: Option<&BoxDynError>) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let shared = &self.shared;
        shared.run_ended(Some(took));
        metrics::record_run(shared.queue, took);
        let result = match error {
            None => Ok(()),
            Some(e) => Err(classify(e.as_ref())),
        };
        let now = shared.clock.now_ms();
        let ack = settle(shared.queue, &shared.options.retry, ctx, lease, result, now);
        shared.finish(ack);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.shared.run_ended(None);
            self.shared.release_detached(vec![lease]);
        }
    }
}

/// The first error in the chain that says what to do; anything else is retryable.
fn classify(err: &(dyn StdError + 'static)) -> Failure {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(job) = e.downcast_ref::<JobError>() {
            return Failure::from(job);
        }
        let verdict = if e.is::<AbortError>() {
            Some(Verdict::Dead)
        } else if let Some(r) = e.downcast_ref::<RetryAfterError>() {
            Some(Verdict::Retry(Some(r.get_duration())))
        } else if e.is::<DeferredError>() {
            Some(Verdict::Retry(Some(Duration::ZERO)))
        } else {
            None
        };
        if let Some(verdict) = verdict {
            return Failure {
                verdict,
                error: e.to_string(),
            };
        }
        cur = e.source();
    }
    Failure {
        verdict: Verdict::Retry(None),
        error: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(err: BoxDynError) -> &'static str {
        match classify(err.as_ref()).verdict {
            Verdict::Retry(None) => "retry",
            Verdict::Retry(Some(_)) => "retry-after",
            Verdict::Snooze(_) => "snooze",
            Verdict::Dead => "dead",
        }
    }

    #[test]
    fn errors_map_to_the_settle_policy() {
        assert_eq!(classified(JobError::retryable("x").into()), "retry");
        assert_eq!(classified(JobError::fatal("x").into()), "dead");
        assert_eq!(
            classified(JobError::Snooze(Duration::from_secs(1)).into()),
            "snooze"
        );
        assert_eq!(classified("plain".into()), "retry");
        assert_eq!(classified(AbortError::new("stop").into()), "dead");
        assert_eq!(
            classified(RetryAfterError::new("later", Duration::from_secs(3)).into()),
            "retry-after"
        );
        // Found through the source chain too.
        assert_eq!(
            classified(AbortError::new(JobError::retryable("inner")).into()),
            "dead"
        );
        assert_eq!(
            classified(DeferredError::new(JobError::fatal("inner")).into()),
            "retry-after"
        );
    }
}
