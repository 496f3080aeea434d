//! Store implementations behind the build-log domain's traits.
//!
//! - [`fault_injection`]: an object store wrapper that fails, hangs or slows on command (tests,
//!   outage scenarios, benches).
//! - [`objects`]: flushed chunks and archived logs (`OBJECT_STORE_URL`: a folder or S3).
//! - [`redis_live`]: live chunks in Redis (production).
//! - [`sql_live`]: live chunks in the SQL database, SQLite or PostgreSQL (embedded default,
//!   outage fallback).
//! - [`sql_metadata`]: the metadata repository (builds, chunk rows, archives, …) in SQL, one
//!   file per concern.

pub mod fault_injection;
pub mod objects;
pub mod redis_live;
mod sql;
pub mod sql_live;
pub mod sql_metadata;
