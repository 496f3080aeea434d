//! `buildlogs`: one binary, one subcommand per role (Procfile) plus the operator CLI.

mod admin_token;
mod bench;
mod cli;
mod huge_pages;
mod jobs;
mod roles;
mod schedules;
mod settings_help;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Subcommand};

use buildlogs::config::Settings;

/// mimalloc: the web process's 4 KiB request bodies churned glibc malloc (free-list
/// consolidation was ~13% of its CPU in `bench append`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(clap::Parser, Debug)]
#[command(
    name = "buildlogs",
    version,
    about = "CI build logs: runner trace API, live chunks, archiving, on a job system of its own"
)]
struct Cli {
    /// Metadata database: postgres://… or sqlite://… (default: SQLite in the data dir).
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    /// Redis for the job queue (and live chunks). Required with PostgreSQL; without it SQLite
    /// holds the queue (single process).
    #[arg(long, env = "REDIS_URL", global = true, hide_env_values = true)]
    redis_url: Option<String>,
    /// Folder for the embedded SQLite file and local object store.
    #[arg(
        long,
        env = "BUILDLOGS_DATA_DIR",
        default_value = "data",
        global = true
    )]
    data_dir: PathBuf,
    /// Object storage for flushed chunks and archived logs: file:///path or s3://bucket/prefix
    /// (with the usual AWS_* variables and AWS_ENDPOINT_URL). Default: <data dir>/objects.
    #[arg(long, env = "OBJECT_STORE_URL", global = true, hide_env_values = true)]
    object_store_url: Option<String>,
    /// Prefix of every Redis key.
    #[arg(
        long,
        env = "BUILDLOGS_REDIS_PREFIX",
        default_value = "buildlogs",
        global = true
    )]
    redis_prefix: String,
    /// Seconds a runner's final PUT is answered 202 while live chunks are flushed, before its
    /// state is committed anyway (web); the stuck-build sweep (worker) commits pending final
    /// states older than this whose runner never came back.
    #[arg(
        long,
        env = "BUILDLOGS_ACCEPT_TIMEOUT",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..),
        global = true
    )]
    accept_timeout: u64,
    /// Async worker threads of the process (default: one per core). No-op jobs run fastest on
    /// one; jobs that compute (checksums, compression) gain from more.
    #[arg(long, env = "BUILDLOGS_THREADS", value_parser = clap::value_parser!(u16).range(1..), global = true)]
    threads: Option<u16>,
    /// Without one: `all` (web, worker and scheduler in one process, the embedded default).
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run jobs (Procfile role `worker`).
    Worker {
        #[command(flatten)]
        worker: roles::WorkerArgs,
        #[command(flatten)]
        metrics: roles::WorkerMetricsArgs,
    },
    /// Fire cron ticks, exactly once per tick across replicas (Procfile role `scheduler`).
    Scheduler(roles::SchedulerArgs),
    /// Serve the runner API, readers and the dashboard (Procfile role `web`).
    Web {
        #[command(flatten)]
        web: roles::WebArgs,
        #[command(flatten)]
        metrics: roles::MetricsArgs,
    },
    /// Web, worker and scheduler in one process (the embedded default).
    All {
        #[command(flatten)]
        worker: roles::WorkerArgs,
        #[command(flatten)]
        web: roles::WebArgs,
        #[command(flatten)]
        scheduler: roles::SchedulerArgs,
        #[command(flatten)]
        metrics: roles::MetricsArgs,
    },
    /// Stale-trace recovery now (`--dry-run`: what it would enqueue).
    Recover(cli::recover::RecoverArgs),
    /// Queues: depth, latency, running, limit, dead, lifetime counts.
    Status,
    /// Global concurrency limits per job type (take effect within seconds, no restart).
    Limits {
        #[command(subcommand)]
        action: cli::limits::LimitsAction,
    },
    /// The dead set: list, re-run or discard jobs that used up their attempts.
    Dead {
        #[command(subcommand)]
        action: cli::dead::DeadAction,
    },
    /// Cron schedules, their last and next ticks.
    Cron {
        #[command(subcommand)]
        action: cli::cron::CronAction,
    },
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
}

