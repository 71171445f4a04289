//! The journal hook: durable, ordered recording of events and snapshots by the embedder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::event::Event;
use crate::snapshot::Snapshot;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The journal could not record an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JournalError {
    message: String,
}

impl JournalError {
    /// A journal error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Durable storage of an execution's events, implemented by the embedder (e.g. a database).
///
/// The engine awaits `record` for every event, in `seq` order, before it continues. When a
/// snapshot is given, persisting it with the event makes the execution resumable from that
/// point. A journal may skip the snapshots of `node_completed` events that
/// [`Snapshot::advance`] can rebuild from the previous snapshot and the events after it (see
/// there which), and rebuild them on resume. If `record` fails the execution stops with
/// [`crate::ExecutionOutcome::Interrupted`]: nothing after the last recorded event happened.
pub trait Journal: Send + Sync {
    /// Records one event, and the snapshot taken with it if any.
    fn record<'a>(
        &'a self,
        event: &'a Event,
        snapshot: Option<&'a Snapshot>,
    ) -> BoxFuture<'a, Result<(), JournalError>>;
}

/// A journal that keeps everything in memory (tests, tools, embedders without storage).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    entries: Mutex<Vec<(Event, Option<Snapshot>)>>,
}

impl MemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every event recorded so far, in order.
    pub fn events(&self) -> Vec<Event> {
        self.lock().iter().map(|(event, _)| event.clone()).collect()
    }

    /// Every (event, snapshot) pair recorded so far, in order.
    pub fn entries(&self) -> Vec<(Event, Option<Snapshot>)> {
        self.lock().clone()
    }

    /// The most recent snapshot.
    pub fn last_snapshot(&self) -> Option<Snapshot> {
        self.lock()
            .iter()
            .rev()
            .find_map(|(_, snapshot)| snapshot.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Event, Option<Snapshot>)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Journal for MemoryJournal {
    fn record<'a>(
        &'a self,
        event: &'a Event,
        snapshot: Option<&'a Snapshot>,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        self.lock().push((event.clone(), snapshot.cloned()));
        Box::pin(std::future::ready(Ok(())))
    }
}
