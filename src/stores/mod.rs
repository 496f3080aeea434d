//! Store implementations behind the build-log domain's traits.
//!
//! - [`redis_live`]: live chunks in Redis (production).

pub mod redis_live;
