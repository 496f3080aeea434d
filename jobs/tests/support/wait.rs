//! Waiting in tests: every wait is a bounded poll of a condition, never a fixed sleep followed
//! by an assertion. Shared by the job system's tests (`support::wait`), the library's
//! (`tests/support`) and `workers/tests/` (both include it by `#[path]`).
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is polled unless said otherwise.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `cond` until it holds or `within` passes; panics with `what` on timeout.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for`] with a condition that needs no `.await`.
pub async fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, within, || std::future::ready(done())).await;
}

/// Polls `check` every `every` until it returns `Some` (its value), or panics with `what`
/// after `within`.
pub async fn wait_for_value<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?}: {what}"
        );
        tokio::time::sleep(every).await;
    }
}
