//! Builds ([`BuildStore`]) in SQL: `create_build` registers a job (`running`); `finish_build`
//! commits a final state with one conditional UPDATE (`… WHERE id = $1 AND status =
//! 'running'`), then reads the row back as it is; `builds_page` reads one page of the
//! dashboard's builds list newest first, joined to its trace metadata and artifact, through the
//! primary key or a partial index per filter (`builds_running_id`, `builds_finished_id`,
//! `build_trace_metadata_partial`, `build_trace_metadata_mismatch`).
//!
//! Guarantee: a build leaves `running` once: a later `finish_build` matches no row and returns
//! the build as committed. `finish_build(…, Running, …)` writes nothing; for an unknown build it
//! is [`MetadataError::NoBuild`].

use async_trait::async_trait;

use super::{SqlMetadata, corrupt, on_db, to_u64};
use crate::traces::metadata::{BuildStore, MetadataError};
use crate::traces::model::{Build, BuildListFilter, BuildStatus, BuildSummary, TraceState};

/// `builds` columns, in [`BuildTuple`] order.
macro_rules! build_columns {
    () => {
        "id, token_digest, status, failure_reason, finished_at, created_at"
    };
}

/// A builds list row's columns, in [`SummaryTuple`] order (`b`: builds, `m`: its trace
/// metadata, `a`: its trace artifact).
macro_rules! summary_columns {
    () => {
        "b.id, b.status, b.failure_reason, b.created_at, b.finished_at, m.checksum_valid, \
         COALESCE(m.lost_bytes, 0), m.archived_at, a.size"
    };
}

/// A builds list page from `builds b` ($1 before id, $2 limit), outer-joined to its trace
/// metadata and artifact.
macro_rules! builds_list {
    ($from:literal, $where:literal) => {
        concat!(
            "SELECT ",
            summary_columns!(),
            " FROM ",
            $from,
            " LEFT JOIN build_trace_metadata m ON m.build_id = b.id \
             LEFT JOIN job_artifacts a ON a.build_id = b.id AND a.kind = 'trace' WHERE ",
            $where,
            " ORDER BY b.id DESC LIMIT $2"
        )
    };
}

/// A builds list page from `build_trace_metadata m` (the traces matching `$where`), joined to
/// the build and outer-joined to its artifact.
macro_rules! trace_list {
    ($from:literal, $where:literal) => {
        concat!(
            "SELECT ",
            summary_columns!(),
            " FROM ",
            $from,
            " JOIN builds b ON b.id = m.build_id \
             LEFT JOIN job_artifacts a ON a.build_id = b.id AND a.kind = 'trace' WHERE ",
            $where,
            " AND m.build_id < $1 ORDER BY m.build_id DESC LIMIT $2"
        )
    };
}

type BuildTuple = (i64, String, String, Option<String>, Option<i64>, i64);

type SummaryTuple = (
    i64,
    String,
    Option<String>,
    i64,
    Option<i64>,
    Option<bool>,
    i64,
    Option<i64>,
    Option<i64>,
);

/// One database's statements. Parameters are numbered (`$n`, which SQLite also reads), and
/// numbered the same way on both databases.
struct Statements {
    /// $1 token digest, $2 now → the new build.
    create_build: &'static str,
    /// $1 build → the build.
    build: &'static str,
    /// $1 before id, $2 limit → builds list rows, newest first: every build, running ones,
    /// finished ones, partial logs, checksum mismatches.
    builds_all: &'static str,
    builds_running: &'static str,
    builds_finished: &'static str,
    builds_partial: &'static str,
    builds_mismatch: &'static str,
    /// $1 build, $2 status, $3 failure reason, $4 now → 1 row if the build was running.
    finish_build: &'static str,
}

/// SQLite. The builds list statements name their index (see below); the others are
/// PostgreSQL's too.
const SQLITE: Statements = Statements {
    create_build: concat!(
        "INSERT INTO builds (token_digest, status, created_at, activity_at) \
         VALUES ($1, 'running', $2, $2) RETURNING ",
        build_columns!()
    ),
    build: concat!("SELECT ", build_columns!(), " FROM builds WHERE id = $1"),
    // Each walks one index backwards from `before`: the primary key, or the filter's partial
    // index, named with `INDEXED BY` since SQLite without `ANALYZE` statistics would rather
    // sort every running build (an error, not a slow plan, if the index cannot serve).
    builds_all: builds_list!("builds b", "b.id < $1"),
    builds_running: builds_list!(
        "builds b INDEXED BY builds_running_id",
        "b.status = 'running' AND b.id < $1"
    ),
    builds_finished: builds_list!(
        "builds b INDEXED BY builds_finished_id",
        "b.status <> 'running' AND b.id < $1"
    ),
    builds_partial: trace_list!(
        "build_trace_metadata m INDEXED BY build_trace_metadata_partial",
        "m.lost_bytes > 0"
    ),
    builds_mismatch: trace_list!(
        "build_trace_metadata m INDEXED BY build_trace_metadata_mismatch",
        "m.checksum_valid = false"
    ),
    finish_build: "UPDATE builds SET status = $2, failure_reason = $3, finished_at = $4 \
         WHERE id = $1 AND status = 'running'",
};

