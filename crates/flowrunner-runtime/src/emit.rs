//! Ordered emission of events: seq numbering, redaction, journaling, then live broadcast.

use std::sync::{Arc, OnceLock};

use chrono::Utc;
use flowrunner_domain::ExecutionId;
use tokio::sync::{Mutex, broadcast};

use crate::event::{Event, EventKind};
use crate::journal::{Journal, JournalError};
use crate::secrets::SecretTracker;
use crate::snapshot::Snapshot;

/// The live channel of one execution, created by its first subscriber (so executions nobody
/// watches pay nothing for it).
#[derive(Debug)]
pub(crate) struct EventHub {
    capacity: usize,
    sender: OnceLock<broadcast::Sender<Event>>,
}

impl EventHub {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            sender: OnceLock::new(),
        }
    }

    /// A receiver of the events sent from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.sender
            .get_or_init(|| broadcast::channel(self.capacity).0)
            .subscribe()
    }

    fn receiver_count(&self) -> usize {
        self.sender
            .get()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    fn send(&self, event: Event) {
        if let Some(sender) = self.sender.get() {
            // No live subscriber is not an error.
            let _no_receivers = sender.send(event);
        }
    }
}

/// Emits the events of one execution, one at a time, in `seq` order.
pub(crate) struct Emitter {
    execution_id: ExecutionId,
    journal: Option<Arc<dyn Journal>>,
    hub: Arc<EventHub>,
    secrets: Arc<SecretTracker>,
    next_seq: Mutex<u64>,
    interrupted: OnceLock<String>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("execution_id", &self.execution_id)
            .field("journal", &self.journal.is_some())
            .finish_non_exhaustive()
    }
}

/// The journal failed: the execution must stop without recording anything else.
#[derive(Debug, Clone)]
pub(crate) struct Interrupted(pub(crate) String);

impl Emitter {
    pub(crate) fn new(
        execution_id: ExecutionId,
        journal: Option<Arc<dyn Journal>>,
        hub: Arc<EventHub>,
        secrets: Arc<SecretTracker>,
        next_seq: u64,
    ) -> Self {
        Self {
            execution_id,
            journal,
            hub,
            secrets,
            next_seq: Mutex::new(next_seq),
            interrupted: OnceLock::new(),
        }
    }

    /// Whether snapshots are wanted (a journal is attached).
    pub(crate) fn has_journal(&self) -> bool {
        self.journal.is_some()
    }

    /// The reason the execution was interrupted by a journal failure, if it was.
    pub(crate) fn interrupted(&self) -> Option<Interrupted> {
        self.interrupted
            .get()
            .map(|reason| Interrupted(reason.clone()))
    }

    /// Emits an event built by `kind` (only called when someone observes the execution).
    pub(crate) async fn emit(&self, kind: impl FnOnce() -> EventKind) -> Result<(), Interrupted> {
        self.emit_inner(kind, None::<fn(u64) -> Snapshot>)
            .await
            .map(|_| ())
    }

    /// Emits an event with a snapshot built by `snapshot` from the seq that follows the event.
    /// Returns the snapshot when one was built (only when a journal is attached).
    pub(crate) async fn emit_with_snapshot(
        &self,
        kind: impl FnOnce() -> EventKind,
        snapshot: impl FnOnce(u64) -> Snapshot,
    ) -> Result<Option<Snapshot>, Interrupted> {
        self.emit_inner(kind, Some(snapshot)).await
    }

    async fn emit_inner(
        &self,
        kind: impl FnOnce() -> EventKind,
        snapshot: Option<impl FnOnce(u64) -> Snapshot>,
    ) -> Result<Option<Snapshot>, Interrupted> {
        if let Some(stop) = self.interrupted() {
            return Err(stop);
        }
        let unobserved = self.journal.is_none() && self.hub.receiver_count() == 0;
        let mut next_seq = match self.next_seq.try_lock() {
            Ok(guard) => guard,
            Err(_) => self.next_seq.lock().await,
        };
        let seq = *next_seq;
        if unobserved {
            // Nobody records or watches: keep numbering, skip building the event.
            *next_seq = seq.saturating_add(1);
            return Ok(None);
        }
        let mut kind = kind();
        kind.redact(&self.secrets);
        let event = Event {
            execution_id: self.execution_id.clone(),
            seq,
            timestamp: Utc::now(),
            kind,
        };
        let mut built = None;
        if let Some(journal) = &self.journal {
            built = snapshot.map(|make| make(seq.saturating_add(1)));
            if let Err(err) = journal.record(&event, built.as_ref()).await {
                return Err(self.interrupt(&err));
            }
        }
        *next_seq = seq.saturating_add(1);
        drop(next_seq);
        self.hub.send(event);
        Ok(built)
    }

    fn interrupt(&self, err: &JournalError) -> Interrupted {
        let mut reason = format!("journal failed: {err}");
        self.secrets.redact_string(&mut reason);
        let _already_set = self.interrupted.set(reason);
        self.interrupted()
            .unwrap_or_else(|| Interrupted(err.to_string()))
    }
}
