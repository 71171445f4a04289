//! Execution statuses, log levels and account roles.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string did not name a known variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{value}`; expected one of: {expected}")]
pub struct ParseEnumError {
    /// What was being parsed.
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
    /// The accepted spellings, comma separated.
    pub expected: &'static str,
}

macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($(#[$vdoc:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        kind: $kind,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
    };
}

string_enum!(
    /// Where an execution stands.
    ExecutionStatus, "status", {
        /// Accepted, waiting for a worker or for its flow's concurrency slot.
        Queued => "queued",
        /// A worker is executing it.
        Running => "running",
        /// Finished with a result.
        Completed => "completed",
        /// Finished with an error.
        Failed => "failed",
        /// Stopped on request.
        Cancelled => "cancelled",
    }
);

impl ExecutionStatus {
    /// Whether the execution can no longer change.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

string_enum!(
    /// Severity of a log line; ordered from least to most severe.
    LogLevel, "log level", {
        /// Diagnostic detail.
        Debug => "debug",
        /// Normal progress.
        Info => "info",
        /// Something unexpected that did not stop the work.
        Warn => "warn",
        /// A failure.
        Error => "error",
    }
);

string_enum!(
    /// What an account may do.
    Role, "role", {
        /// Manages every account and sees every resource.
        Admin => "admin",
        /// Sees and changes only its own resources.
        User => "user",
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders() {
        for s in ExecutionStatus::ALL {
            assert_eq!(s.as_str().parse::<ExecutionStatus>(), Ok(*s));
        }
        assert!(LogLevel::Warn > LogLevel::Info);
        assert!(LogLevel::Error > LogLevel::Warn);
        assert!("nope".parse::<Role>().is_err());
        assert_eq!(
            serde_json::to_string(&Role::Admin).ok().as_deref(),
            Some("\"admin\"")
        );
        assert!(ExecutionStatus::Cancelled.is_terminal());
        assert!(!ExecutionStatus::Queued.is_terminal());
    }
}
