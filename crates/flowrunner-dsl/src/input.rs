//! Checking an execution's input against the flow's declared `inputs`.

use serde::{Deserialize, Serialize};

use crate::model::{Flow, InputType};

/// One problem with an execution's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("input `{field}`: {reason}")]
pub struct InputError {
    /// The input name (empty when the input as a whole is wrong, e.g. not an object).
    pub field: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Whether `v` has JSON type `t` (`integer` accepts numbers without fractional part, e.g. `2.0`).
pub fn matches_type(t: InputType, v: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match t {
        InputType::String => v.is_string(),
        InputType::Number => v.is_number(),
        InputType::Integer => match v {
            J::Number(n) => {
                n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
            }
            _ => false,
        },
        InputType::Boolean => v.is_boolean(),
        InputType::Object => v.is_object(),
        InputType::Array => v.is_array(),
    }
}

/// "a string", "an integer", ...
pub fn type_article(t: InputType) -> &'static str {
    match t {
        InputType::String => "a string",
        InputType::Number => "a number",
        InputType::Integer => "an integer",
        InputType::Boolean => "a boolean",
        InputType::Object => "an object",
        InputType::Array => "an array",
    }
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

impl Flow {
    /// Checks `input` against the declared inputs and returns it with defaults applied.
    ///
    /// `input` must be a JSON object (`null` counts as `{}`). Missing required inputs and
    /// values of the wrong type are errors (all are reported); a `null` value counts as
    /// missing; inputs that are not declared pass through unchanged.
    pub fn check_input(
        &self,
        input: &serde_json::Value,
    ) -> Result<serde_json::Value, Vec<InputError>> {
        let mut map = match input {
            serde_json::Value::Object(m) => m.clone(),
            serde_json::Value::Null => serde_json::Map::new(),
            other => {
                return Err(vec![InputError {
                    field: String::new(),
                    reason: format!(
                        "the input must be a JSON object, found {}",
                        json_type_name(other)
                    ),
                }]);
            }
        };
        let mut errors = Vec::new();
        for (name, spec) in &self.inputs {
            match map.get(name) {
                Some(v) if !v.is_null() => {
                    if !matches_type(spec.ty, v) {
                        errors.push(InputError {
                            field: name.clone(),
                            reason: format!(
                                "expected {}, found {}",
                                type_article(spec.ty),
                                json_type_name(v)
                            ),
                        });
                    }
                }
                _ => {
                    if let Some(d) = &spec.default {
                        map.insert(name.clone(), d.clone());
                    } else if spec.required {
                        errors.push(InputError {
                            field: name.clone(),
                            reason: "is required".into(),
                        });
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(serde_json::Value::Object(map))
        } else {
            Err(errors)
        }
    }
}
