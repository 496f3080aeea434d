//! Pending acks of one queue, and the task that flushes them when no fetch takes them along.
//!
//! Finished jobs leave their ack in the [`AckBuffer`]. In the steady state the processor's next
//! fetch carries them (`ack_and_fetch`: one round trip settles the finished jobs and leases the
//! next ones). When no fetch comes soon (idle queue, all slots busy with long jobs, shutdown),
//! the flusher sends them after `LINGER`. A failed send is retried with backoff; if it keeps
//! failing, the leases expire and those jobs run again (at-least-once): repeated, never lost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::jobs::broker::{Ack, Broker};
use crate::jobs::clock::Clock;

/// How long acks may wait for a fetch to carry them. Short enough that a finished job's slot in
/// the global limit is freed promptly; long enough for a busy processor's next fetch.
const LINGER: Duration = Duration::from_millis(2);

/// Bounded so one script call stays short (a few hundred µs of Redis time).
pub const MAX_BATCH: usize = 500;

#[derive(Default)]
pub struct AckBuffer {
    pending: Mutex<Vec<Ack>>,
    notify: Notify,
}

impl AckBuffer {
    pub fn push(&self, ack: Ack) {
        match self.pending.lock() {
            Ok(mut p) => p.push(ack),
            Err(poisoned) => poisoned.into_inner().push(ack),
        }
        self.notify.notify_one();
    }

    /// Takes up to `MAX_BATCH` pending acks.
    pub fn take(&self) -> Vec<Ack> {
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        if p.len() <= MAX_BATCH {
            std::mem::take(&mut *p)
        } else {
            p.drain(..MAX_BATCH).collect()
        }
    }

    /// Puts back acks a failed call did not settle (they go first).
    pub fn put_back(&self, mut acks: Vec<Ack>) {
        let mut p = match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        };
        acks.append(&mut p);
        *p = acks;
        self.notify.notify_one();
    }
}

/// Flushes acks no fetch took, until `stop`; then flushes what is left and returns.
pub async fn run(
    queue: String,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    buffer: Arc<AckBuffer>,
    stop: CancellationToken,
) {
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = buffer.notify.notified() => false,
        };
        if !stopping {
            tokio::time::sleep(LINGER).await;
        }
        loop {
            let acks = buffer.take();
            if acks.is_empty() {
                break;
            }
            send(&queue, broker.as_ref(), clock.as_ref(), acks).await;
        }
        if stopping {
            return;
        }
    }
}

async fn send(queue: &str, broker: &dyn Broker, clock: &dyn Clock, acks: Vec<Ack>) {
    let count = acks.len();
    let call = || async { broker.ack(queue, acks.clone(), clock.now_ms()).await };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(8);
    if let Err(e) = call.retry(policy).await {
        tracing::error!(
            queue,
            count,
            error = %e,
            "acks lost; those jobs will run again when their leases expire"
        );
    }
}
