//! Circuit breaker records: a breaker's state as every process sees it, so one that opens
//! (the object store down) stops flushes and archives everywhere.

use async_trait::async_trait;

use super::MetadataError;

/// A circuit breaker's state as every process sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRecord {
    pub name: String,
    pub open: bool,
    /// The error that opened it.
    pub reason: Option<String>,
    /// When it last opened or closed.
    pub changed_at_ms: i64,
}

#[async_trait]
pub trait BreakerStore: Send + Sync + 'static {
    /// A circuit breaker's shared state (`None`: never opened, so closed).
    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError>;

    /// Stores a breaker's state; `changed_at_ms` moves only when the state changes.
    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError>;
}
