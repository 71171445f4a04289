//! Start-up and administration: the secrets key (file beside an SQLite database), opening and
//! migrating the store, the persisted JWT secret, the first administrator, the execution engine,
//! account creation.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use flowrunner_auth::{Authenticator, PasswordHasher, TokenService};
use flowrunner_domain::Role;
use flowrunner_dsl::{NodeCatalog, NodeSpec};
use flowrunner_engine::{Engine, EngineConfig};
use flowrunner_runtime::Runtime;
use flowrunner_store::{Account, NewAccount, Store, StoreConfig};

use crate::config::{DatabaseConfig, ExecutionConfig, ServerConfig};
use crate::error::{Error, Result};
use crate::state::{AppState, AppStateParts, SharedCatalog};
use crate::validate;

/// Settings key under which a generated JWT secret is kept.
pub const JWT_SECRET_SETTING: &str = "jwt_secret";
/// Email of the administrator created when none is configured.
pub const FALLBACK_ADMIN_EMAIL: &str = "admin@localhost";

/// Runs CPU-bound or blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(Error::internal)
}

/// The file path of an `sqlite://` URL, `None` for other backends.
pub fn sqlite_path(url: &str) -> Option<PathBuf> {
    let url = url.trim();
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Where the secrets key of an SQLite database lives when none is configured: `<database>.key`.
pub fn key_file_path(url: &str) -> Option<PathBuf> {
    sqlite_path(url).map(|path| {
        let mut name = path.into_os_string();
        name.push(".key");
        PathBuf::from(name)
    })
}

/// The 32-byte secrets key: the configured one, else (SQLite only) the key file beside the
/// database, created with a fresh random key (mode 0600) on first use.
pub fn resolve_secret_key(db: &DatabaseConfig) -> Result<[u8; 32]> {
    if let Some(text) = &db.secret_key {
        return flowrunner_store::parse_secret_key(text)
            .map_err(|e| Error::Config(format!("FLOWRUNNER_SECRET_KEY: {e}")));
    }
    let Some(path) = key_file_path(&db.url) else {
        return Err(Error::Config(
            "FLOWRUNNER_SECRET_KEY is required with PostgreSQL (32 bytes as 64 hex characters or base64)".into(),
        ));
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => flowrunner_store::parse_secret_key(&text)
            .map_err(|e| Error::Config(format!("secrets key file {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key_file(&path),
        Err(e) => Err(Error::Config(format!(
            "cannot read secrets key file {}: {e}",
            path.display()
        ))),
    }
}

fn create_key_file(path: &std::path::Path) -> Result<[u8; 32]> {
    let key = flowrunner_store::generate_secret_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(format!("{}\n", flowrunner_store::format_secret_key(&key)).as_bytes())?;
            file.sync_all()?;
            log::warn!(
                "generated a new secrets key in {}; back it up together with the database \
                 (secrets cannot be decrypted without it), or set FLOWRUNNER_SECRET_KEY",
                path.display()
            );
            Ok(key)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)?;
            flowrunner_store::parse_secret_key(&text)
                .map_err(|e| Error::Config(format!("secrets key file {}: {e}", path.display())))
        }
        Err(e) => Err(Error::Config(format!(
            "cannot create secrets key file {}: {e}",
            path.display()
        ))),
    }
}

/// Opens the store with its secrets key and applies pending migrations.
pub async fn open_store(db: &DatabaseConfig) -> Result<Store> {
    let key = resolve_secret_key(db)?;
    let config = StoreConfig::new(db.url.clone())
        .with_secret_key(key)
        .with_pool_size(db.pool_size.max(1));
    Ok(Store::open(config).await?)
}

/// Applies pending migrations (no secrets key needed); returns the versions applied.
pub async fn migrate(db: &DatabaseConfig) -> Result<Vec<String>> {
    let config = StoreConfig::new(db.url.clone()).with_pool_size(1);
    let store = blocking(move || flowrunner_store::BlockingStore::connect(config)).await??;
    Ok(blocking(move || store.migrate()).await??)
}

/// The JWT signing secret: the configured one, else the one kept in the database settings
/// (generated on first start; concurrent first starts agree on one).
pub async fn jwt_secret(store: &Store, configured: Option<&str>) -> Result<String> {
    match configured.map(str::trim).filter(|s| !s.is_empty()) {
        Some(secret) => Ok(secret.to_string()),
        None => Ok(store
            .get_or_init_setting(JWT_SECRET_SETTING, flowrunner_auth::generate_secret())
            .await?),
    }
}

/// An account to create from the command line or at start-up.
#[derive(Clone)]
pub struct AccountInput {
    /// Login email.
    pub email: String,
    /// Display name.
    pub name: String,
    /// Password in clear (hashed here).
    pub password: String,
    /// Role.
    pub role: Role,
}

impl std::fmt::Debug for AccountInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountInput")
            .field("email", &self.email)
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Validates, hashes (on the blocking pool) and stores a new account. 409 semantics: a taken
/// email is [`Error::Conflict`].
pub async fn create_account(
    store: &Store,
    hasher: &PasswordHasher,
    input: AccountInput,
) -> Result<Account> {
    let email = validate::email("email", &input.email)?;
    let name = validate::name("name", &input.name, validate::MAX_NAME_CHARS)?;
    validate::password(&input.password)?;
    let hasher = hasher.clone();
    let password = input.password;
    let password_hash = blocking(move || hasher.hash(&password)).await??;
    store
        .create_account(NewAccount {
            email,
            name,
            role: input.role,
            password_hash,
        })
        .await
        .map_err(|e| match e {
            flowrunner_store::Error::Conflict(_) => {
                Error::Conflict("An account with this email already exists".into())
            }
            other => Error::from(other),
        })
}

/// On an empty database, creates the configured administrator, or `admin@localhost` with a
/// random password printed once to stderr. Returns the account created, if any.
pub async fn bootstrap_admin(
    store: &Store,
    hasher: &PasswordHasher,
    admin: Option<&crate::config::BootstrapAdmin>,
) -> Result<Option<Account>> {
    if store.count_accounts().await? > 0 {
        return Ok(None);
    }
    let (email, password, generated) = match admin {
        Some(admin) => (admin.email.clone(), admin.password.clone(), false),
        None => (
            FALLBACK_ADMIN_EMAIL.to_string(),
            flowrunner_auth::generate_secret()[..24].to_string(),
            true,
        ),
    };
    let input = AccountInput {
        email,
        name: "Administrator".into(),
        password: password.clone(),
        role: Role::Admin,
    };
    let account = match create_account(store, hasher, input).await {
        Ok(account) => account,
        // Another process bootstrapped the same database at the same time.
        Err(Error::Conflict(_)) => return Ok(None),
        Err(Error::Validation { message, .. }) => {
            return Err(Error::Config(format!(
                "FLOWRUNNER_ADMIN_EMAIL/FLOWRUNNER_ADMIN_PASSWORD: {message}"
            )));
        }
        Err(e) => return Err(e),
    };
    if generated {
        eprintln!(
            "Created the administrator account {} with password {password}\n\
             (shown only once; change it with PUT /api/v1/accounts/{})",
            account.email, account.id
        );
    } else {
        log::info!("created the administrator account {}", account.email);
    }
    Ok(Some(account))
}

/// Builds the runtime (its registry is the node catalog flows are validated against) and starts
/// the durable engine over `store`: unfinished executions are claimed and resumed.
pub async fn start_engine(
    store: &Store,
    executions: &ExecutionConfig,
) -> Result<(Engine, SharedCatalog)> {
    let runtime = Runtime::builder()
        .blocking_threads(executions.blocking_threads.max(1))
        .build()
        .map_err(|e| Error::Config(format!("runtime: {e}")))?;
    let catalog: SharedCatalog = Arc::new(RegistryCatalog(runtime.clone()));
    let config = EngineConfig {
        max_running: executions.max_running.max(1),
        lease: executions.lease,
        subscriber_buffer: executions.subscriber_buffer.max(1),
        cancel_wait: executions.cancel_wait,
        flow_cache_ttl: executions.flow_cache_ttl,
        ..EngineConfig::default()
    };
    let engine = Engine::start(store.clone(), runtime, config)
        .await
        .map_err(|e| Error::Config(format!("cannot start the execution engine: {e}")))?;
    Ok((engine, catalog))
}

/// The runtime's node registry as a shareable [`NodeCatalog`].
struct RegistryCatalog(Runtime);

impl NodeCatalog for RegistryCatalog {
    fn spec(&self, node_type: &str) -> Option<&NodeSpec> {
        self.0.registry().spec(node_type)
    }

    fn node_types(&self) -> Vec<String> {
        NodeCatalog::node_types(self.0.registry())
    }
}

/// Everything `serve` does before listening: store, secrets, first admin, the execution engine,
/// application state.
pub async fn prepare(config: &ServerConfig) -> Result<AppState> {
    let store = open_store(&config.database).await?;
    let secret = jwt_secret(&store, config.jwt_secret.as_deref()).await?;
    let tokens = TokenService::new(secret.as_bytes(), config.token_ttl)
        .map_err(|e| Error::Config(format!("JWT settings: {e}")))?;
    let cost = config.bcrypt_cost;
    let hasher = blocking(move || PasswordHasher::new(cost))
        .await?
        .map_err(|e| Error::Config(format!("bcrypt cost: {e}")))?;
    bootstrap_admin(&store, &hasher, config.admin.as_ref()).await?;
    let (engine, catalog) = start_engine(&store, &config.executions).await?;
    Ok(AppState::new(AppStateParts {
        store,
        engine,
        auth: Authenticator::new(tokens),
        session_cache: config.auth_cache,
        hasher,
        catalog,
        max_body_bytes: config.max_body_bytes,
        executions: config.executions.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_beside_sqlite_databases() {
        assert_eq!(
            key_file_path("sqlite://flowrunner.db"),
            Some(PathBuf::from("flowrunner.db.key"))
        );
        assert_eq!(
            key_file_path("sqlite:///var/lib/x.db"),
            Some(PathBuf::from("/var/lib/x.db.key"))
        );
        assert_eq!(key_file_path("postgres://u@h/db"), None);
        let pg = DatabaseConfig::new("postgres://u@h/db");
        assert!(matches!(resolve_secret_key(&pg), Err(Error::Config(_))));
    }

    #[test]
    fn key_file_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let db = DatabaseConfig::new(url.clone());
        let first = resolve_secret_key(&db).expect("created");
        let second = resolve_secret_key(&db).expect("read back");
        assert_eq!(first, second);
        let path = key_file_path(&url).expect("path");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let mut explicit = db.clone();
        explicit.secret_key = Some(flowrunner_store::format_secret_key(&[7u8; 32]));
        assert_eq!(resolve_secret_key(&explicit).expect("explicit"), [7u8; 32]);
        explicit.secret_key = Some("nope".into());
        assert!(matches!(
            resolve_secret_key(&explicit),
            Err(Error::Config(_))
        ));
    }
}
