//! Typed execution events, emitted as they happen and serialized with a `"type"` tag.

use chrono::{DateTime, Utc};
use flowrunner_domain::{ExecutionId, LogLevel};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::secrets::SecretTracker;

/// One thing that happened in an execution.
///
/// `seq` numbers the events of one execution from 0 without gaps, and continues across
/// resumes, so `(execution_id, seq)` is a unique key. JSON form:
/// `{"execution_id": "exec-…", "seq": 3, "timestamp": "…Z", "type": "node_completed", …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// The execution it belongs to.
    pub execution_id: ExecutionId,
    /// Position in the execution's event sequence.
    pub seq: u64,
    /// When it happened (UTC).
    pub timestamp: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The execution started (not emitted on resume).
    Started {
        /// `metadata.name` of the flow.
        flow_name: String,
        /// `metadata.version` of the flow.
        flow_version: String,
        /// The validated input (defaults applied).
        input: Value,
    },
    /// The execution was resumed from a snapshot.
    Resumed {
        /// The node that runs next, if any.
        node_id: Option<String>,
    },
    /// An attempt of a node started.
    NodeStarted {
        /// The node.
        node_id: String,
        /// Its type.
        node_type: String,
        /// 1-based attempt number.
        attempt: u32,
    },
    /// A node succeeded.
    NodeCompleted {
        /// The node.
        node_id: String,
        /// Its type.
        node_type: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// The outcome taken (`default`, `true`, a switch case…).
        outcome: String,
        /// The node's (redacted) output.
        output: Value,
        /// Duration of the successful attempt in milliseconds.
        duration_ms: u64,
    },
    /// An attempt of a node failed.
    NodeFailed {
        /// The node.
        node_id: String,
        /// Its type.
        node_type: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether another attempt follows.
        will_retry: bool,
        /// Delay before the next attempt, when one follows.
        retry_in_ms: Option<u64>,
    },
    /// A running node durably recorded its progress (e.g. a delay's wake-up time).
    NodeCheckpoint {
        /// The node.
        node_id: String,
        /// The attempt.
        attempt: u32,
        /// The node's state.
        state: Value,
    },
    /// A log line.
    Log {
        /// Severity.
        level: LogLevel,
        /// Text.
        message: String,
        /// The node that logged it, if any.
        node_id: Option<String>,
        /// Structured details.
        data: Option<Value>,
    },
    /// The execution finished with a result.
    Completed {
        /// The (redacted) result.
        result: Value,
    },
    /// The execution failed.
    Failed {
        /// Why.
        error: String,
        /// The node that failed, if the failure belongs to one.
        node_id: Option<String>,
    },
    /// The execution was cancelled.
    Cancelled,
}

impl EventKind {
    /// The `type` tag of this kind.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started { .. } => "started",
            Self::Resumed { .. } => "resumed",
            Self::NodeStarted { .. } => "node_started",
            Self::NodeCompleted { .. } => "node_completed",
            Self::NodeFailed { .. } => "node_failed",
            Self::NodeCheckpoint { .. } => "node_checkpoint",
            Self::Log { .. } => "log",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the execution ends with this event.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled
        )
    }

    pub(crate) fn redact(&mut self, secrets: &SecretTracker) {
        if !secrets.is_active() {
            return;
        }
        match self {
            Self::Started { input, .. } => secrets.redact_value(input),
            Self::NodeCompleted { output, .. } => secrets.redact_value(output),
            Self::NodeFailed { error, .. } | Self::Failed { error, .. } => {
                secrets.redact_string(error)
            }
            Self::NodeCheckpoint { state, .. } => secrets.redact_value(state),
            Self::Log { message, data, .. } => {
                secrets.redact_string(message);
                if let Some(data) = data {
                    secrets.redact_value(data);
                }
            }
            Self::Completed { result } => secrets.redact_value(result),
            Self::Resumed { .. } | Self::NodeStarted { .. } | Self::Cancelled => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serializes_with_type_tag_and_round_trips() {
        let event = Event {
            execution_id: ExecutionId::from_trusted("exec-1".into()),
            seq: 4,
            timestamp: DateTime::from_timestamp(0, 0).unwrap_or_default(),
            kind: EventKind::Log {
                level: LogLevel::Warn,
                message: "hi".into(),
                node_id: Some("n".into()),
                data: Some(json!({"a": 1})),
            },
        };
        let text = serde_json::to_value(&event).expect("serialize");
        assert_eq!(
            text,
            json!({"execution_id": "exec-1", "seq": 4, "timestamp": "1970-01-01T00:00:00Z",
                   "type": "log", "level": "warn", "message": "hi", "node_id": "n", "data": {"a": 1}})
        );
        let back: Event = serde_json::from_value(text).expect("deserialize");
        assert_eq!(back, event);
        let cancelled = serde_json::to_value(EventKind::Cancelled).expect("serialize");
        assert_eq!(cancelled, json!({"type": "cancelled"}));
        assert_eq!(EventKind::Cancelled.name(), "cancelled");
    }
}
