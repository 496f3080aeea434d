//! Where the job system meets apalis (the only module that names apalis types): every job runs
//! as an apalis task, under an apalis `Worker` in a `Monitor`, with the jobs kept in one of our
//! brokers.
//!
//! apalis is kept for what it does well (`WorkerBuilder`, tower layers, `Monitor`, handlers with
//! extractors) while the queue stays ours (Redis or SQLite behind [`Broker`](super::Broker), with
//! dedup, global limits, leases, retry schedules and the dead set).
//!
//! - [`Workers`]: what a worker process runs — one worker per [`JobHandler`](super::JobHandler),
//!   with the job's timeout and panic handling as tower layers ([`guards`]).
//! - [`BrokerBackend<J>`]: apalis' `Backend` for one [`Job`](super::Job) type; usable directly
//!   with any apalis handler:
//!
//! ```ignore
//! async fn flush(job: FlushTrace, ctx: Data<JobContext>) -> Result<(), JobError> { .. }
//!
//! let backend = BrokerBackend::<FlushTrace>::new(broker, clock).concurrency(8);
//! let worker = WorkerBuilder::new("flush").backend(backend).build(flush);
//! worker.run_until(shutdown_signal).await?;
//! ```
//!
//! A handler's first argument is the decoded job. Besides apalis' extractors (`Attempt`,
//! `TaskId`, `WorkerContext`, `Data<T>`) it can take `Data<JobContext>` (id, queue, attempt, max
//! attempts, enqueue time); `Attempt::current()` equals the broker's attempt (1 on the first
//! run). It returns `Result<_, JobError>`, or any error (see [`ack_layer`]).
//!
//! Guarantee: at-least-once. A job is acked only after its run returned (or timed out); a job
//! whose worker died, or whose ack was lost, runs again once its lease has expired and a
//! worker's housekeeping has re-delivered it. Handlers must be idempotent.
//!
//! Keep apalis-core's `task-context` feature off: with it, apalis panics when one worker holds
//! two deliveries of the same job id, which a lease lost during a long stall can cause.

pub mod ack_layer;
pub mod acks;
pub mod backend;
pub mod guards;
pub mod handler;
pub mod handoffs;
mod shared;
pub mod workers;

pub use backend::{BrokerBackend, BrokerBackendConfig, BrokerBackendEvent};
pub use handoffs::Handoffs;
pub use workers::{WorkerConfig, Workers};
