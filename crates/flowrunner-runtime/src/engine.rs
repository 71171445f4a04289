//! The execution loop: runs nodes one after the other, with retries, timeouts, error edges,
//! cancellation, the `max_steps` guard, snapshots and events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use flowrunner_domain::{ExecutionStatus, format_duration};
use flowrunner_dsl::{Flow, Node, OUTCOME_ERROR};
use futures_util::FutureExt;
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::context::TemplateScope;
use crate::emit::Interrupted;
use crate::event::EventKind;
use crate::node::{ExecShared, NodeContext, NodeOutput, NodeType};
use crate::retry::backoff_delay_random;
use crate::snapshot::{InFlight, SNAPSHOT_FORMAT, Snapshot};

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExecutionOutcome {
    /// Finished; `result` is the rendered `output` of the flow, or the last node's output.
    Completed {
        /// The (redacted) result.
        result: Value,
    },
    /// Failed: a node failed without an `error` edge, `max_steps` was exceeded, or the flow's
    /// `output` could not be rendered.
    Failed {
        /// Why (redacted).
        error: String,
        /// The node concerned, if any.
        node_id: Option<String>,
    },
    /// Cancelled on request.
    Cancelled,
    /// Stopped because the journal failed: the last recorded snapshot is still valid and the
    /// execution can be resumed from it.
    Interrupted {
        /// Why.
        reason: String,
    },
}

impl ExecutionOutcome {
    /// The final status, or `None` for [`ExecutionOutcome::Interrupted`] (the execution is
    /// still running as far as its journal knows, and can be resumed).
    pub fn status(&self) -> Option<ExecutionStatus> {
        match self {
            Self::Completed { .. } => Some(ExecutionStatus::Completed),
            Self::Failed { .. } => Some(ExecutionStatus::Failed),
            Self::Cancelled => Some(ExecutionStatus::Cancelled),
            Self::Interrupted { .. } => None,
        }
    }
}

/// Mutable progress of an execution.
pub(crate) struct Progress {
    pub(crate) input: Value,
    pub(crate) started_at: DateTime<Utc>,
    pub(crate) outputs: IndexMap<String, Arc<Value>>,
    pub(crate) last_node: Option<usize>,
    pub(crate) steps: u32,
    pub(crate) next: Option<usize>,
    pub(crate) error: Option<Value>,
}

/// One execution, owned by its task.
pub(crate) struct Engine {
    pub(crate) shared: Arc<ExecShared>,
    pub(crate) handlers: Vec<Arc<dyn NodeType>>,
    pub(crate) progress: Progress,
    pub(crate) scope: TemplateScope,
    pub(crate) resumed_in_flight: Option<InFlight>,
    pub(crate) last_snapshot: Option<Arc<Snapshot>>,
}

enum Attempts {
    Done {
        output: NodeOutput,
        attempt: u32,
        elapsed: Duration,
    },
    Failed {
        message: String,
        attempt: u32,
    },
    Cancelled,
}

impl Engine {
    fn flow(&self) -> &Flow {
        &self.shared.flow
    }

    fn node(&self, index: usize) -> Option<(&String, &Node)> {
        self.shared.flow.nodes.get_index(index)
    }

    fn check(&self) -> Result<(), Interrupted> {
        match self.shared.emitter.interrupted() {
            Some(stop) => Err(stop),
            None => Ok(()),
        }
    }

    /// Builds the snapshot of the current progress.
    fn snapshot(&self, next_seq: u64) -> Snapshot {
        let secrets = &self.shared.secrets;
        let mut snapshot = Snapshot {
            format: SNAPSHOT_FORMAT,
            execution_id: self.shared.execution_id.clone(),
            flow_name: self.flow().metadata.name.clone(),
            flow_version: self.flow().metadata.version.clone(),
            started_at: self.progress.started_at,
            input: self.progress.input.clone(),
            outputs: self
                .progress
                .outputs
                .iter()
                .map(|(k, v)| (k.clone(), Arc::clone(v)))
                .collect(),
            last_node: self
                .progress
                .last_node
                .and_then(|i| self.node(i))
                .map(|(id, _)| id.clone()),
            steps: self.progress.steps,
            next_node: self
                .progress
                .next
                .and_then(|i| self.node(i))
                .map(|(id, _)| id.clone()),
            error: self.progress.error.clone(),
            next_seq,
            secret_keys: secrets.keys(),
            in_flight: None,
        };
        snapshot.redact(secrets);
        snapshot
    }

