//! Store implementations behind the build-log domain's traits.
//!
//! - [`fault_injection`] (feature `testing`): an object storage wrapper that fails, hangs or
//!   slows on command, for tests and outage scenarios; never in the product.
//! - [`objects`]: opens the object store `OBJECT_STORE_URL` names (a folder or S3);
//!   [`object_store_backend`]: the domain's object storage seam over it.
//! - [`redis_live`]: live chunks in Redis (production).
//! - [`sql_live`]: live chunks in the SQL database, SQLite or PostgreSQL (embedded default,
//!   outage fallback).
//! - [`sql_metadata`]: the metadata repository (builds, chunk rows, archives, …) in SQL, one
//!   file per concern.

#[cfg(feature = "testing")]
pub mod fault_injection;
pub mod object_store_backend;
pub mod objects;
pub mod redis_live;
mod sql;
pub mod sql_live;
pub mod sql_metadata;
