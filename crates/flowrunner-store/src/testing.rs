//! Fresh databases for tests, in this crate and others (e.g. the HTTP layer's tests).
//!
//! ```no_run
//! # async fn demo() -> flowrunner_store::Result<()> {
//! use flowrunner_store::testing::TestDatabase;
//! // Always available: an SQLite file in a temporary directory, removed on drop.
//! let db = TestDatabase::sqlite()?;
//! let store = db.open().await?;
//! // Only when FLOWRUNNER_TEST_POSTGRES_URL points at a reachable server (otherwise prints
//! // the skip message and returns None): a new database, dropped on drop.
//! if let Some(pg) = TestDatabase::postgres()? {
//!     let store = pg.open().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Keep the `TestDatabase` alive for as long as the store is used; declare it before the store
//! so that the store is dropped first.
//!
//! To write a test once and run it on both backends, use [`backend_tests!`](crate::backend_tests).

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};

use crate::config::{Backend, StoreConfig, redact_url};
use crate::crypto::generate_secret_key;
use crate::error::{Error, Result};
use crate::store::{BlockingStore, Store};

/// Environment variable holding an admin URL of a PostgreSQL server for tests, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. The user must be allowed to create databases.
pub const POSTGRES_URL_ENV: &str = "FLOWRUNNER_TEST_POSTGRES_URL";

/// Printed when PostgreSQL tests are skipped.
pub const SKIP_MESSAGE: &str =
    "skipped: PostgreSQL not reachable (set FLOWRUNNER_TEST_POSTGRES_URL)";

/// Pool size of stores opened through [`TestDatabase::config`].
pub const TEST_POOL_SIZE: u32 = 4;

enum Cleanup {
    /// The directory holding the SQLite file; removed when dropped.
    Dir { _dir: tempfile::TempDir },
    /// A database created on a PostgreSQL server; dropped on drop.
    Postgres { admin_url: String, name: String },
}

/// A freshly created, empty database that is removed when this value is dropped.
pub struct TestDatabase {
    url: String,
    backend: Backend,
    secret_key: [u8; 32],
    sqlite_path: Option<PathBuf>,
    cleanup: Cleanup,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("url", &redact_url(&self.url))
            .field("backend", &self.backend)
            .finish()
    }
}

/// The PostgreSQL admin URL from [`POSTGRES_URL_ENV`], if set and not empty.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var(POSTGRES_URL_ENV)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// `url` with its database name replaced by `name` (query parameters are kept).
fn with_database(url: &str, name: &str) -> Result<String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::InvalidUrl(redact_url(url)))?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map(|q| &tail[q..]).unwrap_or("");
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

