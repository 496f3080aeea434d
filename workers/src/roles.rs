//! The long-running roles: web (API + /metrics), worker, scheduler, and all three in one process.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buildlogs::api::{AppState, BacklogHistory};
use buildlogs::config::{Settings, Stack};
use buildlogs::jobs::cron::{CronEntry, Scheduler};
use buildlogs::jobs::runtime::{Runtime, RuntimeConfig};
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::breaker::{BreakerConfig, ObjectStoreBreaker};
use buildlogs::traces::expiry::ExpiryConfig;
use buildlogs::traces::recovery::RecoveryConfig;
use buildlogs::traces::service::TraceService;
use tokio_util::sync::CancellationToken;

use crate::jobs::HandlerConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Jobs run at once per job type in this process.
    #[arg(long, env = "BUILDLOGS_WORKER_CONCURRENCY", default_value_t = 10)]
    pub concurrency: usize,
    /// Seconds in-flight jobs get to finish on SIGTERM before they are handed back.
    #[arg(long, env = "BUILDLOGS_SHUTDOWN_TIMEOUT", default_value_t = 25)]
    pub shutdown_timeout: u64,
    /// Where this process serves Prometheus metrics (`/metrics`); "off" to disable.
    #[arg(
        long,
        env = "BUILDLOGS_METRICS_LISTEN",
        default_value = "127.0.0.1:9394"
    )]
    pub metrics_listen: String,
    #[command(flatten)]
    pub outage: OutageArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
}

/// How flushes and archives ride out an object-store outage, and how stale traces are found.
#[derive(clap::Args, Debug, Clone)]
pub struct OutageArgs {
    /// Consecutive object-store failures (in one worker process) that open the breaker.
    #[arg(long, env = "BUILDLOGS_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Seconds between probes of the object store while the breaker is open.
    #[arg(long, env = "BUILDLOGS_BREAKER_PROBE_SECONDS", default_value_t = 5)]
    pub breaker_probe_seconds: u64,
    /// A finished job's log not archived after this many minutes is stale (recovery archives it).
    #[arg(long, env = "BUILDLOGS_RECOVERY_STALE_MINUTES", default_value_t = 60)]
    pub recovery_stale_minutes: u64,
    /// Stale builds read, and archives enqueued, per batch.
    #[arg(long, env = "BUILDLOGS_RECOVERY_BATCH", default_value_t = 1000)]
    pub recovery_batch: u32,
    /// Archive jobs queued or running at most before recovery waits (when the archive queue
    /// has no global limit; `buildlogs limits set archive_trace N` wins).
    #[arg(long, env = "BUILDLOGS_ARCHIVE_CAPACITY", default_value_t = 32)]
    pub archive_capacity: u32,
}

impl OutageArgs {
    pub fn handler_config(&self) -> HandlerConfig {
        HandlerConfig {
            breaker: BreakerConfig {
                failure_threshold: self.breaker_failures.max(1),
                probe_interval: Duration::from_secs(self.breaker_probe_seconds.max(1)),
                ..BreakerConfig::default()
            },
            recovery: RecoveryConfig {
                stale_after: Duration::from_secs(self.recovery_stale_minutes * 60),
                batch: self.recovery_batch.max(1),
                default_capacity: self.archive_capacity.max(1),
                ..RecoveryConfig::default()
            },
            ..HandlerConfig::default()
        }
    }
}

/// How long archived logs are kept, and how artifact expiry deletes them (in bounded runs;
/// GitLab's `DestroyAllExpiredService` numbers by default).
#[derive(clap::Args, Debug, Clone)]
pub struct ExpiryArgs {
    /// Days an archived log is kept; unset: forever (GitLab's default for traces). Applies to
    /// logs archived from then on (each archive records its expiry date).
    #[arg(long, env = "BUILDLOGS_TRACE_EXPIRE_DAYS", value_parser = clap::value_parser!(u64).range(1..))]
    pub trace_expire_days: Option<u64>,
    /// Expired archives read and deleted per batch.
    #[arg(long, env = "BUILDLOGS_EXPIRY_BATCH", default_value_t = 100)]
    pub expiry_batch: u32,
    /// Batches per expiry run at most (with the batch size, the most one run deletes).
    #[arg(long, env = "BUILDLOGS_EXPIRY_LOOP_LIMIT", default_value_t = 500)]
    pub expiry_loop_limit: u32,
    /// Seconds after which an expiry run starts no new batch (keep it below the cron
    /// interval); the run's lease is held for this plus a minute.
    #[arg(long, env = "BUILDLOGS_EXPIRY_BUDGET_SECONDS", default_value_t = 300)]
    pub expiry_budget_seconds: u64,
}

