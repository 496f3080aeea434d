//! Settings shared by every role, and opening the stores they name.
//!
//! The binary fills [`Settings`] from flags, env vars (`DATABASE_URL`, `REDIS_URL`,
//! `BUILDLOGS_DATA_DIR`, …) and defaults; tests build it in code. With no URLs at all the
//! embedded default applies: SQLite in `<data dir>/buildlogs.db` holds the queue.

use std::path::PathBuf;
use std::sync::Arc;

use crate::jobs::Broker;
use crate::jobs::broker::BrokerError;
use crate::jobs::redis::RedisBroker;
use crate::jobs::sqlite::SqliteBroker;

#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://…` or `sqlite://…`; `None`: SQLite in the data dir.
    pub database_url: Option<String>,
    /// With it, Redis holds the queue (required with PostgreSQL).
    pub redis_url: Option<String>,
    pub data_dir: PathBuf,
    /// Every Redis key starts with this (several deployments can share one Redis).
    pub redis_prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database_url: None,
            redis_url: None,
            data_dir: PathBuf::from("data"),
            redis_prefix: "buildlogs".into(),
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
}

impl Settings {
    /// The SQLite URL in use when the database is SQLite (explicit or the embedded default).
    pub fn sqlite_url(&self) -> Result<Option<String>, ConfigError> {
        match self.database_url.as_deref() {
            Some(url) if url.starts_with("sqlite:") => Ok(Some(url.to_owned())),
            Some(url) if url.starts_with("postgres:") || url.starts_with("postgresql:") => Ok(None),
            Some(url) => Err(ConfigError::UnknownDatabase(url.to_owned())),
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

    /// The queue broker these settings name: Redis when `REDIS_URL` is set, else SQLite.
    pub async fn open_broker(&self) -> Result<Arc<dyn Broker>, ConfigError> {
        let sqlite = self.sqlite_url()?;
        if let Some(url) = &self.redis_url {
            return Ok(Arc::new(
                RedisBroker::connect(url, &self.redis_prefix).await?,
            ));
        }
        match sqlite {
            Some(url) => Ok(Arc::new(SqliteBroker::connect(&url).await?)),
            None => Err(ConfigError::RedisRequired),
        }
    }
}
