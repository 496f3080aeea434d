//! The stores a log lives in, bundled: what the trace, flush and archive services are built
//! over (each keeps what it uses). Build it once per process (`Stack::trace_stores`) and clone
//! it; tests swap one store for a wrapper (`with_live`, `with_objects`).

use std::sync::Arc;

use super::live::LiveChunkStore;
use super::metadata::MetadataStore;
use super::objects::ObjectStorage;
use crate::jobs::Clock;

#[derive(Clone)]
pub struct TraceStores {
    pub meta: Arc<dyn MetadataStore>,
    /// Live chunks: Redis, or the database (embedded); it says which.
    pub live: Arc<dyn LiveChunkStore>,
    /// Flushed chunks and archives.
    pub objects: Arc<dyn ObjectStorage>,
    pub clock: Arc<dyn Clock>,
}

impl TraceStores {
    /// The same stores with `live` instead.
    pub fn with_live(&self, live: Arc<dyn LiveChunkStore>) -> Self {
        Self {
            live,
            ..self.clone()
        }
    }

    /// The same stores with `objects` instead.
    pub fn with_objects(&self, objects: Arc<dyn ObjectStorage>) -> Self {
        Self {
            objects,
            ..self.clone()
        }
    }
}
