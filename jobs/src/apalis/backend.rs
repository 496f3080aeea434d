//! [`BrokerBackend<J>`]: apalis' `Backend` for job type `J`, its jobs kept in one of our brokers.
//!
//! Duties:
//! 1. Fetch within free slots. The backend owns the worker's concurrency
//!    ([`BrokerBackendConfig::concurrency`]): a delivery holds a slot from its fetch until its
//!    run ends, a fetch asks the broker for at most the free slots (the broker may hand out
//!    fewer: global limit, empty queue), and at capacity the worker parks until a run frees a
//!    slot. Fetches run on their own tokio task, so a fetch holding
//!    broker resources (SQLite's write lock) completes even while apalis is not polling.
//!    Fetching ahead: while runs average under [`BrokerBackendConfig::fetch_ahead_under`], a
//!    worker that could run jobs faster than round trips bring them leases up to its
//!    concurrency more (only from a queue without a global limit: see
//!    [`Broker::ack_and_fetch`]). They wait in the buffer, leases renewed, and start as runs
//!    end; never more than the concurrency run at once, and a fetch waits for a free slot.
//! 2. Acks ride on fetches: each fetch is `ack_and_fetch` with the acks of the runs that ended
//!    since the last one (see [`acks`](super::acks) for the linger and the retries).
//! 3. Decode the JSON payload into `J`. An undecodable payload is acked `Dead` and never
//!    reaches a handler.
//! 4. Housekeeping ([`Housekeeping`]): lease renewal of held deliveries, reaping of the queue's
//!    expired leases, dead-set trimming, queue gauges.
//! 5. Shutdown (`WorkerContext::stop`, `Monitor`): apalis stops asking for work and waits for
//!    the running jobs, which finish and leave their acks; then `poll_close` lands a fetch in
//!    flight, hands back every fetched but unstarted job (`Ack::Release`: ready again, first in
//!    line, no attempt burnt), sends every pending ack and stops the background tasks. If the
//!    worker is dropped instead (a `Monitor`'s shutdown timeout), unstarted and running jobs are
//!    handed back from `Drop` on a task kept in [`Handoffs`].
//! 6. Broker errors never stop the worker. A failed fetch is logged, reported as an
//!    `Event::Custom` carrying a [`BrokerBackendEvent`], and retried after an exponential
//!    backoff. The backend's error type is [`Infallible`]: `Worker::run` would return on the
//!    first backend error, and `poll_next` never ends the stream (that would stop the worker).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::queue::Queue;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::ack_layer::{AckLayer, Receipt, lease_of};
use super::handoffs::Handoffs;
use super::shared::Shared;
use crate::broker::{Ack, Broker, BrokerError, DeadSetBounds, Delivery};
use crate::clock::Clock;
use crate::housekeeping::Housekeeping;
use crate::job::{Job, JobContext};
use crate::metrics;

/// Tuning of one apalis worker over a broker queue.
#[derive(Debug, Clone)]
pub struct BrokerBackendConfig {
    /// Jobs this worker holds at once (running, or fetched and about to start).
    pub concurrency: usize,
    /// Sleep after a fetch found nothing (±20% jitter so workers spread out).
    pub poll_interval: Duration,
    /// Pause after the first failed fetch; doubles with each further failure.
    pub error_backoff: Duration,
    /// Cap of the pause between failed fetches.
    pub max_error_backoff: Duration,
    /// How often to reap expired leases of the queue and trim its dead set; `None` leaves that
    /// to other workers.
    pub housekeeping_interval: Option<Duration>,
    /// How often to publish the queue's gauges; `None`: never.
    pub stats_interval: Option<Duration>,
    /// Bounds of the dead set, applied by housekeeping.
    pub dead_set: DeadSetBounds,
    /// While runs average under this, fetch up to `concurrency` more jobs ahead (module docs);
    /// `Duration::ZERO`: never.
    pub fetch_ahead_under: Duration,
}

