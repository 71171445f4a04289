//! The runtime's [`Journal`] backed by the store's group-commit writer, and the mapping of
//! runtime events to stored journal rows (kind, node, synthesized log lines).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{SubsecRound, Utc};
use flowrunner_domain::{ExecutionStatus, LogLevel};
use flowrunner_dsl::Flow;
use flowrunner_runtime::{BoxFuture, Event, EventKind, Journal, JournalError, Snapshot};
use flowrunner_store::{JournalEntry, JournalWriter, NewEvent, RowChange, Ticket};

use crate::types::{StoredEvent, terminal_status};

/// A journal entry on its way to live subscribers once committed: the [`StoredEvent`] with its
/// `data` still the JSON text that was stored, parsed only for a subscriber that needs it (most
/// committed entries have none).
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) execution_id: flowrunner_domain::ExecutionId,
    pub(crate) seq: u64,
    pub(crate) timestamp: chrono::DateTime<Utc>,
    pub(crate) kind: &'static str,
    pub(crate) node_id: Option<String>,
    pub(crate) node_type: Option<String>,
    pub(crate) data: String,
}

impl Committed {
    /// Whether the execution ends with this entry.
    pub(crate) fn is_terminal(&self) -> bool {
        terminal_status(self.kind).is_some()
    }