impl ExpiryArgs {
    /// `config` with these settings.
    pub fn apply(&self, config: HandlerConfig) -> HandlerConfig {
        let budget = Duration::from_secs(self.expiry_budget_seconds.max(1));
        HandlerConfig {
            expiry: ExpiryConfig {
                batch: self.expiry_batch.max(1),
                loop_limit: self.expiry_loop_limit.max(1),
                budget,
                // Outlasts the budget and the batch in progress when it runs out.
                lease: budget + Duration::from_secs(60),
            },
            trace_expire_in: self
                .trace_expire_days
                .map(|days| Duration::from_secs(days.saturating_mul(24 * 3600))),
            ..config
        }
    }
}

impl WorkerArgs {
    /// What the job handlers are tuned by.
    pub fn handler_config(&self) -> HandlerConfig {
        self.expiry.apply(self.outage.handler_config())
    }
}

/// The scheduler's cron schedules.
#[derive(clap::Args, Debug, Clone)]
pub struct SchedulerArgs {
    /// When stale-trace recovery runs (cron, with seconds: `sec min hour dom month dow`).
    #[arg(long, env = "BUILDLOGS_RECOVERY_CRON", default_value = "0 */5 * * * *")]
    pub recovery_cron: String,
    /// When artifact expiry runs (GitLab: every 7 minutes, above its 5-minute budget).
    #[arg(long, env = "BUILDLOGS_EXPIRY_CRON", default_value = "0 */7 * * * *")]
    pub expiry_cron: String,
}

impl SchedulerArgs {
    /// The settings from env vars and defaults alone (no subcommand given).
    pub fn parse_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: SchedulerArgs,
        }
        <Only as clap::Parser>::parse_from(["buildlogs"]).args
    }
}

impl WorkerArgs {
    /// The settings from env vars and defaults alone (no subcommand given).
    pub fn parse_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: WorkerArgs,
        }
        <Only as clap::Parser>::parse_from(["buildlogs"]).args
    }
}

impl WebArgs {
    /// The settings from env vars and defaults alone (no subcommand given).
    pub fn parse_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: WebArgs,
        }
        <Only as clap::Parser>::parse_from(["buildlogs"]).args
    }
}

/// Serves this process's metrics (job counters, durations, queue gauges) for Prometheus.
fn serve_metrics(listen: &str) -> anyhow::Result<()> {
    if listen == "off" {
        return Ok(());
    }
    let addr: std::net::SocketAddr = listen
        .parse()
        .with_context(|| format!("BUILDLOGS_METRICS_LISTEN: {listen:?} is not host:port"))?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .context("starting the metrics listener")?;
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    Ok(())
}

/// Cancels the token on SIGTERM or Ctrl-C.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down: no new jobs, finishing in-flight ones");
        t.cancel();
    });
    token
}

#[derive(clap::Args, Debug, Clone)]
pub struct WebArgs {
    /// Where the API, `/metrics` and the dashboard (`/admin`) listen.
    #[arg(long, env = "BUILDLOGS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Registers jobs and reads any of them; generated and printed when unset.
    #[arg(long, env = "BUILDLOGS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Largest log in bytes; a runner that writes past it gets 403 and its job fails.
    #[arg(long, env = "BUILDLOGS_MAX_TRACE_SIZE", default_value_t = buildlogs::traces::service::DEFAULT_MAX_TRACE_SIZE)]
    pub max_trace_size: u64,
}

pub async fn worker(settings: &Settings, args: WorkerArgs) -> anyhow::Result<()> {
    serve_metrics(&args.metrics_listen)?;
    let stack = settings.open_stack().await.context("opening the stores")?;
    let shutdown = shutdown_on_signal();
    run_worker(&stack, &args, shutdown).await;
    Ok(())
}

