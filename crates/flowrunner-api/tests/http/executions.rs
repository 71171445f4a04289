//! Executions over HTTP: running flows (input checks, idempotency keys), reading, listing,
//! cancelling, logs, per-flow concurrency, pinned revisions and deleted flows.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowrunner_domain::Role;
use serde_json::{Value, json};

use crate::common::{FAIL_FLOW, LOG_FLOW, TestApp, delay_flow, http_flow};

/// A local HTTP server that accepts connections and never answers; counts connections.
struct HangingServer {
    url: String,
    accepted: Arc<AtomicUsize>,
}

fn hanging_server() -> HangingServer {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hang", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                // Read the request, then hold the connection open without answering.
                let mut buf = [0u8; 1024];
                while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    HangingServer { url, accepted }
}

/// The success path on any backend (also run on PostgreSQL): run, read, list, logs, cancel.
pub fn lifecycle(app: &TestApp) {
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);

    let r = app.post(
        &format!("/api/v1/flows/{flow}/run"),
        Some(&token),
        json!({"input": {"name": "ada"}}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    let id = r.body["execution_id"].as_str().expect("id").to_string();
    assert!(id.starts_with("exec-"), "{id}");
    assert_eq!(r.body["flow_id"], flow.as_str());
    assert!(matches!(
        r.body["status"].as_str(),
        Some("queued" | "running" | "completed")
    ));
    assert!(r.body["created_at"].as_str().is_some());
    assert_eq!(r.body.as_object().map(|o| o.len()), Some(4), "{}", r.body);

    let done = app.wait_finished(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["id"], id.as_str());
    assert_eq!(done["flow_id"], flow.as_str());
    assert_eq!(
        done["input"],
        json!({"name": "ada", "count": 1}),
        "defaults applied"
    );
    assert_eq!(done["result"]["greeted"], "ada", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert!(done["started_at"].as_str().is_some());
    assert!(done["completed_at"].as_str().is_some());
    assert!(done["duration"].as_i64().is_some_and(|d| d >= 0));
    assert_eq!(done["revision"]["number"], 1);
    assert_eq!(done["revision"]["version"], "1.0.0");
    assert!(
        done["revision"]["id"]
            .as_str()
            .is_some_and(|r| r.starts_with("rev-"))
    );

    let list = app.get(&format!("/api/v1/executions?flow_id={flow}"), Some(&token));
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["limit"], 10);
    assert_eq!(list.body["offset"], 0);
    let item = &list.body["executions"][0];
    assert_eq!(item["id"], id.as_str());
    assert_eq!(item["status"], "completed");
    assert!(item["duration"].as_i64().is_some());
    assert!(
        item.get("error").is_none(),
        "no error key unless failed: {item}"
    );
    assert!(item.get("input").is_none(), "list items are summaries");

    let logs = app.get(&format!("/api/v1/executions/{id}/logs"), Some(&token));
    assert_eq!(logs.status, 200, "{logs:?}");
    let lines = logs.body["logs"].as_array().expect("logs");
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "hello ada" && l["node_id"] == "hello"),
        "{lines:?}"
    );

    // Cancelling a finished execution conflicts.
    let again = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.code(), "conflict");

    // Cancelling a waiting one works.
    let slow = app.create_flow_from(&token, &delay_flow("10m", "slow", None));
    let waiting = app.run_flow(&token, &slow, json!({}));
    let cancelled = app.delete(&format!("/api/v1/executions/{waiting}"), Some(&token));
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(
        cancelled.body,
        json!({"message": "Execution cancelled successfully"})
    );
    let record = app.wait_finished(&token, &waiting);
    assert_eq!(record["status"], "cancelled");
}

#[test]
fn run_read_list_logs_cancel() {
    let app = TestApp::start();
    lifecycle(&app);
}

