//! buildlogs: CI job logs carried the way GitLab's cloud-native build logs are, on a
//! Sidekiq-style job system of its own.
//!
//! - [`config`]: settings and opening the stores they name.
//! - [`jobs`]: the job system (queue brokers, retries, dedup, capacity, cron, apalis workers),
//!   the `buildlogs-jobs` crate (`jobs/`), re-exported here. It knows nothing of build logs.
//! - [`redact`]: secrets out of connection URLs before they are logged.
//! - [`status`]: what an operator looks at (queues, the breaker, recovery), read once for the
//!   CLI and the dashboard.

pub mod api;
pub mod config;
pub use buildlogs_jobs as jobs;
pub mod redact;
pub mod status;
pub mod stores;
pub mod traces;
