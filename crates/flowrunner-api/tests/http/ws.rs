//! The executions' WebSocket stream with a real client: replay for late clients, live events,
//! authentication (header or `token` parameter), ownership, close codes and pings.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use flowrunner_domain::Role;
use serde_json::{Value, json};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::CloseFrame;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::common::{LOG_FLOW, TestApp, delay_flow};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects with the token in the `Authorization` header (`header`) or the query string.
fn connect(
    app: &TestApp,
    id: &str,
    token: Option<&str>,
    header: bool,
) -> tungstenite::Result<Socket> {
    let mut url = app.ws_url(&format!("/ws/executions/{id}"));
    if let (Some(token), false) = (token, header) {
        url.push_str(&format!("?token={token}"));
    }
    let mut request = url.into_client_request()?;
    if let (Some(token), true) = (token, header) {
        request.headers_mut().insert(
            "Authorization",
            format!("Bearer {token}").parse().expect("header value"),
        );
    }
    let (socket, _response) = tungstenite::connect(request)?;
    if let MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("read timeout");
    }
    Ok(socket)
}

/// Status of a refused handshake.
fn refused(result: tungstenite::Result<Socket>) -> (u16, Value) {
    match result {
        Err(tungstenite::Error::Http(response)) => {
            let body = response
                .body()
                .as_deref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected an HTTP refusal, got an upgrade"),
    }
}

/// Reads until the server closes: the JSON messages and the close frame.
fn read_to_close(socket: &mut Socket) -> (Vec<Value>, Option<CloseFrame>) {
    let mut messages = Vec::new();
    loop {
        match socket.read() {
            Ok(Message::Text(text)) => {
                messages.push(serde_json::from_str(text.as_str()).expect("JSON message"));
            }
            Ok(Message::Close(frame)) => {
                // Complete the close handshake.
                let _flushed = socket.flush();
                return (messages, frame);
            }
            Ok(_) => {}
            Err(err) => panic!("read failed before the close frame: {err}; got {messages:?}"),
        }
    }
}

/// The stream invariants: seq contiguous from 0, exactly one terminal message and it is last,
/// every message names the execution.
fn assert_stream(id: &str, messages: &[Value], terminal: &str) {
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    let expected: Vec<u64> = (0..messages.len() as u64).collect();
    assert_eq!(seqs, expected, "contiguous seq from 0: {messages:?}");
    let terminals: Vec<&Value> = messages
        .iter()
        .filter(|m| {
            matches!(
                m["type"].as_str(),
                Some("execution_completed" | "execution_failed" | "execution_cancelled")
            )
        })
        .collect();
    assert_eq!(terminals.len(), 1, "one terminal message: {messages:?}");
    let last = messages.last().expect("messages");
    assert_eq!(last["type"], terminal, "{messages:?}");
    for m in messages {
        assert_eq!(m["execution_id"], id, "{m}");
        assert!(m["timestamp"].as_str().is_some(), "{m}");
    }
}

fn close_code(frame: Option<&CloseFrame>) -> Option<u16> {
    frame.map(|f| u16::from(f.code))
}

#[test]
fn late_client_gets_the_history_then_a_normal_close() {
    let app = TestApp::start();
    late_join(&app);
}

/// A finished execution's stream (also run on PostgreSQL): the whole history, one terminal
/// message, close 1000; with the token in the header and in the query string.
pub fn late_join(app: &TestApp) {
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let id = app.run_flow(&token, &flow, json!({"name": "zed"}));
    app.wait_finished(&token, &id);

    for header in [true, false] {
        let mut socket = connect(app, &id, Some(&token), header).expect("upgrade");
        let (messages, frame) = read_to_close(&mut socket);
        assert_stream(&id, &messages, "execution_completed");
        assert_eq!(close_code(frame.as_ref()), Some(1000));
        let first = &messages[0];
        assert_eq!(first["type"], "execution_update");
        assert_eq!(first["status"], "running");
        let completed: Vec<&Value> = messages
            .iter()
            .filter(|m| m["type"] == "node_completed")
            .collect();
        assert_eq!(completed.len(), 3, "{messages:?}");
        assert_eq!(completed[2]["node_id"], "done");
        assert_eq!(completed[2]["node_type"], "transform");
        assert_eq!(completed[2]["result"]["greeted"], "zed");
        let logs: Vec<&Value> = messages.iter().filter(|m| m["type"] == "log").collect();
        assert!(
            logs.iter()
                .any(|l| l["message"] == "careful zed" && l["level"] == "warn"),
            "{logs:?}"
        );
        let last = messages.last().expect("last");
        assert_eq!(last["status"], "completed");
        assert_eq!(last["result"]["greeted"], "zed");
    }
}

#[test]
fn live_events_of_a_running_execution() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("300ms", "live", None));
    let id = app.run_flow(&token, &flow, json!({}));
    let started = Instant::now();
    let mut socket = connect(&app, &id, Some(&token), false).expect("upgrade");
    let (messages, frame) = read_to_close(&mut socket);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the stream waited for the delay"
    );
    assert_stream(&id, &messages, "execution_completed");
    assert_eq!(close_code(frame.as_ref()), Some(1000));
    assert!(
        messages
            .iter()
            .any(|m| m["type"] == "node_completed" && m["node_id"] == "pause"),
        "{messages:?}"
    );
    assert_eq!(
        messages.last().expect("last")["result"],
        json!({"label": "live"})
    );
}