/// `POST /flows/{id}/run?wait=…` (also run on PostgreSQL): the answer waits for the end and
/// carries the whole execution, exactly as `GET /executions/{id}` then shows it.
pub fn run_and_wait(app: &TestApp) {
    let token = app.user.token.clone();
    let greeter = app.create_flow_from(&token, LOG_FLOW);
    let failing = app.create_flow_from(&token, FAIL_FLOW);
    let slow = app.create_flow_from(&token, &delay_flow("10m", "slow", None));

    // Finished within the wait: 200, the run answer's id beside every field of the detail.
    for (flow, wait, input, status) in [
        (&greeter, "30", json!({"name": "ada"}), "completed"),
        (&greeter, "0.5e2", json!({"name": "bob"}), "completed"),
        (&failing, "true", json!({}), "failed"),
    ] {
        let r = app.post(
            &format!("/api/v1/flows/{flow}/run?wait={wait}"),
            Some(&token),
            json!({ "input": input }),
        );
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["status"], status, "{r:?}");
        let id = r.body["execution_id"].as_str().expect("execution_id");
        let stored = app.get(&format!("/api/v1/executions/{id}"), Some(&token));
        assert_eq!(stored.status, 200, "{stored:?}");
        let mut answered = r.body.clone();
        answered
            .as_object_mut()
            .expect("object")
            .remove("execution_id");
        assert_eq!(answered, stored.body, "the answer is the stored execution");
    }
    let done = app.post(
        &format!("/api/v1/flows/{greeter}/run?wait=30"),
        Some(&token),
        json!({"input": {"name": "cy"}}),
    );
    assert_eq!(done.body["result"]["greeted"], "cy", "{done:?}");
    assert!(done.body["duration"].as_i64().is_some(), "{done:?}");
    let failed = app.post(
        &format!("/api/v1/flows/{failing}/run?wait=30"),
        Some(&token),
        json!({}),
    );
    assert_eq!(failed.body["node_id"], "boom", "{failed:?}");
    assert!(
        failed.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("it broke")),
        "{failed:?}"
    );

    // Still running when the wait is over: 202 with the execution as it is.
    let started = Instant::now();
    let r = app.post(
        &format!("/api/v1/flows/{slow}/run?wait=0.3"),
        Some(&token),
        json!({}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        matches!(r.body["status"].as_str(), Some("queued" | "running")),
        "{r:?}"
    );
    assert_eq!(r.body["completed_at"], Value::Null, "{r:?}");
    let id = r.body["execution_id"].as_str().expect("execution_id");
    assert_eq!(r.body["id"], id);
    let cancelled = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(cancelled.status, 200, "{cancelled:?}");

    // `wait=false` or no `wait`: the reference's answer.
    let r = app.post(
        &format!("/api/v1/flows/{greeter}/run?wait=false"),
        Some(&token),
        json!({"input": {"name": "dee"}}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert_eq!(r.body.as_object().map(|o| o.len()), Some(4), "{}", r.body);

    // An idempotency key finds the first execution, already finished.
    let path = format!("/api/v1/flows/{greeter}/run?wait=30");
    let first = keyed::post_with_key(app, &token, &path, "wait-key-1");
    assert_eq!(first.status, 200, "{}", first.body);
    let again = keyed::post_with_key(app, &token, &path, "wait-key-1");
    assert_eq!(again.status, 200, "{}", again.body);
    assert!(again.replayed);
    assert_eq!(again.body, first.body);

    // Bad waits are rejected before anything is created; other accounts see nothing.
    let before = app.get(
        &format!("/api/v1/executions?flow_id={greeter}"),
        Some(&token),
    );
    for bad in ["0", "-1", "301", "abc", "", "nan", "inf"] {
        let r = app.post(
            &format!("/api/v1/flows/{greeter}/run?wait={bad}"),
            Some(&token),
            json!({"input": {"name": "x"}}),
        );
        assert_eq!(r.status, 422, "wait={bad}: {r:?}");
        assert_eq!(r.body["error"]["details"]["field"], "wait", "wait={bad}");
    }
    let after = app.get(
        &format!("/api/v1/executions?flow_id={greeter}"),
        Some(&token),
    );
    assert_eq!(after.body["total"], before.body["total"]);
    let other = app.create_user("other-wait@example.com", Role::User);
    let r = app.post(
        &format!("/api/v1/flows/{greeter}/run?wait=5"),
        Some(&other.token),
        json!({"input": {"name": "x"}}),
    );
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn run_can_wait_for_the_end() {
    let app = TestApp::start();
    run_and_wait(&app);
}

#[test]
fn run_checks_the_input_against_the_flow() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let path = format!("/api/v1/flows/{flow}/run");

    let missing = app.post(&path, Some(&token), json!({}));
    assert_eq!(missing.status, 422, "{missing:?}");
    assert_eq!(missing.code(), "validation_error");
    assert_eq!(missing.body["error"]["details"]["field"], "input.name");
    assert_eq!(missing.body["error"]["details"]["reason"], "is required");

    let wrong = app.post(
        &path,
        Some(&token),
        json!({"input": {"name": 5, "count": "x"}}),
    );
    assert_eq!(wrong.status, 422, "{wrong:?}");
    let fields: Vec<&str> = wrong.body["error"]["details"]["errors"]
        .as_array()
        .expect("one detail per field")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert!(fields.contains(&"input.name"), "{fields:?}");
    assert!(fields.contains(&"input.count"), "{fields:?}");

    for bad in [
        json!({"input": [1]}),
        json!({"input": "text"}),
        json!({"input": 3}),
    ] {
        let r = app.post(&path, Some(&token), bad.clone());
        assert_eq!(r.status, 422, "{bad}: {r:?}");
        assert_eq!(r.body["error"]["details"]["field"], "input", "{bad}");
    }
    let malformed = app.raw(
        "POST",
        &path,
        Some(&token),
        Some(("application/json", b"{\"input\":".to_vec())),
    );
    assert_eq!(malformed.status, 400, "{malformed:?}");

    // No body at all means no input: the required `name` is missing.
    let empty = app.raw("POST", &path, Some(&token), None);
    assert_eq!(empty.status, 422, "{empty:?}");
    assert_eq!(empty.body["error"]["details"]["field"], "input.name");

    // Unknown, malformed, other account's flows: 404.
    for missing_flow in ["flow-doesnotexist", "nope", "exec-123"] {
        let r = app.post(
            &format!("/api/v1/flows/{missing_flow}/run"),
            Some(&token),
            json!({"input": {"name": "x"}}),
        );
        assert_eq!(r.status, 404, "{missing_flow}: {r:?}");
        assert_eq!(r.code(), "not_found");
    }
    let other = app.create_user("other-run@example.com", Role::User);
    let r = app.post(&path, Some(&other.token), json!({"input": {"name": "x"}}));
    assert_eq!(r.status, 404, "{r:?}");
    // Admins may run anyone's flow.
    let r = app.post(
        &path,
        Some(&app.admin.token),
        json!({"input": {"name": "x"}}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    // Nothing was created by the rejected requests.
    let list = app.get(&format!("/api/v1/executions?flow_id={flow}"), Some(&token));
    assert_eq!(list.body["total"], 1, "{list:?}");
}

fn run_with_key(app: &TestApp, token: &str, flow: &str, key: &str) -> keyed::Answer {
    keyed::post_with_key(app, token, &format!("/api/v1/flows/{flow}/run"), key)
}

/// A minimal request helper that can set the `Idempotency-Key` header.
mod keyed {
    use serde_json::Value;

    use crate::common::TestApp;

    pub struct Answer {
        pub status: u16,
        pub body: Value,
        pub replayed: bool,
    }

    pub fn post_with_key(app: &TestApp, token: &str, path: &str, key: &str) -> Answer {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = agent
            .post(format!("{}{path}", app.base))
            .header("Authorization", format!("Bearer {token}"))
            .header("Idempotency-Key", key)
            .header("Content-Type", "application/json")
            .send(r#"{"input": {"name": "k"}}"#)
            .expect("request");
        let status = response.status().as_u16();
        let replayed = response
            .headers()
            .get("idempotency-replayed")
            .is_some_and(|v| v == "true");
        let body: Value = response.body_mut().read_json().expect("json body");
        Answer {
            status,
            body,
            replayed,
        }
    }
}

#[test]
fn idempotency_keys_make_retries_safe() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let other_flow = app.create_flow_from(&token, LOG_FLOW);

    let first = run_with_key(&app, &token, &flow, "order-42");
    assert_eq!(first.status, 202, "{}", first.body);
    assert!(!first.replayed);
    let second = run_with_key(&app, &token, &flow, "order-42");
    assert_eq!(second.status, 202, "{}", second.body);
    assert!(second.replayed, "a replay is marked");
    assert_eq!(second.body["execution_id"], first.body["execution_id"]);
    assert_eq!(second.body["created_at"], first.body["created_at"]);

    let different = run_with_key(&app, &token, &flow, "order-43");
    assert_eq!(different.status, 202);
    assert_ne!(different.body["execution_id"], first.body["execution_id"]);

    let elsewhere = run_with_key(&app, &token, &other_flow, "order-42");
    assert_eq!(elsewhere.status, 202);
    assert_ne!(elsewhere.body["execution_id"], first.body["execution_id"]);

    let list = app.get(&format!("/api/v1/executions?flow_id={flow}"), Some(&token));
    assert_eq!(list.body["total"], 2, "{list:?}");

    for bad in ["", "has space", &"k".repeat(256)] {
        let r = run_with_key(&app, &token, &flow, bad);
        assert_eq!(r.status, 422, "{bad:?}: {}", r.body);
        assert_eq!(r.body["error"]["details"]["field"], "Idempotency-Key");
    }
    assert_eq!(
        run_with_key(&app, &token, &flow, &"k".repeat(255)).status,
        202
    );
}

#[test]
fn list_filters_validate_and_page_newest_first() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let failing = app.create_flow_from(&token, FAIL_FLOW);
    let mut ids = Vec::new();
    for i in 0..3 {
        let id = app.run_flow(&token, &flow, json!({"name": format!("n{i}")}));
        app.wait_finished(&token, &id);
        ids.push(id);
    }
    let failed = app.run_flow(&token, &failing, json!({}));
    let failed_record = app.wait_finished(&token, &failed);
    assert_eq!(failed_record["status"], "failed", "{failed_record}");
    assert!(
        failed_record["error"]
            .as_str()
            .is_some_and(|e| e.contains("it broke"))
    );
    assert_eq!(failed_record["node_id"], "boom");

    let all = app.get("/api/v1/executions", Some(&token));
    assert_eq!(all.body["total"], 4);
    assert_eq!(
        all.body["executions"][0]["id"],
        failed.as_str(),
        "newest first"
    );
    assert!(all.body["executions"][0]["error"].as_str().is_some());

    let page = app.get(
        &format!("/api/v1/executions?flow_id={flow}&limit=2&offset=1"),
        Some(&token),
    );
    assert_eq!(page.body["total"], 3);
    assert_eq!(page.body["limit"], 2);
    assert_eq!(page.body["offset"], 1);
    let got: Vec<&str> = page.body["executions"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(got, vec![ids[1].as_str(), ids[0].as_str()]);

    let by_status = app.get("/api/v1/executions?status=failed", Some(&token));
    assert_eq!(by_status.body["total"], 1);
    let none = app.get("/api/v1/executions?status=running", Some(&token));
    assert_eq!(none.body["total"], 0);

    for (query, field) in [
        ("status=done", "status"),
        ("status=RUNNING", "status"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("offset=-1", "offset"),
        ("flow_id=not-a-flow", "flow_id"),
    ] {
        let r = app.get(&format!("/api/v1/executions?{query}"), Some(&token));
        assert_eq!(r.status, 422, "{query}: {r:?}");
        assert_eq!(r.body["error"]["details"]["field"], field, "{query}");
    }

    // Another account sees none of them; the admin sees all.
    let other = app.create_user("other-list@example.com", Role::User);
    assert_eq!(
        app.get("/api/v1/executions", Some(&other.token)).body["total"],
        0
    );
    assert_eq!(
        app.get("/api/v1/executions", Some(&app.admin.token)).body["total"],
        4
    );
    for id in [&ids[0], &failed] {
        for path in [
            format!("/api/v1/executions/{id}"),
            format!("/api/v1/executions/{id}/logs"),
        ] {
            assert_eq!(app.get(&path, Some(&other.token)).status, 404, "{path}");
            assert_eq!(app.get(&path, Some(&app.admin.token)).status, 200, "{path}");
        }
        let r = app.delete(&format!("/api/v1/executions/{id}"), Some(&other.token));
        assert_eq!(r.status, 404);
    }
    for missing in ["exec-nothere", "garbage", "flow-123"] {
        assert_eq!(
            app.get(&format!("/api/v1/executions/{missing}"), Some(&token))
                .status,
            404
        );
    }
}

#[test]
fn logs_filter_by_minimum_level_and_page_oldest_first() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, LOG_FLOW);
    let id = app.run_flow(&token, &flow, json!({"name": "bo"}));
    app.wait_finished(&token, &id);
    let path = format!("/api/v1/executions/{id}/logs");

    let all = app.get(&path, Some(&token));
    assert_eq!(all.status, 200);
    let lines = all.body["logs"].as_array().expect("logs").clone();
    let total = all.body["total"].as_i64().expect("total");
    assert_eq!(total as usize, lines.len());
    assert!(lines.len() >= 2, "{lines:?}");
    let stamps: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["timestamp"].as_str())
        .collect();
    let mut sorted = stamps.clone();
    sorted.sort();
    assert_eq!(stamps, sorted, "oldest first");
    for line in &lines {
        let obj = line.as_object().expect("object");
        for key in ["timestamp", "level", "message", "node_id", "node_type"] {
            assert!(obj.contains_key(key), "{key} in {line}");
        }
        if let Some(data) = obj.get("data") {
            assert!(!data.is_null(), "data omitted rather than null: {line}");
        }
    }
    let hello = lines
        .iter()
        .find(|l| l["message"] == "hello bo")
        .expect("info line");
    assert_eq!(hello["level"], "info");
    assert_eq!(hello["node_type"], "log");

    let warn = app.get(&format!("{path}?level=warn"), Some(&token));
    assert_eq!(warn.status, 200);
    let warn_lines = warn.body["logs"].as_array().expect("logs");
    assert!(
        warn_lines
            .iter()
            .all(|l| matches!(l["level"].as_str(), Some("warn" | "error")))
    );
    assert!(warn_lines.iter().any(|l| l["message"] == "careful bo"));
    assert_eq!(warn.body["total"].as_u64(), Some(warn_lines.len() as u64));
    assert!(warn_lines.len() < lines.len());

    let page = app.get(&format!("{path}?limit=1&offset=1"), Some(&token));
    assert_eq!(page.body["total"], total);
    assert_eq!(page.body["limit"], 1);
    assert_eq!(page.body["offset"], 1);
    assert_eq!(page.body["logs"].as_array().map(Vec::len), Some(1));
    assert_eq!(page.body["logs"][0], lines[1]);

    for (query, field) in [
        ("level=loud", "level"),
        ("limit=500", "limit"),
        ("offset=x", "offset"),
    ] {
        let r = app.get(&format!("{path}?{query}"), Some(&token));
        assert_eq!(r.status, 422, "{query}: {r:?}");
        assert_eq!(r.body["error"]["details"]["field"], field);
    }
}

#[test]
fn cancelling_interrupts_a_hanging_http_request() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let server = hanging_server();
    let flow = app.create_flow_from(&token, &http_flow(&server.url));
    let id = app.run_flow(&token, &flow, json!({}));
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.accepted.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the request never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        app.get(&format!("/api/v1/executions/{id}"), Some(&token))
            .body["status"],
        "running"
    );
    let started = Instant::now();
    let r = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(r.status, 200, "{r:?}");
    let record = app.wait_finished(&token, &id);
    assert_eq!(record["status"], "cancelled", "{record}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "cancelled quickly, not after the 30 s timeout: {:?}",
        started.elapsed()
    );
    assert!(record["duration"].as_i64().is_some());
    let again = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
    assert_eq!(again.status, 409, "{again:?}");
    assert_eq!(again.code(), "conflict");
}

