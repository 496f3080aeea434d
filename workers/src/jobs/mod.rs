//! The job handlers this binary runs, one file per job type; each is a thin shell over a
//! domain service.

pub mod archive_trace;
pub mod flush_trace_chunk;
pub mod noop;

use std::sync::Arc;

use buildlogs::config::Stack;
use buildlogs::jobs::{Registry, SystemClock};
use buildlogs::traces::archive::ArchiveService;
use buildlogs::traces::flush::FlushService;

/// Every job type a `buildlogs worker` runs, over the process's stores.
pub fn registry(stack: &Stack) -> Registry {
    let flush = Arc::new(FlushService::new(
        stack.meta.clone(),
        stack.live.clone(),
        stack.live_kind,
        stack.objects.clone(),
        Arc::new(SystemClock),
    ));
    let archive = Arc::new(ArchiveService::new(
        stack.meta.clone(),
        stack.live.clone(),
        stack.live_kind,
        stack.objects.clone(),
        Arc::new(SystemClock),
    ));
    Registry::new()
        .register(noop::NoopHandler)
        .register(flush_trace_chunk::FlushTraceChunkHandler { flush })
        .register(archive_trace::ArchiveTraceHandler { archive })
}
