//! FlowRunner's domain model: identifiers, statuses, levels, roles and durations.
//!
//! This crate is pure data: no IO, no async runtime, no database, no HTTP.
//! Every other FlowRunner crate depends on it; it depends on none of them.
#![warn(missing_docs)]

mod duration;
mod ids;
mod secret;
mod status;

pub use duration::{DurationError, format_duration, parse_duration};
pub use ids::{AccountId, ExecutionId, FlowId, IdError, RevisionId};
pub use secret::{SECRET_KEY_PATTERN, is_secret_key};
pub use status::{ExecutionStatus, LogLevel, ParseEnumError, Role};