impl Default for BrokerBackendConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            poll_interval: Duration::from_millis(100),
            error_backoff: Duration::from_millis(250),
            max_error_backoff: Duration::from_secs(10),
            housekeeping_interval: Some(Duration::from_secs(5)),
            stats_interval: None,
            dead_set: DeadSetBounds::default(),
            fetch_ahead_under: FETCH_AHEAD_UNDER,
        }
    }
}

/// Runs shorter than this on average are shorter than a round trip to the broker or a few: a
/// job fetched ahead then waits about one run for its slot.
pub const FETCH_AHEAD_UNDER: Duration = Duration::from_millis(1);

/// Emitted through apalis' event listeners (`Event::Custom`) when the broker misbehaves; the
/// worker keeps running.
#[derive(Debug, Clone)]
pub enum BrokerBackendEvent {
    /// A fetch failed; the next one is tried after `retry_in`.
    FetchFailed {
        queue: &'static str,
        error: String,
        retry_in: Duration,
    },
}

/// Why a fetch brought nothing.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error("fetch task ended abnormally: {0}")]
    Crashed(String),
}

/// What one fetch asks for: `max` for free slots, `ahead` more to start as runs end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Want {
    max: usize,
    ahead: usize,
}

/// What one fetch produced: the decodable tasks, and how many deliveries came in all.
struct Fetched<J> {
    tasks: Vec<Task<J>>,
    delivered: usize,
}

type FetchFuture<J> = BoxFuture<'static, Result<Fetched<J>, FetchError>>;

/// An apalis backend serving job type `J` from our broker. See the [module docs](self).
pub struct BrokerBackend<J: Job> {
    shared: Arc<Shared>,
    config: BrokerBackendConfig,
    /// Fetched (leased) and not yet handed to the worker.
    buffer: VecDeque<Task<J>>,
    fetching: Option<FetchFuture<J>>,
    /// Slots the fetch in flight asked for (not held until it lands).
    requested: usize,
    /// Waiting before the next fetch (empty queue, or broker error).
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    closing: Option<BoxFuture<'static, ()>>,
    fetch_failures: u32,
    /// Stops the housekeeping and linger tasks; `Some` once started.
    background: Option<CancellationToken>,
}

// Nothing is structurally pinned (futures are boxed), so `J: !Unpin` is fine.
impl<J: Job> Unpin for BrokerBackend<J> {}