/// PostgreSQL: the builds list without `INDEXED BY` (see below), the rest as SQLite's.
const POSTGRES: Statements = Statements {
    create_build: SQLITE.create_build,
    build: SQLITE.build,
    // The same walks; PostgreSQL's planner picks the partial indexes itself (the WHERE repeats
    // their predicates word for word).
    builds_all: SQLITE.builds_all,
    builds_running: builds_list!("builds b", "b.status = 'running' AND b.id < $1"),
    builds_finished: builds_list!("builds b", "b.status <> 'running' AND b.id < $1"),
    builds_partial: trace_list!("build_trace_metadata m", "m.lost_bytes > 0"),
    builds_mismatch: trace_list!("build_trace_metadata m", "m.checksum_valid = false"),
    finish_build: SQLITE.finish_build,
};

#[async_trait]
impl BuildStore for SqlMetadata {
    async fn create_build(&self, token_digest: &str, now_ms: i64) -> Result<Build, MetadataError> {
        let row: BuildTuple = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.create_build)
                .bind(token_digest)
                .bind(now_ms)
                .fetch_one(pool)
                .await?
        });
        to_build(row)
    }

    async fn build(&self, id: i64) -> Result<Option<Build>, MetadataError> {
        let row: Option<BuildTuple> = on_db!(&self.db, |pool, q| {
            sqlx::query_as(q.build)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(to_build).transpose()
    }

    async fn builds_page(
        &self,
        filter: BuildListFilter,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<BuildSummary>, MetadataError> {
        let rows: Vec<SummaryTuple> = on_db!(&self.db, |pool, q| {
            let statement = match filter {
                BuildListFilter::All => q.builds_all,
                BuildListFilter::Running => q.builds_running,
                BuildListFilter::Finished => q.builds_finished,
                BuildListFilter::Partial => q.builds_partial,
                BuildListFilter::Mismatch => q.builds_mismatch,
            };
            sqlx::query_as(statement)
                .bind(before_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(to_summary).collect()
    }

    async fn finish_build(
        &self,
        id: i64,
        status: BuildStatus,
        failure_reason: Option<&str>,
        now_ms: i64,
    ) -> Result<Build, MetadataError> {
        // `running` is no final state: nothing to commit, the build is returned as it is.
        if status.is_finished() {
            on_db!(&self.db, |pool, q| {
                sqlx::query(q.finish_build)
                    .bind(id)
                    .bind(status.as_str())
                    .bind(failure_reason)
                    .bind(now_ms)
                    .execute(pool)
                    .await?;
            });
        }
        // Whether this call or an earlier one committed the state, this is the build now.
        self.build(id).await?.ok_or(MetadataError::NoBuild(id))
    }
}

pub(super) fn to_build(row: BuildTuple) -> Result<Build, MetadataError> {
    let (id, token_digest, status, failure_reason, finished_at_ms, created_at_ms) = row;
    Ok(Build {
        id,
        token_digest,
        status: status.parse().map_err(|e: String| corrupt(id, e))?,
        failure_reason,
        finished_at_ms,
        created_at_ms,
    })
}

fn to_summary(row: SummaryTuple) -> Result<BuildSummary, MetadataError> {
    let (id, status, failure_reason, created, finished, valid, lost, archived_at, size) = row;
    let status: BuildStatus = status.parse().map_err(|e: String| corrupt(id, e))?;
    // As `TraceService::trace_state` decides it, from the same rows.
    let trace_state = match (size, archived_at) {
        (Some(_), _) => TraceState::Archived,
        (None, Some(_)) if status.is_finished() => TraceState::Expired,
        _ if status.is_finished() => TraceState::Flushing,
        _ => TraceState::Live,
    };
    Ok(BuildSummary {
        id,
        status,
        failure_reason,
        created_at_ms: created,
        finished_at_ms: finished,
        trace_state,
        archived_size: size.map(|n| to_u64(id, "artifact size", n)).transpose()?,
        checksum_valid: valid,
        lost_bytes: to_u64(id, "lost bytes", lost)?,
    })
}
