//! Stuck builds ([`StuckBuildStore`]) in SQL: `idle_running_builds` walks the partial index
//! `builds_running_activity` (running builds only) in (activity_at, id) order;
//! `overdue_pending_states` joins running builds to their pending states; `record_activity`
//! moves `activity_at` forward only.

use async_trait::async_trait;

use super::{SqlMetadata, on_db};
use crate::traces::metadata::{MetadataError, StuckBuildStore};
use crate::traces::model::IdleBuild;

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 idle before, $2 after activity_at, $3 after id, $4 limit → id, activity_at,
    /// created_at of idle running builds without a pending state.
    idle_running_builds: &'static str,
    /// $1 pending state created before, $2 after id, $3 limit → build ids.
    overdue_pending_states: &'static str,
    /// $1 build, $2 activity at.
    record_activity: &'static str,
}

/// SQLite's statements, which PostgreSQL runs as they are.
const SQLITE: Statements = Statements {
    // `status = 'running'` repeats the partial index `builds_running_activity`'s predicate;
    // the row-value comparison walks it in (activity_at, id) order from the key.
    idle_running_builds: "SELECT id, activity_at, created_at FROM builds \
         WHERE status = 'running' AND activity_at < $1 AND (activity_at, id) > ($2, $3) \
         AND NOT EXISTS (SELECT 1 FROM build_pending_states p WHERE p.build_id = builds.id) \
         ORDER BY activity_at, id LIMIT $4",
    overdue_pending_states: "SELECT b.id FROM builds b \
         JOIN build_pending_states p ON p.build_id = b.id \
         WHERE b.status = 'running' AND p.created_at < $1 AND b.id > $2 \
         ORDER BY b.id LIMIT $3",
    record_activity: "UPDATE builds SET activity_at = $2 WHERE id = $1 AND activity_at < $2",
};

const POSTGRES: Statements = SQLITE;

#[async_trait]
impl StuckBuildStore for SqlMetadata {
    async fn idle_running_builds(
        &self,
        idle_before_ms: i64,
        after: (i64, i64),
        limit: u32,
    ) -> Result<Vec<IdleBuild>, MetadataError> {
        let rows: Vec<(i64, i64, i64)> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.idle_running_builds)
                .bind(idle_before_ms)
                .bind(after.0)
                .bind(after.1)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, activity_at_ms, created_at_ms)| IdleBuild {
                id,
                activity_at_ms,
                created_at_ms,
            })
            .collect())
    }

    async fn overdue_pending_states(
        &self,
        created_before_ms: i64,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<i64>, MetadataError> {
        Ok(on_db!(&self.db, |pool, q| {
            sqlx::query_scalar(q.overdue_pending_states)
                .bind(created_before_ms)
                .bind(after_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    async fn record_activity(&self, build_id: i64, at_ms: i64) -> Result<(), MetadataError> {
        on_db!(&self.db, |pool, q| {
            sqlx::query(q.record_activity)
                .bind(build_id)
                .bind(at_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
