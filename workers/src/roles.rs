//! The long-running roles: web (API and dashboard), worker, scheduler, and all three in one
//! process; each process that records metrics serves them on its own `/metrics` listener.
//!
//! Safe defaults: `/metrics` is never on the API's listener (it would tell anyone who reaches
//! the API the queues' and jobs' figures); it listens on loopback unless told otherwise, `web`
//! and `all` on 9394 and `worker` on 9395, so the Procfile's roles share a host as they are. The
//! `web` role refuses to start without `BUILDLOGS_ADMIN_TOKEN`: a generated token would differ
//! per replica, so a caller would be refused by every replica but one. Only the roles that check
//! tokens need it (`web`, and `all`, which may still make one up, kept in its data dir: it is the
//! only process); `worker` and `scheduler` never read it, so they are not given a secret they do
//! not use.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buildlogs::api::{
    AppState, BacklogHistory, LogPage, PatchRate, PatchRateLimit, StreamHub, StreamLimits, server,
};
use buildlogs::config::{Settings, Stack};
use buildlogs::jobs::apalis::WorkerConfig;
use buildlogs::jobs::cron::{CronEntry, Scheduler};
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::breaker::{BreakerConfig, ObjectStoreBreaker};
use buildlogs::traces::expiry::ExpiryConfig;
use buildlogs::traces::log_view::LogView;
use buildlogs::traces::recovery::RecoveryConfig;
use buildlogs::traces::service::TraceService;
use buildlogs::traces::stuck::StuckConfig;
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
    /// While a job type's runs average under this many milliseconds, each fetch also leases up
    /// to the concurrency more of its jobs, to start as runs end (0: never).
    #[arg(long, env = "BUILDLOGS_FETCH_AHEAD_UNDER_MS", default_value_t = 1)]
    pub fetch_ahead_under_ms: u64,
    #[command(flatten)]
    pub outage: OutageArgs,
    #[command(flatten)]
    pub expiry: ExpiryArgs,
    #[command(flatten)]
    pub stuck: StuckArgs,
}

/// When a running build counts as stuck, and how many the sweep handles at a time (the accept
/// timeout for pending final states is `BUILDLOGS_ACCEPT_TIMEOUT`, shared with the web role).
#[derive(clap::Args, Debug, Clone)]
pub struct StuckArgs {
    /// Seconds without a PATCH or PUT after which a running build is failed with
    /// `stuck_or_timeout_failure` and its log archived (GitLab: 1 hour).
    #[arg(long, env = "BUILDLOGS_STUCK_TIMEOUT", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub stuck_timeout: u64,
    /// Builds the stuck-build sweep reads per batch (at most 50 batches a run).
    #[arg(long, env = "BUILDLOGS_STUCK_BATCH", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub stuck_batch: u32,
}

impl StuckArgs {
    /// `config` with these settings and the shared accept timeout.
    pub fn apply(&self, config: HandlerConfig, accept_timeout: Duration) -> HandlerConfig {
        HandlerConfig {
            stuck: StuckConfig {
                timeout: Duration::from_secs(self.stuck_timeout),
                accept_timeout,
                batch: self.stuck_batch,
                ..StuckConfig::default()
            },
            ..config
        }
    }
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
    /// What the job handlers are tuned by (`accept_timeout`: the shared
    /// `BUILDLOGS_ACCEPT_TIMEOUT`).
    pub fn handler_config(&self, accept_timeout: Duration) -> HandlerConfig {
        self.stuck.apply(
            self.expiry.apply(self.outage.handler_config()),
            accept_timeout,
        )
    }
}

/// Where `web` (and `all`) serves its metrics unless told: Prometheus exporters' customary port.
pub const WEB_METRICS_LISTEN: &str = "127.0.0.1:9394";
/// Where `worker` serves its metrics unless told: a port of its own, so that the Procfile's
/// web and worker can run on one host without settings.
pub const WORKER_METRICS_LISTEN: &str = "127.0.0.1:9395";

/// Where `web` or `all` serves its Prometheus metrics (one listener a process, whatever its
/// roles).
#[derive(clap::Args, Debug, Clone)]
pub struct MetricsArgs {
    /// Where this process serves Prometheus metrics (`/metrics`), never on the API's
    /// listener; "off" to disable. Each process on a host needs its own port.
    #[arg(long, env = "BUILDLOGS_METRICS_LISTEN", default_value = WEB_METRICS_LISTEN)]
    pub metrics_listen: String,
}

impl MetricsArgs {
    /// The settings from env vars and defaults alone (no subcommand given).
    pub fn parse_defaults() -> Self {
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            args: MetricsArgs,
        }
        <Only as clap::Parser>::parse_from(["buildlogs"]).args
    }
}

