//! Opaque, prefixed identifiers (`flow-…`, `exec-…`, `account-…`, `rev-…`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// An identifier string did not carry the expected prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id")]
pub struct IdError {
    /// The kind of id that was expected.
    pub kind: &'static str,
    /// The rejected text.
    pub value: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new unique id (`<prefix><uuid v7 simple>`): 48 bits of millisecond time
            /// followed by random bits, so ids created later sort later. That keeps the
            /// database's primary-key indexes (executions, and the journal keyed by execution
            /// id) append-mostly instead of touching a random page per insert.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            /// Parses an id, checking its prefix. Ids are otherwise opaque.
            pub fn parse(value: &str) -> Result<Self, IdError> {
                match value.strip_prefix($prefix) {
                    Some(rest)
                        if !rest.is_empty()
                            && rest.len() <= 64
                            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
                    {
                        Ok(Self(value.to_string()))
                    }
                    _ => Err(IdError { kind: $kind, value: value.to_string() }),
                }
            }

            /// Wraps a string already known to be a valid id (read back from storage).
            pub fn from_trusted(value: String) -> Self {
                Self(value)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(
    /// Identifies a stored flow.
    FlowId, "flow-", "flow"
);
prefixed_id!(
    /// Identifies one stored revision of a flow's definition.
    RevisionId, "rev-", "revision"
);
prefixed_id!(
    /// Identifies one execution of a flow.
    ExecutionId, "exec-", "execution"
);
prefixed_id!(
    /// Identifies an account.
    AccountId, "account-", "account"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = FlowId::generate();
        assert!(id.as_str().starts_with("flow-"));
        assert_eq!(FlowId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn wrong_prefix_or_garbage_is_rejected() {
        assert!(FlowId::parse("exec-123").is_err());
        assert!(FlowId::parse("flow-").is_err());
        assert!(FlowId::parse("flow-a/b").is_err());
        assert!(ExecutionId::parse("exec-123").is_ok());
    }
}
