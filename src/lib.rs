//! buildlogs: CI job logs carried the way GitLab's cloud-native build logs are, on a
//! Sidekiq-style job system of its own.
//!
//! - [`config`]: settings and opening the stores they name.
//! - [`jobs`]: the job system (queue brokers, retries, dedup, capacity, cron, runtime). It knows
//!   nothing of build logs.
//! - [`redact`]: secrets out of connection URLs before they are logged.

pub mod api;
pub mod config;
pub mod jobs;
pub mod redact;
pub mod stores;
pub mod traces;
