//! Prometheus metrics of the job system, through the `metrics` facade (the binary installs the
//! exporter and serves `/metrics`).
//!
//! Counters and the duration histogram are recorded per run by the workers' ack layer; queue gauges
//! (depth by state, latency, limit) are sampled from the broker every few seconds, so their
//! cost is one pipelined read per queue per interval, not per job.

use std::time::Duration;

use metrics::{counter, gauge, histogram};

use super::broker::{Broker, ReapReport};
use super::clock::Clock;

pub const JOBS_PROCESSED: &str = "buildlogs_jobs_processed_total";
pub const JOBS_FAILED: &str = "buildlogs_jobs_failed_total";
pub const JOBS_RETRIED: &str = "buildlogs_jobs_retried_total";
pub const JOBS_DEAD: &str = "buildlogs_jobs_dead_total";
pub const JOBS_SNOOZED: &str = "buildlogs_jobs_snoozed_total";
pub const JOBS_REAPED: &str = "buildlogs_jobs_reaped_total";
pub const JOB_DURATION: &str = "buildlogs_job_duration_seconds";
pub const QUEUE_DEPTH: &str = "buildlogs_queue_depth";
pub const QUEUE_LATENCY: &str = "buildlogs_queue_latency_seconds";
pub const QUEUE_LIMIT: &str = "buildlogs_queue_concurrency_limit";
pub const QUEUE_RUNNING: &str = "buildlogs_queue_running";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Processed,
    Retried,
    Dead,
    Snoozed,
}

pub fn record_run(job: &'static str, took: Duration) {
    histogram!(JOB_DURATION, "job" => job).record(took.as_secs_f64());
}

pub fn record_outcome(job: &'static str, outcome: Outcome) {
    match outcome {
        Outcome::Processed => counter!(JOBS_PROCESSED, "job" => job).increment(1),
        Outcome::Retried => {
            counter!(JOBS_FAILED, "job" => job).increment(1);
            counter!(JOBS_RETRIED, "job" => job).increment(1);
        }
        Outcome::Dead => {
            counter!(JOBS_FAILED, "job" => job).increment(1);
            counter!(JOBS_DEAD, "job" => job).increment(1);
        }
        Outcome::Snoozed => counter!(JOBS_SNOOZED, "job" => job).increment(1),
    }
}

pub fn record_reaped(queue: &str, report: ReapReport) {
    counter!(JOBS_REAPED, "job" => queue.to_owned()).increment(report.redelivered + report.dead);
    counter!(JOBS_DEAD, "job" => queue.to_owned()).increment(report.dead);
}

/// Samples one queue's figures into gauges.
pub async fn publish_queue_gauges(broker: &dyn Broker, clock: &dyn Clock, queue: &str) {
    match broker.stats(queue, clock.now_ms()).await {
        Ok(s) => {
            let job = queue.to_owned();
            for (state, n) in [
                ("ready", s.ready),
                ("scheduled", s.scheduled),
                ("running", s.running),
                ("dead", s.dead),
            ] {
                gauge!(QUEUE_DEPTH, "job" => job.clone(), "state" => state).set(n as f64);
            }
            gauge!(QUEUE_RUNNING, "job" => job.clone()).set(s.running as f64);
            gauge!(QUEUE_LATENCY, "job" => job.clone()).set(s.latency_ms as f64 / 1000.0);
            gauge!(QUEUE_LIMIT, "job" => job).set(s.limit.map_or(-1.0, f64::from));
        }
        Err(e) => tracing::warn!(queue, error = %e, "reading queue stats failed"),
    }
}
