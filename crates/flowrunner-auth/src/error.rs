//! The crate's error type.

/// Why an authentication operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token is malformed, has a bad signature or carries unusable claims.
    #[error("invalid token")]
    InvalidToken,
    /// The token's expiry time has passed.
    #[error("token expired")]
    TokenExpired,
    /// The token was revoked (logout, refresh, password change or account deletion).
    #[error("token revoked")]
    TokenRevoked,
    /// A bcrypt cost outside 4..=31 was configured.
    #[error("invalid bcrypt cost {0}: expected 4 to 31")]
    InvalidCost(u32),
    /// The password is longer than bcrypt can take.
    #[error("password longer than {max} bytes", max = crate::MAX_PASSWORD_BYTES)]
    PasswordTooLong,
    /// The JWT signing secret is too short.
    #[error("JWT secret must be at least {min} bytes", min = crate::MIN_SECRET_BYTES)]
    WeakSecret,
    /// The token lifetime is zero or too large.
    #[error("invalid token lifetime: {0}")]
    InvalidTtl(String),
    /// bcrypt failed (e.g. a stored hash is malformed).
    #[error("password hashing failed: {0}")]
    Hash(#[from] bcrypt::BcryptError),
    /// Signing or key setup failed in the JWT library.
    #[error("JWT error: {0}")]
    Jwt(#[source] jsonwebtoken::errors::Error),
    /// The [`crate::SessionStore`] failed.
    #[error("session store failed: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
