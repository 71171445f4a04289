//! The store's error type.

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// A boxed error cause, kept for logs (never shown to API clients).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The row to change does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness rule was violated (e.g. the email is already in use).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The change would leave the installation without an admin account.
    #[error("the last admin account cannot be deleted or demoted")]
    LastAdmin,
    /// The database URL is not `sqlite://…`, `postgres://…` or `postgresql://…`.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// A secret operation was asked for but no secret key is configured.
    #[error("no secret key configured")]
    NoSecretKey,
    /// A secret key could not be parsed (expects 64 hex characters or base64 of 32 bytes).
    #[error("invalid secret key: {0}")]
    InvalidSecretKey(String),
    /// Encryption failed, or a stored secret could not be decrypted (wrong key or tampered row).
    #[error("secret encryption or decryption failed")]
    Crypto,
    /// Stored data could not be decoded (e.g. an unknown role or malformed JSON in a row).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[source] BoxError),
    /// No connection could be obtained from the pool (or a new connection failed).
    #[error("connection pool error: {0}")]
    Pool(String),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The journal writer has been closed (or its thread stopped).
    #[error("the journal writer is closed")]
    WriterClosed,
    /// The blocking task running the query panicked or was cancelled.
    #[error("blocking task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<DieselError> for Error {
    fn from(err: DieselError) -> Self {
        match err {
            DieselError::NotFound => Error::NotFound,
            DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info) => {
                Error::Conflict(info.message().to_string())
            }
            other => Error::Database(Box::new(other)),
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Self {
        Error::Pool(err.to_string())
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(err: diesel::ConnectionError) -> Self {
        Error::Pool(err.to_string())
    }
}
