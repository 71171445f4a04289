//! The eight built-in node types: `http.request`, `webhook`, `transform`, `condition`,
//! `switch`, `delay`, `log` and `fail`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use flowrunner_domain::{LogLevel, parse_duration};
use flowrunner_dsl::semantics;
use flowrunner_dsl::{NodeSpec, OUTCOME_DEFAULT};
use serde_json::{Map, Value, json};
use ureq::Agent;

use crate::http::{self, DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES, HttpCall};
use crate::journal::BoxFuture;
use crate::node::{NodeContext, NodeError, NodeOutput, NodeType};

type NodeResult = Result<NodeOutput, NodeError>;

/// All built-ins, sharing one HTTP agent.
pub(crate) fn all(agent: &Agent) -> Vec<Arc<dyn NodeType>> {
    vec![
        Arc::new(HttpRequest {
            agent: agent.clone(),
        }),
        Arc::new(Webhook {
            agent: agent.clone(),
        }),
        Arc::new(Transform),
        Arc::new(Condition),
        Arc::new(Switch),
        Arc::new(Delay),
        Arc::new(Log),
        Arc::new(Fail),
    ]
}

fn builtin_spec(node_type: &str) -> NodeSpec {
    flowrunner_dsl::builtin_specs()
        .into_iter()
        .find(|spec| spec.node_type == node_type)
        .unwrap_or_else(|| NodeSpec::new(node_type, "built-in node type"))
}

fn ready(result: NodeResult) -> BoxFuture<'static, NodeResult> {
    Box::pin(std::future::ready(result))
}

fn take_param(params: &mut Value, name: &str) -> Option<Value> {
    params
        .as_object_mut()
        .and_then(|map| map.remove(name))
        .filter(|v| !v.is_null())
}

fn string_param(params: &mut Value, name: &str) -> Result<Option<String>, NodeError> {
    match take_param(params, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(NodeError::permanent(format!(
            "param `{name}` must be a string, got {}",
            kind_name(&other)
        ))),
    }
}

fn required_string(params: &mut Value, name: &str) -> Result<String, NodeError> {
    string_param(params, name)?
        .ok_or_else(|| NodeError::permanent(format!("param `{name}` is required")))
}

fn duration_param(params: &mut Value, name: &str) -> Result<Option<Duration>, NodeError> {
    string_param(params, name)?
        .map(|text| {
            parse_duration(&text).map_err(|e| NodeError::permanent(format!("param `{name}`: {e}")))
        })
        .transpose()
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A scalar as text (strings unquoted), for headers, query values and switch outcomes.
fn scalar_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn string_pairs(params: &mut Value, name: &str) -> Result<Vec<(String, String)>, NodeError> {
    match take_param(params, name) {
        None => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            let mut pairs = Vec::with_capacity(map.len());
            for (key, value) in map {
                match value {
                    Value::Null => {}
                    Value::Array(items) => {
                        pairs.extend(items.iter().map(|item| (key.clone(), scalar_text(item))))
                    }
                    other => pairs.push((key, scalar_text(&other))),
                }
            }
            Ok(pairs)
        }
        Some(other) => Err(NodeError::permanent(format!(
            "param `{name}` must be a mapping, got {}",
            kind_name(&other)
        ))),
    }
}

fn method_param(params: &mut Value, default: &str) -> Result<String, NodeError> {
    let method = string_param(params, "method")?
        .unwrap_or_else(|| default.to_string())
        .to_ascii_uppercase();
    if flowrunner_dsl::HTTP_METHODS.contains(&method.as_str()) {
        Ok(method)
    } else {
        Err(NodeError::permanent(format!(
            "unsupported HTTP method `{method}`"
        )))
    }
}

fn request_timeout(params: &mut Value, ctx: &NodeContext) -> Result<Duration, NodeError> {
    let from_params = duration_param(params, "timeout")?;
    Ok(match (from_params, ctx.timeout()) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => DEFAULT_HTTP_TIMEOUT,
    })
}

fn check_url(url: &str) -> Result<(), NodeError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        Ok(())
    } else {
        Err(NodeError::permanent(format!(
            "`{url}` is not an absolute http:// or https:// URL"
        )))
    }
}

/// `http.request`.
struct HttpRequest {
    agent: Agent,
}

