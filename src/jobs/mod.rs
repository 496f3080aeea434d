//! The job system: durable, deduplicated, capacity-limited background jobs (Sidekiq-style).
//!
//! - [`broker`]: the queue store seam, with [`redis::RedisBroker`] (production) and
//!   [`sqlite::SqliteBroker`] (embedded default) behind it.
//! - [`job`]: what a job type declares (name, attempts, retry schedule, dedup, timeout).
//! - [`runtime`]: fetches within free slots, runs handlers, acks in batches, heartbeats leases,
//!   reaps lost ones, shuts down gracefully.
//! - [`cron`]: fires schedules once per tick across any number of schedulers.
//! - [`limited_capacity`]: the "keep N workers busy while work remains" pattern.
//! - [`apalis_backend`]: runs a job type under an apalis-core worker, over one of our brokers.
//!
//! Guarantee: at-least-once. A job is acked only after its handler returned; a worker that dies
//! loses its leases and the jobs run again. Handlers must be idempotent.

pub mod apalis_backend;
pub mod broker;
pub mod clock;
pub mod cron;
pub mod dedup;
pub mod envelope;
pub mod job;
pub mod limited_capacity;
pub mod metrics;
pub mod redis;
pub mod registry;
pub mod retry;
pub mod runtime;
pub mod settle;
pub mod sqlite;

pub use broker::{Ack, Broker, BrokerError, DeadJob, Delivery, EnqueueOutcome, NewJob, QueueStats};
pub use clock::{Clock, SystemClock};
pub use dedup::{Dedup, DedupMode, DedupStrategy};
pub use envelope::Envelope;
pub use job::{Job, JobContext, JobError, JobHandler, JobOptions};
pub use registry::{JobClient, Registry};
pub use retry::RetrySchedule;
