//! Cursors: named positions of walks that resume where the last run stopped, across restarts
//! (stale-trace recovery's `trace_recovery`).

use async_trait::async_trait;

use super::MetadataError;

#[async_trait]
pub trait CursorStore: Send + Sync + 'static {
    /// A named cursor's position (`None` before its first [`Self::set_cursor`]).
    async fn cursor(&self, name: &str) -> Result<Option<i64>, MetadataError>;

    /// When a named cursor was last set (`None` before its first [`Self::set_cursor`]).
    async fn cursor_updated_at(&self, name: &str) -> Result<Option<i64>, MetadataError>;

    async fn set_cursor(&self, name: &str, position: i64, now_ms: i64)
    -> Result<(), MetadataError>;
}
