//! Authentication for FlowRunner: bcrypt password hashing, HS256 session tokens and their revocation.
//!
//! This crate knows neither HTTP nor the database. Persistence of what sessions need (an account's
//! current role and `tokens_valid_after`, the revoked token ids) is reached through the small
//! [`SessionStore`] trait, which the HTTP crate implements on top of the store. [`SessionCache`]
//! keeps the answers of those reads in memory for a short TTL ([`CachedSessions`] wraps a store
//! with it), so authenticating a request usually costs no database round trip.
//!
//! Password hashing is CPU-bound (tens to hundreds of milliseconds at production costs): callers on
//! an async runtime run [`PasswordHasher`] methods on a blocking thread.
#![warn(missing_docs)]

mod cache;
mod error;
#[cfg(test)]
mod memory_store;
mod password;
mod session;
mod token;

pub use cache::{
    CacheSize, CachedSessions, DEFAULT_CACHE_MAX_ENTRIES, DEFAULT_CACHE_TTL, InvalidateOnDrop,
    SessionCache, SessionCacheConfig,
};
pub use error::{Error, Result};
pub use password::{MAX_PASSWORD_BYTES, PasswordHasher};
pub use session::{AccountAuth, Authenticator, Principal, SessionStore};
pub use token::{Claims, IssuedToken, MIN_SECRET_BYTES, TokenService, generate_secret};