#[test]
fn failed_and_cancelled_executions_end_with_their_message() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let failing = app.create_flow_from(&token, crate::common::FAIL_FLOW);
    let id = app.run_flow(&token, &failing, json!({}));
    app.wait_finished(&token, &id);
    let mut socket = connect(&app, &id, Some(&token), true).expect("upgrade");
    let (messages, frame) = read_to_close(&mut socket);
    assert_stream(&id, &messages, "execution_failed");
    assert_eq!(close_code(frame.as_ref()), Some(1000));
    let last = messages.last().expect("last");
    assert_eq!(last["status"], "failed");
    assert_eq!(last["node_id"], "boom");
    assert_eq!(last["node_type"], "fail");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("it broke"))
    );

    let slow = app.create_flow_from(&token, &delay_flow("10m", "never", None));
    let id = app.run_flow(&token, &slow, json!({}));
    app.wait_execution(&token, &id, |e| e["status"] == "running");
    let mut socket = connect(&app, &id, Some(&token), true).expect("upgrade");
    let cancel = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(cancel.status, 200);
    let (messages, frame) = read_to_close(&mut socket);
    assert_stream(&id, &messages, "execution_cancelled");
    assert_eq!(close_code(frame.as_ref()), Some(1000));
    assert_eq!(messages.last().expect("last")["status"], "cancelled");
}

#[test]
fn authentication_and_ownership_are_checked_before_the_upgrade() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let id = app.run_flow(&token, &flow, json!({"name": "x"}));
    app.wait_finished(&token, &id);

    let (status, body) = refused(connect(&app, &id, None, false));
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = refused(connect(&app, &id, Some("not-a-token"), false));
    assert_eq!(status, 401);
    let (status, _) = refused(connect(&app, &id, Some("not-a-token"), true));
    assert_eq!(status, 401);
    let expired = app.expired_token(&app.user.id);
    let (status, _) = refused(connect(&app, &id, Some(&expired), false));
    assert_eq!(status, 401);

    let other = app.create_user("other-ws@example.com", Role::User);
    let (status, body) = refused(connect(&app, &id, Some(&other.token), false));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, _) = refused(connect(&app, "exec-missing", Some(&token), true));
    assert_eq!(status, 404);
    let (status, _) = refused(connect(&app, "garbage", Some(&token), true));
    assert_eq!(status, 404);

    // The admin sees every execution.
    let mut socket = connect(&app, &id, Some(&app.admin.token), true).expect("admin upgrade");
    let (messages, _) = read_to_close(&mut socket);
    assert_stream(&id, &messages, "execution_completed");

    // A plain GET (no upgrade) is a 400 with the envelope, once authorized.
    let plain = app.get(&format!("/ws/executions/{id}"), Some(&token));
    assert_eq!(plain.status, 400, "{plain:?}");
    assert_eq!(plain.code(), "invalid_request");
    let plain = app.get(&format!("/ws/executions/{id}"), None);
    assert_eq!(plain.status, 401);
}

