//! Authentication for FlowRunner: bcrypt password hashing, HS256 session tokens and their revocation.
//!
//! This crate knows neither HTTP nor the database. Persistence of what sessions need (an account's
//! current role and `tokens_valid_after`, the revoked token ids) is reached through the small
//! [`SessionStore`] trait, which the HTTP crate implements on top of the store.
//!
//! Password hashing is CPU-bound (tens to hundreds of milliseconds at production costs): callers on
//! an async runtime run [`PasswordHasher`] methods on a blocking thread.
#![warn(missing_docs)]

mod error;
mod password;
mod session;
mod token;

pub use error::{Error, Result};
pub use password::{MAX_PASSWORD_BYTES, PasswordHasher};
pub use session::{AccountAuth, Authenticator, Principal, SessionStore};
pub use token::{Claims, IssuedToken, MIN_SECRET_BYTES, TokenService, generate_secret};
