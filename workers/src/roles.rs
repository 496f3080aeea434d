//! The long-running roles: worker and scheduler (and both in one process).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use buildlogs::config::Settings;
use buildlogs::jobs::SystemClock;
use buildlogs::jobs::cron::Scheduler;
use buildlogs::jobs::runtime::{Runtime, RuntimeConfig};
use tokio_util::sync::CancellationToken;

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

pub async fn worker(
    settings: &Settings,
    args: WorkerArgs,
    with_scheduler: bool,
) -> anyhow::Result<()> {
    serve_metrics(&args.metrics_listen)?;
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let clock = Arc::new(SystemClock);
    let shutdown = shutdown_on_signal();
    let config = RuntimeConfig {
        concurrency: args.concurrency,
        shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
        ..RuntimeConfig::default()
    };
    let runtime = Runtime::new(
        broker.clone(),
        clock.clone(),
        crate::jobs::registry(),
        config,
    );
    tracing::info!(concurrency = args.concurrency, "worker started");
    if with_scheduler {
        let scheduler = Scheduler::new(broker, clock, crate::schedules::entries()?);
        tokio::join!(runtime.run(shutdown.clone()), scheduler.run(shutdown));
    } else {
        runtime.run(shutdown).await;
    }
    Ok(())
}

pub async fn scheduler(settings: &Settings) -> anyhow::Result<()> {
    let broker = settings
        .open_broker()
        .await
        .context("opening the job queue")?;
    let scheduler = Scheduler::new(broker, Arc::new(SystemClock), crate::schedules::entries()?);
    tracing::info!("scheduler started");
    scheduler.run(shutdown_on_signal()).await;
    Ok(())
}
