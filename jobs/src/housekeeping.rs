//! What a worker does for its queue besides running jobs, in one place:
//!
//! 1. Heartbeat: renew the leases of the deliveries it holds every third of the lease, so a job
//!    may run longer than its lease.
//! 2. Reap: re-deliver (or bury) jobs whose lease ran out because their worker died, in bounded
//!    batches, then trim the dead set.
//! 3. Gauges: sample the queue's figures into the metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, DeadSetBounds, Lease};
use super::clock::Clock;
use super::metrics;

/// Most leases one reap call handles; the loop continues while a call fills its budget.
const REAP_BATCH: usize = 1000;

/// One queue's housekeeping, as one worker does it.
#[derive(Clone)]
pub struct Housekeeping {
    pub broker: Arc<dyn Broker>,
    pub clock: Arc<dyn Clock>,
    pub queue: &'static str,
    /// The queue's lease; renewals come every third of it.
    pub lease: Duration,
    /// How often to reap and trim; `None` leaves that to other workers.
    pub reap_interval: Option<Duration>,
    /// How often to publish queue gauges; `None`: never.
    pub stats_interval: Option<Duration>,
    pub dead_set: DeadSetBounds,
}

impl Housekeeping {
    /// Runs until `stop`; `held` lists the leases to renew.
    pub async fn run(self, held: impl Fn() -> Vec<Lease> + Send, stop: CancellationToken) {
        let period = (self.lease / 3).max(Duration::from_millis(10));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reap = every(self.reap_interval);
        let mut stats = every(self.stats_interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = renew.tick() => self.renew(held()).await,
                _ = tick(&mut reap) => self.reap().await,
                _ = tick(&mut stats) => {
                    metrics::publish_queue_gauges(self.broker.as_ref(), self.clock.as_ref(), self.queue).await;
                }
            }
        }
    }

    async fn renew(&self, live: Vec<Lease>) {
        if live.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        if let Err(e) = self
            .broker
            .extend_leases(self.queue, &live, self.lease, now)
            .await
        {
            tracing::warn!(queue = self.queue, error = %e, "renewing leases failed; will retry");
        }
    }

    /// Re-delivers (or buries) the queue's expired leases in bounded batches, then trims its
    /// dead set.
    pub async fn reap(&self) {
        let queue = self.queue;
        loop {
            match self
                .broker
                .reap_expired(queue, REAP_BATCH, self.clock.now_ms())
                .await
            {
                Ok(report) => {
                    if report.redelivered + report.dead > 0 {
                        tracing::warn!(
                            queue,
                            redelivered = report.redelivered,
                            dead = report.dead,
                            "reaped expired leases of lost workers"
                        );
                        metrics::record_reaped(queue, report);
                    }
                    if (report.redelivered + report.dead) < REAP_BATCH as u64 {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(queue, error = %e, "reaping expired leases failed; will retry");
                    break;
                }
            }
        }
        if let Err(e) = self
            .broker
            .dead_trim(queue, self.dead_set, self.clock.now_ms())
            .await
        {
            tracing::warn!(queue, error = %e, "trimming the dead set failed; will retry");
        }
    }
}

fn every(period: Option<Duration>) -> Option<tokio::time::Interval> {
    period.map(|d| {
        let mut i = tokio::time::interval(d.max(Duration::from_millis(10)));
        i.set_missed_tick_behavior(MissedTickBehavior::Delay);
        i
    })
}

/// The next tick, or never without an interval.
async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}