impl<J: Job> BrokerBackend<J> {
    /// A backend with the default [`BrokerBackendConfig`].
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<dyn Clock>) -> Self {
        Self::with_config(broker, clock, BrokerBackendConfig::default())
    }

    pub fn with_config(
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        mut config: BrokerBackendConfig,
    ) -> Self {
        config.concurrency = config.concurrency.max(1);
        Self {
            shared: Arc::new(Shared::new(
                broker,
                clock,
                J::NAME,
                J::options(),
                Arc::default(),
            )),
            config,
            buffer: VecDeque::new(),
            fetching: None,
            requested: 0,
            pause: None,
            closing: None,
            fetch_failures: 0,
            background: None,
        }
    }

    /// Sets how many jobs this worker holds at once (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.config.concurrency = n.max(1);
        self
    }

    /// Keeps hand-backs that outlive the worker in `handoffs`, for the process to wait on.
    /// Call it before the worker is built.
    pub fn with_handoffs(mut self, handoffs: Arc<Handoffs>) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.handoffs = handoffs;
        }
        self
    }

    /// What a fetch would ask for now: nothing unless a slot is free (held deliveries, those
    /// waiting in the buffer included, and the fetch in flight count).
    fn want(&self) -> Want {
        let c = self.config.concurrency;
        let leased = self.shared.held_count() + self.requested;
        let max = c.saturating_sub(leased);
        let short_runs = self
            .shared
            .run_average()
            .is_some_and(|avg| avg < self.config.fetch_ahead_under);
        // With a free slot, `leased + max` is `c`: ahead brings it to at most `2c`.
        let ahead = if max > 0 && short_runs { c } else { 0 };
        Want { max, ahead }
    }

    /// Whether a buffered task may start: fewer than `concurrency` run.
    fn can_start(&self) -> bool {
        self.shared.running() < self.config.concurrency
    }

    /// Something for apalis to take: a task that may start, a free slot to fetch for, or a
    /// fetch in flight to land.
    fn has_work(&self) -> bool {
        (self.can_start() && !self.buffer.is_empty())
            || self.want().max > 0
            || self.fetching.is_some()
    }

    /// Starts housekeeping and the ack linger task, once.
    fn start_background(&mut self) {
        if self.background.is_some() {
            return;
        }
        let stop = CancellationToken::new();
        let shared = self.shared.clone();
        let housekeeping = Housekeeping {
            broker: shared.broker.clone(),
            clock: shared.clock.clone(),
            queue: shared.queue,
            lease: shared.options.lease,
            reap_interval: self.config.housekeeping_interval,
            stats_interval: self.config.stats_interval,
            dead_set: self.config.dead_set,
        };
        let held = shared.clone();
        tokio::spawn(housekeeping.run(move || held.held_leases(), stop.clone()));
        let linger_stop = stop.clone();
        self.shared.handoffs.spawn(async move {
            loop {
                tokio::select! {
                    _ = linger_stop.cancelled() => break,
                    _ = shared.acks.lingered() => shared.flush().await,
                }
            }
            // Whatever is still pending when the worker goes.
            shared.flush().await;
        });
        self.background = Some(stop);
    }

    fn stop_background(&mut self) {
        if let Some(stop) = &self.background {
            stop.cancel();
        }
    }

    fn fetch_pause(&self) -> Duration {
        let doublings = self.fetch_failures.min(16);
        self.config
            .error_backoff
            .saturating_mul(1 << doublings)
            .min(self.config.max_error_backoff)
    }

    /// Lands the fetch in flight, if any: its tasks go to the buffer; an empty queue or a
    /// broker error sets the pause before the next fetch.
    fn poll_fetch(&mut self, cx: &mut Context<'_>, worker: &WorkerContext) -> Poll<()> {
        let Some(fetching) = self.fetching.as_mut() else {
            return Poll::Ready(());
        };
        let result = ready!(fetching.poll_unpin(cx));
        self.fetching = None;
        self.requested = 0;
        match result {
            Ok(fetched) => {
                self.fetch_failures = 0;
                if fetched.delivered == 0 {
                    let jitter = rand::rng().random_range(0.8..1.2);
                    let wait = self.config.poll_interval.mul_f64(jitter);
                    self.pause = Some(Box::pin(tokio::time::sleep(wait)));
                }
                self.buffer.extend(fetched.tasks);
            }
            Err(e) => {
                let retry_in = self.fetch_pause();
                self.fetch_failures = self.fetch_failures.saturating_add(1);
                tracing::warn!(queue = self.shared.queue, error = %e, retry_in_s = retry_in.as_secs_f64(), "fetch failed; retrying");
                worker.emit(BrokerBackendEvent::FetchFailed {
                    queue: self.shared.queue,
                    error: e.to_string(),
                    retry_in,
                });
                self.pause = Some(Box::pin(tokio::time::sleep(retry_in)));
            }
        }
        Poll::Ready(())
    }

    /// Starts a fetch on its own task: a fetch holds broker resources (with SQLite, maybe the
    /// write lock), so it must make progress even while apalis does not poll the backend (while
    /// the service is not ready, or while running jobs drain on shutdown).
    fn start_fetch(&mut self, want: Want) {
        let fetch = tokio::spawn(fetch_batch::<J>(self.shared.clone(), want));
        self.requested = want.max + want.ahead;
        self.fetching = Some(
            async move {
                match fetch.await {
                    Ok(fetched) => fetched,
                    Err(e) => Err(FetchError::Crashed(e.to_string())),
                }
            }
            .boxed(),
        );
    }
}