#[test]
fn idle_connections_are_pinged_and_silent_ones_closed() {
    let app = TestApp::start_with(|config| {
        config.executions.ws_ping_interval = Duration::from_millis(30);
        config.executions.ws_idle_timeout = Duration::from_millis(200);
    });
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("10m", "idle", None));
    let id = app.run_flow(&token, &flow, json!({}));
    app.wait_execution(&token, &id, |e| e["status"] == "running");

    // A reading client answers pings (tungstenite does so while reading) and stays connected.
    let mut socket = connect(&app, &id, Some(&token), true).expect("upgrade");
    let mut pings = 0;
    let until = Instant::now() + Duration::from_millis(500);
    while Instant::now() < until {
        match socket.read().expect("still open") {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => panic!("closed while answering pings: {frame:?}"),
            _ => {}
        }
    }
    assert!(pings >= 3, "pinged regularly: {pings}");
    // Client pings are answered.
    socket
        .send(Message::Ping(b"hi".to_vec().into()))
        .expect("ping");
    socket.send(Message::Text("ignored".into())).expect("text");
    let until = Instant::now() + Duration::from_secs(2);
    let mut ponged = false;
    while !ponged && Instant::now() < until {
        if let Message::Pong(payload) = socket.read().expect("open") {
            ponged = payload.as_ref() == b"hi";
        }
    }
    assert!(ponged, "the server answered the client's ping");
    socket.close(None).expect("close");

    // A client that stops reading (so never pongs) is closed after the idle timeout.
    let mut silent = connect(&app, &id, Some(&token), true).expect("upgrade");
    std::thread::sleep(Duration::from_millis(400));
    let (_, frame) = read_to_close(&mut silent);
    assert_eq!(close_code(frame.as_ref()), Some(1001), "{frame:?}");
}

#[test]
fn a_shutdown_closes_streams_with_going_away() {
    let mut app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("10m", "stuck", None));
    let id = app.run_flow(&token, &flow, json!({}));
    app.wait_execution(&token, &id, |e| e["status"] == "running");
    let mut socket = connect(&app, &id, Some(&token), true).expect("upgrade");
    let reader = std::thread::spawn(move || read_to_close(&mut socket));
    let started = Instant::now();
    app.restart();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "open streams do not hold the shutdown up: {:?}",
        started.elapsed()
    );
    let (messages, frame) = reader.join().expect("reader");
    assert_eq!(close_code(frame.as_ref()), Some(1001), "{frame:?}");
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, (0..messages.len() as u64).collect::<Vec<_>>());
    // After the restart the execution is still running (resumed), and a new client can
    // pick the stream up from the beginning.
    let record = app.get(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(record.body["status"], "running", "{record:?}");
}

#[test]
fn a_client_that_falls_behind_is_disconnected_without_stalling_the_engine() {
    let app = TestApp::start_with(|config| config.executions.subscriber_buffer = 1);
    let token = app.user.token.clone();
    // A pause (to connect during it), then a burst of 30 log nodes.
    let mut definition = String::from(
        "metadata:\n  name: burst\nnodes:\n  pause:\n    type: delay\n    params: { duration: 300ms }\n    next: n0\n",
    );
    for i in 0..30 {
        let next = if i < 29 {
            format!("\n    next: n{}", i + 1)
        } else {
            String::new()
        };
        definition.push_str(&format!(
            "  n{i}:\n    type: log\n    params: {{ message: \"line {i}\" }}{next}\n"
        ));
    }
    let flow = app.create_flow_from(&token, &definition);
    let id = app.run_flow(&token, &flow, json!({}));
    let mut socket = connect(&app, &id, Some(&token), true).expect("upgrade");
    let (messages, frame) = read_to_close(&mut socket);
    let frame = frame.expect("close frame");
    assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
    assert_eq!(frame.reason.as_str(), "client too slow");
    // What was delivered before the cut has no gap.
    let seqs: Vec<u64> = messages.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, (0..messages.len() as u64).collect::<Vec<_>>());
    // The execution itself was not held back.
    let done = app.wait_finished(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
}
