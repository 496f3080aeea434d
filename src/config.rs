//! Settings shared by every role, and opening the stores they name.
//!
//! The binary fills [`Settings`] from flags, env vars (`DATABASE_URL`, `REDIS_URL`,
//! `BUILDLOGS_DATA_DIR`, …) and defaults; tests build it in code. With no URLs at all the
//! embedded default applies: SQLite in `<data dir>/buildlogs.db` holds the queue.
//!
//! URLs may hold passwords: they are shown (errors, logs, `Debug`) only through
//! [`crate::redact::url`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::jobs::broker::BrokerError;
use crate::jobs::redis::{self as redis_broker, RedisBroker};
use crate::jobs::sqlite::SqliteBroker;
use crate::jobs::{Broker, Clock};
use crate::stores::objects::{ObjectStoreError, open_object_store};
use crate::stores::redis_live::RedisLiveChunks;
use crate::stores::sql_live::{SqlLiveChunks, migrate_postgres, migrate_sqlite};
use crate::stores::sql_metadata::SqlMetadata;
use crate::traces::live::LiveChunkStore;
use crate::traces::metadata::MetadataStore;
use crate::traces::objects::ObjectStorage;
use crate::traces::stores::TraceStores;

/// Connections to PostgreSQL per process: a web process's appends are one short query each.
const PG_MAX_CONNECTIONS: u32 = 16;

#[derive(Clone)]
pub struct Settings {
    /// `postgres://…` or `sqlite://…`; `None`: SQLite in the data dir.
    pub database_url: Option<String>,
    /// With it, Redis holds the queue (required with PostgreSQL).
    pub redis_url: Option<String>,
    pub data_dir: PathBuf,
    /// Every Redis key starts with this (several deployments can share one Redis).
    pub redis_prefix: String,
    /// `file:///…` or `s3://bucket/prefix`; `None`: `<data dir>/objects`.
    pub object_store_url: Option<String>,
    /// How long a final PUT waits (202) for live chunks before its state is committed anyway;
    /// the web role answers PUTs by it and the worker's stuck-build sweep commits pending
    /// states older than it (`BUILDLOGS_ACCEPT_TIMEOUT`).
    pub accept_timeout: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::optional_url;
        f.debug_struct("Settings")
            .field("database_url", &optional_url(&self.database_url))
            .field("redis_url", &optional_url(&self.redis_url))
            .field("data_dir", &self.data_dir)
            .field("redis_prefix", &self.redis_prefix)
            .field("object_store_url", &optional_url(&self.object_store_url))
            .finish()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            data_dir: PathBuf::from("data"),
            redis_prefix: "buildlogs".into(),
            object_store_url: None,
            accept_timeout: crate::traces::service::DEFAULT_ACCEPT_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "REDIS_URL is required when DATABASE_URL is PostgreSQL (the queue and live chunks live in Redis)"
    )]
    RedisRequired,
    #[error("DATABASE_URL {0:?}: expected postgres://… or sqlite://…")]
    UnknownDatabase(String),
    #[error("data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("opening the queue broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("connecting to PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("connecting to Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("object store: {0}")]
    Objects(#[from] ObjectStoreError),
}

/// The stores a process works on, opened from the settings.
pub struct Stack {
    pub broker: Arc<dyn Broker>,
    pub meta: Arc<dyn MetadataStore>,
    /// Live chunk bytes: in Redis, or in the database (embedded); it says which.
    pub live: Arc<dyn LiveChunkStore>,
    pub objects: Arc<dyn ObjectStorage>,
    /// Where `objects` are (`file:///…` or `s3://…`, secrets removed): for logs.
    pub objects_at: String,
}

impl Stack {
    /// The stores the trace services work on, with `clock`.
    pub fn trace_stores(&self, clock: Arc<dyn Clock>) -> TraceStores {
        TraceStores {
            meta: self.meta.clone(),
            live: self.live.clone(),
            objects: self.objects.clone(),
            clock,
        }
    }
}