/// Leases what `want` asks for (settling the pending acks in the same call), decodes them into
/// tasks (holding their slots), and buries the undecodable ones.
fn fetch_batch<J: Job>(shared: Arc<Shared>, want: Want) -> FetchFuture<J> {
    async move {
        let now = shared.clock.now_ms();
        let acks = shared.acks.take();
        let fetched = shared
            .broker
            .ack_and_fetch(
                shared.queue,
                acks.clone(),
                want.max,
                want.ahead,
                shared.options.lease,
                now,
            )
            .await;
        let deliveries = match fetched {
            Ok(d) => d,
            Err(e) => {
                shared.acks.put_back(acks);
                return Err(e.into());
            }
        };
        let delivered = deliveries.len();
        let mut tasks = Vec::with_capacity(delivered);
        for delivery in deliveries {
            let env = &delivery.envelope;
            match serde_json::from_str::<J>(&env.payload) {
                Ok(job) => {
                    shared.hold(&delivery.lease);
                    tasks.push(to_task(job, delivery, now));
                }
                Err(e) => {
                    tracing::error!(queue = shared.queue, job_id = %env.id, error = %e, "undecodable payload; moved to the dead set");
                    metrics::record_outcome(shared.queue, metrics::Outcome::Dead);
                    shared.acks.push(Ack::Dead {
                        lease: delivery.lease.clone(),
                        error: format!("cannot decode {} payload: {e}", shared.queue),
                    });
                }
            }
        }
        Ok(Fetched { tasks, delivered })
    }
    .boxed()
}

fn to_task<J>(job: J, delivery: Delivery, now_ms: i64) -> Task<J> {
    let env = delivery.envelope;
    let ctx = JobContext {
        id: env.id.clone(),
        queue: env.queue,
        attempt: env.attempt,
        max_attempts: env.max_attempts,
        enqueued_at_ms: env.enqueued_at_ms,
    };
    TaskBuilder::new(job)
        .task_id(TaskId::from_string(env.id))
        // apalis adds one when the task starts: seeded so that `Attempt::current()` in the
        // handler is the broker's attempt (1-based).
        .attempt(env.attempt.saturating_sub(1) as usize)
        .max_attempts(env.max_attempts as usize)
        .queue(Queue::from(ctx.queue.as_str()))
        .lock_at(u64::try_from(now_ms / 1000).ok())
        .data(ctx)
        .data(Receipt(delivery.lease))
        .build()
}

impl<J: Job> Backend for BrokerBackend<J> {
    type Task = Task<J>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        self.start_background();
        // Lands a fetch that is done; one still running does not block buffered tasks.
        let _ = self.poll_fetch(cx, worker);
        if self.has_work() {
            return Poll::Ready(Ok(()));
        }
        // At capacity: a run that ends wakes us (register, then check again). Meanwhile the
        // acks of runs that ended cannot wait for a fetch, unless jobs fetched ahead wait to
        // start: runs are short, a fetch follows them (and the linger bounds the wait).
        self.shared.slot_waker.register(cx.waker());
        if self.has_work() {
            return Poll::Ready(Ok(()));
        }
        if self.buffer.is_empty() && !self.shared.acks.is_empty() {
            self.shared.acks.flush_now();
        }
        Poll::Pending
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        worker: &WorkerContext,
    ) -> Poll<Option<Result<Task<J>, Infallible>>> {
        self.start_background();
        loop {
            if self.can_start()
                && let Some(task) = self.buffer.pop_front()
            {
                self.shared.run_started();
                return Poll::Ready(Some(Ok(task)));
            }
            if self.fetching.is_some() {
                ready!(self.poll_fetch(cx, worker));
                continue;
            }
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            let want = self.want();
            if want.max == 0 {
                // Every slot held (running, or fetched and waiting to start): a run that ends
                // wakes us.
                self.shared.slot_waker.register(cx.waker());
                if !self.has_work() {
                    return Poll::Pending;
                }
                continue;
            }
            self.start_fetch(want);
        }
    }

    /// Called once the worker is stopping and every started task has finished.
    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Result<(), Infallible>> {
        self.pause = None;
        if self.closing.is_none() {
            let fetching = self.fetching.take();
            self.requested = 0;
            let mut unstarted: Vec<_> =
                self.buffer.drain(..).filter_map(|t| lease_of(&t)).collect();
            let shared = self.shared.clone();
            self.closing = Some(
                async move {
                    if let Some(fetching) = fetching
                        && let Ok(fetched) = fetching.await
                    {
                        unstarted.extend(fetched.tasks.iter().filter_map(lease_of));
                    }
                    shared.release(unstarted);
                    shared.flush().await;
                }
                .boxed(),
            );
        }
        if let Some(closing) = self.closing.as_mut() {
            ready!(closing.poll_unpin(cx));
            // Done: a later call starts afresh (with nothing left to hand back).
            self.closing = None;
        }
        self.stop_background();
        Poll::Ready(Ok(()))
    }
}

