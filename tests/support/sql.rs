//! SQL databases for tests, migrated, one per test, so tests run in parallel:
//! - [`TestSqlite`]: a fresh SQLite file in a temp dir (deleted with it);
//! - [`TestPostgres`]: a fresh schema on the shared server (`BUILDLOGS_TEST_DATABASE_URL`), every
//!   pooled connection's `search_path` set to it; dropped (best effort) when the value is. Nothing
//!   outside that schema is created or dropped.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use buildlogs::stores::sql_live::{migrate_postgres, migrate_sqlite};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, SqlitePool};

pub fn database_url() -> String {
    std::env::var("BUILDLOGS_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A SQLite file of its own, migrated (`migrations/sqlite`), in WAL mode like the embedded stack.
pub struct TestSqlite {
    pub pool: SqlitePool,
    _dir: tempfile::TempDir,
}

impl TestSqlite {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("test.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("sqlite pool");
        migrate_sqlite(&pool).await.expect("sqlite migrations");
        Self { pool, _dir: dir }
    }
}

/// A PostgreSQL schema of its own, migrated (`migrations/postgres`).
pub struct TestPostgres {
    /// Declared before the schema: closed first.
    pub pool: PgPool,
    schema: Schema,
}

impl TestPostgres {
    pub async fn new(test: &str) -> Self {
        let url = database_url();
        let name = unique_schema(test);
        let mut admin = PgConnection::connect(&url)
            .await
            .expect("PostgreSQL at BUILDLOGS_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test, trust auth): start it, or run bash .ci/run, which does");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        let _ = admin.close().await;
        // From here on `schema` owns it: a failure below still drops it.
        let schema = Schema { url, name };
        let options = PgConnectOptions::from_str(&schema.url)
            .expect("postgres url")
            .options([("search_path", schema.name.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options)
            .await
            .expect("postgres pool");
        migrate_postgres(&pool).await.expect("postgres migrations");
        Self { pool, schema }
    }

    pub fn schema(&self) -> &str {
        &self.schema.name
    }
}

/// A test's schema; dropping the value drops it (best effort).
struct Schema {
    url: String,
    name: String,
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside the test's runtime (and during a panic): use a thread of our own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&url).await.ok()?;
                // A lock held by a connection the test leaked must not hang the suite.
                sqlx::raw_sql(AssertSqlSafe(format!(
                    "SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        });
        let _ = dropped.join();
    }
}

/// `t_<test name, cut>_<ulid>`: lower case, within PostgreSQL's 63-byte identifiers.
fn unique_schema(test: &str) -> String {
    let name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    format!(
        "t_{name}_{}",
        ulid::Ulid::new().to_string().to_ascii_lowercase()
    )
}

/// Either test database, for fixtures and assertions that need plain SQL on both.
pub enum TestSql {
    Sqlite(TestSqlite),
    Postgres(TestPostgres),
}

impl TestSql {
    pub fn kind(&self) -> &'static str {
        match self {
            TestSql::Sqlite(_) => "sqlite",
            TestSql::Postgres(_) => "postgres",
        }
    }

    /// Runs statements (no parameters; valid on both databases).
    pub async fn execute(&self, sql: &'static str) {
        match self {
            TestSql::Sqlite(db) => sqlx::raw_sql(sql).execute(&db.pool).await.map(drop),
            TestSql::Postgres(db) => sqlx::raw_sql(sql).execute(&db.pool).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// The first column of the first row, as an integer (`None`: no row, or NULL).
    pub async fn scalar_i64(&self, sql: &'static str) -> Option<i64> {
        match self {
            TestSql::Sqlite(db) => sqlx::query_scalar::<_, Option<i64>>(sql)
                .fetch_optional(&db.pool)
                .await
                .map(Option::flatten),
            TestSql::Postgres(db) => sqlx::query_scalar::<_, Option<i64>>(sql)
                .fetch_optional(&db.pool)
                .await
                .map(Option::flatten),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}
