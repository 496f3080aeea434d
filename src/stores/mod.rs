//! Store implementations behind the build-log domain's traits.
//!
//! - [`redis_live`]: live chunks in Redis (production).
//! - [`sql_live`]: live chunks in the SQL database, SQLite or PostgreSQL (embedded default,
//!   outage fallback).

pub mod redis_live;
pub mod sql_live;
