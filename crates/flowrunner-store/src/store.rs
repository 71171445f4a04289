//! [`Store`] (async, for handlers) and [`BlockingStore`] (the same operations, synchronous):
//! opening, migrating, health checks and settings.
//!
//! Every diesel call runs on the synchronous layer. The async methods move that work onto
//! tokio's blocking thread pool with `spawn_blocking`, so the reactor never waits on the database.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;

use crate::config::{Backend, StoreConfig, Target, redact_url};
#[cfg(test)]
use crate::conn::DbConn;
use crate::conn::{self, Pool, PooledConn, on_backend};
use crate::crypto::SecretCipher;
use crate::error::{Error, Result};
use crate::schema::settings;

struct Inner {
    target: Target,
    pool: Pool,
    backend: Backend,
    cipher: Option<SecretCipher>,
    /// Bumped after every change to a flow through this store (see [`BlockingStore::flow_changes`]).
    flow_changes: AtomicU64,
}

/// The synchronous store. Each call checks a connection out of the pool and blocks the calling
/// thread until the database answers: use it from worker or blocking threads, and [`Store`]
/// from async code. Cloning is cheap (shared pool).
#[derive(Clone)]
pub struct BlockingStore {
    inner: Arc<Inner>,
}

/// The async store used by the HTTP layer and the runtime. Cloning is cheap (shared pool).
///
/// Every method runs its queries on tokio's blocking pool, so it must be called from within a
/// tokio runtime.
#[derive(Clone)]
pub struct Store {
    sync: BlockingStore,
}

impl fmt::Debug for BlockingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.pool.state();
        f.debug_struct("BlockingStore")
            .field("backend", &self.inner.backend)
            .field("connections", &state.connections)
            .field("idle_connections", &state.idle_connections)
            .field(
                "secret_key",
                &self.inner.cipher.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Store").field(&self.sync).finish()
    }
}

impl BlockingStore {
    /// Connects (the backend is chosen by the URL scheme) and applies pending migrations.
    pub fn open(config: StoreConfig) -> Result<Self> {
        let store = Self::connect(config)?;
        let applied = store.migrate()?;
        if !applied.is_empty() {
            log::info!(
                "applied {} migration(s): {}",
                applied.len(),
                applied.join(", ")
            );
        }
        Ok(store)
    }

    /// Connects without migrating.
    pub fn connect(config: StoreConfig) -> Result<Self> {
        let target = Target::parse(&config.url)?;
        let backend = target.backend();
        let cipher = config
            .secret_key
            .as_ref()
            .map(SecretCipher::new)
            .transpose()?;
        // One direct connection first: fails fast with the driver's own message instead of
        // r2d2 retrying until its timeout.
        drop(conn::connect(&target)?);
        let pool = conn::build_pool(target.clone(), config.pool_size)?;
        log::debug!(
            "connected to {} database {}",
            backend,
            redact_url(&config.url)
        );
        Ok(Self {
            inner: Arc::new(Inner {
                target,
                pool,
                backend,
                cipher,
                flow_changes: AtomicU64::new(0),
            }),
        })
    }

    /// Applies pending migrations; returns the versions applied by this call (empty when the
    /// schema is current).
    pub fn migrate(&self) -> Result<Vec<String>> {
        conn::run_migrations(&mut *self.conn()?)
    }

    /// Which backend the store runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Checks that a connection can be obtained and answers a trivial query.
    pub fn ping(&self) -> Result<()> {
        self.conn()?.batch_execute("SELECT 1")?;
        Ok(())
    }

    /// A counter bumped after every update or deletion of a flow (or of an account, which
    /// deletes its flows) made through this store and its clones. Caches of flows read
    /// it before a read and drop what they read under an older value; changes made by other
    /// processes are not counted.
    pub fn flow_changes(&self) -> u64 {
        self.inner.flow_changes.load(Ordering::Acquire)
    }