impl HttpRequest {
    fn call(params: &mut Value, ctx: &NodeContext) -> Result<(HttpCall, Option<Value>), NodeError> {
        let method = method_param(params, "GET")?;
        let url = required_string(params, "url")?;
        check_url(&url)?;
        let headers = string_pairs(params, "headers")?;
        let query = string_pairs(params, "query")?;
        let body = match (take_param(params, "body"), take_param(params, "json")) {
            (Some(_), Some(_)) => {
                return Err(NodeError::permanent(
                    "params `body` and `json` are exclusive",
                ));
            }
            (Some(Value::String(text)), None) => Some((text.into_bytes(), None)),
            (Some(other), None) => Some((other.to_string().into_bytes(), None)),
            (None, Some(json)) => Some((json.to_string().into_bytes(), Some("application/json"))),
            (None, None) => None,
        };
        let timeout = request_timeout(params, ctx)?;
        let expected = take_param(params, "expected_status");
        // Reject a malformed `expected_status` before sending anything.
        semantics::status_allowed(expected.as_ref(), 200).map_err(NodeError::permanent)?;
        let max_response_bytes = match take_param(params, "max_response_bytes") {
            None => DEFAULT_MAX_RESPONSE_BYTES,
            Some(value) => value.as_u64().ok_or_else(|| {
                NodeError::permanent("param `max_response_bytes` must be a non-negative integer")
            })?,
        };
        let call = HttpCall {
            method,
            url,
            headers,
            query,
            body,
            timeout,
            max_response_bytes,
        };
        Ok((call, expected))
    }
}

impl NodeType for HttpRequest {
    fn spec(&self) -> NodeSpec {
        builtin_spec("http.request")
    }

    fn execute(&self, ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let (call, expected) = Self::call(&mut params, &ctx)?;
            let url = call.url.clone();
            let reply = ctx
                .run_blocking(move || http::perform(&agent, call))
                .await??;
            if !semantics::status_allowed(expected.as_ref(), reply.status)
                .map_err(NodeError::permanent)?
            {
                return Err(NodeError::new(format!(
                    "HTTP request failed with status {}",
                    reply.status
                )));
            }
            ctx.log(
                LogLevel::Info,
                "HTTP request successful",
                Some(json!({"status_code": reply.status, "url": url})),
            )
            .await;
            Ok(NodeOutput::new(json!({
                "status_code": reply.status,
                "headers": Value::Object(reply.headers),
                "body": reply.body,
            })))
        })
    }
}

/// `webhook`.
struct Webhook {
    agent: Agent,
}

impl NodeType for Webhook {
    fn spec(&self) -> NodeSpec {
        builtin_spec("webhook")
    }

    fn execute(&self, ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        let agent = self.agent.clone();
        Box::pin(async move {
            let method = method_param(&mut params, "POST")?;
            let url = required_string(&mut params, "url")?;
            check_url(&url)?;
            let mut headers = string_pairs(&mut params, "headers")?;
            let payload = match params.as_object_mut().and_then(|map| map.remove("payload")) {
                Some(payload) => payload,
                None => ctx.previous_output().cloned().unwrap_or(Value::Null),
            };
            let signing_secret = string_param(&mut params, "signing_secret")?;
            let timeout = request_timeout(&mut params, &ctx)?;
            let body = serde_json::to_vec(&payload)
                .map_err(|e| NodeError::permanent(format!("payload cannot be serialized: {e}")))?;
            headers.retain(|(name, _)| {
                !name.eq_ignore_ascii_case(http::SIGNATURE_HEADER)
                    && !name.eq_ignore_ascii_case(http::DELIVERY_HEADER)
            });
            headers.push((http::DELIVERY_HEADER.to_string(), ctx.run_key().to_string()));
            if let Some(secret) = signing_secret.filter(|s| !s.is_empty()) {
                headers.push((
                    http::SIGNATURE_HEADER.to_string(),
                    http::sign_payload(secret.as_bytes(), &body),
                ));
            }
            let call = HttpCall {
                method,
                url,
                headers,
                query: Vec::new(),
                body: Some((body, Some("application/json"))),
                timeout,
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            };
            let reply = ctx
                .run_blocking(move || http::perform(&agent, call))
                .await??;
            if !(200..=299).contains(&reply.status) {
                return Err(NodeError::new(format!(
                    "webhook delivery failed with status {}",
                    reply.status
                )));
            }
            Ok(NodeOutput::new(
                json!({"status_code": reply.status, "body": reply.body}),
            ))
        })
    }
}

/// `transform`.
struct Transform;

impl NodeType for Transform {
    fn spec(&self) -> NodeSpec {
        builtin_spec("transform")
    }

    fn execute(&self, _ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        let value = params
            .as_object_mut()
            .and_then(|map| map.remove("value"))
            .unwrap_or(Value::Null);
        ready(Ok(NodeOutput::new(value)))
    }
}

/// `condition`.
struct Condition;

impl NodeType for Condition {
    fn spec(&self) -> NodeSpec {
        builtin_spec("condition")
    }

    fn execute(&self, _ctx: NodeContext, params: Value) -> BoxFuture<'static, NodeResult> {
        let outcome = semantics::condition_outcome(params.get("if").unwrap_or(&Value::Null));
        ready(Ok(
            NodeOutput::new(json!({ "result": outcome == "true" })).with_outcome(outcome)
        ))
    }
}

/// `switch`.
struct Switch;

