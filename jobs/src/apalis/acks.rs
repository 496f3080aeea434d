//! Acks of one queue waiting to be sent.
//!
//! A finished run leaves its ack here and frees its slot at once. The backend's next fetch
//! carries the acks along (`ack_and_fetch`: one round trip settles the finished jobs and leases
//! the next ones). When no fetch comes soon (idle queue, every slot busy with long jobs) the
//! linger task sends them after [`LINGER`], or at once when the worker asks (`poll_ready` at
//! capacity, close). A failed send is retried with backoff; if it keeps failing the leases
//! expire and those jobs run again (at-least-once): repeated, never lost.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::Notify;

use crate::broker::{Ack, Broker, BrokerError};
use crate::clock::Clock;

/// How long acks may wait for a fetch to carry them: short enough that a finished job's slot in
/// the global limit is freed promptly, long enough for a busy worker's next fetch.
pub const LINGER: Duration = Duration::from_millis(2);

/// Most acks in one call, so one script call stays short (a few hundred µs of Redis time).
pub const MAX_BATCH: usize = 500;

#[derive(Default)]
pub struct AckBuffer {
    pending: Mutex<Vec<Ack>>,
    notify: Notify,
    urgent: AtomicBool,
    /// Counts takes, so the linger task can tell whether a fetch carried acks meanwhile.
    takes: AtomicU64,
}

impl AckBuffer {
    fn pending(&self) -> MutexGuard<'_, Vec<Ack>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn push(&self, ack: Ack) {
        self.pending().push(ack);
        self.notify.notify_one();
    }

    pub fn extend(&self, acks: impl IntoIterator<Item = Ack>) {
        self.pending().extend(acks);
        self.notify.notify_one();
    }

    pub fn is_empty(&self) -> bool {
        self.pending().is_empty()
    }

    /// Takes up to [`MAX_BATCH`] pending acks, oldest first.
    pub fn take(&self) -> Vec<Ack> {
        self.takes.fetch_add(1, Ordering::AcqRel);
        let mut p = self.pending();
        if p.len() <= MAX_BATCH {
            std::mem::take(&mut *p)
        } else {
            p.drain(..MAX_BATCH).collect()
        }
    }

    /// Puts back acks a failed call did not settle (they go first).
    pub fn put_back(&self, mut acks: Vec<Ack>) {
        let mut p = self.pending();
        acks.append(&mut p);
        *p = acks;
        drop(p);
        self.notify.notify_one();
    }

    /// Asks the linger task to send what is pending without waiting for a fetch.
    pub fn flush_now(&self) {
        self.urgent.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits until acks are pushed and then have waited [`LINGER`] with no fetch taking acks
    /// meanwhile (at once when asked to hurry): then they are the linger task's to send.
    pub async fn lingered(&self) {
        self.notify.notified().await;
        loop {
            if self.urgent.swap(false, Ordering::AcqRel) {
                return;
            }
            let before = self.takes.load(Ordering::Acquire);
            tokio::time::sleep(LINGER).await;
            if self.takes.load(Ordering::Acquire) == before || self.urgent.load(Ordering::Acquire) {
                return;
            }
            // A fetch carried acks meanwhile; any pushed since get a fresh linger.
            if self.is_empty() {
                self.notify.notified().await;
            }
        }
    }

    /// Sends every pending ack (in batches), each batch retried with backoff (~20 s).
    pub async fn flush(&self, broker: &dyn Broker, clock: &dyn Clock, queue: &str) {
        loop {
            let acks = self.take();
            if acks.is_empty() {
                return;
            }
            let count = acks.len();
            if let Err(e) = send(broker, clock, queue, acks).await {
                tracing::error!(
                    queue,
                    count,
                    error = %e,
                    "acks lost; those jobs run again when their leases expire"
                );
            }
        }
    }
}

async fn send(
    broker: &dyn Broker,
    clock: &dyn Clock,
    queue: &str,
    acks: Vec<Ack>,
) -> Result<(), BrokerError> {
    let call = || async { broker.ack(queue, acks.clone(), clock.now_ms()).await };
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(8);
    call.retry(policy).await
}
