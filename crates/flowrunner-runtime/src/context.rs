//! The template root context (`input`, `nodes`, `secrets`, `execution`, `flow`, `error`),
//! built once per execution and read lazily by templates.
//!
//! Node outputs are converted from JSON to minijinja values once, when they are recorded;
//! rendering a node's params clones one `Value` (a reference count), never the outputs.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use flowrunner_dsl::template::json_to_value;
use minijinja::Value;
use minijinja::value::{Enumerator, Object, ObjectRepr};

use crate::secrets::SecretTracker;

/// The `nodes` variable: `nodes.<id>.output` for every completed node.
#[derive(Debug, Default)]
pub(crate) struct NodesObject {
    entries: RwLock<HashMap<String, Value>>,
}

impl NodesObject {
    /// Records (or replaces) the output of `node_id`.
    pub(crate) fn insert(&self, node_id: &str, output: &serde_json::Value) {
        let entry = Value::from_pairs([("output", json_to_value(output))]);
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match entries.get_mut(node_id) {
            Some(slot) => *slot = entry,
            None => {
                entries.insert(node_id.to_string(), entry);
            }
        }
    }
}

impl Object for NodesObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        let entries = self
            .entries
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut keys: Vec<&String> = entries.keys().collect();
        keys.sort();
        Enumerator::Values(keys.into_iter().map(|k| Value::from(k.as_str())).collect())
    }
}

/// The `secrets` variable: reads through the tracker, which remembers values for redaction.
#[derive(Debug)]
pub(crate) struct SecretsObject {
    tracker: Arc<SecretTracker>,
}

impl Object for SecretsObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.tracker.read(key.as_str()?).map(Value::from)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        // Listing every secret would read (and expose) them all.
        Enumerator::NonEnumerable
    }
}

/// The root object passed to templates.
#[derive(Debug)]
struct RootObject {
    input: Value,
    nodes: Value,
    secrets: Value,
    execution: Value,
    flow: Value,
    error: Option<Value>,
}

impl Object for RootObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "input" => Some(self.input.clone()),
            "nodes" => Some(self.nodes.clone()),
            "secrets" => Some(self.secrets.clone()),
            "execution" => Some(self.execution.clone()),
            "flow" => Some(self.flow.clone()),
            // `null` when no error edge was taken.
            "error" => Some(self.error.clone().unwrap_or_else(|| Value::from(()))),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["input", "nodes", "secrets", "execution", "flow", "error"])
    }
}

/// Everything a template of one execution may read.
#[derive(Debug)]
pub(crate) struct TemplateScope {
    nodes: Arc<NodesObject>,
    root: Value,
    parts: RootParts,
}

#[derive(Debug, Clone)]
struct RootParts {
    input: Value,
    nodes: Value,
    secrets: Value,
    execution: Value,
    flow: Value,
}

/// What the scope is built from.
pub(crate) struct ScopeInit<'a> {
    pub(crate) input: &'a serde_json::Value,
    pub(crate) execution: serde_json::Value,
    pub(crate) flow: serde_json::Value,
    pub(crate) secrets: Arc<SecretTracker>,
}

impl TemplateScope {
    pub(crate) fn new(init: ScopeInit<'_>) -> Self {
        let nodes = Arc::new(NodesObject::default());
        let parts = RootParts {
            input: json_to_value(init.input),
            nodes: Value::from_dyn_object(Arc::clone(&nodes)),
            secrets: Value::from_object(SecretsObject {
                tracker: init.secrets,
            }),
            execution: json_to_value(&init.execution),
            flow: json_to_value(&init.flow),
        };
        let root = Self::build_root(&parts, None);
        Self { nodes, root, parts }
    }

    fn build_root(parts: &RootParts, error: Option<Value>) -> Value {
        let parts = parts.clone();
        Value::from_object(RootObject {
            input: parts.input,
            nodes: parts.nodes,
            secrets: parts.secrets,
            execution: parts.execution,
            flow: parts.flow,
            error,
        })
    }

    /// The root value to render templates with.
    pub(crate) fn root(&self) -> &Value {
        &self.root
    }

    /// Records a node's (already redacted) output.
    pub(crate) fn record_output(&self, node_id: &str, output: &serde_json::Value) {
        self.nodes.insert(node_id, output);
    }

    /// Sets (or clears) the `error` variable.
    pub(crate) fn set_error(&mut self, error: Option<&serde_json::Value>) {
        self.root = Self::build_root(&self.parts, error.map(json_to_value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::StaticSecrets;
    use flowrunner_dsl::template::ValueTemplate;
    use serde_json::json;

    #[test]
    fn templates_read_nodes_secrets_and_error_lazily() {
        let tracker = Arc::new(SecretTracker::new(Arc::new(
            StaticSecrets::new().with("k", "s3cr3t"),
        )));
        let mut scope = TemplateScope::new(ScopeInit {
            input: &json!({"n": 2}),
            execution: json!({"id": "exec-1"}),
            flow: json!({"name": "f", "version": "1"}),
            secrets: Arc::clone(&tracker),
        });
        scope.record_output("a", &json!({"x": 40}));
        let t = ValueTemplate::compile(&json!({
            "sum": "{{ nodes.a.output.x + input.n }}",
            "key": "Bearer {{ secrets.k }}",
            "id": "{{ execution.id }}/{{ flow.name }}",
        }))
        .expect("compile");
        let out = t.render(scope.root()).expect("render");
        assert_eq!(
            out,
            json!({"sum": 42, "key": "Bearer s3cr3t", "id": "exec-1/f"})
        );
        assert!(tracker.is_active());
        let none = ValueTemplate::compile(&json!("{{ error is none }}")).expect("compile");
        assert_eq!(none.render(scope.root()).expect("render"), json!(true));
        let e = ValueTemplate::compile(&json!("{{ error.message }}")).expect("compile");
        scope.set_error(Some(&json!({"message": "boom"})));
        assert_eq!(e.render(scope.root()).expect("render"), json!("boom"));
        let missing = ValueTemplate::compile(&json!("{{ nodes.zzz.output }}")).expect("compile");
        assert!(missing.render(scope.root()).is_err());
    }
}
