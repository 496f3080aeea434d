//! Cursors ([`CursorStore`]) in SQL: one `cursors` row per name, upserted.

use async_trait::async_trait;

use super::{SqlMetadata, on_db};
use crate::traces::metadata::{CursorStore, MetadataError};

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 name → position.
    cursor: &'static str,
    /// $1 name → updated at.
    cursor_updated_at: &'static str,
    /// $1 name, $2 position, $3 now.
    set_cursor: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    cursor: "SELECT position FROM cursors WHERE name = $1",
    cursor_updated_at: "SELECT updated_at FROM cursors WHERE name = $1",
    set_cursor: "INSERT INTO cursors (name, position, updated_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
         updated_at = excluded.updated_at",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl CursorStore for SqlMetadata {
    async fn cursor(&self, name: &str) -> Result<Option<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.cursor)
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn cursor_updated_at(&self, name: &str) -> Result<Option<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.cursor_updated_at)
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    async fn set_cursor(
        &self,
        name: &str,
        position: i64,
        now_ms: i64,
    ) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.set_cursor)
                .bind(name)
                .bind(position)
                .bind(now_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
