//! The server subcommands: `flowrunner serve`, `flowrunner migrate` and `flowrunner account …`.
//!
//! Argument parsing and wiring only; the work is done by `flowrunner_api`.

use std::io::BufRead;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use flowrunner_api::{BootstrapAdmin, DatabaseConfig, ServerConfig};
use flowrunner_auth::PasswordHasher;
use flowrunner_domain::Role;

fn parse_ttl(text: &str) -> Result<Duration, String> {
    flowrunner_domain::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("must be a whole number of at least 1".into()),
    }
}

fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_ttl(text)?;
    if lease < Duration::from_secs(1) {
        return Err("the lease must be at least 1s".into());
    }
    Ok(lease)
}

/// Longest accepted authentication cache TTL: one hour.
const MAX_CACHE_TTL_MS: u64 = 3_600_000;

fn parse_cache_ttl(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(ms) if ms <= MAX_CACHE_TTL_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "must be a whole number of milliseconds from 0 (no cache) to {MAX_CACHE_TTL_MS}"
        )),
    }
}

/// Where the database is and how secrets at rest are keyed (shared by every server command).
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://<path>` or `postgres://user:password@host:port/database`.
    #[arg(long, env = "FLOWRUNNER_DATABASE_URL", default_value = flowrunner_api::config::DEFAULT_DATABASE_URL)]
    pub database_url: String,

    /// 32-byte key encrypting secrets at rest (64 hex characters or base64). If unset with
    /// SQLite, a key file `<database>.key` is created beside the database; required with PostgreSQL.
    #[arg(long, env = "FLOWRUNNER_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Maximum number of pooled database connections.
    #[arg(long, env = "FLOWRUNNER_DB_POOL_SIZE", default_value_t = flowrunner_store::DEFAULT_POOL_SIZE)]
    pub db_pool_size: u32,
}

impl DatabaseArgs {
    fn to_config(&self) -> DatabaseConfig {
        DatabaseConfig {
            url: self.database_url.clone(),
            secret_key: self.secret_key.clone().filter(|k| !k.trim().is_empty()),
            pool_size: self.db_pool_size,
        }
    }
}

/// Options of `flowrunner serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FLOWRUNNER_BIND", default_value = flowrunner_api::config::DEFAULT_BIND)]
    pub bind: SocketAddr,

    #[command(flatten)]
    pub database: DatabaseArgs,

    /// HS256 secret signing session tokens (at least 32 bytes). If unset, one is generated on
    /// first start and kept in the database, so restarts keep sessions valid.
    #[arg(long, env = "FLOWRUNNER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of session tokens (e.g. 30m, 1h, 1d).
    #[arg(long, env = "FLOWRUNNER_TOKEN_TTL", default_value = "1h", value_parser = parse_ttl)]
    pub token_ttl: Duration,

    /// Email of the administrator created on an empty database (with --admin-password).
    #[arg(long, env = "FLOWRUNNER_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// Password of that administrator. Without both, `admin@localhost` is created with a random
    /// password printed once to stderr.
    #[arg(long, env = "FLOWRUNNER_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "FLOWRUNNER_MAX_BODY_BYTES", default_value_t = flowrunner_api::config::DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,

    /// bcrypt cost of new password hashes (4 to 31).
    #[arg(long, env = "FLOWRUNNER_BCRYPT_COST", default_value_t = PasswordHasher::DEFAULT_COST)]
    pub bcrypt_cost: u32,

    /// HTTP worker threads (default: one per CPU core).
    #[arg(long, env = "FLOWRUNNER_WORKERS")]
    pub workers: Option<usize>,

    /// Most executions running at once in this process (including those waiting in a
    /// `delay`); further ones stay `queued`, first in, first out.
    #[arg(long, env = "FLOWRUNNER_MAX_RUNNING", default_value_t = flowrunner_api::config::ExecutionConfig::default().max_running, value_parser = parse_positive)]
    pub max_running: usize,

    /// How long a claimed execution stays owned without renewal (e.g. 30s); another process
    /// takes over executions whose lease expired.
    #[arg(long, env = "FLOWRUNNER_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,

    /// Threads of the runtime's blocking pool that performs the HTTP calls of `http.request`
    /// and `webhook` nodes.
    #[arg(long, env = "FLOWRUNNER_BLOCKING_THREADS", default_value_t = flowrunner_api::config::ExecutionConfig::default().blocking_threads, value_parser = parse_positive)]
    pub blocking_threads: usize,

    /// How long, in milliseconds, this process reuses what it read from the database about
    /// things other processes may change: what authentication read (token revocations, an
    /// account's role and password cut-off) and the flow a run starts (its current revision
    /// and owner); 0 disables both caches. Changes made through this process take effect at
    /// once; made by another process on the same database (or the CLI), they are seen here
    /// after at most this long.
    #[arg(long, env = "FLOWRUNNER_CACHE_TTL_MS", default_value = "1000", value_parser = parse_cache_ttl)]
    pub cache_ttl_ms: Duration,
}

