//! The engine's request and response types: what to run, journal entries as stored, log
//! lines, and live subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use flowrunner_domain::{ExecutionId, ExecutionStatus, FlowId, LogLevel};
use flowrunner_store::{ExecutionRecord, Scope};
use tokio::sync::mpsc;

/// A request to run a flow.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// The flow to run (its current revision is pinned).
    pub flow_id: FlowId,
    /// The caller: [`Scope::Owner`] runs only the account's own flows, [`Scope::All`] (admins)
    /// any flow. The execution belongs to the flow's owner, whose secrets it uses.
    pub scope: Scope,
    /// The input, checked against the flow's declared inputs (defaults applied).
    pub input: serde_json::Value,
    /// With a key already used for the same flow and account in the last 24 hours, the first
    /// execution is returned instead of starting another.
    pub idempotency_key: Option<String>,
}

/// The answer to [`Engine::submit`](crate::Engine::submit).
#[derive(Debug, Clone)]
pub struct Submitted {
    /// The execution (status `queued` or `running` when new; any status when found by key).
    pub execution: ExecutionRecord,
    /// `false` when an earlier execution with the same idempotency key was returned.
    pub created: bool,
}

/// One journal entry of an execution, as stored and as streamed live.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEvent {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Position in the execution's journal: 0, 1, 2, … without gaps, across restarts.
    pub seq: u64,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// The runtime's event type: `started`, `resumed`, `node_started`, `node_completed`,
    /// `node_failed`, `node_checkpoint`, `log`, `completed`, `failed`, `cancelled`.
    pub kind: String,
    /// The node concerned, if any.
    pub node_id: Option<String>,
    /// The type of that node (filled for every event that names a node).
    pub node_type: Option<String>,
    /// The runtime event as JSON (`{"execution_id", "seq", "timestamp", "type", …}`), its
    /// `seq` equal to [`StoredEvent::seq`].
    pub data: serde_json::Value,
}

impl StoredEvent {
    /// Whether the execution ends with this event (`completed`, `failed`, `cancelled`).
    pub fn is_terminal(&self) -> bool {
        terminal_status(&self.kind).is_some()
    }
}

/// The status an entry of journal `kind` ends its execution with: the terminal entries are
/// named after it (`completed`, `failed`, `cancelled`). `None` for every other kind.
pub(crate) fn terminal_status(kind: &str) -> Option<ExecutionStatus> {
    kind.parse::<ExecutionStatus>()
        .ok()
        .filter(|status| status.is_terminal())
}

/// One line of an execution's log: a `log` event, or a line synthesized for a lifecycle
/// event (started, node failure, completed, failed, cancelled).
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// The journal position of the event it comes from.
    pub seq: u64,
    /// When it happened.
    pub timestamp: DateTime<Utc>,
    /// Severity.
    pub level: LogLevel,
    /// Text (secret values redacted).
    pub message: String,
    /// The node concerned, if any.
    pub node_id: Option<String>,
    /// The type of that node.
    pub node_type: Option<String>,
    /// Structured details of `log` events.
    pub data: Option<serde_json::Value>,
}

/// A live view of one execution, for WebSockets: everything committed so far, then the
/// events committed afterwards, without gap or duplicate.
#[derive(Debug)]
pub struct Watch {
    /// Every event committed when the watch started, in `seq` order.
    pub history: Vec<StoredEvent>,
    /// The events committed after `history` (only `seq` greater than its last).
    pub live: LiveEvents,
    /// Whether `history` already ends with the terminal event (then `live` yields nothing).
    pub finished: bool,
}

/// Why a live stream ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LiveEnd {
    /// The subscriber fell more than `subscriber_buffer` events behind and was dropped.
    #[error("the subscriber fell too far behind and was disconnected")]
    Lagged,
    /// The engine is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// The live part of a [`Watch`]: events durably committed after the history, in `seq` order.
#[derive(Debug)]
pub struct LiveEvents {
    pub(crate) rx: mpsc::Receiver<StoredEvent>,
    pub(crate) state: Arc<SubscriberState>,
    pub(crate) after_seq: Option<u64>,
}

/// Shared between a subscriber's sender side (the engine) and its [`LiveEvents`].
#[derive(Debug, Default)]
pub(crate) struct SubscriberState {
    pub(crate) lagged: AtomicBool,
    pub(crate) shutdown: AtomicBool,
}

impl LiveEvents {
    /// The next live event; `Ok(None)` once the execution has finished (after its terminal
    /// event was yielded), `Err` when the stream was cut (slow subscriber, shutdown).
    pub async fn recv(&mut self) -> Result<Option<StoredEvent>, LiveEnd> {
        loop {
            match self.rx.recv().await {
                Some(event) => {
                    if self.after_seq.is_some_and(|after| event.seq <= after) {
                        continue;
                    }
                    self.after_seq = Some(event.seq);
                    return Ok(Some(event));
                }
                None => {
                    if self.state.lagged.load(Ordering::Acquire) {
                        return Err(LiveEnd::Lagged);
                    }
                    if self.state.shutdown.load(Ordering::Acquire) {
                        return Err(LiveEnd::ShuttingDown);
                    }
                    return Ok(None);
                }
            }
        }
    }
}
