//! One process at a time opens a new SQLite file and migrates it. Processes that start together
//! on one file (the embedded stack's `web` and `worker`) would otherwise race twice: switching a
//! new file to WAL at connect answers "database is locked" to all but one of them (SQLite does
//! not wait for that lock), and each migrator reads "nothing applied" and applies the same
//! migration twice (sqlx locks migrations on PostgreSQL, not on SQLite). The lock is an
//! exclusive `flock` on the database file itself: independent of the POSIX locks SQLite takes
//! on it, released when the file closes (also when a process dies), and nothing is left behind.
//! An in-memory database has one connection and needs none.

use std::fs::File;
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

use crate::broker::BrokerError;

/// Held while a file is opened or migrated; dropping it releases the lock.
#[derive(Debug)]
pub struct MigrationLock {
    _file: Option<File>,
}

/// Waits for the lock of `pool`'s database file (none for an in-memory database).
pub async fn lock_for_migrations(pool: &SqlitePool) -> Result<MigrationLock, BrokerError> {
    let path = pool.connect_options().get_filename().to_owned();
    if is_in_memory(&path) {
        return Ok(MigrationLock { _file: None });
    }
    lock_file(path).await
}

/// Waits for the lock of the database file at `path`, creating the file (empty: SQLite opens an
/// empty file as a new database) if it is not there yet.
pub(super) async fn lock_file(path: PathBuf) -> Result<MigrationLock, BrokerError> {
    let file = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.lock()?;
        Ok(file)
    })
    .await
    .map_err(|e| BrokerError::Migrate(sqlx::migrate::MigrateError::Source(Box::new(e))))?
    .map_err(|e| BrokerError::Migrate(sqlx::migrate::MigrateError::Source(Box::new(e))))?;
    Ok(MigrationLock { _file: Some(file) })
}

pub(super) fn is_in_memory(path: &Path) -> bool {
    path.as_os_str().is_empty() || path.as_os_str() == ":memory:"
}