impl Settings {
    /// The SQLite URL in use when the database is SQLite (explicit or the embedded default).
    pub fn sqlite_url(&self) -> Result<Option<String>, ConfigError> {
        match self.database_url.as_deref() {
            Some(url) if url.starts_with("sqlite:") => Ok(Some(url.to_owned())),
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => Ok(None),
            Some(url) => Err(ConfigError::UnknownDatabase(crate::redact::url(url))),
            None => {
                std::fs::create_dir_all(&self.data_dir).map_err(|source| ConfigError::DataDir {
                    path: self.data_dir.clone(),
                    source,
                })?;
                Ok(Some(format!(
                    "sqlite://{}",
                    self.data_dir.join("buildlogs.db").display()
                )))
            }
        }
    }

    /// Every store, migrated: the embedded default (one SQLite file for metadata, live chunks and
    /// the queue) without `REDIS_URL`; with it, Redis holds live chunks and the queue, and the
    /// metadata is in SQLite or PostgreSQL.
    pub async fn open_stack(&self) -> Result<Stack, ConfigError> {
        let sqlite = self.sqlite_url()?;
        let opened = open_object_store(self.object_store_url.as_deref(), &self.data_dir)?;
        // Debug: the CLI opens the stack on every call; the roles log `objects_at` at start.
        tracing::debug!(objects = %opened.description, "object store opened");
        let (objects, objects_at) = (opened.store, opened.description);
        match (sqlite, &self.redis_url) {
            (Some(url), None) => {
                let broker = SqliteBroker::connect(&url).await?;
                let pool = broker.pool().clone();
                migrate_sqlite(&pool).await?;
                Ok(Stack {
                    broker: Arc::new(broker),
                    meta: Arc::new(SqlMetadata::sqlite(pool.clone())),
                    live: Arc::new(SqlLiveChunks::sqlite(pool)),
                    objects,
                    objects_at,
                })
            }
            (sqlite, Some(redis_url)) => {
                let meta: Arc<dyn MetadataStore> = match sqlite {
                    // The broker's connect opens the file in WAL mode (and adds its tables).
                    Some(url) => {
                        let pool = SqliteBroker::connect(&url).await?.pool().clone();
                        migrate_sqlite(&pool).await?;
                        Arc::new(SqlMetadata::sqlite(pool))
                    }
                    None => {
                        let url = self.database_url.as_deref().unwrap_or_default();
                        let pool = PgPoolOptions::new()
                            .max_connections(PG_MAX_CONNECTIONS)
                            .connect(url)
                            .await?;
                        migrate_postgres(&pool).await?;
                        Arc::new(SqlMetadata::postgres(pool))
                    }
                };
                let conn = redis_broker::connection(redis_url).await?;
                Ok(Stack {
                    broker: Arc::new(RedisBroker::new(conn.clone(), &self.redis_prefix)),
                    meta,
                    live: Arc::new(RedisLiveChunks::new(conn, &self.redis_prefix)),
                    objects,
                    objects_at,
                })
            }
            (None, None) => Err(ConfigError::RedisRequired),
        }
    }

    /// The queue broker these settings name: Redis when `REDIS_URL` is set, else SQLite.
    pub async fn open_broker(&self) -> Result<Arc<dyn Broker>, ConfigError> {
        if let Some(url) = &self.redis_url {
            return Ok(Arc::new(
                RedisBroker::connect(url, &self.redis_prefix).await?,
            ));
        }
        match self.sqlite_url()? {
            Some(url) => Ok(Arc::new(SqliteBroker::connect(&url).await?)),
            None => Err(ConfigError::RedisRequired),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Settings;

    #[test]
    fn database_and_redis_passwords_are_never_shown() {
        let settings = Settings {
            database_url: Some("mysql://app:hunter2@db/ci".into()),
            redis_url: Some("redis://:hunter2@cache:6379".into()),
            object_store_url: Some("s3://bucket/logs?secret=hunter2".into()),
            ..Settings::default()
        };
        let Err(e) = settings.sqlite_url() else {
            panic!("mysql is refused");
        };
        let message = e.to_string();
        assert!(message.contains("mysql://<redacted>@db/ci"), "{message}");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://<redacted>@cache:6379"), "{debug}");
    }
}
