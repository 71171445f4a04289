//! Connections: the two-backend `MultiConnection`, the r2d2 manager that picks the backend from
//! the URL and sets SQLite pragmas, embedded migrations, and write transactions.

use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::config::{Backend, Target};
use crate::error::{Error, Result};

/// SQLite migrations (`migrations/sqlite` at the repository root).
pub(crate) const SQLITE_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/sqlite");
/// PostgreSQL migrations (`migrations/postgres` at the repository root).
pub(crate) const POSTGRES_MIGRATIONS: EmbeddedMigrations =
    embed_migrations!("../../migrations/postgres");

/// Milliseconds an SQLite connection waits for a lock before failing with `SQLITE_BUSY`.
pub(crate) const SQLITE_BUSY_TIMEOUT_MS: u32 = 5000;

/// The row of a lookup by a unique key, loaded with `load` instead of diesel's `first()`.
///
/// `first()` adds `LIMIT ?` with the 1 as a bound parameter, and SQLite (3.53 here) plans a
/// statement whose `LIMIT` is a bound value for that value and marks the parameter so that
/// binding it again expires the statement. Every execution of a cached `first()`
/// statement was thus compiled again (`sqlite3Reprepare`, most of the SQL compilation in the
/// profile of docs/benchmarks.md). On a unique key the `LIMIT` is useless anyway.
pub(crate) fn unique_row<T>(rows: Vec<T>) -> Option<T> {
    rows.into_iter().next()
}

/// Arbitrary key of the PostgreSQL advisory lock held while migrating, so that several
/// processes starting at once do not run the same migration twice.
const MIGRATION_LOCK_KEY: i64 = 0x0066_6c6f_7772_756e; // "flowrun"

/// One database connection, SQLite or PostgreSQL. Queries written against it run on both.
#[derive(diesel::MultiConnection)]
pub(crate) enum DbConn {
    /// An SQLite connection.
    Sqlite(SqliteConnection),
    /// A PostgreSQL connection.
    Postgres(PgConnection),
}

/// Runs the same diesel code on the concrete connection of either backend, for statements the
/// multi-backend cannot express (`ON CONFLICT`, migrations). `$c` names the inner connection.
macro_rules! on_backend {
    ($conn:expr, |$c:ident| $body:expr) => {
        match $conn {
            $crate::conn::DbConn::Sqlite($c) => $body,
            $crate::conn::DbConn::Postgres($c) => $body,
        }
    };
}
pub(crate) use on_backend;

impl DbConn {
    /// Which backend this connection talks to.
    pub(crate) fn backend(&self) -> Backend {
        match self {
            DbConn::Sqlite(_) => Backend::Sqlite,
            DbConn::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Largest SQLite WAL file kept after the WAL starts over (`journal_size_limit`; the writer's
/// checkpointer makes it start over, see `writer::spawn_checkpointer`).
pub(crate) const WAL_SIZE_LIMIT: i64 = 64 * 1024 * 1024;

/// Opens one connection to `target`, with the per-connection SQLite pragmas applied.
pub(crate) fn connect(target: &Target) -> Result<DbConn> {
    match target {
        Target::Sqlite(path) => {
            let mut conn = SqliteConnection::establish(path)?;
            // busy_timeout first, so that switching to WAL waits for other connections.
            conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS};
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = NORMAL;
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};
                 PRAGMA foreign_keys = ON;"
            ))?;
            Ok(DbConn::Sqlite(conn))
        }
        Target::Postgres(url) => Ok(DbConn::Postgres(PgConnection::establish(url)?)),
    }
}

/// The r2d2 connection manager: the backend is fixed by the URL scheme (no trial and error).
#[derive(Clone)]
pub(crate) struct Manager {
    target: Target,
}

impl Manager {
    pub(crate) fn new(target: Target) -> Self {
        Self { target }
    }
}

/// Why the pool could not open or reuse a connection.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ManagerError(String);

impl r2d2::ManageConnection for Manager {
    type Connection = DbConn;
    type Error = ManagerError;

    fn connect(&self) -> std::result::Result<DbConn, ManagerError> {
        connect(&self.target).map_err(|e| ManagerError(e.to_string()))
    }

    fn is_valid(&self, conn: &mut DbConn) -> std::result::Result<(), ManagerError> {
        conn.batch_execute("SELECT 1")
            .map_err(|e| ManagerError(e.to_string()))
    }

    fn has_broken(&self, conn: &mut DbConn) -> bool {
        <DbConn as Connection>::TransactionManager::is_broken_transaction_manager(conn)
    }
}

/// The pool type.
pub(crate) type Pool = r2d2::Pool<Manager>;
/// A connection checked out of the pool.
pub(crate) type PooledConn = r2d2::PooledConnection<Manager>;

/// Builds the pool and checks that one connection can be opened.
///
/// Only PostgreSQL connections are checked (`SELECT 1`) at every checkout: a server restart or
/// an idle timeout can break them. An SQLite connection is a handle on a local file that does
/// not go stale, and the check cost an SQL compilation and run per checkout; a connection
/// whose transaction broke is still discarded when it is returned (`has_broken`).
pub(crate) fn build_pool(target: Target, size: u32) -> Result<Pool> {
    let test_on_check_out = matches!(target, Target::Postgres(_));
    let pool = r2d2::Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(1))
        .test_on_check_out(test_on_check_out)
        .connection_timeout(Duration::from_secs(30))
        .build(Manager::new(target))?;
    Ok(pool)
}

/// Applies pending migrations; returns the versions applied now.
pub(crate) fn run_migrations(conn: &mut DbConn) -> Result<Vec<String>> {
    fn versions(
        applied: std::result::Result<
            Vec<diesel::migration::MigrationVersion<'_>>,
            BoxedMigrationError,
        >,
    ) -> Result<Vec<String>> {
        applied
            .map(|v| v.iter().map(ToString::to_string).collect())
            .map_err(|e| Error::Migration(e.to_string()))
    }
    type BoxedMigrationError = Box<dyn std::error::Error + Send + Sync>;
    match conn {
        DbConn::Sqlite(c) => versions(c.run_pending_migrations(SQLITE_MIGRATIONS)),
        DbConn::Postgres(c) => {
            diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK_KEY})"))
                .execute(c)?;
            let applied = versions(c.run_pending_migrations(POSTGRES_MIGRATIONS));
            let unlocked =
                diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})"))
                    .execute(c);
            let applied = applied?;
            unlocked?;
            Ok(applied)
        }
    }
}

/// Runs `f` in a transaction meant to write.
///
/// On SQLite the transaction is `BEGIN IMMEDIATE`: it takes the write lock up front (waiting up
/// to the busy timeout), so a read-then-write transaction cannot fail half-way with
/// `SQLITE_BUSY` and concurrent writers are serialised. On PostgreSQL it is a normal
/// transaction; callers lock the rows they check with `FOR UPDATE`.
pub(crate) fn write_transaction<T>(
    conn: &mut DbConn,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    match conn.backend() {
        Backend::Postgres => conn.transaction(f),
        Backend::Sqlite => {
            if let DbConn::Sqlite(c) = &mut *conn {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
            }
            let outcome = f(conn);
            match outcome {
                Ok(value) => {
                    <DbConn as Connection>::TransactionManager::commit_transaction(conn)?;
                    Ok(value)
                }
                Err(err) => {
                    if let Err(rollback) =
                        <DbConn as Connection>::TransactionManager::rollback_transaction(conn)
                    {
                        log::warn!("rollback after a failed write transaction failed: {rollback}");
                    }
                    Err(err)
                }
            }
        }
    }
}
