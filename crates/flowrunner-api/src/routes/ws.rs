//! `GET /ws/executions/{id}`: an execution's events over a WebSocket, first what already
//! happened, then live, without gap or duplicate; every message carries the event's `seq`.
//!
//! Authentication happens before the upgrade (`Authorization: Bearer` or a `token` query
//! parameter for browsers), so failures are ordinary JSON error answers. After the terminal
//! message the server closes normally (1000); a client that falls too far behind is closed with
//! 1008, a shutdown closes with 1001. The server pings every `ws_ping_interval` and closes a
//! connection silent for `ws_idle_timeout`; text sent by the client is ignored.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{CloseCode, CloseReason, Message, MessageStream, Session};
use flowrunner_engine::{LiveEnd, StoredEvent, Watch};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::extract::{Caller, bearer_token, query_params};
use crate::routes::executions::{execution_id, not_found};
use crate::routes::flows::scope_of;
use crate::state::AppState;
use crate::wire::timestamp;

/// The caller of a WebSocket request: the `Authorization` header, else the `token` parameter.
async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Caller> {
    let token = if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
    {
        bearer_token(req)?
    } else {
        query_params(req)?
            .remove("token")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::Unauthorized("Authentication required".into()))?
    };
    Ok(Caller(state.authenticate(&token).await?))
}

/// Upgrades to a WebSocket streaming the execution's events.
pub async fn stream(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Payload,
) -> Result<HttpResponse> {
    let caller = authenticate(&state, &req).await?;
    let id = execution_id(&path)?;
    let watch = state
        .engine()
        .watch(&id, scope_of(&caller))
        .await
        .map_err(|e| Error::from_engine(e, "Execution"))?
        .ok_or_else(not_found)?;
    let (response, session, messages) = actix_ws::handle(&req, body).map_err(|e| {
        Error::invalid_request(format!("This endpoint expects a WebSocket upgrade: {e}"))
    })?;
    let settings = Settings {
        ping_interval: state
            .executions()
            .ws_ping_interval
            .max(Duration::from_millis(10)),
        idle_timeout: state
            .executions()
            .ws_idle_timeout
            .max(Duration::from_millis(10)),
    };
    actix_web::rt::spawn(run_session(session, messages, watch, settings));
    Ok(response)
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    ping_interval: Duration,
    idle_timeout: Duration,
}

/// Why a session ends.
enum End {
    /// Close with this code and reason.
    Close(CloseCode, Option<&'static str>),
    /// The client closed, or the connection is gone: answer the close if possible.
    ClientGone,
}

async fn run_session(
    mut session: Session,
    mut messages: MessageStream,
    watch: Watch,
    settings: Settings,
) {
    let end = pump(&mut session, &mut messages, watch, settings).await;
    let reason = match end {
        End::Close(code, description) => Some(CloseReason {
            code,
            description: description.map(str::to_string),
        }),
        End::ClientGone => None,
    };
    // A send that cannot complete (client not reading) must not keep the task alive.
    let closed = tokio::time::timeout(settings.idle_timeout, session.close(reason)).await;
    if !matches!(closed, Ok(Ok(()))) {
        log::debug!("WebSocket closed without a clean close handshake");
    }
}

/// Sends one text message, bounded in time: a client that does not read is dropped.
async fn send(session: &mut Session, text: String, within: Duration) -> Result<(), End> {
    match tokio::time::timeout(within, session.text(text)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_closed)) => Err(End::ClientGone),
        Err(_elapsed) => Err(End::Close(CloseCode::Policy, Some("client too slow"))),
    }
}

async fn pump(
    session: &mut Session,
    messages: &mut MessageStream,
    watch: Watch,
    settings: Settings,
) -> End {
    let Watch {
        history,
        mut live,
        finished,
    } = watch;
    for event in &history {
        if let Err(end) = send(session, message(event).to_string(), settings.idle_timeout).await {
            return end;
        }
    }
    if finished {
        return End::Close(CloseCode::Normal, None);
    }
    let mut last_heard = Instant::now();
    let mut pings = tokio::time::interval_at(
        Instant::now() + settings.ping_interval,
        settings.ping_interval,
    );
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = live.recv() => match event {
                Ok(Some(event)) => {
                    let terminal = event.is_terminal();
                    if let Err(end) =
                        send(session, message(&event).to_string(), settings.idle_timeout).await
                    {
                        return end;
                    }
                    if terminal {
                        return End::Close(CloseCode::Normal, None);
                    }
                }
                Ok(None) => return End::Close(CloseCode::Normal, None),
                Err(LiveEnd::Lagged) => {
                    return End::Close(CloseCode::Policy, Some("client too slow"));
                }
                Err(LiveEnd::ShuttingDown) => {
                    return End::Close(CloseCode::Away, Some("server shutting down"));
                }
            },
            incoming = messages.recv() => match incoming {
                Some(Ok(Message::Ping(bytes))) => {
                    last_heard = Instant::now();
                    if session.pong(&bytes).await.is_err() {
                        return End::ClientGone;
                    }
                }
                Some(Ok(Message::Close(_))) | None => return End::ClientGone,
                Some(Ok(_)) => last_heard = Instant::now(),
                Some(Err(err)) => {
                    log::debug!("WebSocket protocol error: {err}");
                    return End::Close(CloseCode::Protocol, Some("protocol error"));
                }
            },
            _ = pings.tick() => {
                if last_heard.elapsed() >= settings.idle_timeout {
                    return End::Close(CloseCode::Away, Some("no pong received"));
                }
                if session.ping(b"").await.is_err() {
                    return End::ClientGone;
                }
            }
        }
    }
}

