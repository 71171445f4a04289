//! The resumable state of an execution between two nodes.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use flowrunner_domain::ExecutionId;
use flowrunner_dsl::Flow;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{Event, EventKind};

/// Current [`Snapshot::format`] version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// Everything needed to continue an execution in another process.
///
/// Given to the [`crate::Journal`] with the `started` event, after every node completion (and
/// error edge taken) and at node checkpoints. Start a new run from it with
/// [`crate::ExecutionRequest::resume`]. Contains no secret values: only the keys read
/// ([`Snapshot::secret_keys`]), whose values are read again from the provider on resume; every
/// recorded value (outputs, input, error) is redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Format version ([`SNAPSHOT_FORMAT`]).
    pub format: u32,
    /// The execution.
    pub execution_id: ExecutionId,
    /// `metadata.name` of the flow.
    pub flow_name: String,
    /// `metadata.version` of the flow.
    pub flow_version: String,
    /// When the execution first started.
    pub started_at: DateTime<Utc>,
    /// The validated input.
    pub input: Value,
    /// Outputs of completed nodes by node id (the latest run of each node), in the order the
    /// nodes first completed. Shared with the running execution (taking a snapshot after each
    /// node copies no output).
    pub outputs: IndexMap<String, Arc<Value>>,
    /// The last node that completed (its output is the result when the flow has no `output`).
    pub last_node: Option<String>,
    /// Node runs made so far (checked against `max_steps`).
    pub steps: u32,
    /// The node to run next; `None` when the execution is about to finish.
    pub next_node: Option<String>,
    /// The `error` template variable (`{message, node, node_type}`) when an error edge was taken.
    pub error: Option<Value>,
    /// The `seq` of the next event.
    pub next_seq: u64,
    /// Keys of the secrets read so far.
    pub secret_keys: BTreeSet<String>,
    /// The running node's durable checkpoint, if it recorded one.
    pub in_flight: Option<InFlight>,
}

impl Snapshot {
    /// Moves this snapshot past `event`, a `node_completed` entry of the same execution that
    /// was recorded after it: the snapshot the runtime gave with that entry, rebuilt from the
    /// entry alone. Other kinds of entries (node starts, retries, log lines) change nothing a
    /// snapshot holds besides the next `seq`, and are skipped without an error.
    ///
    /// This lets a journal store a full snapshot only now and then and rebuild the latest one
    /// on resume from the last stored snapshot and the completions recorded after it (the
    /// server's journal does). It rebuilds exactly the runtime's snapshot as long as the run
    /// read no new secret in between: a snapshot whose [`Snapshot::secret_keys`] grew, one with
    /// a node checkpoint ([`Snapshot::in_flight`]) and one given with any other event must be
    /// stored as given.
    pub fn advance(&mut self, flow: &Flow, event: &Event) -> crate::Result<()> {
        let mismatch = |reason: String| crate::Error::SnapshotMismatch {
            execution_id: self.execution_id.clone(),
            reason,
        };
        if event.execution_id != self.execution_id {
            return Err(mismatch(format!(
                "entry {} belongs to execution {}",
                event.seq, event.execution_id
            )));
        }
        if event.seq < self.next_seq {
            return Err(mismatch(format!(
                "entry {} precedes the snapshot (next entry {})",
                event.seq, self.next_seq
            )));
        }
        let next_seq = event.seq.saturating_add(1);
        let EventKind::NodeCompleted {
            node_id,
            outcome,
            output,
            ..
        } = &event.kind
        else {
            self.next_seq = next_seq;
            return Ok(());
        };
        let node = flow
            .nodes
            .get(node_id)
            .ok_or_else(|| mismatch(format!("node `{node_id}` does not exist in the flow")))?;
        let next_node = match node.next.get(outcome) {
            Some(target) if flow.nodes.contains_key(target) => Some(target.clone()),
            Some(target) => {
                return Err(mismatch(format!(
                    "node `{node_id}` has an edge `{outcome}` to unknown node `{target}`"
                )));
            }
            None => None,
        };
        self.outputs
            .insert(node_id.clone(), Arc::new(output.clone()));
        self.last_node = Some(node_id.clone());
        self.steps = self.steps.saturating_add(1);
        self.next_node = next_node;
        self.next_seq = next_seq;
        self.in_flight = None;
        Ok(())
    }

    /// Redacts every secret value read so far (some may have been read after a value was
    /// recorded).
    pub(crate) fn redact(&mut self, secrets: &crate::secrets::SecretTracker) {
        if !secrets.is_active() {
            return;
        }
        secrets.redact_value(&mut self.input);
        self.outputs
            .values_mut()
            .for_each(|output| secrets.redact_value(Arc::make_mut(output)));
        if let Some(error) = &mut self.error {
            secrets.redact_value(error);
        }
        if let Some(in_flight) = &mut self.in_flight {
            secrets.redact_value(&mut in_flight.state);
        }
    }
}

/// A checkpoint recorded by the node that was running when the snapshot was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InFlight {
    /// The node (equal to [`Snapshot::next_node`]).
    pub node_id: String,
    /// The attempt that recorded it.
    pub attempt: u32,
    /// The node's state (see [`crate::NodeContext::checkpoint`]).
    pub state: Value,
}
