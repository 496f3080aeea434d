//! Shared test fixtures: real Redis with a key prefix per test, a real SQLite file per test, a
//! PostgreSQL schema per test (`sql`).
//! Nothing here flushes or drops what another test may use.
#![allow(dead_code)]

// Redis helpers and the job-running helpers live with the job system's tests.
#[path = "../../jobs/tests/support/redis_keys.rs"]
mod redis_keys;
#[path = "../../jobs/tests/support/runtime.rs"]
pub mod runtime;
#[path = "../../jobs/tests/support/wait.rs"]
pub mod wait;

pub use redis_keys::{delete_prefix, redis_keys_with_ttl, redis_url, unique_prefix};

pub mod app;
pub mod counting;
pub mod objects;
pub mod s3s_fs;
pub mod sql;