fn text_field(data: &Value, key: &str) -> Value {
    data.get(key)
        .filter(|v| !v.is_null())
        .cloned()
        .unwrap_or(Value::Null)
}

/// The reference's message for one journal entry. Every entry yields exactly one message (so
/// `seq` stays contiguous): node starts, resumes and checkpoints are `execution_update`, node
/// failures are `log` lines (`warn` when retried, else `error`).
pub(crate) fn message(event: &StoredEvent) -> Value {
    let data = &event.data;
    let node_id = event
        .node_id
        .clone()
        .map_or_else(|| text_field(data, "node_id"), Value::String);
    let node_type = event.node_type.clone().map_or(Value::Null, Value::String);
    let mut m = Map::new();
    let kind = match event.kind.as_str() {
        "started" | "resumed" | "node_started" | "node_checkpoint" => {
            m.insert("status".into(), json!("running"));
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            if let Some(attempt) = data.get("attempt").filter(|v| !v.is_null()) {
                m.insert("attempt".into(), attempt.clone());
            }
            "execution_update"
        }
        "node_completed" => {
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            m.insert("result".into(), text_field(data, "output"));
            "node_completed"
        }
        "node_failed" => {
            let retry = data
                .get("will_retry")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let error = data
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("failed");
            let node = event.node_id.as_deref().unwrap_or("?");
            let attempt = data.get("attempt").and_then(Value::as_u64).unwrap_or(1);
            let message = if retry {
                format!("Node {node} failed (attempt {attempt}), retrying: {error}")
            } else {
                format!("Node {node} failed (attempt {attempt}): {error}")
            };
            m.insert("level".into(), json!(if retry { "warn" } else { "error" }));
            m.insert("message".into(), json!(message));
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            m.insert(
                "data".into(),
                json!({
                    "attempt": attempt,
                    "error": error,
                    "will_retry": retry,
                    "retry_in_ms": text_field(data, "retry_in_ms"),
                }),
            );
            "log"
        }
        "log" => {
            m.insert("level".into(), text_field(data, "level"));
            m.insert("message".into(), text_field(data, "message"));
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            m.insert("data".into(), text_field(data, "data"));
            "log"
        }
        "completed" => {
            m.insert("status".into(), json!("completed"));
            m.insert("result".into(), text_field(data, "result"));
            "execution_completed"
        }
        "failed" => {
            m.insert("status".into(), json!("failed"));
            m.insert("error".into(), text_field(data, "error"));
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            "execution_failed"
        }
        "cancelled" => {
            m.insert("status".into(), json!("cancelled"));
            "execution_cancelled"
        }
        other => {
            // A kind this version does not know: still one message, so seq stays contiguous.
            m.insert("level".into(), json!("debug"));
            m.insert("message".into(), json!(format!("event {other}")));
            m.insert("node_id".into(), node_id);
            m.insert("node_type".into(), node_type);
            m.insert("data".into(), data.clone());
            "log"
        }
    };
    m.insert("type".into(), json!(kind));
    m.insert("execution_id".into(), json!(event.execution_id.as_str()));
    m.insert("seq".into(), json!(event.seq));
    m.insert("timestamp".into(), json!(timestamp(&event.timestamp)));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use flowrunner_engine::ExecutionId;

    use super::*;

    fn event(kind: &str, node: Option<&str>, data: Value) -> StoredEvent {
        StoredEvent {
            execution_id: ExecutionId::parse("exec-00000000000000000000000000000001")
                .unwrap_or_else(|_| ExecutionId::generate()),
            seq: 3,
            timestamp: chrono::DateTime::from_timestamp(0, 0).unwrap_or_default(),
            kind: kind.into(),
            node_id: node.map(str::to_string),
            node_type: node.map(|_| "http.request".to_string()),
            data,
        }
    }

    #[test]
    fn messages_follow_the_reference() {
        let m = message(&event(
            "node_completed",
            Some("start"),
            json!({"output": {"status_code": 200}}),
        ));
        assert_eq!(m["type"], "node_completed");
        assert_eq!(m["result"]["status_code"], 200);
        assert_eq!(m["node_type"], "http.request");
        assert_eq!(m["seq"], 3);
        assert_eq!(m["timestamp"], "1970-01-01T00:00:00.000Z");

        let m = message(&event("node_started", Some("start"), json!({"attempt": 1})));
        assert_eq!(m["type"], "execution_update");
        assert_eq!(m["status"], "running");
        assert_eq!(m["node_id"], "start");

        let m = message(&event(
            "failed",
            Some("start"),
            json!({"error": "boom", "node_id": "start"}),
        ));
        assert_eq!(m["type"], "execution_failed");
        assert_eq!(m["error"], "boom");
        assert_eq!(m["status"], "failed");

        let m = message(&event(
            "node_failed",
            Some("start"),
            json!({"error": "boom", "attempt": 1, "will_retry": true}),
        ));
        assert_eq!(
            (m["type"].as_str(), m["level"].as_str()),
            (Some("log"), Some("warn"))
        );

        let m = message(&event("cancelled", None, json!({})));
        assert_eq!(m["type"], "execution_cancelled");
        let m = message(&event("completed", None, json!({"result": {"x": 1}})));
        assert_eq!(m["type"], "execution_completed");
        assert_eq!(m["result"]["x"], 1);
        assert_eq!(message(&event("brand_new", None, json!({})))["type"], "log");
    }
}
