//! Circuit breaker records: a breaker's state as every process sees it, so one that opens
//! (the object store down) stops flushes and archives everywhere.

use async_trait::async_trait;

use super::MetadataError;

/// A circuit breaker's state as every process sees it (or, in its history, one change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerRecord {
    pub name: String,
    pub open: bool,
    /// The error that opened it.
    pub reason: Option<String>,
    /// When it last opened or closed (in its history: when this change happened).
    pub changed_at_ms: i64,
}

#[async_trait]
pub trait BreakerStore: Send + Sync + 'static {
    /// A circuit breaker's shared state (`None`: never opened, so closed).
    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError>;

    /// Stores a breaker's state; `changed_at_ms` moves only when the state changes, and each
    /// change is appended to the breaker's history once, however many processes report it
    /// (the newest [`BREAKER_HISTORY_KEPT`] changes are kept).
    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError>;

    /// A breaker's changes, newest first, at most `limit`.
    async fn breaker_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<BreakerRecord>, MetadataError>;
}

/// Changes of a breaker's state kept in its history.
pub const BREAKER_HISTORY_KEPT: u32 = 100;
