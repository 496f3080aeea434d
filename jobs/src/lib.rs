//! The job system: durable, deduplicated, capacity-limited background jobs (Sidekiq-style),
//! run by apalis workers.
//!
//! - [`broker`]: the queue store seam, with [`redis::RedisBroker`] (production) and
//!   [`sqlite::SqliteBroker`] (embedded default) behind it.
//! - [`job`]: what a job type declares (name, attempts, retry schedule, dedup, timeout), and
//!   [`client`]: the typed enqueue.
//! - [`apalis`]: runs every job — one apalis worker per job type over a broker, in a `Monitor`;
//!   acks ride on fetches; the only module that names apalis types.
//! - [`settle`]: the one policy turning a run's result into an ack (complete, retry, snooze,
//!   dead); [`housekeeping`]: lease heartbeats, reaping, dead-set trimming, queue gauges.
//! - [`cron`]: fires schedules once per tick across any number of schedulers.
//! - [`limited_capacity`]: the "keep N workers busy while work remains" pattern.
//!
//! Guarantee: at-least-once. A job is acked only after its handler returned; a worker that dies
//! loses its leases and the jobs run again. Handlers must be idempotent.

pub mod apalis;
pub mod broker;
pub mod client;
pub mod clock;
pub mod cron;
pub mod dedup;
pub mod envelope;
pub mod housekeeping;
pub mod job;
pub mod limited_capacity;
pub mod metrics;
pub mod redis;
pub mod retry;
pub mod settle;
pub mod sqlite;

pub use broker::{
    Ack, Broker, BrokerError, DeadJob, Delivery, EnqueueOutcome, NewJob, QueueStats, ScheduledJob,
};
pub use client::JobClient;
pub use clock::{Clock, SystemClock};
pub use dedup::{Dedup, DedupMode, DedupStrategy};
pub use envelope::Envelope;
pub use job::{Job, JobContext, JobError, JobHandler, JobOptions};
pub use retry::RetrySchedule;
