//! End-to-end tests of the runtime with flows written in YAML and real HTTP servers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flowrunner_domain::ExecutionId;
use flowrunner_dsl::Flow;
use flowrunner_runtime::{
    BoxFuture, Event, EventKind, ExecutionOutcome, ExecutionRequest, Journal, JournalError,
    MemoryJournal, Runtime, Snapshot, StaticSecrets,
};
use serde_json::{Value, json};
use support::{Reply, TestServer, assert_contiguous, collect, kinds, node_failures, runtime};

/// The journaled completion of `node` and the snapshot recorded with it.
fn completion_of(journal: &MemoryJournal, node: &str) -> (Event, Snapshot) {
    journal
        .entries()
        .into_iter()
        .find_map(|(e, snapshot)| match &e.kind {
            EventKind::NodeCompleted { node_id, .. } if node_id == node => {
                Some((e.clone(), snapshot.expect("snapshot with node completion")))
            }
            _ => None,
        })
        .unwrap_or_else(|| panic!("{node} completed"))
}

fn flow(runtime: &Runtime, yaml: &str) -> Arc<Flow> {
    match runtime.parse(yaml) {
        Ok(parsed) => Arc::new(parsed.flow),
        Err(diags) => panic!("invalid flow:\n{diags}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_request_success_with_events_in_order() {
    let server = TestServer::start(|req, _| {
        Reply::Json(
            200,
            json!({"ok": true, "target": req.target, "auth": req.header("x-key")}).to_string(),
        )
    });
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: fetcher }}
inputs:
  id: {{ type: integer, required: true }}
start: fetch
nodes:
  fetch:
    type: http.request
    params:
      url: "{}/items/{{{{ input.id }}}}"
      query: {{ verbose: true }}
      headers: {{ x-key: abc }}
    next: shape
  shape:
    type: transform
    params:
      value:
        ok: "{{{{ nodes.fetch.output.body.ok }}}}"
        status: "{{{{ nodes.fetch.output.status_code }}}}"
        header: "{{{{ nodes.fetch.output.headers['x-test'] }}}}"
        target: "{{{{ nodes.fetch.output.body.target }}}}"
"#,
        server.base
    );
    let mut request = ExecutionRequest::new(flow(&rt, &yaml), json!({"id": 7}));
    let rx = request.subscribe();
    let outcome = rt.run(request).await.expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!({"ok": true, "status": 200, "header": "yes", "target": "/items/7?verbose=true"})
        }
    );
    let events = collect(rx).await;
    assert_eq!(
        kinds(&events),
        [
            "started",
            "node_started",
            "log",
            "node_completed",
            "node_started",
            "node_completed",
            "completed"
        ]
    );
    assert_contiguous(&events, 0);
    let log = serde_json::to_value(&events[2]).expect("json");
    assert_eq!(log["type"], "log");
    assert_eq!(log["message"], "HTTP request successful");
    assert_eq!(log["data"]["status_code"], 200);
    assert_eq!(log["node_id"], "fetch");
    let completed = serde_json::to_value(&events[3]).expect("json");
    assert_eq!(completed["type"], "node_completed");
    assert_eq!(completed["output"]["body"]["auth"], "abc");
    assert!(
        completed["timestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexpected_status_fails_the_execution() {
    let server = TestServer::start(|_, _| Reply::Text(500, "oops".into()));
    let rt = runtime();
    let yaml = format!(
        "metadata: {{ name: f }}\nnodes:\n  fetch:\n    type: http.request\n    params: {{ url: \"{}/x\" }}\n",
        server.base
    );
    let outcome = rt
        .run(ExecutionRequest::new(flow(&rt, &yaml), json!({})))
        .await
        .expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Failed {
            error: "HTTP request failed with status 500".into(),
            node_id: Some("fetch".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_growing_backoff_then_success() {
    let server = TestServer::start(|_, index| {
        if index < 2 {
            Reply::Text(503, "busy".into())
        } else {
            Reply::Json(200, r#"{"n": 3}"#.into())
        }
    });
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: retrying }}
nodes:
  fetch:
    type: http.request
    params: {{ url: "{}/r" }}
    retry: {{ max_attempts: 3, backoff: exponential, initial_delay: 40ms, max_delay: 1s }}
"#,
        server.base
    );
    let mut request = ExecutionRequest::new(flow(&rt, &yaml), json!({}));
    let rx = request.subscribe();
    let outcome = rt.run(request).await.expect("run");
    let ExecutionOutcome::Completed { result } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(result["body"], json!({"n": 3}));
    let events = collect(rx).await;
    assert_eq!(
        node_failures(&events),
        vec![(1, true, Some(40)), (2, true, Some(80))]
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    let first_gap = requests[1].at - requests[0].at;
    let second_gap = requests[2].at - requests[1].at;
    assert!(first_gap >= Duration::from_millis(40), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(80), "{second_gap:?}");
    assert!(second_gap > first_gap, "{first_gap:?} then {second_gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_attempts_are_retried_then_fail() {
    let server = TestServer::start(|_, _| Reply::Hang(Duration::from_millis(600)));
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: slow }}
nodes:
  fetch:
    type: http.request
    params: {{ url: "{}/slow" }}
    timeout: 60ms
    retry: {{ max_attempts: 2, backoff: fixed, initial_delay: 10ms }}
"#,
        server.base
    );
    let mut request = ExecutionRequest::new(flow(&rt, &yaml), json!({}));
    let rx = request.subscribe();
    let started = Instant::now();
    let outcome = rt.run(request).await.expect("run");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let ExecutionOutcome::Failed { error, node_id } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(error.contains("timed out after 60ms"), "{error}");
    assert_eq!(node_id.as_deref(), Some("fetch"));
    let events = collect(rx).await;
    assert_eq!(
        node_failures(&events),
        vec![(1, true, Some(10)), (2, false, None)]
    );
}

#[tokio::test]
async fn error_edge_exposes_the_failure_to_templates() {
    let rt = runtime();
    let yaml = r#"
metadata: { name: handled }
nodes:
  boom:
    type: fail
    params: { message: "bad {{ input.what }}" }
    retry: { max_attempts: 3, initial_delay: 1ms }
    next: { error: report }
  report:
    type: transform
    params:
      value: { msg: "{{ error.message }}", node: "{{ error.node }}", type: "{{ error.node_type }}" }
output: { handled: "{{ nodes.report.output.msg }}", err: "{{ error.node }}" }
"#;
    let mut request = ExecutionRequest::new(flow(&rt, yaml), json!({"what": "thing"}));
    let rx = request.subscribe();
    let outcome = rt.run(request).await.expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!({"handled": "bad thing", "err": "boom"})
        }
    );
    let events = collect(rx).await;
    // `fail` is never retried.
    assert_eq!(node_failures(&events), vec![(1, false, None)]);
    let report = events.iter().find_map(|e| match &e.kind {
        EventKind::NodeCompleted {
            node_id, output, ..
        } if node_id == "report" => Some(output.clone()),
        _ => None,
    });
    assert_eq!(
        report,
        Some(json!({"msg": "bad thing", "node": "boom", "type": "fail"}))
    );
}