impl<J: Job> Drop for BrokerBackend<J> {
    fn drop(&mut self) {
        self.stop_background();
        // Dropped without a completed close (e.g. a shutdown timeout): hand back what was
        // fetched and not started, including what a fetch still running brings. Running jobs
        // are handed back by their own ack layer future as it is dropped.
        let unstarted: Vec<_> = self.buffer.drain(..).filter_map(|t| lease_of(&t)).collect();
        if !unstarted.is_empty() {
            self.shared.release_detached(unstarted);
        }
        if let Some(fetching) = self.fetching.take() {
            let shared = self.shared.clone();
            self.shared.handoffs.spawn(async move {
                if let Ok(fetched) = fetching.await {
                    shared.release(fetched.tasks.iter().filter_map(lease_of).collect());
                }
                shared.flush().await;
            });
        }
    }
}

impl<J: Job> BackendConfig for BrokerBackend<J> {
    type Args = J;
    /// Our ids are ULID strings.
    type Id = String;
    /// Tasks are handed out decoded, as they are.
    type Kind = Ephemeral;
    type Config = BrokerBackendConfig;
    type Layer = AckLayer;

    fn config(&self) -> &BrokerBackendConfig {
        &self.config
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> AckLayer {
        AckLayer::new(self.shared.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::clock::SystemClock;
    use crate::sqlite::SqliteBroker;

    #[derive(Debug, Serialize, Deserialize)]
    struct Quick;

    impl Job for Quick {
        const NAME: &'static str = "quick";
    }

    async fn backend(config: BrokerBackendConfig) -> (BrokerBackend<Quick>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let broker = Arc::new(SqliteBroker::connect(&url).await.unwrap());
        (
            BrokerBackend::with_config(broker, Arc::new(SystemClock), config),
            dir,
        )
    }

    #[tokio::test]
    async fn fetches_ahead_only_while_runs_average_under_the_threshold() {
        let config = BrokerBackendConfig {
            concurrency: 4,
            ..BrokerBackendConfig::default()
        };
        let (b, _dir) = backend(config.clone()).await;
        assert_eq!(b.want(), Want { max: 4, ahead: 0 }, "no run ended yet");
        for _ in 0..20 {
            b.shared.run_ended(Some(Duration::from_micros(50)));
        }
        assert_eq!(b.want(), Want { max: 4, ahead: 4 }, "short runs");
        for _ in 0..40 {
            b.shared.run_ended(Some(Duration::from_millis(5)));
        }
        assert_eq!(b.want(), Want { max: 4, ahead: 0 }, "runs grew longer");

        let (off, _dir) = backend(BrokerBackendConfig {
            fetch_ahead_under: Duration::ZERO,
            ..config
        })
        .await;
        off.shared.run_ended(Some(Duration::from_nanos(1)));
        assert_eq!(off.want(), Want { max: 4, ahead: 0 }, "turned off");
    }
}
