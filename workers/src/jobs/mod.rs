//! The job handlers this binary runs, one file per job type; each is a thin shell over a
//! domain service.

pub mod archive_trace;
pub mod drop_stuck_builds;
pub mod expire_artifacts;
pub mod flush_trace_chunk;
pub mod noop;
pub mod recover_stale_traces;

use std::sync::Arc;
use std::time::Duration;

use buildlogs::config::Stack;
use buildlogs::jobs::apalis::{WorkerConfig, Workers};
use buildlogs::jobs::{Clock, JobClient, SystemClock};
use buildlogs::traces::archive::ArchiveService;
use buildlogs::traces::breaker::{BreakerConfig, ObjectStoreBreaker};
use buildlogs::traces::expiry::{ArtifactExpiry, ExpiryConfig};
use buildlogs::traces::flush::FlushService;
use buildlogs::traces::recovery::{RecoveryConfig, RecoveryMetadata, TraceRecovery};
use buildlogs::traces::service::TraceService;
use buildlogs::traces::stuck::{StuckBuilds, StuckConfig};

/// What the handlers are tuned by (the worker role's settings).
#[derive(Debug, Clone, Default)]
pub struct HandlerConfig {
    pub breaker: BreakerConfig,
    pub recovery: RecoveryConfig,
    /// Artifact expiry's runs (batch, loop limit, budget, lease).
    pub expiry: ExpiryConfig,
    /// How long an archived log is kept (`None`: forever).
    pub trace_expire_in: Option<Duration>,
    /// The stuck-build sweep's timeouts and bounds.
    pub stuck: StuckConfig,
}

/// The workers of every job type a `buildlogs worker` runs (tuned by `tuning`), over the
/// process's stores, and the object store breaker its flushes and archives share (the worker
/// runs its probe).
pub fn workers(
    stack: &Stack,
    config: &HandlerConfig,
    tuning: WorkerConfig,
) -> (Workers, Arc<ObjectStoreBreaker>) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let breaker = Arc::new(ObjectStoreBreaker::new(
        stack.meta.clone(),
        clock.clone(),
        config.breaker.clone(),
    ));
    let flush = Arc::new(
        FlushService::new(stack.trace_stores(clock.clone())).with_breaker(breaker.clone()),
    );
    let archive = Arc::new(
        ArchiveService::new(stack.trace_stores(clock.clone()))
            .with_breaker(breaker.clone())
            .with_expire_in(config.trace_expire_in),
    );
    let expiry = Arc::new(ArtifactExpiry::new(
        stack.meta.clone(),
        stack.meta.clone(),
        stack.objects.clone(),
        clock.clone(),
        config.expiry.clone(),
    ));
    let jobs = JobClient::new(stack.broker.clone(), clock.clone());
    let recovery = Arc::new(TraceRecovery::new(
        RecoveryMetadata::from_one(&stack.meta),
        jobs.clone(),
        clock.clone(),
        config.recovery.clone(),
    ));
    // The sweep commits overdue final states the way the final PUT does.
    let traces = Arc::new(
        TraceService::new(stack.trace_stores(clock.clone()), jobs.clone())
            .with_accept_timeout(config.stuck.accept_timeout),
    );
    let walk = recover_stale_traces::walk_handler(recovery.clone(), jobs.clone());
    let stuck = Arc::new(StuckBuilds::new(
        stack.meta.clone(),
        stack.live.clone(),
        traces,
        jobs,
        clock.clone(),
        config.stuck.clone(),
    ));
    let workers = Workers::new(stack.broker.clone(), clock, tuning)
        .register(noop::NoopHandler)
        .register(flush_trace_chunk::FlushTraceChunkHandler { flush })
        .register(archive_trace::ArchiveTraceHandler {
            archive,
            snooze: config.breaker.snooze,
        })
        .register(recover_stale_traces::RecoverStaleTracesHandler { recovery })
        .register(walk)
        .register(expire_artifacts::ExpireArtifactsHandler { expiry })
        .register(drop_stuck_builds::DropStuckBuildsHandler { stuck });
    (workers, breaker)
}