    async fn emit_with_snapshot(
        &mut self,
        kind: impl FnOnce() -> EventKind,
    ) -> Result<(), Interrupted> {
        if !self.shared.emitter.has_journal() {
            return self.shared.emitter.emit(kind).await;
        }
        let this = &*self;
        let built = this
            .shared
            .emitter
            .emit_with_snapshot(kind, |next_seq| this.snapshot(next_seq))
            .await?;
        if let Some(snapshot) = built {
            self.last_snapshot = Some(Arc::new(snapshot));
        }
        Ok(())
    }

    /// Runs the execution to its end.
    pub(crate) async fn run(mut self, resumed: bool) -> ExecutionOutcome {
        match self.drive(resumed).await {
            Ok(outcome) => outcome,
            Err(Interrupted(reason)) => ExecutionOutcome::Interrupted { reason },
        }
    }

    async fn drive(&mut self, resumed: bool) -> Result<ExecutionOutcome, Interrupted> {
        if resumed {
            let node_id = self
                .progress
                .next
                .and_then(|i| self.node(i))
                .map(|(id, _)| id.clone());
            self.shared
                .emitter
                .emit(|| EventKind::Resumed { node_id })
                .await?;
        } else {
            let flow = Arc::clone(&self.shared.flow);
            let input = self.progress.input.clone();
            self.emit_with_snapshot(|| EventKind::Started {
                flow_name: flow.metadata.name.clone(),
                flow_version: flow.metadata.version.clone(),
                input,
            })
            .await?;
        }
        loop {
            if self.shared.cancel.is_cancelled() {
                return self.cancelled().await;
            }
            let Some(index) = self.progress.next else {
                return self.complete().await;
            };
            let max_steps = self.flow().metadata.max_steps;
            if self.progress.steps >= max_steps {
                let node_id = self.node(index).map(|(id, _)| id.clone());
                let error = format!(
                    "execution exceeded max_steps ({max_steps}) before running node `{}`; the flow may loop endlessly",
                    node_id.as_deref().unwrap_or("?")
                );
                return self.fail(error, node_id).await;
            }
            self.progress.steps += 1;
            if let Some(outcome) = self.run_node(index).await? {
                return Ok(outcome);
            }
        }
    }

