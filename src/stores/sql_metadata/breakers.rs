//! Circuit breaker records ([`BreakerStore`]) in SQL: one `circuit_breakers` row per name,
//! upserted; `changed_at` moves only when the state does. Each change also goes to
//! `circuit_breaker_events`, keyed by (name, changed at, state) so that every process reporting
//! the same change writes one row; the newest [`BREAKER_HISTORY_KEPT`] per name are kept.

use async_trait::async_trait;

use super::{SqlMetadata, on_db};
use crate::traces::metadata::{BREAKER_HISTORY_KEPT, BreakerRecord, BreakerStore, MetadataError};

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    begin: &'static str,
    /// $1 name → state, reason, changed at.
    breaker: &'static str,
    /// $1 name, $2 state, $3 reason, $4 now → the state, reason and changed_at now stored.
    set_breaker: &'static str,
    /// $1 name, $2 state, $3 reason, $4 at: a change, once (a repeat does nothing).
    insert_breaker_event: &'static str,
    /// $1 name, $2 changes kept: drops the older ones.
    trim_breaker_events: &'static str,
    /// $1 name, $2 limit → state, reason, at, newest first.
    breaker_history: &'static str,
}

const SQLITE: Statements = Statements {
    begin: super::SQLITE_BEGIN,
    breaker: "SELECT state, reason, changed_at FROM circuit_breakers WHERE name = $1",
    set_breaker: "INSERT INTO circuit_breakers (name, state, reason, changed_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
         changed_at = CASE WHEN circuit_breakers.state = excluded.state \
         THEN circuit_breakers.changed_at ELSE excluded.changed_at END \
         RETURNING state, reason, changed_at",
    insert_breaker_event: "INSERT INTO circuit_breaker_events (name, state, reason, at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (name, at, state) DO NOTHING",
    trim_breaker_events: "DELETE FROM circuit_breaker_events WHERE name = $1 AND id < \
         (SELECT id FROM circuit_breaker_events WHERE name = $1 ORDER BY id DESC \
          LIMIT 1 OFFSET $2 - 1)",
    breaker_history: "SELECT state, reason, at FROM circuit_breaker_events WHERE name = $1 \
         ORDER BY id DESC LIMIT $2",
};

const POSTGRES: Statements = Statements {
    begin: super::POSTGRES_BEGIN,
    ..SQLITE
};

fn record(
    name: &str,
    (state, reason, changed_at_ms): (String, Option<String>, i64),
) -> BreakerRecord {
    BreakerRecord {
        name: name.to_owned(),
        open: state == "open",
        reason,
        changed_at_ms,
    }
}

#[async_trait]
impl BreakerStore for SqlMetadata {
    async fn breaker(&self, name: &str) -> Result<Option<BreakerRecord>, MetadataError> {
        let row: Option<(String, Option<String>, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.breaker)
                .bind(name)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|row| record(name, row)))
    }

    async fn set_breaker(&self, record: &BreakerRecord) -> Result<(), MetadataError> {
        let state = if record.open { "open" } else { "closed" };
        let name = record.name.as_str();
        on_db!(&self.db, |pool, q| {
            let mut tx = pool.begin_with(q.begin).await?;
            // The change as stored: a process reporting a state already stored gets the first
            // report's time back, so its history row is the same one and is kept once.
            let (state, reason, at): (String, Option<String>, i64) = sqlx::query_as(q.set_breaker)
                .bind(name)
                .bind(state)
                .bind(record.reason.as_deref())
                .bind(record.changed_at_ms)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(q.insert_breaker_event)
                .bind(name)
                .bind(state)
                .bind(reason)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            sqlx::query(q.trim_breaker_events)
                .bind(name)
                .bind(i64::from(BREAKER_HISTORY_KEPT))
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    async fn breaker_history(
        &self,
        name: &str,
        limit: u32,
    ) -> Result<Vec<BreakerRecord>, MetadataError> {
        let rows: Vec<(String, Option<String>, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.breaker_history)
                .bind(name)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|row| record(name, row)).collect())
    }
}
