//! Batches acks of one queue into as few broker calls as possible.
//!
//! Acks queue up in a channel; the acker takes whatever is waiting (up to `MAX_BATCH`) and sends
//! it in one call. Under load that is hundreds of acks a call; when idle, an ack goes out at once.
//! A failed call is retried with backoff; if it keeps failing the leases expire and the jobs run
//! again (at-least-once), so nothing is lost, only repeated.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;

use crate::jobs::broker::{Ack, Broker};
use crate::jobs::clock::Clock;

/// Bounded so one script call stays short (a few hundred µs of Redis time).
const MAX_BATCH: usize = 500;

pub async fn run(
    queue: String,
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    mut rx: mpsc::UnboundedReceiver<Ack>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let acks = std::mem::take(&mut batch);
        let count = acks.len();
        let send = || async { broker.ack(&queue, acks.clone(), clock.now_ms()).await };
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_max_times(8);
        if let Err(e) = send.retry(policy).await {
            tracing::error!(queue, count, error = %e, "acks lost; those jobs will run again when their leases expire");
        }
    }
}