#[tokio::test]
async fn branches_switch_log_and_render_errors() {
    let rt = runtime();
    let yaml = r#"
metadata: { name: branching }
inputs:
  country: { type: string, required: true }
nodes:
  check:
    type: condition
    params: { if: "input.country | length == 2" }
    next: { "true": route, "false": bad }
  route:
    type: switch
    params: { value: "input.country", cases: [FR, DE] }
    next: { FR: france, default: elsewhere }
  france:
    type: log
    params: { level: warn, message: "bonjour {{ input.country }}" }
  elsewhere:
    type: transform
    params: { value: "{{ nodes.route.output }}" }
  bad:
    type: transform
    params: { value: "{{ nodes.france.output }}" }
"#;
    let flow = flow(&rt, yaml);
    let run = |input: Value| rt.run(ExecutionRequest::new(Arc::clone(&flow), input));
    assert_eq!(
        run(json!({"country": "FR"})).await.expect("run"),
        ExecutionOutcome::Completed {
            result: json!({"level": "warn", "message": "bonjour FR"})
        }
    );
    assert_eq!(
        run(json!({"country": "IT"})).await.expect("run"),
        ExecutionOutcome::Completed {
            result: json!({"value": "IT", "matched": null})
        }
    );
    let ExecutionOutcome::Failed { error, node_id } =
        run(json!({"country": "ITA"})).await.expect("run")
    else {
        panic!("expected failure")
    };
    assert!(error.contains("cannot render params"), "{error}");
    assert_eq!(node_id.as_deref(), Some("bad"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_during_an_http_request_returns_at_once() {
    let server = TestServer::start(|_, _| Reply::Hang(Duration::from_millis(1500)));
    let rt = runtime();
    let yaml = format!(
        "metadata: {{ name: hang }}\nnodes:\n  fetch:\n    type: http.request\n    params: {{ url: \"{}/hang\", timeout: 2s }}\n",
        server.base
    );
    let mut request = ExecutionRequest::new(flow(&rt, &yaml), json!({}));
    let mut rx = request.subscribe();
    let handle = rt.start(request).expect("start");
    while let Ok(event) = rx.recv().await {
        if matches!(event.kind, EventKind::NodeStarted { .. }) {
            break;
        }
    }
    // Make sure the request is really in flight on the server.
    let deadline = Instant::now() + Duration::from_secs(2);
    while server.requests().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(server.requests().len(), 1);
    let cancelled_at = Instant::now();
    handle.cancel();
    let outcome = handle.wait().await;
    assert_eq!(outcome, ExecutionOutcome::Cancelled);
    assert!(
        cancelled_at.elapsed() < Duration::from_millis(300),
        "{:?}",
        cancelled_at.elapsed()
    );
    let last = collect(rx).await;
    assert_eq!(kinds(&last).last(), Some(&"cancelled"));
}

#[tokio::test]
async fn cancellation_during_a_delay_returns_at_once() {
    let rt = runtime();
    let yaml = "metadata: { name: wait }\nnodes:\n  pause:\n    type: delay\n    params: { duration: 30s }\n";
    let mut request = ExecutionRequest::new(flow(&rt, yaml), json!({}));
    let mut rx = request.subscribe();
    let handle = rt.start(request).expect("start");
    while let Ok(event) = rx.recv().await {
        if let EventKind::NodeCheckpoint { state, .. } = &event.kind {
            assert!(state["wake_at"].is_string(), "{state}");
            break;
        }
    }
    let cancelled_at = Instant::now();
    handle.cancel();
    assert_eq!(handle.wait().await, ExecutionOutcome::Cancelled);
    assert!(cancelled_at.elapsed() < Duration::from_millis(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_values_never_leave_the_node_that_uses_them() {
    const SECRET: &str = "s3cr3t-T0ken";
    let server = TestServer::start(|req, _| {
        Reply::Json(
            200,
            json!({"echo": req.header("authorization"), "query": req.target}).to_string(),
        )
    });
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: secretive }}
nodes:
  fetch:
    type: http.request
    params:
      url: "{}/s"
      query: {{ key: "{{{{ secrets.TOKEN }}}}" }}
      headers: {{ authorization: "Bearer {{{{ secrets.TOKEN }}}}" }}
    next: say
  say:
    type: log
    params: {{ message: "echo was {{{{ nodes.fetch.output.body.echo }}}} and {{{{ secrets.TOKEN }}}}" }}
    next: boom
  boom:
    type: fail
    params: {{ message: "failed with {{{{ secrets.TOKEN }}}}" }}
    next: {{ error: done }}
  done:
    type: transform
    params: {{ value: {{ direct: "{{{{ secrets.TOKEN }}}}", err: "{{{{ error.message }}}}", body: "{{{{ nodes.fetch.output.body }}}}" }} }}
"#,
        server.base
    );
    let journal = Arc::new(MemoryJournal::new());
    let mut request = ExecutionRequest::new(flow(&rt, &yaml), json!({}))
        .secrets(Arc::new(
            StaticSecrets::new()
                .with("TOKEN", SECRET)
                .with("UNUSED", "never-read"),
        ))
        .journal(Arc::clone(&journal) as Arc<dyn Journal>);
    let rx = request.subscribe();
    let outcome = rt.run(request).await.expect("run");
    // The secret really was sent.
    let sent = &server.requests()[0];
    assert_eq!(
        sent.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(sent.target.contains(SECRET));

    let ExecutionOutcome::Completed { result } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(result["direct"], "***");
    assert_eq!(result["err"], "failed with ***");
    assert_eq!(result["body"]["echo"], "Bearer ***");
    let live = collect(rx).await;
    let everything = serde_json::to_string(&(
        &outcome,
        &live,
        journal
            .entries()
            .iter()
            .map(|(e, s)| (e.clone(), s.clone()))
            .collect::<Vec<(Event, Option<Snapshot>)>>(),
    ))
    .expect("json");
    assert!(!everything.contains(SECRET), "secret leaked: {everything}");
    assert!(everything.contains("***"));
    let snapshot = journal.last_snapshot().expect("snapshot");
    assert_eq!(
        snapshot.secret_keys.iter().collect::<Vec<_>>(),
        vec!["TOKEN"]
    );
    let log = live.iter().find(|e| {
        e.kind.name() == "log" && serde_json::to_string(e).is_ok_and(|t| t.contains("echo was"))
    });
    let log = serde_json::to_value(log.expect("log event")).expect("json");
    assert_eq!(log["message"], "echo was Bearer *** and ***");
}

#[tokio::test]
async fn endless_loops_stop_at_max_steps() {
    let rt = runtime();
    let yaml = r#"
metadata: { name: loop, max_steps: 7 }
nodes:
  a:
    type: transform
    params: { value: 1 }
    next: b
  b:
    type: condition
    params: { if: "true" }
    next: { "true": a }
"#;
    let outcome = rt
        .run(ExecutionRequest::new(flow(&rt, yaml), json!({})))
        .await
        .expect("run");
    let ExecutionOutcome::Failed { error, node_id } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(error.contains("max_steps (7)"), "{error}");
    assert_eq!(node_id.as_deref(), Some("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_verify_and_keep_their_delivery_id_across_retries() {
    use hmac::{Hmac, Mac};
    let server = TestServer::start(|req, index| {
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(b"whsec").expect("key");
        mac.update(&req.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let valid = req.header("x-flowrunner-signature") == Some(expected.as_str());
        if !valid {
            return Reply::Text(401, "bad signature".into());
        }
        if index == 0 {
            Reply::Text(502, "try again".into())
        } else {
            Reply::Json(202, r#"{"accepted":true}"#.into())
        }
    });
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: hook }}
nodes:
  order:
    type: transform
    params: {{ value: {{ id: 42, items: ["a", "b"] }} }}
    next: notify
  notify:
    type: webhook
    params:
      url: "{}/hook"
      signing_secret: "{{{{ secrets.HOOK }}}}"
      headers: {{ x-extra: "1" }}
    retry: {{ max_attempts: 2, backoff: fixed, initial_delay: 5ms }}
"#,
        server.base
    );
    let request = ExecutionRequest::new(flow(&rt, &yaml), json!({}))
        .secrets(Arc::new(StaticSecrets::new().with("HOOK", "whsec")));
    let outcome = rt.run(request).await.expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Completed {
            result: json!({"status_code": 202, "body": {"accepted": true}})
        }
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let payload: Value = serde_json::from_slice(&requests[1].body).expect("json body");
    assert_eq!(payload, json!({"id": 42, "items": ["a", "b"]}));
    assert_eq!(requests[1].method, "POST");
    assert_eq!(requests[1].header("content-type"), Some("application/json"));
    assert_eq!(requests[1].header("x-extra"), Some("1"));
    let delivery = requests[0]
        .header("x-flowrunner-delivery")
        .expect("delivery id");
    assert_eq!(Some(delivery), requests[1].header("x-flowrunner-delivery"));
    assert!(uuid::Uuid::parse_str(delivery).is_ok(), "{delivery}");
    assert!(flowrunner_runtime::verify_signature(
        b"whsec",
        &requests[1].body,
        requests[1]
            .header("x-flowrunner-signature")
            .expect("signature")
    ));
}

const THREE_STEPS: &str = r#"
metadata: { name: steps }
inputs:
  x: { type: integer, default: 1 }
nodes:
  a:
    type: transform
    params: { value: "{{ input.x + 1 }}" }
    next: b
  b:
    type: transform
    params: { value: "{{ nodes.a.output * 10 }}" }
    next: c
  c:
    type: transform
    params: { value: { a: "{{ nodes.a.output }}", b: "{{ nodes.b.output }}", id: "{{ execution.id }}" } }
"#;

#[tokio::test]
async fn resumes_from_a_snapshot_taken_after_the_first_node() {
    let rt = runtime();
    let flow = flow(&rt, THREE_STEPS);
    let journal = Arc::new(MemoryJournal::new());
    let id = ExecutionId::parse("exec-resume1").expect("id");
    let first = rt
        .run(
            ExecutionRequest::new(Arc::clone(&flow), json!({"x": 4}))
                .execution_id(id.clone())
                .journal(Arc::clone(&journal) as Arc<dyn Journal>),
        )
        .await
        .expect("run");
    let expected = json!({"a": 5, "b": 50, "id": "exec-resume1"});
    assert_eq!(
        first,
        ExecutionOutcome::Completed {
            result: expected.clone()
        }
    );
    let entries = journal.entries();
    assert_contiguous(
        &entries.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
        0,
    );
    let (after_a, snapshot) = completion_of(&journal, "a");
    assert_eq!(snapshot.next_node.as_deref(), Some("b"));
    assert_eq!(snapshot.next_seq, after_a.seq + 1);
    assert_eq!(snapshot.steps, 1);
    // Snapshots survive a round trip through JSON (the server stores them as text).
    let snapshot: Snapshot =
        serde_json::from_str(&serde_json::to_string(&snapshot).expect("ser")).expect("de");

    let second_journal = Arc::new(MemoryJournal::new());
    let mut request = ExecutionRequest::new(Arc::clone(&flow), json!({"ignored": true}))
        .resume(snapshot.clone())
        .journal(Arc::clone(&second_journal) as Arc<dyn Journal>);
    let rx = request.subscribe();
    let handle = rt.start(request).expect("start");
    assert_eq!(handle.id(), &id);
    assert_eq!(
        handle.wait().await,
        ExecutionOutcome::Completed { result: expected }
    );
    let events = collect(rx).await;
    assert_eq!(events[0].seq, snapshot.next_seq);
    assert_contiguous(&events, snapshot.next_seq);
    let ran: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NodeStarted { node_id, .. } => Some(node_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(ran, ["b", "c"]);
    assert_eq!(kinds(&events)[0], "resumed");
    assert_eq!(second_journal.events(), events);
}

/// A journal that holds entries past the snapshot (here the `node_started` of `b` and two
/// log lines) resumes numbering after them, not at the snapshot's `next_seq`; a `first_seq`
/// below the snapshot's does not move numbering back.
#[tokio::test]
async fn a_resume_numbers_events_after_what_the_journal_already_holds() {
    let rt = runtime();
    let flow = flow(&rt, THREE_STEPS);
    let journal = Arc::new(MemoryJournal::new());
    rt.run(
        ExecutionRequest::new(Arc::clone(&flow), json!({"x": 4}))
            .execution_id(ExecutionId::parse("exec-first-seq").expect("id"))
            .journal(Arc::clone(&journal) as Arc<dyn Journal>),
    )
    .await
    .expect("run");
    let (_, snapshot) = completion_of(&journal, "a");
    for (first_seq, expected) in [
        (snapshot.next_seq + 3, snapshot.next_seq + 3),
        (0, snapshot.next_seq),
    ] {
        let mut request = ExecutionRequest::new(Arc::clone(&flow), json!({}))
            .resume(snapshot.clone())
            .first_seq(first_seq)
            .journal(Arc::new(MemoryJournal::new()) as Arc<dyn Journal>);
        let rx = request.subscribe();
        let outcome = rt.start(request).expect("start").wait().await;
        assert!(
            matches!(outcome, ExecutionOutcome::Completed { .. }),
            "{outcome:?}"
        );
        let events = collect(rx).await;
        assert_eq!(kinds(&events)[0], "resumed");
        assert_eq!(events[0].seq, expected, "first_seq {first_seq}");
        assert_contiguous(&events, expected);
    }
}

#[tokio::test]
async fn a_failing_journal_interrupts_the_execution() {
    struct Flaky(AtomicUsize);
    impl Journal for Flaky {
        fn record<'a>(
            &'a self,
            _: &'a Event,
            _: Option<&'a Snapshot>,
        ) -> BoxFuture<'a, Result<(), JournalError>> {
            let n = self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if n >= 2 {
                    Err(JournalError::new("disk full"))
                } else {
                    Ok(())
                }
            })
        }
    }
    let rt = runtime();
    let journal = Arc::new(Flaky(AtomicUsize::new(0)));
    let outcome = rt
        .run(
            ExecutionRequest::new(flow(&rt, THREE_STEPS), json!({}))
                .journal(Arc::clone(&journal) as Arc<dyn Journal>),
        )
        .await
        .expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Interrupted {
            reason: "journal failed: disk full".into()
        }
    );
    assert_eq!(journal.0.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_resumed_delay_sleeps_only_the_remaining_time() {
    let rt = runtime();
    let yaml = r#"
metadata: { name: durable }
nodes:
  pause:
    type: delay
    params: { duration: 1h }
    next: after
  after:
    type: transform
    params: { value: "{{ nodes.pause.output.waited_ms }}" }
"#;
    let flow = flow(&rt, yaml);
    let journal = Arc::new(MemoryJournal::new());
    let mut request = ExecutionRequest::new(Arc::clone(&flow), json!({}))
        .journal(Arc::clone(&journal) as Arc<dyn Journal>);
    let mut rx = request.subscribe();
    let handle = rt.start(request).expect("start");
    while let Ok(event) = rx.recv().await {
        if event.kind.name() == "node_checkpoint" {
            break;
        }
    }
    // The process "dies" while waiting: keep the checkpoint's snapshot.
    handle.cancel();
    assert_eq!(handle.wait().await, ExecutionOutcome::Cancelled);
    let mut snapshot = journal
        .entries()
        .into_iter()
        .find(|(e, _)| e.kind.name() == "node_checkpoint")
        .and_then(|(_, s)| s)
        .expect("checkpoint snapshot");
    let in_flight = snapshot.in_flight.clone().expect("in flight");
    assert_eq!(in_flight.node_id, "pause");
    assert_eq!(snapshot.next_node.as_deref(), Some("pause"));
    let wake_at =
        chrono::DateTime::parse_from_rfc3339(in_flight.state["wake_at"].as_str().expect("wake_at"))
            .expect("rfc3339");
    assert!(wake_at > chrono::Utc::now() + chrono::TimeDelta::minutes(59));

    // Pretend most of the hour has passed: 80 ms remain.
    let now = chrono::Utc::now();
    let state = json!({
        "since": (now - chrono::TimeDelta::minutes(60)).to_rfc3339(),
        "wake_at": (now + chrono::TimeDelta::milliseconds(80)).to_rfc3339(),
    });
    snapshot.in_flight = Some(flowrunner_runtime::InFlight { state, ..in_flight });
    let started = Instant::now();
    let outcome = rt
        .run(ExecutionRequest::new(flow, json!({})).resume(snapshot))
        .await
        .expect("run");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(60) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    let ExecutionOutcome::Completed { result } = outcome else {
        panic!("{outcome:?}")
    };
    let waited = result.as_i64().expect("waited_ms");
    assert!(waited >= 3_600_000, "{waited}");
}

#[tokio::test]
async fn invalid_requests_are_rejected_before_running() {
    let rt = runtime();
    let yaml = "metadata: { name: typed }\ninputs:\n  n: { type: integer, required: true }\nnodes:\n  a: { type: transform, params: { value: 1 } }\n";
    let flow = flow(&rt, yaml);
    let err = rt
        .start(ExecutionRequest::new(Arc::clone(&flow), json!({"n": "x"})))
        .expect_err("bad input");
    assert!(
        matches!(err, flowrunner_runtime::Error::InvalidInput(_)),
        "{err}"
    );
    let other = Runtime::builder().build().expect("runtime");
    let snapshot_of_other_flow = {
        let journal = Arc::new(MemoryJournal::new());
        let steps = other.parse(THREE_STEPS).expect("parse").flow;
        other
            .run(
                ExecutionRequest::new(Arc::new(steps), json!({}))
                    .journal(Arc::clone(&journal) as Arc<dyn Journal>),
            )
            .await
            .expect("run");
        journal.last_snapshot().expect("snapshot")
    };
    let err = rt
        .start(ExecutionRequest::new(flow, json!({"n": 1})).resume(snapshot_of_other_flow))
        .expect_err("mismatch");
    assert!(
        matches!(err, flowrunner_runtime::Error::SnapshotMismatch { .. }),
        "{err}"
    );
    assert!(Runtime::builder().blocking_threads(0).build().is_err());
    assert!(Runtime::builder().event_capacity(0).build().is_err());
    assert!(
        Runtime::builder()
            .event_capacity(usize::MAX)
            .build()
            .is_err()
    );
}

#[test]
fn starting_outside_tokio_is_an_error_not_a_panic() {
    let rt = runtime();
    let flow = flow(
        &rt,
        "metadata: { name: x }\nnodes:\n  a: { type: transform, params: { value: 1 } }\n",
    );
    let err = rt
        .start(ExecutionRequest::new(flow, json!({})))
        .expect_err("no tokio");
    assert!(matches!(err, flowrunner_runtime::Error::NoTokioRuntime));
}

#[test]
fn the_runtime_depends_on_no_server_or_database_crate() {
    let manifest = include_str!("../Cargo.toml");
    for forbidden in [
        "diesel",
        "actix",
        "axum",
        "hyper",
        "sqlx",
        "rusqlite",
        "flowrunner-store",
        "flowrunner-api",
    ] {
        assert!(
            !manifest.contains(forbidden),
            "flowrunner-runtime must not depend on {forbidden}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_status_lists_and_size_limits() {
    let server = TestServer::start(|req, _| {
        match req.target.as_str() {
        "/echo" => Reply::Json(
            200,
            json!({"method": req.method, "type": req.header("content-type"), "body": String::from_utf8_lossy(&req.body)})
                .to_string(),
        ),
        "/missing" => Reply::Text(404, "not here".into()),
        _ => Reply::Text(200, "x".repeat(100)),
    }
    });
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: bodies }}
nodes:
  post:
    type: http.request
    params: {{ method: POST, url: "{base}/echo", json: {{ a: [1, 2] }} }}
    next: missing
  missing:
    type: http.request
    params: {{ url: "{base}/missing", expected_status: [200, "400-404"] }}
    next: big
  big:
    type: http.request
    params: {{ url: "{base}/big", max_response_bytes: 10 }}
    next: {{ error: report }}
  report:
    type: transform
    params:
      value:
        post: "{{{{ nodes.post.output.body }}}}"
        missing: "{{{{ nodes.missing.output.status_code }}}}"
        text: "{{{{ nodes.missing.output.body }}}}"
        error: "{{{{ error.message }}}}"
"#,
        base = server.base
    );
    let outcome = rt
        .run(ExecutionRequest::new(flow(&rt, &yaml), json!({})))
        .await
        .expect("run");
    let ExecutionOutcome::Completed { result } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        result["post"],
        json!({"method": "POST", "type": "application/json", "body": r#"{"a":[1,2]}"#})
    );
    assert_eq!(result["missing"], 404);
    assert_eq!(result["text"], "not here");
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("max_response_bytes")),
        "{result}"
    );
}

#[tokio::test]
async fn delays_until_a_past_time_do_not_wait_and_timeouts_bound_delays() {
    let rt = runtime();
    let yaml = "metadata: { name: past }\nnodes:\n  pause:\n    type: delay\n    params: { until: \"2000-01-01T00:00:00Z\" }\n";
    let started = Instant::now();
    let outcome = rt
        .run(ExecutionRequest::new(flow(&rt, yaml), json!({})))
        .await
        .expect("run");
    assert!(started.elapsed() < Duration::from_millis(500));
    let ExecutionOutcome::Completed { result } = outcome else {
        panic!("{outcome:?}")
    };
    assert!(
        result["waited_ms"].as_i64().is_some_and(|ms| ms < 500),
        "{result}"
    );

    let yaml = "metadata: { name: bounded }\nnodes:\n  pause:\n    type: delay\n    params: { duration: 10s }\n    timeout: 30ms\n";
    let outcome = rt
        .run(ExecutionRequest::new(flow(&rt, yaml), json!({})))
        .await
        .expect("run");
    assert_eq!(
        outcome,
        ExecutionOutcome::Failed {
            error: "node timed out after 30ms".into(),
            node_id: Some("pause".into())
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_execution_still_redacts_secrets_read_before_the_snapshot() {
    const SECRET: &str = "pr3l0aded-v4lue";
    // The server leaks the secret on its own: only redaction can hide it.
    let server = TestServer::start(|_, _| Reply::Json(200, json!({"leak": SECRET}).to_string()));
    let rt = runtime();
    let yaml = format!(
        r#"
metadata: {{ name: leaky }}
nodes:
  auth:
    type: transform
    params: {{ value: "{{{{ secrets.KEY | length }}}}" }}
    next: fetch
  fetch:
    type: http.request
    params: {{ url: "{}/leak" }}
"#,
        server.base
    );
    let flow = flow(&rt, &yaml);
    let secrets = Arc::new(StaticSecrets::new().with("KEY", SECRET));
    let journal = Arc::new(MemoryJournal::new());
    rt.run(
        ExecutionRequest::new(Arc::clone(&flow), json!({}))
            .secrets(secrets.clone())
            .journal(Arc::clone(&journal) as Arc<dyn Journal>),
    )
    .await
    .expect("run");
    let (_, snapshot) = completion_of(&journal, "auth");
    assert_eq!(snapshot.secret_keys.iter().collect::<Vec<_>>(), vec!["KEY"]);
    let mut request = ExecutionRequest::new(flow, json!({}))
        .resume(snapshot)
        .secrets(secrets);
    let rx = request.subscribe();
    let outcome = rt.run(request).await.expect("run");
    let ExecutionOutcome::Completed { result } = &outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(result["body"]["leak"], "***");
    let events = collect(rx).await;
    let text = serde_json::to_string(&events).expect("json");
    assert!(!text.contains(SECRET), "{text}");
}

/// `Snapshot::advance` rebuilds, from the previous snapshot and the entries recorded after it,
/// every snapshot the runtime gives with a node completion that read no new secret: branches,
/// log lines, a delay's checkpoint, a retried node and an error edge in between. Snapshots it cannot rebuild (a new
/// secret read) differ in their secret keys, as its documentation says.
#[tokio::test]
async fn snapshots_of_node_completions_are_rebuilt_from_the_entries() {
    let rt = runtime();
    let yaml = r#"
metadata: { name: replayed }
inputs:
  n: { type: number, required: true }
nodes:
  first:
    type: transform
    params: { value: { n: "{{ input.n }}" } }
    next: pause
  pause:
    type: delay
    params: { duration: 1ms }
    next: check
  check:
    type: condition
    params: { if: "input.n > 1" }
    next: { "true": big, "false": small }
  big:
    type: log
    params: { message: "big {{ nodes.first.output.n }}" }
    next: boom
  small:
    type: log
    params: { message: "small" }
    next: boom
  boom:
    type: fail
    params: { message: "planned" }
    retry: { max_attempts: 2, initial_delay: 1ms }
    next: { error: recover }
  recover:
    type: transform
    params: { value: { error: "{{ error.message }}", key: "{{ secrets.KEY }}" } }
    next: last
  last:
    type: transform
    params: { value: "{{ nodes.recover.output.error }} after {{ nodes.check.output }}" }
"#;
    let flow = flow(&rt, yaml);
    let journal = Arc::new(MemoryJournal::new());
    let outcome = rt
        .run(
            ExecutionRequest::new(Arc::clone(&flow), json!({"n": 3}))
                .secrets(Arc::new(StaticSecrets::new().with("KEY", "k3y-value")))
                .journal(Arc::clone(&journal) as Arc<dyn Journal>),
        )
        .await
        .expect("run");
    assert!(
        matches!(outcome, ExecutionOutcome::Completed { .. }),
        "{outcome:?}"
    );
    let mut rebuilt: Option<Snapshot> = None;
    let (mut checked, mut grew) = (Vec::new(), 0);
    for (event, snapshot) in journal.entries() {
        if let Some(base) = &mut rebuilt {
            base.advance(&flow, &event).expect("advance");
        }
        let Some(snapshot) = snapshot else { continue };
        if let (EventKind::NodeCompleted { node_id, .. }, Some(base)) = (&event.kind, &rebuilt) {
            if base.secret_keys == snapshot.secret_keys {
                assert_eq!(base, &snapshot, "rebuilt after {node_id}");
                checked.push(node_id.clone());
            } else {
                grew += 1;
            }
        }
        rebuilt = Some(snapshot);
    }
    // `recover` read the secret: its snapshot is the one that must be stored as given. `pause`
    // is rebuilt from its checkpoint's snapshot (taken while it ran, with the step it counts).
    assert_eq!(checked, ["first", "pause", "check", "big", "last"]);
    assert!(
        journal
            .events()
            .iter()
            .any(|e| e.kind.name() == "node_checkpoint")
    );
    assert_eq!(grew, 1);

    // Entries of another execution, from before the snapshot or naming unknown nodes are
    // refused.
    let (event, snapshot) = completion_of(&journal, "check");
    let mut before = completion_of(&journal, "pause").1;
    let err = |mut base: Snapshot, event: &Event| {
        base.advance(&flow, event).expect_err("refused").to_string()
    };
    assert!(err(snapshot.clone(), &event).contains("precedes the snapshot"));
    let mut other = event.clone();
    other.execution_id = ExecutionId::parse("exec-other").expect("id");
    assert!(err(before.clone(), &other).contains("belongs to execution exec-other"));
    let mut unknown = event.clone();
    if let EventKind::NodeCompleted { node_id, .. } = &mut unknown.kind {
        *node_id = "nowhere".into();
    }
    assert!(err(before.clone(), &unknown).contains("node `nowhere` does not exist"));
    before.advance(&flow, &event).expect("advance");
    assert_eq!(before, snapshot);
}