/// Where `worker` serves its Prometheus metrics: by default not `web`'s port.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerMetricsArgs {
    /// Where this process serves Prometheus metrics (`/metrics`); "off" to disable. Each
    /// process on a host needs its own port (a second worker on this host: set another).
    #[arg(long, env = "BUILDLOGS_METRICS_LISTEN", default_value = WORKER_METRICS_LISTEN)]
    pub metrics_listen: String,
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
    /// When the stuck-build sweep runs (fails silent running builds, commits overdue final
    /// states).
    #[arg(long, env = "BUILDLOGS_STUCK_CRON", default_value = "0 * * * * *")]
    pub stuck_cron: String,
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
        .with_context(|| {
            format!(
                "BUILDLOGS_METRICS_LISTEN: cannot serve metrics on {addr} (each process on a \
                 host needs a port of its own, or \"off\")"
            )
        })?;
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
    /// Where the API and the dashboard (`/admin`) listen.
    #[arg(long, env = "BUILDLOGS_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Registers jobs, reads any of them, changes the dashboard's settings. Required by `web`
    /// (the same on every replica); `all` without it keeps one in `<data dir>/admin-token`.
    #[arg(long, env = "BUILDLOGS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Reads any job, its log and stream, and the dashboard's views; cannot register jobs or
    /// change anything. Unset: no read-only token.
    #[arg(long, env = "BUILDLOGS_READ_TOKEN", hide_env_values = true)]
    pub read_token: Option<String>,
    /// Largest log in bytes; a runner that writes past it gets 403 and its job fails.
    #[arg(long, env = "BUILDLOGS_MAX_TRACE_SIZE", default_value_t = buildlogs::traces::service::DEFAULT_MAX_TRACE_SIZE)]
    pub max_trace_size: u64,
    /// Where readers reach this service (scheme, host, port, path prefix): the job JSON's
    /// `web_url` and read links start with it. Default: `http://<BUILDLOGS_LISTEN>`. With
    /// `https://` the log page's session cookies are `Secure`.
    #[arg(long, env = "BUILDLOGS_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Seconds a read link (`POST /api/v4/jobs/:id/read_link`, and the one `POST /api/v4/jobs`
    /// returns) opens its job's log page.
    #[arg(long, env = "BUILDLOGS_READ_LINK_TTL", default_value_t = buildlogs::api::logpage::DEFAULT_READ_LINK_TTL.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub read_link_ttl: u64,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// The web process's HTTP limits: server timeouts, connections, the PATCH rate, trace streams.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// Seconds a request's headers may take (from its first byte; a new connection's first
    /// request from the connection's opening).
    #[arg(long, env = "BUILDLOGS_HTTP_HEADER_TIMEOUT", default_value_t = server::DEFAULT_HEADER_TIMEOUT.as_secs())]
    pub http_header_timeout: u64,
    /// Seconds a request body may pause before the request gets 408.
    #[arg(long, env = "BUILDLOGS_HTTP_BODY_TIMEOUT", default_value_t = server::DEFAULT_BODY_TIMEOUT.as_secs())]
    pub http_body_timeout: u64,
    /// Seconds a keep-alive connection waits for its next request (and a response nobody reads
    /// waits for its client) before it is closed.
    #[arg(long, env = "BUILDLOGS_HTTP_IDLE_TIMEOUT", default_value_t = server::DEFAULT_IDLE_TIMEOUT.as_secs())]
    pub http_idle_timeout: u64,
    /// Connections served at once by this process; more wait in the listen backlog.
    #[arg(long, env = "BUILDLOGS_HTTP_MAX_CONNECTIONS", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    pub http_max_connections: u32,
    /// Seconds open requests get to finish after SIGTERM; then the process exits and closes
    /// them (clients retry: a reader its Range, a runner its PATCH).
    #[arg(long, env = "BUILDLOGS_HTTP_SHUTDOWN_TIMEOUT", default_value_t = server::DEFAULT_SHUTDOWN_TIMEOUT.as_secs())]
    pub http_shutdown_timeout: u64,
    /// PATCHes per second one job may send, sustained, to this process (0: no limit); past it
    /// and the burst: 429 with Retry-After.
    #[arg(long, env = "BUILDLOGS_PATCH_RATE", default_value_t = buildlogs::api::rate_limit::DEFAULT_PATCH_RATE)]
    pub patch_rate: f64,
    /// PATCHes one job may send at once before the rate applies.
    #[arg(long, env = "BUILDLOGS_PATCH_BURST", default_value_t = buildlogs::api::rate_limit::DEFAULT_PATCH_BURST)]
    pub patch_burst: u32,
    /// Trace streams (`GET …/trace/stream`) open at once in this process; past it: 503 with
    /// Retry-After.
    #[arg(long, env = "BUILDLOGS_STREAM_MAX", default_value_t = buildlogs::api::stream_hub::DEFAULT_MAX_STREAMS)]
    pub stream_max: usize,
    /// Seconds a trace stream lasts at most; then it ends and the client resumes with
    /// Last-Event-ID.
    #[arg(long, env = "BUILDLOGS_STREAM_LIFETIME", default_value_t = buildlogs::api::stream_hub::DEFAULT_STREAM_LIFETIME.as_secs())]
    pub stream_lifetime: u64,
}

