//! The job types one process runs: one apalis worker per job type, each over a
//! [`BrokerBackend`], all in one `Monitor` (Sidekiq's launcher).
//!
//! Each worker's stack, outside in: the backend's ack layer (settle policy, slot), the job's
//! [`TimeoutLayer`], [`CatchPanicLayer`], the handler. Local concurrency is the backend's; the
//! global limit is the broker's fetch.
//!
//! Shutdown (the token is cancelled): every worker stops fetching and its running jobs get
//! `shutdown_timeout` to finish; then the `Monitor` drops the workers, which hand the rest back
//! to the queue without burning an attempt, and [`Workers::run`] returns once those hand-backs
//! are stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use apalis_core::monitor::Monitor;
use apalis_core::worker::builder::WorkerBuilder;
use tokio_util::sync::CancellationToken;

use super::backend::{BrokerBackend, BrokerBackendConfig, FETCH_AHEAD_UNDER};
use super::guards::{CatchPanicLayer, TimeoutLayer};
use super::handler::HandlerService;
use super::handoffs::Handoffs;
use crate::broker::{Broker, DeadSetBounds};
use crate::clock::Clock;
use crate::job::{Job, JobHandler};

/// How long [`Workers::run`] waits for hand-backs after the shutdown timeout.
const HANDOFF_WAIT: Duration = Duration::from_secs(10);

/// Tuning of one worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once in this process, per job type (default for types not listed).
    pub concurrency: usize,
    pub concurrency_by_queue: HashMap<String, usize>,
    /// Sleep between fetches when a queue is empty (±20% jitter so processes spread out).
    pub poll_interval: Duration,
    /// How long in-flight jobs may run after shutdown starts before they are handed back
    /// (Sidekiq: 25 s, which fits a 30 s container stop grace period).
    pub shutdown_timeout: Duration,
    pub reap_interval: Duration,
    pub stats_interval: Duration,
    pub dead_set: DeadSetBounds,
    /// While a job type's runs average under this, its worker fetches ahead (see
    /// [`BrokerBackendConfig::fetch_ahead_under`]); `Duration::ZERO`: never.
    pub fetch_ahead_under: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 10,
            concurrency_by_queue: HashMap::new(),
            poll_interval: Duration::from_millis(100),
            shutdown_timeout: Duration::from_secs(25),
            reap_interval: Duration::from_secs(5),
            stats_interval: Duration::from_secs(5),
            dead_set: DeadSetBounds::default(),
            fetch_ahead_under: FETCH_AHEAD_UNDER,
        }
    }
}

impl WorkerConfig {
    pub fn concurrency_of(&self, queue: &str) -> usize {
        self.concurrency_by_queue
            .get(queue)
            .copied()
            .unwrap_or(self.concurrency)
            .max(1)
    }
}

/// One apalis worker per registered job type, run together.
pub struct Workers {
    broker: Arc<dyn Broker>,
    clock: Arc<dyn Clock>,
    config: WorkerConfig,
    monitor: Monitor,
    handoffs: Arc<Handoffs>,
    names: Vec<&'static str>,
}

impl Workers {
    pub fn new(broker: Arc<dyn Broker>, clock: Arc<dyn Clock>, config: WorkerConfig) -> Self {
        let monitor = Monitor::new().should_restart(|worker, error| {
            // Only a panic outside a run (the runs' own are caught) ends a worker.
            tracing::error!(worker = worker.name(), %error, "worker failed; restarting it");
            !worker.is_shutting_down()
        });
        Self {
            broker,
            clock,
            config,
            monitor,
            handoffs: Arc::default(),
            names: Vec::new(),
        }
    }

    /// Adds a worker running `handler`'s job type.
    pub fn register<H: JobHandler>(mut self, handler: H) -> Self {
        let name = <H::Job as Job>::NAME;
        let options = <H::Job as Job>::options();
        let backend_config = BrokerBackendConfig {
            concurrency: self.config.concurrency_of(name),
            poll_interval: self.config.poll_interval,
            housekeeping_interval: Some(self.config.reap_interval),
            stats_interval: Some(self.config.stats_interval),
            dead_set: self.config.dead_set,
            fetch_ahead_under: self.config.fetch_ahead_under,
            ..BrokerBackendConfig::default()
        };
        let handler = Arc::new(handler);
        let (broker, clock, handoffs) = (
            self.broker.clone(),
            self.clock.clone(),
            self.handoffs.clone(),
        );
        let worker_name = format!("{name}-{}", std::process::id());
        self.monitor = self.monitor.register(move |restarts| {
            let backend = BrokerBackend::<H::Job>::with_config(
                broker.clone(),
                clock.clone(),
                backend_config.clone(),
            )
            .with_handoffs(handoffs.clone());
            WorkerBuilder::new(format!("{worker_name}-{restarts}"))
                .backend(backend)
                .layer(TimeoutLayer::new(options.timeout))
                .layer(CatchPanicLayer)
                .build(HandlerService::new(handler.clone()))
        });
        self.names.push(name);
        self
    }

    /// The registered job types.
    pub fn names(&self) -> &[&'static str] {
        &self.names
    }

    /// Runs until `shutdown` is cancelled and every worker has stopped; jobs still running after
    /// the shutdown timeout are handed back before it returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let signal = async move {
            shutdown.cancelled().await;
            Ok(())
        };
        // Counted from the signal: the terminator is first polled once shutdown starts.
        let grace = self.config.shutdown_timeout;
        let monitor = self
            .monitor
            .with_terminator(async move { tokio::time::sleep(grace).await });
        if let Err(e) = monitor.run_with_signal(signal).await {
            tracing::error!(error = %e, "job workers ended abnormally");
        }
        self.handoffs.wait(HANDOFF_WAIT).await;
        tracing::info!(queues = ?self.names, "job workers stopped");
    }
}