    /// Records a change to flows (after it is committed, or after it failed: a spurious bump
    /// only costs a cache refill).
    pub(crate) fn bump_flow_changes(&self) {
        self.inner.flow_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// Where the store connects to.
    pub(crate) fn target(&self) -> &Target {
        &self.inner.target
    }

    /// A pooled connection.
    pub(crate) fn conn(&self) -> Result<PooledConn> {
        Ok(self.inner.pool.get()?)
    }

    /// The secret cipher, or [`Error::NoSecretKey`].
    pub(crate) fn cipher(&self) -> Result<&SecretCipher> {
        self.inner.cipher.as_ref().ok_or(Error::NoSecretKey)
    }

    /// The value of a setting.
    pub fn get_setting(&self, key: &str) -> Result<Option<String>> {
        Ok(settings::table
            .find(key)
            .select(settings::value)
            .first::<String>(&mut *self.conn()?)
            .optional()?)
    }

    /// The value of a setting, storing `value_if_absent` first if there is none. Race-free:
    /// concurrent callers (even in other processes) all get the value that was stored first.
    pub fn get_or_init_setting(&self, key: &str, value_if_absent: String) -> Result<String> {
        let mut conn = self.conn()?;
        let row = (settings::key.eq(key), settings::value.eq(&value_if_absent));
        on_backend!(&mut *conn, |c| diesel::insert_into(settings::table)
            .values(row)
            .on_conflict_do_nothing()
            .execute(c))?;
        Ok(settings::table
            .find(key)
            .select(settings::value)
            .first::<String>(&mut *conn)?)
    }

    /// Stores a setting, replacing any previous value.
    pub fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let row = (settings::key.eq(key), settings::value.eq(value));
        on_backend!(&mut *conn, |c| diesel::insert_into(settings::table)
            .values(row)
            .on_conflict(settings::key)
            .do_update()
            .set(settings::value.eq(value))
            .execute(c))?;
        Ok(())
    }
}

impl Store {
    /// Connects (the backend is chosen by the URL scheme) and applies pending migrations.
    pub async fn open(config: StoreConfig) -> Result<Store> {
        let sync = tokio::task::spawn_blocking(move || BlockingStore::open(config)).await??;
        Ok(Store { sync })
    }

    /// Wraps a synchronous store.
    pub fn from_blocking(sync: BlockingStore) -> Store {
        Store { sync }
    }

    /// The synchronous API over the same pool, for code already on a blocking thread.
    pub fn blocking(&self) -> &BlockingStore {
        &self.sync
    }

    /// Runs `f` against the synchronous store on tokio's blocking pool.
    pub(crate) async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&BlockingStore) -> Result<T> + Send + 'static,
    {
        let sync = self.sync.clone();
        tokio::task::spawn_blocking(move || f(&sync)).await?
    }

    /// Applies pending migrations; returns the versions applied by this call.
    pub async fn migrate(&self) -> Result<Vec<String>> {
        self.run(|s| s.migrate()).await
    }

    /// Which backend the store runs on.
    pub fn backend(&self) -> Backend {
        self.sync.backend()
    }

    /// Checks that the database answers (for `/healthz`).
    pub async fn ping(&self) -> Result<()> {
        self.run(|s| s.ping()).await
    }

    /// The value of a setting.
    pub async fn get_setting(&self, key: &str) -> Result<Option<String>> {
        let key = key.to_string();
        self.run(move |s| s.get_setting(&key)).await
    }

    /// The value of a setting, storing `value_if_absent` first if there is none (race-free).
    pub async fn get_or_init_setting(&self, key: &str, value_if_absent: String) -> Result<String> {
        let key = key.to_string();
        self.run(move |s| s.get_or_init_setting(&key, value_if_absent))
            .await
    }

    /// Stores a setting, replacing any previous value.
    pub async fn set_setting(&self, key: &str, value: &str) -> Result<()> {
        let (key, value) = (key.to_string(), value.to_string());
        self.run(move |s| s.set_setting(&key, &value)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::sql_types::{BigInt, Text};

    #[derive(QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }

    #[derive(QueryableByName)]
    struct Value {
        #[diesel(sql_type = BigInt)]
        value: i64,
    }

    /// The value of an integer pragma, read through its table-valued function.
    fn pragma(conn: &mut DbConn, name: &str, column: &str) -> i64 {
        let rows: Vec<Value> =
            diesel::sql_query(format!("SELECT {column} AS value FROM pragma_{name}"))
                .load(conn)
                .expect("pragma");
        rows.first().map(|r| r.value).expect("one row")
    }

    #[test]
    fn stores_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Store>();
        assert_send_sync::<BlockingStore>();
    }

    #[test]
    fn every_pooled_sqlite_connection_has_the_pragmas() -> Result<()> {
        let db = crate::testing::TestDatabase::sqlite()?;
        let store = BlockingStore::open(db.config())?;
        // Hold every connection of the pool at once, so each one is checked.
        let mut held: Vec<PooledConn> = Vec::new();
        for _ in 0..crate::testing::TEST_POOL_SIZE {
            held.push(store.conn()?);
        }
        for conn in &mut held {
            let mode: Vec<Mode> = diesel::sql_query("PRAGMA journal_mode").load(&mut **conn)?;
            assert_eq!(mode.first().map(|m| m.journal_mode.as_str()), Some("wal"));
            assert_eq!(
                pragma(conn, "busy_timeout", "timeout"),
                i64::from(conn::SQLITE_BUSY_TIMEOUT_MS)
            );
            assert_eq!(pragma(conn, "foreign_keys", "foreign_keys"), 1);
            assert_eq!(pragma(conn, "synchronous", "synchronous"), 1, "NORMAL");
        }
        Ok(())
    }
}