/// Options of `flowrunner migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `flowrunner account …`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AccountCommand {
    /// Creates an account; the password is prompted for (no echo) or read from stdin.
    Create(AccountCreateArgs),
}

/// Options of `flowrunner account create`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccountCreateArgs {
    /// Login email.
    #[arg(long)]
    pub email: String,

    /// Display name.
    #[arg(long)]
    pub name: String,

    /// Make the account an administrator.
    #[arg(long)]
    pub admin: bool,

    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,

    /// bcrypt cost of the password hash (4 to 31).
    #[arg(long, env = "FLOWRUNNER_BCRYPT_COST", default_value_t = PasswordHasher::DEFAULT_COST)]
    pub bcrypt_cost: u32,

    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// `flowrunner serve`: runs the HTTP server until SIGINT or SIGTERM.
pub async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let admin = match (args.admin_email, args.admin_password) {
        (Some(email), Some(password)) => Some(BootstrapAdmin { email, password }),
        (None, None) => None,
        _ => bail!("FLOWRUNNER_ADMIN_EMAIL and FLOWRUNNER_ADMIN_PASSWORD must be set together"),
    };
    let mut config = ServerConfig::new(args.database.database_url.clone());
    config.bind = args.bind;
    config.database = args.database.to_config();
    config.jwt_secret = args.jwt_secret.filter(|s| !s.trim().is_empty());
    config.token_ttl = args.token_ttl;
    config.admin = admin;
    config.max_body_bytes = args.max_body_bytes;
    config.bcrypt_cost = args.bcrypt_cost;
    config.workers = args.workers;
    config.executions.max_running = args.max_running;
    config.executions.lease = args.lease;
    config.executions.blocking_threads = args.blocking_threads;
    config.auth_cache.ttl = args.cache_ttl_ms;
    config.executions.flow_cache_ttl = args.cache_ttl_ms;
    log::debug!("configuration: {config:?}");
    flowrunner_api::serve(config).await.context("server failed")
}

/// `flowrunner migrate`: applies pending database migrations and exits.
pub async fn run_migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let config = args.database.to_config();
    let applied = flowrunner_api::setup::migrate(&config)
        .await
        .context("migration failed")?;
    if applied.is_empty() {
        println!("database schema is up to date");
    } else {
        println!(
            "applied {} migration(s): {}",
            applied.len(),
            applied.join(", ")
        );
    }
    Ok(())
}

/// `flowrunner account …`.
pub async fn run_account(cmd: AccountCommand) -> anyhow::Result<()> {
    match cmd {
        AccountCommand::Create(args) => create_account(args).await,
    }
}

async fn create_account(args: AccountCreateArgs) -> anyhow::Result<()> {
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        line.trim_end_matches(['\r', '\n']).to_string()
    } else {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Repeat password: ").context("cannot read the password")?;
        if first != again {
            bail!("the passwords do not match");
        }
        first
    };
    let store = flowrunner_api::setup::open_store(&args.database.to_config())
        .await
        .context("cannot open the database")?;
    let cost = args.bcrypt_cost;
    let hasher = tokio::task::spawn_blocking(move || PasswordHasher::new(cost)).await??;
    let input = flowrunner_api::setup::AccountInput {
        email: args.email,
        name: args.name,
        password,
        role: if args.admin { Role::Admin } else { Role::User },
    };
    let account = flowrunner_api::setup::create_account(&store, &hasher, input)
        .await
        .context("cannot create the account")?;
    println!(
        "created {} account {} ({})",
        account.role, account.id, account.email
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_ttl_is_whole_milliseconds_up_to_an_hour() {
        assert_eq!(parse_cache_ttl("0"), Ok(Duration::ZERO));
        assert_eq!(parse_cache_ttl(" 1000 "), Ok(Duration::from_secs(1)));
        assert_eq!(parse_cache_ttl("3600000"), Ok(Duration::from_secs(3600)));
        for bad in ["3600001", "-1", "1s", "", "1.5"] {
            assert!(parse_cache_ttl(bad).is_err(), "{bad}");
        }
    }
}
