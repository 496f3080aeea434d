//! Tower layers that bound a run: [`TimeoutLayer`] (a run longer than the job's timeout fails)
//! and [`CatchPanicLayer`] (a panicking handler fails its run instead of taking the worker
//! down). Both fail with a retryable [`JobError`], so the settle policy retries them on the
//! job's schedule like any other failure.

use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::error::BoxDynError;
use apalis_core::layers::{Layer, Service};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::job::JobError;

/// Why a run failed without the handler saying so (the source of a retryable [`JobError`]).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("handler panicked")]
    Panicked,
    #[error("timed out after {0:?}")]
    TimedOut(Duration),
}

/// Fails a run that takes longer than `timeout`.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout {
            inner,
            timeout: self.timeout,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let run = self.inner.call(req);
        let timeout = self.timeout;
        async move {
            match tokio::time::timeout(timeout, run).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(JobError::retryable(RunError::TimedOut(timeout)).into()),
            }
        }
        .boxed()
    }
}

/// Turns a panic in the run into a failed run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CatchPanicLayer;

impl<S> Layer<S> for CatchPanicLayer {
    type Service = CatchPanic<S>;

    fn layer(&self, inner: S) -> CatchPanic<S> {
        CatchPanic { inner }
    }
}

#[derive(Debug, Clone)]
pub struct CatchPanic<S> {
    inner: S,
}

impl<S, R> Service<R> for CatchPanic<S>
where
    S: Service<R>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxDynError;
    type Future = BoxFuture<'static, Result<S::Response, BoxDynError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(req)));
        async move {
            let Ok(run) = run else {
                return Err(JobError::retryable(RunError::Panicked).into());
            };
            match AssertUnwindSafe(run).catch_unwind().await {
                Ok(result) => result.map_err(Into::into),
                Err(_panic) => Err(JobError::retryable(RunError::Panicked).into()),
            }
        }
        .boxed()
    }
}
