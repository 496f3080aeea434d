//! The job handlers this binary runs, one file per job type; each is a thin shell over a
//! domain service.

pub mod noop;

use buildlogs::jobs::Registry;

/// Every job type a `buildlogs worker` runs.
pub fn registry() -> Registry {
    Registry::new().register(noop::NoopHandler)
}
