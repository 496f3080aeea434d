//! Hand-backs that outlive their worker: when a `Monitor`'s shutdown timeout drops a worker with
//! jobs still running, those jobs are released from `Drop`, which cannot wait. The release runs
//! on a spawned task kept here, so the process can wait for it before it exits.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinSet;

#[derive(Default)]
pub struct Handoffs {
    tasks: Mutex<JoinSet<()>>,
}

impl Handoffs {
    /// Runs `work` in the background; false (and `work` dropped) outside a tokio runtime.
    pub(super) fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) -> bool {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        // Finished ones are dropped as new ones come, so the set stays small.
        while tasks.try_join_next().is_some() {}
        tasks.spawn_on(work, &handle);
        true
    }

    /// Waits up to `within` for every background hand-back (and those they start) to finish.
    pub async fn wait(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut tasks =
                std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
            if tasks.is_empty() {
                return;
            }
            let drained = tokio::time::timeout_at(deadline, async {
                while tasks.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                tracing::warn!(
                    left = tasks.len(),
                    "jobs still being handed back at exit; they run again when their leases expire"
                );
                return;
            }
        }
    }
}
