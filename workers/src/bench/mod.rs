//! `buildlogs bench …`: the benchmarks, each printing `key=value` figures. One file a bench:
//! `queue.rs` (the peers' queue benchmark), `append.rs`, `archive.rs`, `reads.rs`,
//! `logpage.rs`, `recover.rs`; `soak/` (the soak run, with its invariants) and `relay.rs` (the
//! TCP fault relay it puts before the object store); `stack.rs` (a throwaway production stack,
//! a private Redis, a process's CPU and peak RSS); `counted.rs` (object storage that counts its
//! requests).

pub mod append;
pub mod archive;
pub mod counted;
pub mod logpage;
pub mod queue;
pub mod reads;
pub mod recover;
pub mod relay;
pub mod soak;
pub mod stack;

#[derive(clap::Subcommand, Debug)]
pub enum Bench {
    /// Queue throughput with no-op jobs against a private Redis (prints key=value figures).
    Queue(queue::QueueArgs),
    /// Concurrent runners PATCHing a running web server on the production stack.
    Append(append::AppendArgs),
    /// Flush and archive throughput for one large log on the production stack.
    Archive(archive::ArchiveArgs),
    /// Stale-trace recovery of a backlog of finished builds with live logs (the incident).
    Recover(recover::RecoverArgs),
    /// Mixed traffic with faults on the multi-process production stack, then the invariants
    /// (every build archived byte-identical, Redis keys back to baseline, RSS flat).
    Soak(soak::SoakArgs),
    /// Concurrent readers of one large log served by a `buildlogs web` process (its RSS).
    Reads(reads::ReadsArgs),
    /// The log page's data for a 100 MiB archived log from a fresh web: summary, tail, head,
    /// search, RSS.
    Logpage(logpage::LogpageArgs),
    /// The worker process of `bench queue` (internal).
    #[command(hide = true)]
    QueueWorker(queue::QueueWorkerArgs),
}

pub async fn run(which: Bench) -> anyhow::Result<()> {
    match which {
        Bench::Queue(args) => queue::run(args).await,
        Bench::Append(args) => append::run(args).await,
        Bench::Archive(args) => archive::run(args).await,
        Bench::Recover(args) => recover::run(args).await,
        Bench::Soak(args) => soak::run(args).await,
        Bench::Reads(args) => reads::run(args).await,
        Bench::Logpage(args) => logpage::run(args).await,
        Bench::QueueWorker(args) => queue::run_worker(args).await,
    }
}
