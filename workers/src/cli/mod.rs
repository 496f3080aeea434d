//! Operator commands: readable tables over the configured stores.

pub mod bench;
pub mod bench_append;
pub mod bench_archive;
pub mod bench_logpage;
pub mod bench_reads;
pub mod bench_recover;
pub mod cron;
pub mod dead;
pub mod limits;
pub mod recover;
pub mod status;
pub mod table;