async fn run_worker(stack: &Stack, args: &WorkerArgs, shutdown: CancellationToken) {
    let config = RuntimeConfig {
        concurrency: args.concurrency,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        ..RuntimeConfig::default()
    };
    let (registry, breaker) = crate::jobs::registry(stack, &args.handler_config());
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let probe = tokio::spawn(breaker.run_probe(
        stack.objects.clone(),
        JobClient::new(stack.broker.clone(), clock.clone()),
        shutdown.clone(),
    ));
    let runtime = Runtime::new(stack.broker.clone(), clock, registry, config);
    tracing::info!(concurrency = args.concurrency, "worker started");
    runtime.run(shutdown).await;
    let _ = probe.await;
}

pub async fn scheduler(settings: &Settings, args: SchedulerArgs) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let scheduler = Scheduler::new(
        broker,
        Arc::new(SystemClock),
        crate::schedules::entries(&args)?,
    );
    tracing::info!("scheduler started");
    scheduler.run(shutdown_on_signal()).await;
    Ok(())
}

pub async fn web(settings: &Settings, args: WebArgs) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    // The dashboard shows the scheduler role's schedules: built from the same settings (the
    // environment both roles read).
    let cron = crate::schedules::entries(&SchedulerArgs::parse_defaults())?;
    serve_web(&stack, &args, cron, shutdown_on_signal()).await
}

/// Web, worker and scheduler in one process: the embedded default.
pub async fn all(
    settings: &Settings,
    worker_args: WorkerArgs,
    web_args: WebArgs,
    scheduler_args: SchedulerArgs,
) -> anyhow::Result<()> {
    let stack = settings.open_stack().await.context("opening the stores")?;
    let shutdown = shutdown_on_signal();
    let cron = crate::schedules::entries(&scheduler_args)?;
    let scheduler = Scheduler::new(stack.broker.clone(), Arc::new(SystemClock), cron.clone());
    let (web, (), ()) = tokio::join!(
        serve_web(&stack, &web_args, cron, shutdown.clone()),
        run_worker(&stack, &worker_args, shutdown.clone()),
        scheduler.run(shutdown.clone()),
    );
    web
}

/// The API, the dashboard (showing `cron`'s schedules) and `/metrics`, until `shutdown`; the
/// dashboard's backlog sampler runs alongside.
async fn serve_web(
    stack: &Stack,
    args: &WebArgs,
    cron: Vec<CronEntry>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    let admin_token = match &args.admin_token {
        Some(t) if !t.is_empty() => t.clone(),
        _ => {
            let t = buildlogs::traces::tokens::generate();
            println!("BUILDLOGS_ADMIN_TOKEN is not set; this run's admin token: {t}");
            t
        }
    };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let jobs = JobClient::new(stack.broker.clone(), clock.clone());
    let traces = TraceService::new(
        stack.meta.clone(),
        stack.live.clone(),
        stack.live_kind,
        stack.objects.clone(),
        jobs.clone(),
        clock.clone(),
    )
    .with_max_trace_size(args.max_trace_size)
    // Reads follow the workers' breaker (its shared row): a log only in the object store is a
    // quick 503 while the store is down. Only its sync interval matters here.
    .with_breaker(Arc::new(ObjectStoreBreaker::new(
        stack.meta.clone(),
        clock.clone(),
        BreakerConfig::default(),
    )));
    let state = AppState {
        traces: Arc::new(traces),
        admin_token: admin_token.into(),
        jobs: jobs.clone(),
        meta: stack.meta.clone(),
        cron: Arc::new(Scheduler::new(stack.broker.clone(), clock, cron)),
        backlog: Arc::new(BacklogHistory::default()),
        shutdown: shutdown.clone(),
    };
    let backlog = state.backlog.clone();
    let app = buildlogs::api::router(state).route(
        "/metrics",
        axum::routing::get(move || std::future::ready(metrics.render())),
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("BUILDLOGS_LISTEN: cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "web started");
    let sampling = shutdown.child_token();
    let sampler = tokio::spawn(backlog.run(jobs, sampling.clone()));
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    sampling.cancel();
    let _ = sampler.await;
    served.context("serving the API")
}
