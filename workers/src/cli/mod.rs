//! Operator commands: readable tables over the configured stores.

pub mod cron;
pub mod dead;
pub mod limits;
pub mod recover;
pub mod status;
pub mod table;
