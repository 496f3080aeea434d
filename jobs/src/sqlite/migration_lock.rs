//! One process at a time opens a new SQLite file and migrates it. Processes that start together
//! on one file (the embedded stack's `web` and `worker`) would otherwise race twice: switching a
//! new file to WAL at connect answers "database is locked" to all but one of them (SQLite does
//! not wait for that lock), and each migrator reads "nothing applied" and applies the same
//! migration twice (sqlx locks migrations on PostgreSQL, not on SQLite).
//!
//! The lock is an exclusive `flock` on the directory that holds the file: released when it is
//! closed (also when a process dies), and nothing is left behind. Never on the database file
//! itself: closing any descriptor of that file drops every POSIX lock the process holds on it,
//! SQLite's own included, and a writer in another process then corrupts the file (it did,
//! in the browser tests: "database disk image is malformed"). An in-memory database has one
//! connection and needs none.

use std::fs::File;
use std::path::{Path, PathBuf};

use sqlx::SqlitePool;

use crate::broker::BrokerError;

/// Held while a file is opened or migrated; dropping it releases the lock.
#[derive(Debug)]
pub struct MigrationLock {
    _dir: Option<File>,
}

/// Waits for the migration lock of `pool`'s database file (none for an in-memory database).
pub async fn lock_for_migrations(pool: &SqlitePool) -> Result<MigrationLock, BrokerError> {
    let path = pool.connect_options().get_filename().to_owned();
    if is_in_memory(&path) {
        return Ok(MigrationLock { _dir: None });
    }
    lock_file(path).await
}

/// Waits for the migration lock of the database file at `path` (it need not exist yet).
pub(super) async fn lock_file(path: PathBuf) -> Result<MigrationLock, BrokerError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let locked = tokio::task::spawn_blocking(move || -> std::io::Result<File> {
        let dir = File::open(&dir)?;
        dir.lock()?;
        Ok(dir)
    })
    .await
    .map_err(|e| BrokerError::Migrate(sqlx::migrate::MigrateError::Source(Box::new(e))))?
    .map_err(|e| BrokerError::Migrate(sqlx::migrate::MigrateError::Source(Box::new(e))))?;
    Ok(MigrationLock { _dir: Some(locked) })
}

pub(super) fn is_in_memory(path: &Path) -> bool {
    path.as_os_str().is_empty() || path.as_os_str() == ":memory:"
}
