//! What the SQL stores ([`super::sql_live`], [`super::sql_metadata`]) share: a pool of either
//! database, and [`on_db!`], which lets a store write its logic once and expands it per driver
//! with that database's statements (runtime-checked `sqlx::query`, no `DATABASE_URL` at build
//! time). Each store (each file of [`super::sql_metadata`]) declares its own `Statements` struct
//! and `SQLITE` / `POSTGRES` constants; the macro picks them up where it is used.

use sqlx::{PgPool, SqlitePool};

pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Expands `$body` once per database, with `$pool` that database's pool and `$q` the calling
/// module's `SQLITE` or `POSTGRES` statements: the logic is written (and reviewed) once,
/// type-checked against each driver.
macro_rules! on_db {
    ($db:expr, |$pool:ident, $q:ident| $body:block) => {
        match $db {
            $crate::stores::sql::Db::Sqlite($pool) => {
                let $q = &SQLITE;
                $body
            }
            $crate::stores::sql::Db::Postgres($pool) => {
                let $q = &POSTGRES;
                $body
            }
        }
    };
}

pub(crate) use on_db;
