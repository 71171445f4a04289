//! Server configuration: what `flowrunner serve` reads from flags and environment variables.

use std::net::SocketAddr;
use std::time::Duration;

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default database URL.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://flowrunner.db";
/// Default session token lifetime.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Default request body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Default interval between purges of expired token revocations.
pub const DEFAULT_PRUNE_INTERVAL: Duration = Duration::from_secs(600);
/// Default interval between WebSocket pings.
pub const DEFAULT_WS_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Default time a WebSocket may stay silent (no pong, no message) before it is closed.
pub const DEFAULT_WS_IDLE_TIMEOUT: Duration = Duration::from_secs(45);

/// How the durable execution engine and its runtime run.
#[derive(Debug, Clone)]
pub struct ExecutionConfig {
    /// Executions running at once in this process (including those waiting in a `delay`);
    /// further ones stay `queued`.
    pub max_running: usize,
    /// How long a claimed execution stays owned without renewal.
    pub lease: Duration,
    /// Threads of the runtime's blocking pool (HTTP calls of `http.request` and `webhook`).
    pub blocking_threads: usize,
    /// Events buffered per WebSocket subscriber; a client further behind is disconnected.
    pub subscriber_buffer: usize,
    /// How long `DELETE /executions/{id}` waits for a running execution to stop.
    pub cancel_wait: Duration,
    /// Interval between WebSocket pings.
    pub ws_ping_interval: Duration,
    /// A WebSocket silent for this long (no pong) is closed.
    pub ws_idle_timeout: Duration,
    /// How long a run reuses the flow (current revision, owner) read by an earlier run; see
    /// `flowrunner_engine::EngineConfig::flow_cache_ttl`.
    pub flow_cache_ttl: Duration,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        Self {
            max_running: flowrunner_engine::DEFAULT_MAX_RUNNING,
            lease: flowrunner_engine::DEFAULT_LEASE,
            blocking_threads: flowrunner_runtime::DEFAULT_BLOCKING_THREADS,
            subscriber_buffer: flowrunner_engine::DEFAULT_SUBSCRIBER_BUFFER,
            cancel_wait: flowrunner_engine::DEFAULT_CANCEL_WAIT,
            ws_ping_interval: DEFAULT_WS_PING_INTERVAL,
            ws_idle_timeout: DEFAULT_WS_IDLE_TIMEOUT,
            flow_cache_ttl: flowrunner_engine::DEFAULT_FLOW_CACHE_TTL,
        }
    }
}

/// Where the data lives and how secrets at rest are keyed.
#[derive(Clone)]
pub struct DatabaseConfig {
    /// `sqlite://<path>` or `postgres://…`.
    pub url: String,
    /// The 32-byte secrets key as 64 hex characters or base64. When unset, SQLite installations
    /// use (and create on first start) a key file beside the database; PostgreSQL requires it.
    pub secret_key: Option<String>,
    /// Maximum pooled connections.
    pub pool_size: u32,
}

impl DatabaseConfig {
    /// A configuration for `url` without an explicit secret key.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret_key: None,
            pool_size: flowrunner_store::DEFAULT_POOL_SIZE,
        }
    }
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &flowrunner_store::redact_url(&self.url))
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// The administrator created on an empty database.
#[derive(Clone)]
pub struct BootstrapAdmin {
    /// Its email (login name).
    pub email: String,
    /// Its password.
    pub password: String,
}

impl std::fmt::Debug for BootstrapAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapAdmin")
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Everything the HTTP server needs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Address to listen on (used by [`crate::serve`]; tests pass their own listener).
    pub bind: SocketAddr,
    /// The database.
    pub database: DatabaseConfig,
    /// HS256 signing secret. When unset, one is generated on first start and kept in the
    /// database's settings, so restarts keep sessions valid.
    pub jwt_secret: Option<String>,
    /// Lifetime of issued tokens.
    pub token_ttl: Duration,
    /// Administrator to create on an empty database. When unset, `admin@localhost` is created
    /// with a random password printed once to stderr.
    pub admin: Option<BootstrapAdmin>,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// bcrypt cost for new password hashes (4..=31; tests use 4).
    pub bcrypt_cost: u32,
    /// HTTP worker threads; `None` uses actix's default (one per core).
    pub workers: Option<usize>,
    /// How often expired token revocations are purged.
    pub prune_interval: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// The execution engine.
    pub executions: ExecutionConfig,
    /// How long this process reuses what authentication read from the database (revocations,
    /// an account's role and token cut-off). Changes made through this process take effect at
    /// once; changes made by another process are seen after at most the TTL. A zero TTL
    /// disables the cache.
    pub auth_cache: flowrunner_auth::SessionCacheConfig,
}

impl ServerConfig {
    /// The defaults for a database URL (production bcrypt cost, 1 MiB bodies, 1h tokens).
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database: DatabaseConfig::new(database_url),
            jwt_secret: None,
            token_ttl: DEFAULT_TOKEN_TTL,
            admin: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bcrypt_cost: flowrunner_auth::PasswordHasher::DEFAULT_COST,
            workers: None,
            prune_interval: DEFAULT_PRUNE_INTERVAL,
            shutdown_timeout: Duration::from_secs(30),
            executions: ExecutionConfig::default(),
            auth_cache: flowrunner_auth::SessionCacheConfig::default(),
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("bind", &self.bind)
            .field("database", &self.database)
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("token_ttl", &self.token_ttl)
            .field("admin", &self.admin)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("workers", &self.workers)
            .field("prune_interval", &self.prune_interval)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("executions", &self.executions)
            .field("auth_cache", &self.auth_cache)
            .finish()
    }
}