impl NodeType for Switch {
    fn spec(&self) -> NodeSpec {
        builtin_spec("switch")
    }

    fn execute(&self, _ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        let value = params
            .as_object_mut()
            .and_then(|map| map.remove("value"))
            .unwrap_or(Value::Null);
        let cases = match params.get("cases") {
            Some(Value::Array(cases)) => cases.as_slice(),
            Some(Value::Null) | None => &[],
            Some(other) => {
                return ready(Err(NodeError::permanent(format!(
                    "param `cases` must be a list, got {}",
                    kind_name(other)
                ))));
            }
        };
        let matched = semantics::switch_outcome(&value, cases);
        let outcome = matched
            .clone()
            .unwrap_or_else(|| OUTCOME_DEFAULT.to_string());
        ready(Ok(NodeOutput::new(
            json!({"value": value, "matched": matched}),
        )
        .with_outcome(outcome)))
    }
}

/// `delay`: durable, holds no thread while waiting.
struct Delay;

const WAKE_AT: &str = "wake_at";
const SINCE: &str = "since";

fn parse_time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    value
        .and_then(Value::as_str)
        .and_then(|text| DateTime::parse_from_rfc3339(text).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl NodeType for Delay {
    fn spec(&self) -> NodeSpec {
        builtin_spec("delay")
    }

    fn execute(&self, ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        Box::pin(async move {
            let resumed = ctx.resumed_state().and_then(|state| {
                Some((
                    parse_time(state.get(SINCE))?,
                    parse_time(state.get(WAKE_AT))?,
                ))
            });
            let (since, wake_at) = match resumed {
                Some(times) => times,
                None => {
                    let now = Utc::now();
                    let duration = duration_param(&mut params, "duration")?;
                    let until = string_param(&mut params, "until")?;
                    let wake_at = match (duration, until) {
                        (Some(duration), None) => TimeDelta::from_std(duration)
                            .ok()
                            .and_then(|delta| now.checked_add_signed(delta))
                            .ok_or_else(|| NodeError::permanent("param `duration` is too large"))?,
                        (None, Some(until)) => DateTime::parse_from_rfc3339(&until)
                            .map_err(|e| {
                                NodeError::permanent(format!(
                                    "param `until`: invalid RFC 3339 time `{until}`: {e}"
                                ))
                            })?
                            .with_timezone(&Utc),
                        (Some(_), Some(_)) => {
                            return Err(NodeError::permanent(
                                "params `duration` and `until` are exclusive",
                            ));
                        }
                        (None, None) => {
                            return Err(NodeError::permanent(
                                "one of `duration` or `until` is required",
                            ));
                        }
                    };
                    let mut state = Map::new();
                    state.insert(SINCE.into(), Value::String(format_time(now)));
                    state.insert(WAKE_AT.into(), Value::String(format_time(wake_at)));
                    ctx.checkpoint(Value::Object(state)).await?;
                    (now, wake_at)
                }
            };
            if let Ok(remaining) = (wake_at - Utc::now()).to_std() {
                tokio::time::sleep(remaining).await;
            }
            // Measured from the first start of the wait, so a resumed delay reports the total.
            let waited_ms = (Utc::now() - since).num_milliseconds().max(0);
            Ok(NodeOutput::new(json!({ "waited_ms": waited_ms })))
        })
    }
}

/// `log`.
struct Log;

impl NodeType for Log {
    fn spec(&self) -> NodeSpec {
        builtin_spec("log")
    }

    fn execute(&self, ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        Box::pin(async move {
            let level = match string_param(&mut params, "level")? {
                None => LogLevel::Info,
                Some(text) => text
                    .parse::<LogLevel>()
                    .map_err(|e| NodeError::permanent(e.to_string()))?,
            };
            let message = match take_param(&mut params, "message") {
                Some(Value::String(text)) => text,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            ctx.log(level, message.clone(), None).await;
            Ok(NodeOutput::new(json!({"level": level, "message": message})))
        })
    }
}

/// `fail`: always fails, without retry (its `error` edge applies).
struct Fail;

impl NodeType for Fail {
    fn spec(&self) -> NodeSpec {
        builtin_spec("fail")
    }

    fn execute(&self, _ctx: NodeContext, mut params: Value) -> BoxFuture<'static, NodeResult> {
        let message = match take_param(&mut params, "message") {
            Some(Value::String(text)) => text,
            Some(other) => other.to_string(),
            None => "failed".to_string(),
        };
        ready(Err(NodeError::permanent(message)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_has_its_dsl_spec() {
        let agent = http::new_agent();
        let names: Vec<String> = all(&agent).iter().map(|n| n.spec().node_type).collect();
        let expected: Vec<String> = flowrunner_dsl::builtin_specs()
            .into_iter()
            .map(|s| s.node_type)
            .collect();
        assert_eq!(names, expected);
    }
}
