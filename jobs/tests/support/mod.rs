//! Shared fixtures of the job system's tests: a real Redis with a key prefix per test, a real
//! SQLite file per test. Nothing here flushes or drops what another test may use.
#![allow(dead_code)]

use std::sync::Arc;

use buildlogs_jobs::Broker;
use buildlogs_jobs::redis::RedisBroker;
use buildlogs_jobs::sqlite::SqliteBroker;

mod redis_keys;
pub mod runtime;
pub mod wait;

pub use redis_keys::{START_REDIS, delete_prefix, redis_keys_with_ttl, redis_url, unique_prefix};

/// A broker under test plus whatever must live as long as it (temp dir, key prefix).
pub struct TestBroker {
    pub broker: Arc<dyn Broker>,
    pub kind: &'static str,
    cleanup: Cleanup,
}

enum Cleanup {
    Redis {
        url: String,
        prefix: String,
    },
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
}

impl TestBroker {
    pub async fn redis(test: &str) -> Self {
        let prefix = unique_prefix(test);
        let broker = RedisBroker::connect(&redis_url(), &prefix)
            .await
            .expect(START_REDIS);
        Self {
            broker: Arc::new(broker),
            kind: "redis",
            cleanup: Cleanup::Redis {
                url: redis_url(),
                prefix,
            },
        }
    }

    pub async fn sqlite(_test: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("queue.db").display());
        let broker = SqliteBroker::connect(&url).await.expect("sqlite broker");
        Self {
            broker: Arc::new(broker),
            kind: "sqlite",
            cleanup: Cleanup::Sqlite { url, _dir: dir },
        }
    }

    /// The prefix of a Redis broker (for processes that must share it).
    pub fn redis_prefix(&self) -> Option<&str> {
        match &self.cleanup {
            Cleanup::Redis { prefix, .. } => Some(prefix),
            Cleanup::Sqlite { .. } => None,
        }
    }

    /// Everything the broker stores, one line each, sorted: Redis, every key under the prefix
    /// (the prefix cut off) with `ttl` or `no ttl`; SQLite, every row of the queue tables.
    pub async fn stored(&self) -> Vec<String> {
        let mut out = match &self.cleanup {
            Cleanup::Redis { url, prefix } => redis_keys_with_ttl(url, prefix).await,
            Cleanup::Sqlite { url, .. } => {
                let pool = sqlx::SqlitePool::connect(url).await.expect("sqlite");
                let mut out = Vec::new();
                for (table, sql) in [
                    (
                        "jobs",
                        "SELECT queue || ' ' || id || ' ' || state FROM jobs",
                    ),
                    (
                        "job_dedup",
                        "SELECT queue || ' ' || dedup_key || ' ' || holder_id FROM job_dedup",
                    ),
                    (
                        "job_reruns",
                        "SELECT queue || ' ' || holder_id FROM job_reruns",
                    ),
                    ("job_queues", "SELECT queue FROM job_queues"),
                    ("job_cron", "SELECT queue || ' ' || schedule FROM job_cron"),
                ] {
                    let rows: Vec<String> = sqlx::query_scalar(sql)
                        .fetch_all(&pool)
                        .await
                        .expect("queue table");
                    out.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
                }
                pool.close().await;
                out
            }
        };
        out.sort();
        out
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Cleanup::Redis { url, prefix } = &self.cleanup {
            delete_prefix(url, prefix);
        }
    }
}

/// Runs the same async test body against each broker.
#[macro_export]
macro_rules! on_both_brokers {
    ($($name:ident),* $(,)?) => {
        mod redis_broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = $crate::support::TestBroker::redis(stringify!($name)).await;
                    super::$name(&b).await;
                }
            )*
        }
        mod sqlite_broker {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let b = $crate::support::TestBroker::sqlite(stringify!($name)).await;
                    super::$name(&b).await;
                }
            )*
        }
    };
}