    /// Runs one node (all its attempts); `Some` when the execution ends here.
    async fn run_node(&mut self, index: usize) -> Result<Option<ExecutionOutcome>, Interrupted> {
        let flow = Arc::clone(&self.shared.flow);
        let Some((node_id, node)) = flow.nodes.get_index(index) else {
            return Ok(Some(
                self.fail(
                    format!("internal error: node #{index} does not exist"),
                    None,
                )
                .await?,
            ));
        };
        let result = match node.params.render(self.scope.root()) {
            Ok(params) => self.attempts(index, node, params).await?,
            Err(err) => {
                let attempt = self.take_in_flight(node_id).map_or(1, |f| f.attempt.max(1));
                self.shared
                    .emitter
                    .emit(|| EventKind::NodeStarted {
                        node_id: node_id.clone(),
                        node_type: node.node_type.clone(),
                        attempt,
                    })
                    .await?;
                Attempts::Failed {
                    message: format!("cannot render params: {err}"),
                    attempt,
                }
            }
        };
        match result {
            Attempts::Cancelled => Ok(Some(self.cancelled().await?)),
            Attempts::Done {
                output,
                attempt,
                elapsed,
            } => {
                let NodeOutput {
                    output: mut value,
                    outcome,
                } = output;
                self.shared.secrets.redact_value(&mut value);
                self.scope.record_output(node_id, &value);
                let value = Arc::new(value);
                self.progress
                    .outputs
                    .insert(node_id.clone(), Arc::clone(&value));
                self.progress.last_node = Some(index);
                let next = match node.next.get(&outcome) {
                    None => None,
                    Some(target) => match flow.nodes.get_index_of(target) {
                        Some(target) => Some(target),
                        None => {
                            let error = format!(
                                "node `{node_id}` has an edge `{outcome}` to unknown node `{target}`"
                            );
                            return Ok(Some(self.fail(error, Some(node_id.clone())).await?));
                        }
                    },
                };
                self.progress.next = next;
                self.emit_with_snapshot(|| EventKind::NodeCompleted {
                    node_id: node_id.clone(),
                    node_type: node.node_type.clone(),
                    attempt,
                    outcome,
                    output: (*value).clone(),
                    duration_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
                })
                .await?;
                Ok(None)
            }
            Attempts::Failed {
                mut message,
                attempt,
            } => {
                self.shared.secrets.redact_string(&mut message);
                let failed = |message: String| EventKind::NodeFailed {
                    node_id: node_id.clone(),
                    node_type: node.node_type.clone(),
                    attempt,
                    error: message,
                    will_retry: false,
                    retry_in_ms: None,
                };
                let target = node
                    .next
                    .get(OUTCOME_ERROR)
                    .and_then(|t| flow.nodes.get_index_of(t));
                match target {
                    Some(target) => {
                        let error = json!({"message": message, "node": node_id, "node_type": node.node_type});
                        self.scope.set_error(Some(&error));
                        self.progress.error = Some(error);
                        self.progress.next = Some(target);
                        self.emit_with_snapshot(|| failed(message)).await?;
                        Ok(None)
                    }
                    None => {
                        let event_message = message.clone();
                        self.shared.emitter.emit(|| failed(event_message)).await?;
                        Ok(Some(self.fail(message, Some(node_id.clone())).await?))
                    }
                }
            }
        }
    }

    fn take_in_flight(&mut self, node_id: &str) -> Option<InFlight> {
        self.resumed_in_flight
            .take()
            .filter(|f| f.node_id == node_id)
    }

