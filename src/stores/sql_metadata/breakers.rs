//! Circuit breaker records ([`BreakerStore`]) in SQL: one `circuit_breakers` row per name,
//! upserted; `changed_at` moves only when the state does.

use async_trait::async_trait;

use super::{SqlMetadata, on_db};
use crate::traces::metadata::{BreakerRecord, BreakerStore, MetadataError};

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 name → state, reason, changed at.
    breaker: &'static str,
    /// $1 name, $2 state, $3 reason, $4 now.
    set_breaker: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    breaker: "SELECT state, reason, changed_at FROM circuit_breakers WHERE name = $1",
    set_breaker: "INSERT INTO circuit_breakers (name, state, reason, changed_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
         changed_at = CASE WHEN circuit_breakers.state = excluded.state \
         THEN circuit_breakers.changed_at ELSE excluded.changed_at END",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl BreakerStore for SqlMetadata {
    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError> {
        let row: Option<(String, Option<String>, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.breaker)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(state, reason, changed_at_ms)| BreakerRecord {
            name: name.to_owned(),
            open: state == "open",
            reason,
            changed_at_ms,
        }))
    }

    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError> {
        let state = if record.open { "open" } else { "closed" };
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.set_breaker)
                .bind(record.name.as_str())
                .bind(state)
                .bind(record.reason.as_deref())
                .bind(record.changed_at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
