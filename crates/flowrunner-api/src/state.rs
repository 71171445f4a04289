//! The application state shared by every handler: store, execution engine, authenticator and
//! its session cache, password hasher, node catalog and limits. There is no global state;
//! everything lives here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use flowrunner_auth::{
    AccountAuth, Authenticator, CachedSessions, PasswordHasher, Principal, SessionCache,
    SessionCacheConfig, SessionStore,
};
use flowrunner_domain::AccountId;
use flowrunner_dsl::NodeCatalog;
use flowrunner_engine::Engine;
use flowrunner_store::Store;

use crate::config::ExecutionConfig;
use crate::error::Result;

/// The node catalog flows are validated against (the runtime's registry once it is wired in).
pub type SharedCatalog = Arc<dyn NodeCatalog + Send + Sync>;

/// Shared, cheaply cloneable state of the HTTP application.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    engine: Engine,
    auth: Authenticator,
    session_cache: SessionCache,
    hasher: PasswordHasher,
    catalog: SharedCatalog,
    max_body_bytes: usize,
    executions: ExecutionConfig,
    engine_stopped: AtomicBool,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("store", &self.inner.store)
            .field("engine", &self.inner.engine)
            .field("auth", &self.inner.auth)
            .field("session_cache", &self.inner.session_cache.config())
            .field("bcrypt_cost", &self.inner.hasher.cost())
            .field("max_body_bytes", &self.inner.max_body_bytes)
            .finish_non_exhaustive()
    }
}

/// What [`AppState::new`] needs.
pub struct AppStateParts {
    /// The opened, migrated store.
    pub store: Store,
    /// The started execution engine (over the same store).
    pub engine: Engine,
    /// Token verification and issuing.
    pub auth: Authenticator,
    /// How long authentication reads (revocations, account role and cut-off) are cached.
    pub session_cache: SessionCacheConfig,
    /// Password hashing.
    pub hasher: PasswordHasher,
    /// Node types flows are validated against.
    pub catalog: SharedCatalog,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// Engine and WebSocket settings.
    pub executions: ExecutionConfig,
}

impl AppState {
    /// Assembles the state.
    pub fn new(parts: AppStateParts) -> Self {
        let AppStateParts {
            store,
            engine,
            auth,
            session_cache,
            hasher,
            catalog,
            max_body_bytes,
            executions,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                store,
                engine,
                auth,
                session_cache: SessionCache::new(session_cache),
                hasher,
                catalog,
                max_body_bytes,
                executions,
                engine_stopped: AtomicBool::new(false),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The execution engine.
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Shuts the engine down once (later calls return at once): running executions stop
    /// without being marked and resume on the next start; live streams end.
    pub async fn shutdown_engine(&self) {
        if !self.inner.engine_stopped.swap(true, Ordering::AcqRel) {
            self.inner.engine.shutdown().await;
        }
    }

    /// Engine and WebSocket settings.
    pub fn executions(&self) -> &ExecutionConfig {
        &self.inner.executions
    }

    /// The authenticator (token service inside).
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    /// The node catalog.
    pub fn catalog(&self) -> &(dyn NodeCatalog + Send + Sync) {
        self.inner.catalog.as_ref()
    }

    /// The node catalog, shared (to move into blocking tasks).
    pub fn shared_catalog(&self) -> SharedCatalog {
        Arc::clone(&self.inner.catalog)
    }

    /// The request body limit.
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// Checks a bearer token against signature, expiry, revocations and the account's state
    /// (the last two usually answered by the session cache).
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        Ok(self
            .inner
            .auth
            .authenticate(&self.sessions(), token)
            .await?)
    }

    /// The store seen as the auth crate's [`SessionStore`], through the session cache: use it
    /// for every authentication and revocation, so revocations invalidate the cache.
    pub fn sessions(&self) -> CachedSessions<'_, StoreSessions<'_>> {
        self.inner
            .session_cache
            .sessions(StoreSessions(&self.inner.store))
    }

    /// The cache of authentication reads.
    pub fn session_cache(&self) -> &SessionCache {
        &self.inner.session_cache
    }

    /// Makes a change to an account (creation, update, deletion) visible to authentication at
    /// once. Call it after every such change, once it is committed (also when the store
    /// reported an error: the change may have been committed anyway).
    pub fn invalidate_account(&self, account: &AccountId) {
        self.inner.session_cache.invalidate_account(account);
    }

    /// Hashes a password on the blocking pool (bcrypt is slow by design).
    pub async fn hash_password(&self, password: String) -> Result<String> {
        let hasher = self.inner.hasher.clone();
        Ok(crate::setup::blocking(move || hasher.hash(&password)).await??)
    }

    /// Verifies a password on the blocking pool; `None` as the hash burns the same time against
    /// a dummy hash and returns `false` (unknown account).
    pub async fn verify_password(&self, password: String, hash: Option<String>) -> Result<bool> {
        let hasher = self.inner.hasher.clone();
        let matched = crate::setup::blocking(move || match hash {
            Some(hash) => hasher.verify(&password, &hash),
            None => Ok(hasher.verify_dummy(&password)),
        })
        .await??;
        Ok(matched)
    }
}

/// Adapter from the store to [`SessionStore`] (uncached; [`AppState::sessions`] wraps it in the
/// session cache).
#[derive(Debug, Clone, Copy)]
pub struct StoreSessions<'a>(pub &'a Store);

fn store_error(err: flowrunner_store::Error) -> flowrunner_auth::Error {
    flowrunner_auth::Error::Store(Box::new(err))
}

impl SessionStore for StoreSessions<'_> {
    async fn account_auth(
        &self,
        account: &AccountId,
    ) -> flowrunner_auth::Result<Option<AccountAuth>> {
        let account = self.0.get_account(account).await.map_err(store_error)?;
        Ok(account.map(|a| AccountAuth {
            role: a.role,
            tokens_valid_after: a.tokens_valid_after,
        }))
    }

    async fn is_revoked(&self, jti: &str) -> flowrunner_auth::Result<bool> {
        self.0.is_token_revoked(jti).await.map_err(store_error)
    }

    async fn revoke(&self, jti: &str, expires_at: DateTime<Utc>) -> flowrunner_auth::Result<()> {
        self.0
            .revoke_token(jti, expires_at)
            .await
            .map_err(store_error)
    }
}