#[test]
fn cancelling_a_delay_and_a_queued_execution() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("10m", "late", Some(1)));
    let running = app.run_flow(&token, &flow, json!({}));
    app.wait_execution(&token, &running, |e| e["status"] == "running");
    let queued = app.run_flow(&token, &flow, json!({}));
    assert_eq!(
        app.get(&format!("/api/v1/executions/{queued}"), Some(&token))
            .body["status"],
        "queued"
    );
    let queued_record = app.get(&format!("/api/v1/executions/{queued}"), Some(&token));
    assert_eq!(queued_record.body["started_at"], Value::Null);
    assert_eq!(queued_record.body["duration"], Value::Null);

    let started = Instant::now();
    for id in [&queued, &running] {
        let r = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
        assert_eq!(r.status, 200, "{id}: {r:?}");
        let record = app.wait_finished(&token, id);
        assert_eq!(record["status"], "cancelled", "{record}");
        let r = app.delete(&format!("/api/v1/executions/{id}"), Some(&token));
        assert_eq!(r.status, 409, "{r:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn per_flow_concurrency_keeps_the_second_run_queued() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("300ms", "one", Some(1)));
    let run = |expected: &str| {
        let r = app.post(
            &format!("/api/v1/flows/{flow}/run"),
            Some(&token),
            json!({"input": {}}),
        );
        assert_eq!(r.status, 202, "{r:?}");
        // `running` when it got a run slot at once (the reference's example), `queued` when it
        // waits for the flow's only slot.
        assert_eq!(r.body["status"], expected, "{r:?}");
        r.body["execution_id"].as_str().expect("id").to_string()
    };
    let first = run("running");
    let second = run("queued");
    app.wait_execution(&token, &first, |e| e["status"] == "running");
    let second_now = app.get(&format!("/api/v1/executions/{second}"), Some(&token));
    assert_eq!(second_now.body["status"], "queued", "{second_now:?}");
    let first_done = app.wait_finished(&token, &first);
    assert_eq!(first_done["status"], "completed");
    let second_done = app.wait_finished(&token, &second);
    assert_eq!(second_done["status"], "completed");
    let first_end = first_done["completed_at"].as_str().expect("end");
    let second_start = second_done["started_at"].as_str().expect("start");
    assert!(
        second_start >= first_end,
        "second started {second_start} before the first ended {first_end}"
    );
}

#[test]
fn executions_pin_their_revision_and_outlive_the_flow() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("300ms", "one", None));
    let old = app.run_flow(&token, &flow, json!({}));
    app.wait_execution(&token, &old, |e| e["status"] == "running");
    let updated = app.put(
        &format!("/api/v1/flows/{flow}"),
        Some(&token),
        json!({"definition": delay_flow("1ms", "two", None).replace("1.0.0", "1.0.1")}),
    );
    assert_eq!(updated.status, 200, "{updated:?}");
    let new = app.run_flow(&token, &flow, json!({}));

    let old_done = app.wait_finished(&token, &old);
    assert_eq!(old_done["status"], "completed", "{old_done}");
    assert_eq!(old_done["result"]["label"], "one", "ran the old definition");
    assert_eq!(old_done["revision"]["number"], 1);
    assert_eq!(old_done["revision"]["version"], "1.0.0");
    let new_done = app.wait_finished(&token, &new);
    assert_eq!(new_done["result"]["label"], "two");
    assert_eq!(new_done["revision"]["number"], 2);
    assert_eq!(new_done["revision"]["version"], "1.0.1");

    let deleted = app.delete(&format!("/api/v1/flows/{flow}"), Some(&token));
    assert_eq!(deleted.status, 200);
    for id in [&old, &new] {
        let r = app.get(&format!("/api/v1/executions/{id}"), Some(&token));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body["flow_id"], flow.as_str());
        let logs = app.get(&format!("/api/v1/executions/{id}/logs"), Some(&token));
        assert_eq!(logs.status, 200);
    }
    let list = app.get(&format!("/api/v1/executions?flow_id={flow}"), Some(&token));
    assert_eq!(list.body["total"], 2);
    let run = app.post(
        &format!("/api/v1/flows/{flow}/run"),
        Some(&token),
        json!({}),
    );
    assert_eq!(run.status, 404, "a deleted flow cannot run: {run:?}");
}

#[test]
fn unknown_methods_on_execution_paths() {
    let app = TestApp::start();
    let token = app.user.token.clone();
    let r = app.request(
        "PUT",
        "/api/v1/executions/exec-1",
        Some(&token),
        Some(json!({})),
    );
    assert_eq!(r.status, 405);
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, DELETE")
    );
    let r = app.get("/api/v1/flows/flow-1/run", Some(&token));
    assert_eq!(r.status, 405);
}

#[test]
fn running_executions_resume_after_a_graceful_restart() {
    let mut app = TestApp::start();
    let token = app.user.token.clone();
    let flow = app.create_flow_from(&token, &delay_flow("400ms", "resumed", None));
    let id = app.run_flow(&token, &flow, json!({}));
    app.wait_execution(&token, &id, |e| e["status"] == "running");
    let started = Instant::now();
    app.restart();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the engine does not hold the shutdown up: {:?}",
        started.elapsed()
    );
    let done = app.wait_finished(&token, &id);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["result"]["label"], "resumed");
}