impl TestDatabase {
    /// A new SQLite database file in a fresh temporary directory.
    pub fn sqlite() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("flowrunner-test-")
            .tempdir()
            .map_err(|e| Error::Pool(format!("cannot create a temporary directory: {e}")))?;
        let path = dir.path().join("flowrunner.db");
        Ok(Self {
            url: format!("sqlite://{}", path.display()),
            backend: Backend::Sqlite,
            secret_key: generate_secret_key(),
            sqlite_path: Some(path),
            cleanup: Cleanup::Dir { _dir: dir },
        })
    }

    /// A new PostgreSQL database on the server named by [`POSTGRES_URL_ENV`]. `Ok(None)` (after
    /// printing [`SKIP_MESSAGE`]) when the variable is unset or the server is unreachable.
    pub fn postgres() -> Result<Option<Self>> {
        let Some(admin_url) = postgres_admin_url() else {
            println!("{SKIP_MESSAGE}");
            return Ok(None);
        };
        if let Err(e) = PgConnection::establish(&admin_url) {
            println!("{SKIP_MESSAGE}: {e}");
            return Ok(None);
        }
        Self::postgres_at(&admin_url).map(Some)
    }

    /// A new PostgreSQL database, created through `admin_url` (a URL of an existing database
    /// whose user may create databases).
    pub fn postgres_at(admin_url: &str) -> Result<Self> {
        let name = format!("flowrunner_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(admin_url)?;
        // Test data need not survive a crash: skipping the fsync wait on commit makes
        // migrations and tests several times faster.
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        admin.batch_execute(&format!(
            "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
        ))?;
        Ok(Self {
            url: with_database(admin_url, &name)?,
            backend: Backend::Postgres,
            secret_key: generate_secret_key(),
            sqlite_path: None,
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_string(),
                name,
            },
        })
    }

    /// A fresh SQLite database, plus a fresh PostgreSQL one when [`POSTGRES_URL_ENV`] points at
    /// a reachable server (otherwise [`SKIP_MESSAGE`] is printed).
    pub fn all() -> Result<Vec<Self>> {
        let mut dbs = vec![Self::sqlite()?];
        dbs.extend(Self::postgres()?);
        Ok(dbs)
    }

    /// The database URL (`sqlite://…` or `postgres://…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The SQLite file, for SQLite databases.
    pub fn sqlite_path(&self) -> Option<&Path> {
        self.sqlite_path.as_deref()
    }

    /// The secret key [`config`](Self::config) uses (random per database).
    pub fn secret_key(&self) -> [u8; 32] {
        self.secret_key
    }

    /// A store configuration for this database, with its secret key and a small pool.
    pub fn config(&self) -> StoreConfig {
        StoreConfig {
            url: self.url.clone(),
            secret_key: Some(self.secret_key),
            pool_size: TEST_POOL_SIZE,
        }
    }

    /// Opens (and migrates) a store on this database.
    pub async fn open(&self) -> Result<Store> {
        Store::open(self.config()).await
    }

    /// Opens (and migrates) a synchronous store on this database.
    pub fn open_blocking(&self) -> Result<BlockingStore> {
        BlockingStore::open(self.config())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let dropped = PgConnection::establish(admin_url)
                .map_err(Error::from)
                .and_then(|mut c| {
                    Ok(c.batch_execute(&format!(
                        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                    ))?)
                });
            if let Err(e) = dropped {
                eprintln!("warning: could not drop test database {name}: {e}");
            }
        }
    }
}

/// Runs each listed test on both backends.
///
/// For every `async fn name(db: &TestDatabase) -> Result<(), E>` of the invoking module (where
/// `E` converts into `Box<dyn Error + Send + Sync>`: any error type, `String`, `anyhow::Error`),
/// it defines `sqlite::name`, run on a fresh SQLite file, and `postgres::name`, run on a fresh
/// PostgreSQL database when `FLOWRUNNER_TEST_POSTGRES_URL` points at a reachable server (it
/// prints [`SKIP_MESSAGE`](crate::testing::SKIP_MESSAGE) and passes otherwise). Invoke it once
/// per module; the invoking crate needs `tokio` with the `macros` and `rt-multi-thread` features.
///
/// ```no_run
/// use flowrunner_store::testing::TestDatabase;
///
/// flowrunner_store::backend_tests!(creates_an_account);
///
/// async fn creates_an_account(db: &TestDatabase) -> flowrunner_store::Result<()> {
///     let store = db.open().await?;
///     assert_eq!(store.count_accounts().await?, 0);
///     Ok(())
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> ::std::result::Result<
                    (),
                    ::std::boxed::Box<dyn ::std::error::Error + ::std::marker::Send + ::std::marker::Sync>,
                > {
                    let db = $crate::testing::TestDatabase::sqlite()?;
                    super::$name(&db).await?;
                    ::std::result::Result::Ok(())
                }
            )*
        }
        mod postgres {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() -> ::std::result::Result<
                    (),
                    ::std::boxed::Box<dyn ::std::error::Error + ::std::marker::Send + ::std::marker::Sync>,
                > {
                    let ::std::option::Option::Some(db) = $crate::testing::TestDatabase::postgres()? else {
                        return ::std::result::Result::Ok(());
                    };
                    super::$name(&db).await?;
                    ::std::result::Result::Ok(())
                }
            )*
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() -> Result<()> {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/test", "x")?,
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/test?sslmode=disable", "x")?,
            "postgresql://u:p@h/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "x")?,
            "postgres://h:5432/x"
        );
        assert_eq!(
            with_database("postgres://h?sslmode=disable", "x")?,
            "postgres://h/x?sslmode=disable"
        );
        Ok(())
    }
}