    /// The event as subscribers get it (`data` parsed).
    pub(crate) fn to_stored(&self) -> StoredEvent {
        StoredEvent {
            execution_id: self.execution_id.clone(),
            seq: self.seq,
            timestamp: self.timestamp,
            kind: self.kind.to_string(),
            node_id: self.node_id.clone(),
            node_type: self.node_type.clone(),
            // It was serialized from the event a moment ago: it parses.
            data: serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Converts a runtime event into the row to store and the entry to publish once committed.
pub(crate) fn convert(
    event: &Event,
    flow: &Flow,
) -> Result<(NewEvent, Committed), serde_json::Error> {
    let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
    let data = serde_json::to_string(event)?;
    let node_type_of = |id: &str| flow.nodes.get(id).map(|n| n.node_type.clone());
    let (node_id, node_type) = match &event.kind {
        EventKind::NodeStarted {
            node_id, node_type, ..
        }
        | EventKind::NodeCompleted {
            node_id, node_type, ..
        }
        | EventKind::NodeFailed {
            node_id, node_type, ..
        } => (Some(node_id.clone()), Some(node_type.clone())),
        EventKind::NodeCheckpoint { node_id, .. } => (Some(node_id.clone()), node_type_of(node_id)),
        EventKind::Log { node_id, .. }
        | EventKind::Resumed { node_id }
        | EventKind::Failed { node_id, .. } => {
            let ty = node_id.as_deref().and_then(node_type_of);
            (node_id.clone(), ty)
        }
        EventKind::Started { .. } | EventKind::Completed { .. } | EventKind::Cancelled => {
            (None, None)
        }
    };
    let (level, message) = match &event.kind {
        EventKind::Started { .. } => (Some(LogLevel::Info), Some("Execution started".to_string())),
        EventKind::Resumed { node_id } => (
            Some(LogLevel::Info),
            Some(match node_id {
                Some(node) => format!("Execution resumed at node {node}"),
                None => "Execution resumed".to_string(),
            }),
        ),
        EventKind::NodeFailed {
            node_id,
            attempt,
            error,
            ..
        } => (
            Some(LogLevel::Warn),
            Some(format!("Node {node_id} attempt {attempt} failed: {error}")),
        ),
        EventKind::Log { level, message, .. } => (Some(*level), Some(message.clone())),
        EventKind::Completed { .. } => (
            Some(LogLevel::Info),
            Some("Execution completed".to_string()),
        ),
        EventKind::Failed { error, .. } => (
            Some(LogLevel::Error),
            Some(format!("Execution failed: {error}")),
        ),
        EventKind::Cancelled => (
            Some(LogLevel::Warn),
            Some("Execution cancelled".to_string()),
        ),
        EventKind::NodeStarted { .. }
        | EventKind::NodeCompleted { .. }
        | EventKind::NodeCheckpoint { .. } => (None, None),
    };
    let kind = event.kind.name();
    let row = NewEvent {
        execution_id: event.execution_id.clone(),
        seq,
        kind: kind.to_string(),
        node_id: node_id.clone(),
        node_type: node_type.clone(),
        level,
        message,
        data: data.clone(),
        created_at: event.timestamp,
    };
    let committed = Committed {
        execution_id: event.execution_id.clone(),
        seq: u64::try_from(seq).unwrap_or_default(),
        // The precision both backends store, so live and stored events are equal.
        timestamp: event.timestamp.trunc_subsecs(6),
        kind,
        node_id,
        node_type,
        data,
    };
    Ok((row, committed))
}

/// The status change a terminal or `started` event commits with it.
pub(crate) fn row_change(event: &Event, owner: &str, lease: Duration) -> RowChange {
    let now = Utc::now();
    match &event.kind {
        EventKind::Started { .. } => RowChange::Start {
            owner: owner.to_string(),
            lease_until: now + lease,
            started_at: event.timestamp,
        },
        EventKind::Completed { result } => RowChange::Finish {
            status: ExecutionStatus::Completed,
            result: Some(result.clone()),
            error: None,
            error_node: None,
            completed_at: event.timestamp,
        },
        EventKind::Failed { error, node_id } => RowChange::Finish {
            status: ExecutionStatus::Failed,
            result: None,
            error: Some(error.clone()),
            error_node: node_id.clone(),
            completed_at: event.timestamp,
        },
        EventKind::Cancelled => RowChange::Finish {
            status: ExecutionStatus::Cancelled,
            result: None,
            error: None,
            error_node: None,
            completed_at: event.timestamp,
        },
        _ => RowChange::None,
    }
}

/// Journals one execution's events through the shared writer.
///
/// Events with a snapshot a next node starts from (`node_completed` unless it is the last node,
/// `node_checkpoint`, a failure that takes an `error` edge; not `started`) and terminal events
/// wait for their commit; the others are queued in order
/// without waiting (the single ordered writer commits them in the same or an earlier
/// transaction than the next awaited one). A queued write that failed is reported at the next
/// awaited one, which stops the execution (the runtime reports it as interrupted).
///
/// Snapshots are stored with `started`, checkpoints, error edges and the completions of nodes
/// that read a new secret; the snapshot of any other node completion is left to be rebuilt on
/// resume from the last stored one and the completions after it ([`Snapshot::advance`]).
pub(crate) struct StoreJournal {
    pub(crate) writer: JournalWriter<Committed>,
    pub(crate) flow: Arc<Flow>,
    /// The stored `seq` the next event will get.
    pub(crate) next_seq: AtomicI64,
    pub(crate) owner: String,
    pub(crate) lease: Duration,
    /// Set when the engine shuts down: nothing more is written.
    pub(crate) closed: Arc<AtomicBool>,
    /// How many secret keys the last stored snapshot holds (`usize::MAX`: none stored yet).
    pub(crate) stored_secret_keys: AtomicUsize,
    /// Queued writes not yet known to be committed.
    pub(crate) pending: std::sync::Mutex<Vec<Ticket<()>>>,
}

impl StoreJournal {
    /// The stored `seq` the next event gets.
    pub(crate) fn next_seq(&self) -> i64 {
        self.next_seq.load(Ordering::Acquire)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Ticket<()>>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reports the first failure among queued writes that have completed, and forgets the
    /// completed ones.
    fn check_pending(&self) -> Result<(), JournalError> {
        let mut pending = self.pending();
        let mut failure = None;
        pending.retain_mut(|ticket| match ticket.try_take() {
            None => true,
            Some(Ok(())) => false,
            Some(Err(err)) => {
                failure.get_or_insert(err);
                false
            }
        });
        match failure {
            Some(err) => Err(JournalError::new(format!("a journal write failed: {err}"))),
            None => Ok(()),
        }
    }

    /// Whether `snapshot`, given with `event`, is stored (and then remembered as the last
    /// stored one). A node completion's snapshot is not, unless the node read a new secret: on
    /// resume it is rebuilt from the last stored one and the completions after it
    /// ([`Snapshot::advance`]); storing it rewrote the execution row with every output so far.
    fn must_store(&self, event: &Event, snapshot: &Snapshot) -> bool {
        let keys = snapshot.secret_keys.len();
        let derivable = matches!(event.kind, EventKind::NodeCompleted { .. })
            && snapshot.in_flight.is_none()
            && keys == self.stored_secret_keys.load(Ordering::Acquire);
        if !derivable {
            self.stored_secret_keys.store(keys, Ordering::Release);
        }
        !derivable
    }

    async fn record_inner(
        &self,
        event: &Event,
        snapshot: Option<&Snapshot>,
    ) -> Result<(), JournalError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(JournalError::new("the engine is shutting down"));
        }
        let (row, stored) = convert(event, &self.flow)
            .map_err(|e| JournalError::new(format!("cannot encode event: {e}")))?;
        // Awaited: the terminal event, and every snapshot a next node starts from. Not
        // `started`: until the first node completes (an awaited write queued behind it), a
        // crash re-runs the execution from the start with or without it. Not the completion of
        // the last node: no node starts after it, and the terminal entry queued behind it is
        // awaited (a crash before that commit runs the last node again, as any in-flight node).
        let wait = event.kind.is_terminal()
            || snapshot.is_some_and(|snapshot| match event.kind {
                EventKind::Started { .. } => false,
                EventKind::NodeCompleted { .. } => snapshot.next_node.is_some(),
                _ => true,
            });
        let snapshot = snapshot
            .filter(|snapshot| self.must_store(event, snapshot))
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| JournalError::new(format!("cannot encode snapshot: {e}")))?;
        let entry = JournalEntry {
            event: row,
            snapshot,
            change: row_change(event, &self.owner, self.lease),
            payload: stored,
        };
        let ticket = if wait {
            self.writer.append(entry).await
        } else {
            self.writer.append_unawaited(entry).await
        }
        .map_err(|e| JournalError::new(e.to_string()))?;
        self.next_seq.store(
            i64::try_from(event.seq)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
            Ordering::Release,
        );
        if wait {
            ticket
                .wait()
                .await
                .map_err(|e| JournalError::new(e.to_string()))?;
            self.check_pending()
        } else {
            let mut pending = self.pending();
            pending.push(ticket);
            if pending.len() >= 64 {
                drop(pending);
                self.check_pending()?;
            }
            Ok(())
        }
    }
}

impl Journal for StoreJournal {
    fn record<'a>(
        &'a self,
        event: &'a Event,
        snapshot: Option<&'a Snapshot>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(self.record_inner(event, snapshot))
    }
}
