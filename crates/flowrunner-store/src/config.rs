//! Store configuration and the choice of backend from the database URL.

use std::fmt;

use crate::error::{Error, Result};

/// Default number of pooled connections.
pub const DEFAULT_POOL_SIZE: u32 = 8;

/// How to open a [`Store`](crate::Store).
#[derive(Clone)]
pub struct StoreConfig {
    /// `sqlite://<path>` (relative or absolute, e.g. `sqlite:///var/lib/flowrunner/db.sqlite`),
    /// `postgres://…` or `postgresql://…` (libpq URL syntax).
    pub url: String,
    /// The 32-byte key secrets are encrypted with; secret operations fail with
    /// [`Error::NoSecretKey`] when it is `None`.
    pub secret_key: Option<[u8; 32]>,
    /// Maximum number of pooled connections (at least 1).
    pub pool_size: u32,
}

impl StoreConfig {
    /// A configuration for `url` with no secret key and the default pool size.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            secret_key: None,
            pool_size: DEFAULT_POOL_SIZE,
        }
    }

    /// Sets the secret key.
    pub fn with_secret_key(mut self, key: [u8; 32]) -> Self {
        self.secret_key = Some(key);
        self
    }

    /// Sets the pool size.
    pub fn with_pool_size(mut self, size: u32) -> Self {
        self.pool_size = size;
        self
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &redact_url(&self.url))
            .field("secret_key", &self.secret_key.map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Which database engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// An SQLite file (bundled libsqlite3).
    Sqlite,
    /// A PostgreSQL server (bundled libpq).
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed database URL: the backend and what to hand to its driver.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// Path of the SQLite file.
    Sqlite(String),
    /// The full libpq URL.
    Postgres(String),
}

impl Target {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let url = url.trim();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            if path.is_empty() || path == ":memory:" || path.starts_with("file:") {
                return Err(Error::InvalidUrl(format!(
                    "`{url}`: expected sqlite://<path to a database file>"
                )));
            }
            return Ok(Target::Sqlite(path.to_string()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target::Postgres(url.to_string()));
        }
        Err(Error::InvalidUrl(format!(
            "`{}`: expected sqlite://<path>, postgres://… or postgresql://…",
            redact_url(url)
        )))
    }

    pub(crate) fn backend(&self) -> Backend {
        match self {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        }
    }
}

/// Hides the password of `scheme://user:password@host/...` URLs, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.split_once(':') {
                Some((user, _)) => {
                    format!("{scheme}://{user}:***@{}", &rest[at + 1..])
                }
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_backend_from_scheme() {
        assert!(
            matches!(Target::parse("sqlite://data/x.db"), Ok(Target::Sqlite(p)) if p == "data/x.db")
        );
        assert!(
            matches!(Target::parse("sqlite:///abs/x.db"), Ok(Target::Sqlite(p)) if p == "/abs/x.db")
        );
        assert!(matches!(
            Target::parse("postgres://u@h/db"),
            Ok(Target::Postgres(_))
        ));
        assert!(matches!(
            Target::parse("postgresql://u@h/db"),
            Ok(Target::Postgres(_))
        ));
        for bad in [
            "host=localhost dbname=x",
            "mysql://x",
            "",
            "sqlite://",
            "sqlite::memory:",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(Error::InvalidUrl(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