    async fn attempts(
        &mut self,
        index: usize,
        node: &Node,
        params: Value,
    ) -> Result<Attempts, Interrupted> {
        let node_id = node.id.as_str();
        let in_flight = self.take_in_flight(node_id);
        let max_attempts = node.retry.map_or(1, |r| r.max_attempts.max(1));
        let mut attempt = in_flight.as_ref().map_or(1, |f| f.attempt.max(1));
        let mut resumed_state = in_flight.map(|f| f.state);
        let previous = self
            .progress
            .last_node
            .and_then(|i| self.node(i))
            .and_then(|(id, _)| self.progress.outputs.get(id).cloned());
        let handler = match self.handlers.get(index) {
            Some(handler) => Arc::clone(handler),
            None => {
                return Ok(Attempts::Failed {
                    message: format!("internal error: no handler for node `{node_id}`"),
                    attempt,
                });
            }
        };
        let mut params = Some(params);
        loop {
            self.shared
                .emitter
                .emit(|| EventKind::NodeStarted {
                    node_id: node_id.to_string(),
                    node_type: node.node_type.clone(),
                    attempt,
                })
                .await?;
            let ctx = NodeContext {
                exec: Arc::clone(&self.shared),
                node_index: index,
                attempt,
                previous: previous.clone(),
                resumed: resumed_state.take(),
                step: self.progress.steps,
                timeout: node.timeout,
                base_snapshot: self.last_snapshot.clone(),
            };
            let attempt_params = if attempt >= max_attempts {
                params.take().unwrap_or(Value::Null)
            } else {
                params.clone().unwrap_or(Value::Null)
            };
            let started = Instant::now();
            let future = AssertUnwindSafe(handler.execute(ctx, attempt_params)).catch_unwind();
            let result = tokio::select! {
                biased;
                result = with_timeout(node.timeout, future) => Some(result),
                () = self.shared.cancel.cancelled() => None,
            };
            self.check()?;
            let error = match result {
                None => return Ok(Attempts::Cancelled),
                Some(Ok(output)) => {
                    return Ok(Attempts::Done {
                        output,
                        attempt,
                        elapsed: started.elapsed(),
                    });
                }
                Some(Err(error)) => error,
            };
            let retry = node
                .retry
                .filter(|_| error.retryable && attempt < max_attempts);
            let Some(policy) = retry else {
                return Ok(Attempts::Failed {
                    message: error.message,
                    attempt,
                });
            };
            let delay = backoff_delay_random(&policy, attempt);
            let mut message = error.message;
            self.shared.secrets.redact_string(&mut message);
            self.shared
                .emitter
                .emit(|| EventKind::NodeFailed {
                    node_id: node_id.to_string(),
                    node_type: node.node_type.clone(),
                    attempt,
                    error: message,
                    will_retry: true,
                    retry_in_ms: Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
                })
                .await?;
            tokio::select! {
                biased;
                () = self.shared.cancel.cancelled() => return Ok(Attempts::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
            attempt += 1;
        }
    }

    async fn complete(&mut self) -> Result<ExecutionOutcome, Interrupted> {
        let result = match &self.shared.flow.output {
            Some(template) => match template.render(self.scope.root()) {
                Ok(result) => result,
                Err(err) => {
                    return self
                        .fail(format!("cannot render the flow's output: {err}"), None)
                        .await;
                }
            },
            None => self
                .progress
                .last_node
                .and_then(|i| self.node(i))
                .and_then(|(id, _)| self.progress.outputs.get(id))
                .map_or(Value::Null, |v| (**v).clone()),
        };
        let mut result = result;
        self.shared.secrets.redact_value(&mut result);
        let event_result = result.clone();
        self.shared
            .emitter
            .emit(|| EventKind::Completed {
                result: event_result,
            })
            .await?;
        Ok(ExecutionOutcome::Completed { result })
    }

    async fn fail(
        &mut self,
        error: String,
        node_id: Option<String>,
    ) -> Result<ExecutionOutcome, Interrupted> {
        let mut error = error;
        self.shared.secrets.redact_string(&mut error);
        let (event_error, event_node) = (error.clone(), node_id.clone());
        self.shared
            .emitter
            .emit(|| EventKind::Failed {
                error: event_error,
                node_id: event_node,
            })
            .await?;
        Ok(ExecutionOutcome::Failed { error, node_id })
    }

    async fn cancelled(&mut self) -> Result<ExecutionOutcome, Interrupted> {
        self.shared.emitter.emit(|| EventKind::Cancelled).await?;
        Ok(ExecutionOutcome::Cancelled)
    }
}

type Caught = std::thread::Result<Result<NodeOutput, crate::node::NodeError>>;

/// Awaits a node attempt with its timeout; a panic in the node is a (permanent) node failure.
async fn with_timeout<F>(
    timeout: Option<Duration>,
    future: F,
) -> Result<NodeOutput, crate::node::NodeError>
where
    F: std::future::Future<Output = Caught>,
{
    let caught = |result: Caught| {
        result.unwrap_or_else(|_| Err(crate::node::NodeError::permanent("the node panicked")))
    };
    match timeout {
        None => caught(future.await),
        Some(limit) => match tokio::time::timeout(limit, future).await {
            Ok(result) => caught(result),
            Err(_) => Err(crate::node::NodeError::new(format!(
                "node timed out after {}",
                format_duration(limit)
            ))),
        },
    }
}

/// A key stable across the attempts of one node run and across resumes.
pub(crate) fn run_key(execution_id: &str, step: u32) -> Uuid {
    let digest = Sha256::new()
        .chain_update(execution_id.as_bytes())
        .chain_update(step.to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_statuses_and_serialize_with_a_status_tag() {
        let failed = ExecutionOutcome::Failed {
            error: "x".into(),
            node_id: None,
        };
        assert_eq!(failed.status(), Some(ExecutionStatus::Failed));
        assert_eq!(
            ExecutionOutcome::Interrupted { reason: "r".into() }.status(),
            None
        );
        let json = serde_json::to_value(&failed).expect("json");
        assert_eq!(
            json,
            json!({"status": "failed", "error": "x", "node_id": null})
        );
    }

    #[test]
    fn run_keys_are_stable_per_step() {
        assert_eq!(run_key("exec-a", 1), run_key("exec-a", 1));
        assert_ne!(run_key("exec-a", 1), run_key("exec-a", 2));
        assert_ne!(run_key("exec-a", 1), run_key("exec-b", 1));
    }
}
