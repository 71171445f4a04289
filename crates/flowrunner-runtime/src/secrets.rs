//! Secrets: the provider trait embedders implement, and the redaction of every secret value read.
//!
//! Semantics: a secret is read when a template evaluates `secrets.<key>`. From that moment its
//! value is replaced by [`REDACTED`] in everything the execution records: events (outputs, logs,
//! errors, results), the final [`crate::ExecutionOutcome`] and snapshots. A node's output is
//! redacted when it is recorded, so later nodes see `***` too: a secret value lives only in the
//! rendered params of the node whose template references it. Snapshots store the *keys* read,
//! never the values; a resumed execution reads the values again from its provider.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde_json::Value;

/// What replaces a secret value.
pub const REDACTED: &str = "***";

/// Where an execution's `secrets.<key>` values come from. Implemented by the embedder.
///
/// `get` is called on the execution's task while a template renders: it must not block for
/// long (keep values in memory, e.g. decrypted when the execution is claimed).
pub trait SecretProvider: Send + Sync {
    /// The value of `key`, or `None` when there is no such secret.
    fn get(&self, key: &str) -> Option<String>;
}

/// A fixed map of secrets.
#[derive(Clone, Default)]
pub struct StaticSecrets {
    values: HashMap<String, String>,
}

impl StaticSecrets {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a secret, builder style.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Adds (or replaces) a secret.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.values.insert(key.into(), value.into());
    }
}

impl std::fmt::Debug for StaticSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<&String> = self.values.keys().collect();
        keys.sort();
        f.debug_struct("StaticSecrets")
            .field("keys", &keys)
            .finish_non_exhaustive()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for StaticSecrets {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut secrets = Self::new();
        for (key, value) in iter {
            secrets.insert(key, value);
        }
        secrets
    }
}

impl SecretProvider for StaticSecrets {
    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }
}

/// A provider without secrets (the default of a request).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoSecrets;

impl SecretProvider for NoSecrets {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }
}

#[derive(Default)]
struct TrackerState {
    keys: BTreeSet<String>,
    /// Distinct non-empty values, longest first (so a value containing another is replaced whole).
    values: Vec<String>,
}

/// Reads secrets for one execution and redacts every value read so far.
pub(crate) struct SecretTracker {
    provider: Arc<dyn SecretProvider>,
    active: AtomicBool,
    state: RwLock<TrackerState>,
}

impl std::fmt::Debug for SecretTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretTracker")
            .field("keys", &self.keys())
            .finish_non_exhaustive()
    }
}

impl SecretTracker {
    pub(crate) fn new(provider: Arc<dyn SecretProvider>) -> Self {
        Self {
            provider,
            active: AtomicBool::new(false),
            state: RwLock::new(TrackerState::default()),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, TrackerState> {
        self.state
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, TrackerState> {
        self.state
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Reads `key` from the provider and remembers its value for redaction.
    pub(crate) fn read(&self, key: &str) -> Option<String> {
        let value = self.provider.get(key)?;
        let known = {
            let state = self.read_state();
            state.keys.contains(key) && (value.is_empty() || state.values.contains(&value))
        };
        if !known {
            let mut state = self.write_state();
            state.keys.insert(key.to_string());
            if !value.is_empty() && !state.values.contains(&value) {
                state.values.push(value.clone());
                state
                    .values
                    .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
                self.active.store(true, Ordering::Release);
            }
        }
        Some(value)
    }

    /// Reads the given keys again (on resume), so their values are redacted from the start.
    pub(crate) fn preload<'a>(&self, keys: impl IntoIterator<Item = &'a String>) {
        for key in keys {
            if self.read(key).is_none() {
                // Remember the key even if the provider no longer knows it.
                self.write_state().keys.insert(key.clone());
            }
        }
    }

    /// The keys read so far.
    pub(crate) fn keys(&self) -> BTreeSet<String> {
        self.read_state().keys.clone()
    }

    /// Whether any secret value must be redacted.
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Redacts every secret value read so far from `text`.
    pub(crate) fn redact_string(&self, text: &mut String) {
        if !self.is_active() {
            return;
        }
        let state = self.read_state();
        redact_str(&state.values, text);
    }

    /// Redacts every JSON string (keys included) of `value`, deeply.
    pub(crate) fn redact_value(&self, value: &mut Value) {
        if !self.is_active() {
            return;
        }
        let state = self.read_state();
        redact_json(&state.values, value);
    }
}

fn redact_str(values: &[String], text: &mut String) {
    for secret in values {
        if text.contains(secret.as_str()) {
            *text = text.replace(secret.as_str(), REDACTED);
        }
    }
}

fn redact_json(values: &[String], value: &mut Value) {
    match value {
        Value::String(text) => redact_str(values, text),
        Value::Array(items) => items.iter_mut().for_each(|item| redact_json(values, item)),
        Value::Object(map) => {
            let dirty_keys = map
                .keys()
                .any(|k| values.iter().any(|s| k.contains(s.as_str())));
            if dirty_keys {
                let old = std::mem::take(map);
                for (mut key, mut item) in old {
                    redact_str(values, &mut key);
                    redact_json(values, &mut item);
                    map.insert(key, item);
                }
            } else {
                map.values_mut().for_each(|item| redact_json(values, item));
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_deeply_and_longest_first() {
        let provider = StaticSecrets::new()
            .with("a", "tok")
            .with("b", "token-123")
            .with("e", "");
        let tracker = SecretTracker::new(Arc::new(provider));
        assert!(!tracker.is_active());
        assert_eq!(tracker.read("a").as_deref(), Some("tok"));
        assert_eq!(tracker.read("b").as_deref(), Some("token-123"));
        assert_eq!(tracker.read("e").as_deref(), Some(""));
        assert_eq!(tracker.read("missing"), None);
        let mut value = json!({"x": ["Bearer token-123", {"tok": "tok tok"}], "n": 1});
        tracker.redact_value(&mut value);
        assert_eq!(
            value,
            json!({"x": ["Bearer ***", {"***": "*** ***"}], "n": 1})
        );
        let mut text = "token-123!".to_string();
        tracker.redact_string(&mut text);
        assert_eq!(text, "***!");
        assert_eq!(
            tracker.keys().into_iter().collect::<Vec<_>>(),
            vec!["a", "b", "e"]
        );
    }

    #[test]
    fn debug_never_shows_values() {
        let provider = StaticSecrets::from_iter([("k", "hunter2")]);
        assert!(!format!("{provider:?}").contains("hunter2"));
    }
}