/// Threads for blocking work (file I/O of a local object folder, DNS): enough to keep a disk
/// busy, few enough that memory does not grow with concurrent readers.
const BLOCKING_THREADS: usize = 16;

fn main() -> std::process::ExitCode {
    // Huge pages are off from before `main` (huge_pages.rs); the HTTP roles get the kernel's
    // default back.
    let cli = parse_cli();
    if matches!(cli.command, None | Some(Command::Web { .. })) {
        huge_pages::set_disabled(false);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The blocking pool runs local-folder object reads and writes (object_store's file store)
    // and DNS lookups. Tokio's default of 512 threads let 20 readers of a 100 MiB log on the
    // embedded stack spread over ~50 threads, each keeping allocator memory of its own.
    builder.max_blocking_threads(BLOCKING_THREADS);
    if let Some(n) = cli.threads {
        builder.worker_threads(usize::from(n));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The role runs as a task on the runtime's workers, not on this thread inside `block_on`:
    // there, every wake-up between it and the tasks it spawned (a worker's fetch, the Redis
    // connection) crossed threads, a futex wake and a context switch per round trip.
    let role = runtime.block_on(async { tokio::spawn(run(cli)).await });
    match role.unwrap_or_else(|e| Err(anyhow::anyhow!("the role's task ended abnormally: {e}"))) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The cause chain on one line, skipping causes the message before already quotes (our error
/// types print their source inline so that log lines are complete on their own).
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if !out.contains(&msg) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&msg);
        }
    }
    out
}

/// The command line (exits with clap's message on bad input or `--help`); the top-level help
/// ends with every setting of every command.
fn parse_cli() -> Cli {
    let command = Cli::command();
    let settings = settings_help::every_setting(&command);
    let matches = command.after_help(settings).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    // `bench recover` counts SQL statements from sqlx's per-statement events; other commands
    // leave those events off (they cost a little on every query).
    let count_statements = matches!(
        &cli.command,
        Some(Command::Bench {
            which: bench::Bench::Recover(_)
        })
    );
    // Colours only for a person at a terminal: a file or a pipe (a log collector) gets plain
    // text. NO_COLOR (https://no-color.org) turns them off at a terminal too.
    let ansi = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())),
        )
        .with(count_statements.then(|| {
            bench::recover::StatementCounter.with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("sqlx::query", tracing::Level::TRACE),
            )
        }))
        .init();
    let settings = Settings {
        database_url: cli.database_url,
        redis_url: cli.redis_url,
        data_dir: cli.data_dir,
        redis_prefix: cli.redis_prefix,
        object_store_url: cli.object_store_url,
        accept_timeout: std::time::Duration::from_secs(cli.accept_timeout),
    };
    let command = cli.command.unwrap_or(Command::All {
        worker: roles::WorkerArgs::parse_defaults(),
        web: roles::WebArgs::parse_defaults(),
        scheduler: roles::SchedulerArgs::parse_defaults(),
        metrics: roles::MetricsArgs::parse_defaults(),
    });
    match command {
        Command::Worker { worker, metrics } => roles::worker(&settings, worker, metrics).await,
        Command::Web { web, metrics } => roles::web(&settings, web, metrics).await,
        Command::All {
            worker,
            web,
            scheduler,
            metrics,
        } => roles::all(&settings, worker, web, scheduler, metrics).await,
        Command::Scheduler(args) => roles::scheduler(&settings, args).await,
        Command::Recover(args) => cli::recover::run(&settings, args).await,
        Command::Status => cli::status::run(&settings).await,
        Command::Limits { action } => cli::limits::run(&settings, action).await,
        Command::Dead { action } => cli::dead::run(&settings, action).await,
        Command::Cron { action } => cli::cron::run(&settings, action).await,
        Command::Bench { which } => bench::run(which).await,
    }
}
