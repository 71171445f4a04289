//! Small pieces of built-in node semantics shared by the parser and the runtime, so that both
//! agree on them: condition truthiness, switch case matching and `expected_status` checks.

use serde_json::Value;

pub use crate::template::json_truthy;

/// The outcome of a `condition` node whose `if` rendered to `value` (`"true"` / `"false"`).
pub fn condition_outcome(value: &Value) -> &'static str {
    if json_truthy(value) { "true" } else { "false" }
}

/// The outcome name of a switch case: strings as they are, other scalars in their JSON text
/// (`1` -> `"1"`, `true` -> `"true"`, `2.5` -> `"2.5"`, `null` -> `"null"`).
pub fn case_name(case: &Value) -> String {
    match case {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The first case equal to `value`, as its outcome name ([`case_name`]); `None` means the
/// `default` outcome.
///
/// A case matches when it is equal as JSON (numbers by value, so `1` matches `1.0`), or when
/// one side is a string and the other a number or boolean with the same text (so `"1"`
/// matches case `1` and `2` matches case `"2"`).
pub fn switch_outcome(value: &Value, cases: &[Value]) -> Option<String> {
    cases
        .iter()
        .find(|case| case_matches(value, case))
        .map(case_name)
}

/// Whether a switch `value` matches one `case` (see [`switch_outcome`]).
pub fn case_matches(value: &Value, case: &Value) -> bool {
    match (value, case) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::String(_), Value::Number(_) | Value::Bool(_))
        | (Value::Number(_) | Value::Bool(_), Value::String(_)) => {
            case_name(value) == case_name(case)
        }
        _ => value == case,
    }
}

/// Parses `"200-299"` or `"404"` into an inclusive range of statuses (100-599).
pub fn status_range(s: &str) -> Option<(u16, u16)> {
    let s = s.trim();
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?),
        None => {
            let n = s.parse::<u16>().ok()?;
            (n, n)
        }
    };
    ((100..=599).contains(&a) && (100..=599).contains(&b) && a <= b).then_some((a, b))
}

/// Whether `status` is accepted by a rendered `expected_status` value (`None`/`null`: 200-299).
/// Accepts an integer, a range string, or a list of these; anything else is an error message.
pub fn status_allowed(expected: Option<&Value>, status: u16) -> Result<bool, String> {
    fn one(v: &Value, status: u16) -> Result<bool, String> {
        match v {
            Value::Number(n) => match n.as_u64() {
                Some(code) if (100..=599).contains(&code) => Ok(u64::from(status) == code),
                _ => Err(format!("invalid status code {n} in expected_status")),
            },
            Value::String(s) => match status_range(s) {
                Some((a, b)) => Ok((a..=b).contains(&status)),
                None => Err(format!("invalid status range \"{s}\" in expected_status")),
            },
            other => Err(format!("invalid expected_status entry {other}")),
        }
    }
    match expected {
        None | Some(Value::Null) => Ok((200..=299).contains(&status)),
        Some(Value::Array(items)) => {
            let mut any = false;
            for item in items {
                any |= one(item, status)?;
            }
            Ok(any)
        }
        Some(v) => one(v, status),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn switch_matching() {
        let cases = [json!("a"), json!(1), json!(true)];
        assert_eq!(switch_outcome(&json!("a"), &cases).as_deref(), Some("a"));
        assert_eq!(switch_outcome(&json!(1.0), &cases).as_deref(), Some("1"));
        assert_eq!(switch_outcome(&json!("1"), &cases).as_deref(), Some("1"));
        assert_eq!(
            switch_outcome(&json!(true), &cases).as_deref(),
            Some("true")
        );
        assert_eq!(switch_outcome(&json!("b"), &cases), None);
        assert_eq!(
            switch_outcome(&json!(2), &[json!("2")]).as_deref(),
            Some("2")
        );
        assert_eq!(
            switch_outcome(&json!("true"), &[json!(true)]).as_deref(),
            Some("true")
        );
        assert_eq!(switch_outcome(&json!(null), &[json!("")]), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(status_allowed(None, 204), Ok(true));
        assert_eq!(status_allowed(None, 404), Ok(false));
        assert_eq!(
            status_allowed(Some(&json!([404, "500-599"])), 503),
            Ok(true)
        );
        assert_eq!(status_allowed(Some(&json!(404)), 404), Ok(true));
        assert!(status_allowed(Some(&json!("x")), 404).is_err());
        assert_eq!(condition_outcome(&json!(0)), "false");
        assert_eq!(condition_outcome(&json!("x")), "true");
    }
}