impl HttpArgs {
    fn server_limits(&self) -> server::ServerLimits {
        server::ServerLimits {
            header_timeout: Duration::from_secs(self.http_header_timeout.max(1)),
            body_timeout: Duration::from_secs(self.http_body_timeout.max(1)),
            idle_timeout: Duration::from_secs(self.http_idle_timeout.max(1)),
            max_connections: self.http_max_connections.max(1),
            shutdown_timeout: Duration::from_secs(self.http_shutdown_timeout),
        }
    }
}

pub async fn worker(
    settings: &Settings,
    args: WorkerArgs,
    metrics: WorkerMetricsArgs,
) -> anyhow::Result<()> {
    serve_metrics(&metrics.metrics_listen)?;
    let stack = settings.open_stack().await.context("opening the stores")?;
    tracing::info!(objects = %stack.objects_at, "stores opened");
    let shutdown = shutdown_on_signal();
    run_worker(&stack, &args, settings.accept_timeout, shutdown).await;
    Ok(())
}

async fn run_worker(
    stack: &Stack,
    args: &WorkerArgs,
    accept_timeout: Duration,
    shutdown: CancellationToken,
) {
    let tuning = WorkerConfig {
        concurrency: args.concurrency,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        fetch_ahead_under: Duration::from_millis(args.fetch_ahead_under_ms),
        ..WorkerConfig::default()
    };
    let (workers, breaker) =
        crate::jobs::workers(stack, &args.handler_config(accept_timeout), tuning);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let probe = tokio::spawn(breaker.run_probe(
        stack.objects.clone(),
        JobClient::new(stack.broker.clone(), clock),
        shutdown.clone(),
    ));
    tracing::info!(concurrency = args.concurrency, "worker started");
    workers.run(shutdown).await;
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

pub async fn web(settings: &Settings, args: WebArgs, metrics: MetricsArgs) -> anyhow::Result<()> {
    let tokens = Tokens::from_args(&args, None)?;
    serve_metrics(&metrics.metrics_listen)?;
    let stack = settings.open_stack().await.context("opening the stores")?;
    tracing::info!(objects = %stack.objects_at, "stores opened");
    // The dashboard shows the scheduler role's schedules: built from the same settings (the
    // environment both roles read).
    let cron = crate::schedules::entries(&SchedulerArgs::parse_defaults())?;
    serve_web(
        &stack,
        &args,
        tokens,
        settings.accept_timeout,
        cron,
        shutdown_on_signal(),
    )
    .await
}

/// Web, worker and scheduler in one process: the embedded default.
pub async fn all(
    settings: &Settings,
    worker_args: WorkerArgs,
    web_args: WebArgs,
    scheduler_args: SchedulerArgs,
    metrics: MetricsArgs,
) -> anyhow::Result<()> {
    let tokens = Tokens::from_args(&web_args, Some(&settings.data_dir))?;
    serve_metrics(&metrics.metrics_listen)?;
    let stack = settings.open_stack().await.context("opening the stores")?;
    tracing::info!(objects = %stack.objects_at, "stores opened");
    let shutdown = shutdown_on_signal();
    let cron = crate::schedules::entries(&scheduler_args)?;
    let scheduler = Scheduler::new(stack.broker.clone(), Arc::new(SystemClock), cron.clone());
    let accept_timeout = settings.accept_timeout;
    let (web, (), ()) = tokio::join!(
        serve_web(
            &stack,
            &web_args,
            tokens,
            accept_timeout,
            cron,
            shutdown.clone()
        ),
        run_worker(&stack, &worker_args, accept_timeout, shutdown.clone()),
        scheduler.run(shutdown.clone()),
    );
    web
}

/// The operator tokens the web role checks.
struct Tokens {
    admin: String,
    read: Option<String>,
}

impl Tokens {
    /// The tokens `args` set. Without an admin token: with `keep_in` (`all`, one process) the
    /// one kept in that data dir (made up on first start), its path printed; otherwise (`web`,
    /// maybe one replica of many) an error naming the variable.
    fn from_args(args: &WebArgs, keep_in: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let set = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
        let admin = match (set(&args.admin_token), keep_in) {
            (Some(t), _) => t,
            (None, Some(data_dir)) => {
                let stored = crate::admin_token::load_or_create(data_dir)?;
                // One line on stdout, apart from the logs: where the token is, never the token.
                println!(
                    "admin token: {} {} (read it with `cat {}`; BUILDLOGS_ADMIN_TOKEN overrides it)",
                    if stored.created {
                        "made up and saved in"
                    } else {
                        "kept in"
                    },
                    stored.path.display(),
                    stored.path.display(),
                );
                stored.token
            }
            (None, None) => anyhow::bail!(
                "BUILDLOGS_ADMIN_TOKEN is not set: `buildlogs web` needs it, the same on every \
                 replica (a generated one would differ per replica); set it to a long random \
                 string, e.g. `openssl rand -hex 32`"
            ),
        };
        let read = set(&args.read_token);
        if read.as_deref() == Some(admin.as_str()) {
            anyhow::bail!(
                "BUILDLOGS_READ_TOKEN is the admin token: a read-only token must differ from \
                 BUILDLOGS_ADMIN_TOKEN"
            );
        }
        Ok(Self { admin, read })
    }
}

/// `BUILDLOGS_PUBLIC_URL`, checked (an http(s) URL), or `http://<BUILDLOGS_LISTEN>`.
fn public_url(raw: Option<&str>, listen: &str) -> anyhow::Result<String> {
    let Some(raw) = raw.filter(|u| !u.is_empty()) else {
        return Ok(format!("http://{listen}"));
    };
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"));
    anyhow::ensure!(
        rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
            && !raw.contains(['?', '#', ' ']),
        "BUILDLOGS_PUBLIC_URL: expected http(s)://host[:port][/prefix] (no query or fragment), got {raw:?}"
    );
    Ok(raw.trim_end_matches('/').to_owned())
}

/// The API and the dashboard (showing `cron`'s schedules), until `shutdown`; the dashboard's
/// backlog sampler runs alongside.
async fn serve_web(
    stack: &Stack,
    args: &WebArgs,
    tokens: Tokens,
    accept_timeout: Duration,
    cron: Vec<CronEntry>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let jobs = JobClient::new(stack.broker.clone(), clock.clone());
    let traces = TraceService::new(stack.trace_stores(clock.clone()), jobs.clone())
        .with_max_trace_size(args.max_trace_size)
        .with_accept_timeout(accept_timeout)
        // Reads follow the workers' breaker (its shared row): a log only in the object store is a
        // quick 503 while the store is down. Only its sync interval matters here.
        .with_breaker(Arc::new(ObjectStoreBreaker::new(
            stack.meta.clone(),
            clock.clone(),
            BreakerConfig::default(),
        )));
    let state = AppState {
        traces: Arc::new(traces),
        admin_token: tokens.admin.into(),
        read_token: tokens.read.map(Into::into),
        jobs: jobs.clone(),
        meta: stack.meta.clone(),
        cron: Arc::new(Scheduler::new(stack.broker.clone(), clock, cron)),
        backlog: Arc::new(BacklogHistory::default()),
        shutdown: shutdown.clone(),
        patch_rate: Arc::new(PatchRateLimit::new(PatchRate {
            per_second: args.http.patch_rate,
            burst: args.http.patch_burst.max(1),
        })),
        streams: Arc::new(StreamHub::new(StreamLimits {
            max_streams: args.http.stream_max,
            max_lifetime: Duration::from_secs(args.http.stream_lifetime.max(1)),
        })),
        logpage: Arc::new(LogPage::new(
            &public_url(args.public_url.as_deref(), &args.listen)?,
            Duration::from_secs(args.read_link_ttl),
            LogView::default(),
        )),
    };
    let backlog = state.backlog.clone();
    let app = buildlogs::api::router(state);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("BUILDLOGS_LISTEN: cannot listen on {}", args.listen))?;
    tracing::info!(listen = %args.listen, "web started");
    let sampling = shutdown.child_token();
    let sampler = tokio::spawn(backlog.run(jobs, sampling.clone()));
    server::serve(listener, app, args.http.server_limits(), shutdown).await;
    sampling.cancel();
    let _ = sampler.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::public_url;

    #[test]
    fn the_public_url_defaults_to_the_listen_address_and_must_be_http() {
        assert_eq!(
            public_url(None, "127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            public_url(Some("https://logs.example.com/ci/"), "x").unwrap(),
            "https://logs.example.com/ci"
        );
        for bad in [
            "logs.example.com",
            "ftp://x",
            "https://",
            "http:///x",
            "https://x/?a=1",
            "https://x/#f",
        ] {
            let e = public_url(Some(bad), "x").unwrap_err().to_string();
            assert!(e.starts_with("BUILDLOGS_PUBLIC_URL:"), "{bad}: {e}");
        }
    }
}
