//! The dashboard's backlog chart: each web process samples every queue's backlog (ready +
//! scheduled + running, from [`Broker::stats`]) every [`SAMPLE_INTERVAL`] into a bounded
//! in-memory ring, and `GET /admin/api/backlog` hands the ring to the page.
//!
//! Duties:
//! 1. [`BacklogHistory::sample`] reads every queue once and appends one sample; the oldest
//!    sample falls out once [`SAMPLES`] are held, so memory stays bounded however long the
//!    process runs.
//! 2. [`BacklogHistory::run`] samples until shutdown; a failed read (Redis down) is logged and
//!    leaves a gap in the chart, never stops the sampler.
//!
//! Not durable and per process: a restarted web process starts an empty chart, and two web
//! replicas each hold their own (the same figures, sampled at slightly different times).
//! Prometheus (`buildlogs_queue_depth`) is the long-term record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::jobs::JobClient;
use crate::jobs::broker::{Broker, BrokerError};

/// How often the backlog is sampled: a few times as slow as the dashboard refreshes (2 s),
/// so a chart's line moves visibly, at one `stats` read per queue per interval.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

/// Samples kept: an hour at [`SAMPLE_INTERVAL`], enough to see an outage's backlog build up
/// and drain, for a few hundred KiB with a handful of queues.
pub const SAMPLES: usize = 720;

/// Every queue's backlog at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at_ms: i64,
    /// Queue name → ready + scheduled + running jobs.
    pub queues: BTreeMap<String, u64>,
}

/// The bounded ring of samples.
#[derive(Debug)]
pub struct BacklogHistory {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
    interval: Duration,
}

impl Default for BacklogHistory {
    fn default() -> Self {
        Self::new(SAMPLES, SAMPLE_INTERVAL)
    }
}

impl BacklogHistory {
    /// A ring of at most `capacity` samples (at least 1), taken every `interval` by
    /// [`Self::run`].
    pub fn new(capacity: usize, interval: Duration) -> Self {
        let capacity = capacity.max(1);
        Self {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            interval,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Appends a sample, dropping the oldest when full.
    pub fn push(&self, sample: Sample) {
        // A panic while holding the lock cannot leave the ring half-changed: keep using it.
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        while samples.len() >= self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// The samples held, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().cloned().collect()
    }

    /// Reads every queue's backlog now and appends it.
    pub async fn sample(&self, broker: &dyn Broker, now_ms: i64) -> Result<(), BrokerError> {
        let mut queues = BTreeMap::new();
        for queue in broker.queues().await? {
            let s = broker.stats(&queue, now_ms).await?;
            queues.insert(queue, s.ready + s.scheduled + s.running);
        }
        self.push(Sample {
            at_ms: now_ms,
            queues,
        });
        Ok(())
    }

    /// Samples every interval until `shutdown`.
    pub async fn run(self: std::sync::Arc<Self>, jobs: JobClient, shutdown: CancellationToken) {
        loop {
            let now = jobs.clock().now_ms();
            if let Err(e) = self.sample(jobs.broker().as_ref(), now).await {
                tracing::warn!(error = %e, "backlog sample failed; the chart shows a gap");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> Sample {
        Sample {
            at_ms,
            queues: BTreeMap::from([("q".to_owned(), at_ms as u64)]),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_samples_oldest_first() {
        let ring = BacklogHistory::new(3, SAMPLE_INTERVAL);
        for at in 1..=5 {
            ring.push(sample(at));
        }
        let at: Vec<i64> = ring.samples().iter().map(|s| s.at_ms).collect();
        assert_eq!(at, [3, 4, 5]);
    }
}
