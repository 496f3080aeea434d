//! The worker runtime (Sidekiq's launcher + manager): one [`processor`] per job type, plus the
//! housekeeping every worker process does.
//!
//! Duties:
//! 1. Run each registered queue with its local concurrency; the broker enforces the global limit.
//! 2. Reap leases of dead workers every `reap_interval`, and trim the dead set.
//! 3. Publish queue gauges every `stats_interval`.
//! 4. On shutdown (the token is cancelled): stop fetching, let in-flight jobs finish within
//!    `shutdown_timeout`, hand the rest back to the queue, flush pending acks, return.

mod acker;
mod processor;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::broker::{Broker, DeadSetBounds};
use super::clock::Clock;
use super::metrics;
use super::registry::Registry;

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Jobs run at once in this process, per queue (default for queues not listed).
    pub concurrency: usize,
    pub concurrency_by_queue: HashMap<String, usize>,
    /// Sleep between fetches when a queue is empty (±20% jitter so processes spread out).
    pub poll_interval: Duration,
    /// How long in-flight jobs may run after shutdown starts before they are handed back
    /// (Sidekiq: 25 s, which fits a 30 s container stop grace period).
    pub shutdown_timeout: Duration,
    pub reap_interval: Duration,
    pub stats_interval: Duration,
    pub dead_set: DeadSetBounds,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            concurrency_by_queue: HashMap::new(),
            poll_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(25),
            reap_interval: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            dead_set: DeadSetBounds::default(),
        }
    }
}

impl RuntimeConfig {
    pub fn concurrency_of(&self, queue: &str) -> usize {
        self.concurrency_by_queue
            .get(queue)
            .copied()
            .unwrap_or(self.concurrency)
            .max(1)
    }
}

pub struct Runtime {
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    registry: Registry,
    config: RuntimeConfig,
}

impl Runtime {
    pub fn new(
        broker: Arc<dyn Broker>,
        clock: Arc<dyn Clock>,
        registry: Registry,
        config: RuntimeConfig,
    ) -> Self {
        Self {
            broker,
            clock,
            registry,
            config,
        }
    }

    /// Runs until `shutdown` is cancelled and every queue has shut down.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        for job in self.registry.jobs() {
            let processor = processor::Processor::new(
                job.clone(),
                self.broker.clone(),
                self.clock.clone(),
                self.config.concurrency_of(job.name),
                self.config.poll_interval,
                self.config.shutdown_timeout,
            );
            tasks.spawn(processor.run(shutdown.clone()));
        }
        let queues: Vec<String> = self
            .registry
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        tasks.spawn(housekeeping(
            self.broker.clone(),
            self.clock.clone(),
            queues,
            self.config.clone(),
            shutdown.clone(),
        ));
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "worker task ended abnormally");
            }
        }
    }
}

/// Most leases one reap call handles; the loop continues while a call fills its budget.
const REAP_BATCH: usize = 1000;

async fn housekeeping(
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    queues: Vec<String>,
    config: RuntimeConfig,
    shutdown: CancellationToken,
) {
    let mut reap = tokio::time::interval(config.reap_interval);
    let mut stats = tokio::time::interval(config.stats_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reap.tick() => {
                for queue in &queues {
                    reap_queue(broker.as_ref(), clock.as_ref(), queue, config.dead_set).await;
                }
            }
            _ = stats.tick() => {
                for queue in &queues {
                    metrics::publish_queue_gauges(broker.as_ref(), clock.as_ref(), queue).await;
                }
            }
        }
    }
}

/// Re-delivers (or buries) a queue's expired leases in bounded batches, then trims its dead set.
pub(crate) async fn reap_queue(
    broker: &dyn Broker,
    clock: &dyn Clock,
    queue: &str,
    bounds: DeadSetBounds,
) {
    loop {
        match broker.reap_expired(queue, REAP_BATCH, clock.now_ms()).await {
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
    if let Err(e) = broker.dead_trim(queue, bounds, clock.now_ms()).await {
        tracing::warn!(queue, error = %e, "trimming the dead set failed; will retry");
    }
}

pub use processor::Processor;
