//! Benchmark instruments that are more than one file: the TCP fault relay and the soak run
//! (`buildlogs bench soak`). The single-file benches live in `cli/bench_*.rs`.

pub mod relay;
pub mod soak;
