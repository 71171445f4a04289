//! The engine on SQLite and (when reachable) PostgreSQL: runs, records, logs, idempotency,
//! limits, cancellation, watching and secrets.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use flowrunner_engine::{
    EngineConfig, Error, ExecutionFilter, ExecutionStatus, LiveEnd, LogLevel, RunRequest, Scope,
};
use flowrunner_store::testing::TestDatabase;
use serde_json::json;

use common::{
    TestResult, assert_journal, config, engine, finished, flow, history, request, setup,
    submit_until, until_events,
};

flowrunner_store::backend_tests!(
    a_run_completes_with_its_record_steps_and_logs,
    inputs_flows_and_scopes_are_checked,
    idempotency_keys_return_the_first_execution,
    per_flow_concurrency_queues_in_order,
    the_global_cap_limits_running_executions,
    cancel_queued_delayed_and_finished_executions,
    cancel_interrupts_a_hanging_http_call,
    a_late_watcher_gets_history_then_live_without_gap,
    a_slow_watcher_is_dropped_without_stalling,
    secrets_are_the_owners_and_redacted,
    flow_changes_reach_submit_at_once_here_and_within_the_ttl_elsewhere,
    a_cancel_during_a_node_checkpoint_is_not_lost,
    a_waiting_nodes_start_is_stored_while_it_waits,
    submit_and_wait_answers_with_the_end,
    dropping_the_engine_stops_its_executions,
    a_resume_rebuilds_the_snapshot_from_the_completions_after_it,
);

const THREE: &str = r#"
metadata: { name: three }
inputs:
  name: { type: string, required: true }
start: a
nodes:
  a:
    type: transform
    params: { value: "Hello {{ input.name }}" }
    next: b
  b:
    type: log
    params: { message: "said {{ nodes.a.output }}", level: warn }
    next: c
  c:
    type: transform
    params: { value: { greeting: "{{ nodes.a.output }}" } }
"#;

fn delay_flow(duration: &str, concurrency: Option<u32>) -> String {
    let concurrency = concurrency.map_or(String::new(), |n| format!(", concurrency: {n}"));
    format!(
        r#"
metadata: {{ name: wait{concurrency} }}
start: pause
nodes:
  pause:
    type: delay
    params: {{ duration: "{duration}" }}
    next: done
  done:
    type: transform
    params: {{ value: "{{{{ execution.id }}}}" }}
"#
    )
}

async fn a_run_completes_with_its_record_steps_and_logs(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, THREE).await?;
    let engine = engine(&s.store, config()).await?;
    let submitted = engine
        .submit(request(&f, &s.alice, json!({"name": "Ada"})))
        .await?;
    assert!(submitted.created);
    let id = submitted.execution.id.clone();
    assert_eq!(submitted.execution.revision_id, f.revision_id);
    assert_eq!(submitted.execution.revision, 1);
    let record = finished(&engine, &id, Duration::from_secs(10)).await?;
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_eq!(record.result, Some(json!({"greeting": "Hello Ada"})));
    assert_eq!(record.account_id, s.alice.id);
    assert_eq!(record.input, json!({"name": "Ada"}));
    assert!(record.started_at.is_some() && record.completed_at >= record.started_at);
    assert_eq!((record.owner, record.lease_until), (None, None));

    let events = history(&engine, &id).await?;
    assert_journal(&events);
    let completed: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind == "node_completed")
        .map(|e| {
            (
                e.node_id.as_deref().unwrap_or(""),
                e.node_type.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        completed,
        vec![("a", "transform"), ("b", "log"), ("c", "transform")]
    );
    let out = events
        .iter()
        .find(|e| e.kind == "node_completed")
        .map(|e| e.data["output"].clone());
    assert_eq!(out, Some(json!("Hello Ada")));

    let (lines, total) = engine
        .logs(&id, Scope::Owner(s.alice.id.clone()), None, 100, 0)
        .await?
        .ok_or("logs")?;
    assert_eq!(total, 3);
    let messages: Vec<(LogLevel, &str)> = lines
        .iter()
        .map(|l| (l.level, l.message.as_str()))
        .collect();
    assert_eq!(
        messages,
        vec![
            (LogLevel::Info, "Execution started"),
            (LogLevel::Warn, "said Hello Ada"),
            (LogLevel::Info, "Execution completed"),
        ]
    );
    assert_eq!(lines[1].node_id.as_deref(), Some("b"));
    assert_eq!(lines[1].node_type.as_deref(), Some("log"));
    let (warn_only, total) = engine
        .logs(&id, Scope::All, Some(LogLevel::Warn), 100, 0)
        .await?
        .ok_or("logs")?;
    assert_eq!((warn_only.len(), total), (1, 1));
    assert!(
        engine
            .logs(&id, Scope::Owner(s.bob.id.clone()), None, 10, 0)
            .await?
            .is_none()
    );

    let (list, total) = engine
        .list(
            Scope::Owner(s.alice.id.clone()),
            ExecutionFilter::default(),
            10,
            0,
        )
        .await?;
    assert_eq!((list.len(), total), (1, 1));
    engine.shutdown().await;
    Ok(())
}

async fn inputs_flows_and_scopes_are_checked(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, THREE).await?;
    let engine = engine(&s.store, config()).await?;
    match engine
        .submit(request(&f, &s.alice, json!({"name": 5})))
        .await
    {
        Err(Error::InvalidInput(errors)) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors[0].field, "name");
        }
        other => return Err(format!("expected invalid input, got {other:?}").into()),
    }
    // Bob cannot run, see, or cancel Alice's flow and executions.
    let as_bob = request(&f, &s.bob, json!({"name": "x"}));
    assert!(matches!(engine.submit(as_bob).await, Err(Error::NotFound)));
    let run = engine
        .submit(request(&f, &s.alice, json!({"name": "x"})))
        .await?;
    let id = run.execution.id;
    let bob = Scope::Owner(s.bob.id.clone());
    assert!(engine.get(&id, bob.clone()).await?.is_none());
    assert!(engine.watch(&id, bob.clone()).await?.is_none());
    assert!(matches!(
        engine.cancel(&id, bob).await,
        Err(Error::NotFound)
    ));
    finished(&engine, &id, Duration::from_secs(10)).await?;
    // A deleted flow cannot run; its executions stay readable.
    assert!(s.store.delete_flow(&f.id, Scope::All).await?);
    let again = request(&f, &s.alice, json!({"name": "x"}));
    assert!(matches!(engine.submit(again).await, Err(Error::NotFound)));
    let record = engine
        .get(&id, Scope::Owner(s.alice.id.clone()))
        .await?
        .ok_or("kept")?;
    assert_eq!(record.status, ExecutionStatus::Completed);
    // An admin (Scope::All) may run anyone's flow; the execution belongs to the flow's owner.
    let g = flow(&s.store, &s.alice, THREE).await?;
    let by_admin = RunRequest {
        scope: Scope::All,
        ..request(&g, &s.bob, json!({"name": "y"}))
    };
    let run = engine.submit(by_admin).await?;
    assert_eq!(run.execution.account_id, s.alice.id);
    finished(&engine, &run.execution.id, Duration::from_secs(10)).await?;
    engine.shutdown().await;
    Ok(())
}

async fn idempotency_keys_return_the_first_execution(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, THREE).await?;
    let engine = engine(&s.store, config()).await?;
    let keyed = |key: &str| RunRequest {
        idempotency_key: Some(key.to_string()),
        ..request(&f, &s.alice, json!({"name": "k"}))
    };
    let first = engine.submit(keyed("order-1")).await?;
    let second = engine.submit(keyed("order-1")).await?;
    let other = engine.submit(keyed("order-2")).await?;
    assert!(first.created && !second.created && other.created);
    assert_eq!(first.execution.id, second.execution.id);
    assert_ne!(first.execution.id, other.execution.id);
    finished(&engine, &first.execution.id, Duration::from_secs(10)).await?;
    finished(&engine, &other.execution.id, Duration::from_secs(10)).await?;
    let third = engine.submit(keyed("order-1")).await?;
    assert!(!third.created);
    assert_eq!(third.execution.status, ExecutionStatus::Completed);
    let (_, total) = engine
        .list(Scope::All, ExecutionFilter::default(), 10, 0)
        .await?;
    assert_eq!(total, 2);
    engine.shutdown().await;
    Ok(())
}

async fn per_flow_concurrency_queues_in_order(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, &delay_flow("150ms", Some(1))).await?;
    let unlimited = flow(&s.store, &s.alice, &delay_flow("5ms", None)).await?;
    let engine = engine(&s.store, config()).await?;
    let mut ids = Vec::new();
    let mut answered = Vec::new();
    for _ in 0..3 {
        let submitted = engine.submit(request(&f, &s.alice, json!({}))).await?;
        answered.push(submitted.execution.status);
        ids.push(submitted.execution.id);
    }
    // The first got the flow's only slot at once; the others wait for it.
    assert_eq!(
        answered,
        [
            ExecutionStatus::Running,
            ExecutionStatus::Queued,
            ExecutionStatus::Queued
        ]
    );
    // Other flows are not held up.
    let free = engine
        .submit(request(&unlimited, &s.alice, json!({})))
        .await?
        .execution
        .id;
    let free = finished(&engine, &free, Duration::from_secs(10)).await?;
    let second = engine.get(&ids[1], Scope::All).await?.ok_or("second")?;
    assert_eq!(
        second.status,
        ExecutionStatus::Queued,
        "second waits for the first"
    );
    let mut records = Vec::new();
    for id in &ids {
        records.push(finished(&engine, id, Duration::from_secs(10)).await?);
    }
    assert!(free.completed_at < records[1].completed_at);
    for pair in records.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.status, ExecutionStatus::Completed);
        assert!(
            b.started_at >= a.completed_at,
            "FIFO, one at a time: {a:?} then {b:?}"
        );
    }
    engine.shutdown().await;
    Ok(())
}

async fn the_global_cap_limits_running_executions(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, &delay_flow("60ms", None)).await?;
    let engine = engine(
        &s.store,
        EngineConfig {
            max_running: 2,
            ..config()
        },
    )
    .await?;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            engine
                .submit(request(&f, &s.alice, json!({})))
                .await?
                .execution
                .id,
        );
    }
    let mut peak = 0;
    loop {
        let (running, queued) = engine.load();
        peak = peak.max(running);
        if running == 0 && queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(peak, 2);
    let mut records = Vec::new();
    for id in &ids {
        records.push(finished(&engine, id, Duration::from_secs(10)).await?);
    }
    // First in, first out: the third started only after one of the first two ended.
    let first_end = records[..2].iter().filter_map(|r| r.completed_at).min();
    assert!(records[2].started_at >= first_end);
    engine.shutdown().await;
    Ok(())
}

async fn cancel_queued_delayed_and_finished_executions(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, &delay_flow("30s", Some(1))).await?;
    let engine = engine(&s.store, config()).await?;
    let alice = Scope::Owner(s.alice.id.clone());
    let running = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    let queued = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    let third = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    // The delay has recorded its wake-up time.
    until_events(&s.store, &running, Duration::from_secs(10), |events| {
        events.iter().any(|e| e.kind == "node_checkpoint")
    })
    .await?;

    let cancelled = engine.cancel(&queued, alice.clone()).await?;
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    let events = history(&engine, &queued).await?;
    assert_journal(&events);
    assert_eq!(events.len(), 1, "a queued execution never started");

    let started = Instant::now();
    let cancelled = engine.cancel(&running, alice.clone()).await?;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cancel interrupts the delay"
    );
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert!(cancelled.completed_at.is_some());
    assert_journal(&history(&engine, &running).await?);
    let logs = engine
        .logs(&running, alice.clone(), Some(LogLevel::Warn), 10, 0)
        .await?
        .ok_or("logs")?;
    assert_eq!(
        logs.0.last().map(|l| l.message.as_str()),
        Some("Execution cancelled")
    );

    assert!(matches!(
        engine.cancel(&running, alice.clone()).await,
        Err(Error::AlreadyFinished)
    ));
    assert!(matches!(
        engine.cancel(&queued, alice.clone()).await,
        Err(Error::AlreadyFinished)
    ));
    // The slot freed by the cancellations goes to the third one.
    until_events(&s.store, &third, Duration::from_secs(10), |events| {
        events.iter().any(|e| e.kind == "node_checkpoint")
    })
    .await?;
    assert_eq!(
        engine.cancel(&third, alice).await?.status,
        ExecutionStatus::Cancelled
    );
    engine.shutdown().await;
    Ok(())
}

/// A TCP server on 127.0.0.1:0 that never answers its first `hang` requests and answers every
/// later one with `200 {"ok": true}`.
fn hanging_server(hang: usize) -> TestResult<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            if held.len() < hang {
                held.push(stream);
                continue;
            }
            let body = r#"{"ok": true}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(format!("http://{addr}"))
}

/// Starts a run of a one-node flow calling a server that never answers, and returns once the
/// node's start is stored (the call is then in flight).
async fn run_hanging_http_call(
    s: &common::Setup,
) -> TestResult<(flowrunner_engine::Engine, flowrunner_engine::ExecutionId)> {
    let base = hanging_server(usize::MAX)?;
    let definition = format!(
        "metadata: {{ name: hang }}\nnodes:\n  call:\n    type: http.request\n    params: {{ url: \"{base}/slow\" }}\n    timeout: 60s\n"
    );
    let f = flow(&s.store, &s.alice, &definition).await?;
    let engine = engine(&s.store, config()).await?;
    let id = submit_until(&engine, &s.store, &f, &s.alice, "node_started").await?;
    Ok((engine, id))
}

async fn cancel_interrupts_a_hanging_http_call(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let (engine, id) = run_hanging_http_call(&s).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let record = engine.cancel(&id, Scope::Owner(s.alice.id.clone())).await?;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(record.status, ExecutionStatus::Cancelled);
    let events = history(&engine, &id).await?;
    assert_journal(&events);
    assert!(!events.iter().any(|e| e.kind == "node_completed"));
    engine.shutdown().await;
    Ok(())
}

const STEPS: &str = r#"
metadata: { name: steps }
start: one
nodes:
  one: { type: log, params: { message: "one" }, next: wait1 }
  wait1: { type: delay, params: { duration: 40ms }, next: two }
  two: { type: log, params: { message: "two" }, next: wait2 }
  wait2: { type: delay, params: { duration: 40ms }, next: three }
  three: { type: transform, params: { value: 3 } }
"#;

async fn a_late_watcher_gets_history_then_live_without_gap(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let f = flow(&s.store, &s.alice, STEPS).await?;
    let engine = engine(&s.store, config()).await?;
    for join_after_ms in [0, 20, 50] {
        let id = engine
            .submit(request(&f, &s.alice, json!({})))
            .await?
            .execution
            .id;
        tokio::time::sleep(Duration::from_millis(join_after_ms)).await;
        let mut watch = engine
            .watch(&id, Scope::Owner(s.alice.id.clone()))
            .await?
            .ok_or("watch")?;
        let mut events = watch.history.clone();
        if !watch.finished {
            while let Some(event) = watch.live.recv().await? {
                events.push(event);
            }
        }
        assert_journal(&events);
        assert_eq!(
            events,
            history(&engine, &id).await?,
            "live events equal stored ones"
        );
    }
    // Watching a finished execution: everything in history, live ends at once.
    let id = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    finished(&engine, &id, Duration::from_secs(10)).await?;
    let mut watch = engine.watch(&id, Scope::All).await?.ok_or("watch")?;
    assert!(watch.finished);
    assert_journal(&watch.history);
    assert_eq!(watch.live.recv().await, Ok(None));
    engine.shutdown().await;
    Ok(())
}

async fn a_slow_watcher_is_dropped_without_stalling(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let mut definition = String::from(
        "metadata: { name: chatty }\nstart: wait\nnodes:\n  wait: { type: delay, params: { duration: 80ms }, next: l0 }\n",
    );
    for i in 0..20 {
        let next = if i < 19 {
            format!(", next: l{}", i + 1)
        } else {
            String::new()
        };
        definition.push_str(&format!(
            "  l{i}: {{ type: log, params: {{ message: \"line {i}\" }}{next} }}\n"
        ));
    }
    let f = flow(&s.store, &s.alice, &definition).await?;
    let engine = engine(
        &s.store,
        EngineConfig {
            subscriber_buffer: 4,
            ..config()
        },
    )
    .await?;
    let id = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    let mut slow = engine.watch(&id, Scope::All).await?.ok_or("watch")?;
    // Never reading while it runs: the engine must not wait for this subscriber.
    let record = finished(&engine, &id, Duration::from_secs(10)).await?;
    assert_eq!(record.status, ExecutionStatus::Completed);
    let mut received = 0;
    let end = loop {
        match slow.live.recv().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => break None,
            Err(end) => break Some(end),
        }
    };
    assert_eq!(end, Some(LiveEnd::Lagged));
    assert!(received <= 4, "{received}");
    engine.shutdown().await;
    Ok(())
}

async fn secrets_are_the_owners_and_redacted(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    s.store
        .put_secret(&s.alice.id, "api_key", "s3cr3t-value")
        .await?;
    let definition = r#"
metadata: { name: secretive }
start: use
nodes:
  use:
    type: transform
    params: { value: "key={{ secrets.api_key }}" }
    next: say
  say:
    type: log
    params: { message: "using {{ secrets.api_key }}" }
"#;
    let f = flow(&s.store, &s.alice, definition).await?;
    let engine = engine(&s.store, config()).await?;
    let id = engine
        .submit(request(&f, &s.alice, json!({})))
        .await?
        .execution
        .id;
    let record = finished(&engine, &id, Duration::from_secs(10)).await?;
    assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
    let events = history(&engine, &id).await?;
    let everything = format!("{record:?} {events:?}");
    assert!(
        !everything.contains("s3cr3t-value"),
        "a secret value leaked"
    );
    assert!(everything.contains("key=***"));
    let (lines, _) = engine
        .logs(&id, Scope::All, None, 10, 0)
        .await?
        .ok_or("logs")?;
    assert!(lines.iter().any(|l| l.message == "using ***"));
    engine.shutdown().await;
    Ok(())
}

/// `submit` caches flows by id: a change made through the engine's own store is seen by the
/// next run; a change made through another store (another process) is seen once the TTL has
/// passed (here: never with a TTL of an hour, always with a TTL of zero).
async fn flow_changes_reach_submit_at_once_here_and_within_the_ttl_elsewhere(
    db: &TestDatabase,
) -> TestResult {
    use flowrunner_store::FlowChanges;
    let s = setup(db).await?;
    let label = |text: &str| {
        format!(
            "metadata: {{ name: labelled }}\nnodes:\n  only:\n    type: transform\n    params: {{ value: {text} }}\n"
        )
    };
    let run = |engine: &flowrunner_engine::Engine, flow: &flowrunner_store::FlowRecord| {
        let engine = engine.clone();
        let req = request(flow, &s.alice, serde_json::json!({}));
        async move {
            let id = engine.submit(req).await?.execution.id;
            let record = finished(&engine, &id, Duration::from_secs(10)).await?;
            Ok::<_, common::TestError>((record.revision, record.result))
        }
    };
    let change =
        |store: &flowrunner_store::Store, flow: &flowrunner_store::FlowRecord, text: &str| {
            let store = store.clone();
            let id = flow.id.clone();
            let definition = label(text);
            async move {
                store
                    .update_flow(
                        &id,
                        Scope::All,
                        FlowChanges {
                            definition: Some(definition),
                            ..FlowChanges::default()
                        },
                    )
                    .await?
                    .ok_or("flow vanished")?;
                Ok::<_, common::TestError>(())
            }
        };
    let cached = engine(
        &s.store,
        flowrunner_engine::EngineConfig {
            flow_cache_ttl: Duration::from_secs(3600),
            ..config()
        },
    )
    .await?;
    let f = flow(&s.store, &s.alice, &label("one")).await?;
    assert_eq!(run(&cached, &f).await?, (1, Some(serde_json::json!("one"))));

    // Through the engine's own store: seen at once despite the hour-long TTL.
    change(&s.store, &f, "two").await?;
    assert_eq!(run(&cached, &f).await?, (2, Some(serde_json::json!("two"))));

    // Through another store on the same database ("another process"): not seen within the TTL.
    let elsewhere = db.open().await?;
    change(&elsewhere, &f, "three").await?;
    assert_eq!(run(&cached, &f).await?, (2, Some(serde_json::json!("two"))));
    cached.shutdown().await;

    // With no TTL every run reads the flow.
    let uncached = engine(
        &s.store,
        flowrunner_engine::EngineConfig {
            flow_cache_ttl: Duration::ZERO,
            ..config()
        },
    )
    .await?;
    assert_eq!(
        run(&uncached, &f).await?,
        (3, Some(serde_json::json!("three")))
    );
    change(&elsewhere, &f, "four").await?;
    assert_eq!(
        run(&uncached, &f).await?,
        (4, Some(serde_json::json!("four")))
    );

    // A deletion elsewhere is seen too; one here at once.
    assert!(elsewhere.delete_flow(&f.id, Scope::All).await?);
    let gone = uncached
        .submit(request(&f, &s.alice, serde_json::json!({})))
        .await;
    assert!(
        matches!(gone, Err(flowrunner_engine::Error::NotFound)),
        "{gone:?}"
    );
    uncached.shutdown().await;
    Ok(())
}

/// A cancel that lands while the `delay` node is recording its wake-up checkpoint must still
/// end the execution: the checkpoint's emission completes even though the node's future is
/// dropped, so the cancellation gets the next `seq` instead of colliding with it (it used to
/// be rejected as a duplicate, and the execution resumed and kept running).
async fn a_cancel_during_a_node_checkpoint_is_not_lost(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let engine = engine(&s.store, config()).await?;
    let f = flow(&s.store, &s.alice, &delay_flow("10m", None)).await?;
    for _ in 0..40 {
        let id = engine
            .submit(request(&f, &s.alice, json!({})))
            .await?
            .execution
            .id;
        let record = engine.cancel(&id, Scope::All).await?;
        assert_eq!(
            record.status,
            flowrunner_engine::ExecutionStatus::Cancelled,
            "{id}"
        );
        let events = history(&engine, &id).await?;
        assert_journal(&events);
        assert_eq!(events.last().map(|e| e.kind.as_str()), Some("cancelled"));
        assert!(
            !events.iter().any(|e| e.kind == "resumed"),
            "{id} was interrupted: {events:?}"
        );
    }
    engine.shutdown().await;
    Ok(())
}

/// A node that waits without writing anything itself (here an HTTP call to a server that
/// never answers) has its start stored while it waits, so watchers see which node is running
/// (the journal does not wait for the start's commit, but it must not hold it back either).
async fn a_waiting_nodes_start_is_stored_while_it_waits(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let (engine, id) = run_hanging_http_call(&s).await?;
    let watch = engine.watch(&id, Scope::All).await?.ok_or("not found")?;
    let kinds: Vec<&str> = watch.history.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["started", "node_started"], "{kinds:?}");
    assert_eq!(watch.history[1].node_id.as_deref(), Some("call"));
    engine.cancel(&id, Scope::All).await?;
    engine.shutdown().await;
    Ok(())
}

/// Several processes on one PostgreSQL database: a running engine takes over, without a
/// restart, executions whose owner's lease expired (that process died) and leaves alone those
/// of an owner whose lease is live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_engine_takes_over_a_dead_processs_executions_on_postgres() -> TestResult {
    let Some(db) = TestDatabase::postgres()? else {
        return Ok(());
    };
    let s = setup(&db).await?;
    let f = flow(&s.store, &s.alice, &delay_flow("10ms", None)).await?;
    let engine = engine(
        &s.store,
        flowrunner_engine::EngineConfig {
            lease: Duration::from_millis(300),
            ..config()
        },
    )
    .await?;
    // Rows as other processes left them, written through a writer of their own.
    let other = s
        .store
        .start_writer(flowrunner_store::WriterConfig::default(), |_: Vec<()>| {})?;
    let orphan = |owner: &str, lease_until| flowrunner_store::NewExecution {
        flow_id: f.id.clone(),
        revision_id: f.revision_id.clone(),
        revision: f.revision,
        flow_version: f.version.clone(),
        account_id: s.alice.id.clone(),
        input: json!({}),
        idempotency_key: None,
        owner: Some(owner.to_string()),
        lease_until: Some(lease_until),
    };
    let now = chrono::Utc::now();
    let (dead, _) = other
        .create_execution(orphan("worker-dead", now - chrono::Duration::seconds(1)))
        .await?;
    let (alive, _) = other
        .create_execution(orphan("worker-alive", now + chrono::Duration::hours(1)))
        .await?;
    let done = finished(&engine, &dead.id, Duration::from_secs(10)).await?;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    assert_journal(&history(&engine, &dead.id).await?);
    let kept = engine.get(&alive.id, Scope::All).await?.ok_or("alive")?;
    assert_eq!(
        (kept.status, kept.owner.as_deref()),
        (ExecutionStatus::Queued, Some("worker-alive"))
    );
    engine.shutdown().await;
    other.close().await?;
    Ok(())
}

async fn submit_and_wait_answers_with_the_end(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let three = flow(&s.store, &s.alice, THREE).await?;
    let slow = flow(&s.store, &s.alice, &delay_flow("10m", None)).await?;
    let engine = engine(&s.store, config()).await?;
    let wait = Duration::from_secs(30);

    // Ended in time: the answer is the stored row (the snapshot aside, not carried over).
    let done = engine
        .submit_and_wait(request(&three, &s.alice, json!({"name": "Ada"})), wait)
        .await?;
    assert!(done.created);
    let mut stored = engine
        .get(&done.execution.id, Scope::All)
        .await?
        .ok_or("stored execution")?;
    assert!(stored.snapshot.is_some());
    stored.snapshot = None;
    assert_eq!(done.execution, stored);
    assert_eq!(done.execution.status, ExecutionStatus::Completed);
    assert_eq!(
        done.execution.result,
        Some(json!({"greeting": "Hello Ada"}))
    );

    // A key found again: the first execution, already finished.
    let mut keyed = request(&three, &s.alice, json!({"name": "Bo"}));
    keyed.idempotency_key = Some("wait-key".into());
    let first = engine.submit_and_wait(keyed.clone(), wait).await?;
    let again = engine.submit_and_wait(keyed, wait).await?;
    assert!(first.created && !again.created);
    assert_eq!(again.execution.id, first.execution.id);
    assert_eq!(again.execution.status, ExecutionStatus::Completed);

    // Not ended in time: the execution as it is, still running; a key found while it runs
    // waits for the same end, which a cancel brings.
    let mut keyed = request(&slow, &s.alice, json!({}));
    keyed.idempotency_key = Some("slow-key".into());
    let started = Instant::now();
    let running = engine
        .submit_and_wait(keyed.clone(), Duration::from_millis(200))
        .await?;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(running.execution.status, ExecutionStatus::Running);
    assert_eq!(running.execution.completed_at, None);
    let waiter = {
        let engine = engine.clone();
        tokio::spawn(async move { engine.submit_and_wait(keyed, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    engine.cancel(&running.execution.id, Scope::All).await?;
    let ended = waiter.await??;
    assert!(!ended.created);
    assert_eq!(ended.execution.id, running.execution.id);
    assert_eq!(ended.execution.status, ExecutionStatus::Cancelled);
    engine.shutdown().await;
    Ok(())
}

/// Dropping the last handle stops the engine's executions where they are (they run on the
/// journal writer's thread, which outlives no handle); the next engine resumes them.
async fn dropping_the_engine_stops_its_executions(db: &TestDatabase) -> TestResult {
    let s = setup(db).await?;
    let short = flow(&s.store, &s.alice, &delay_flow("300ms", None)).await?;
    let first = engine(&s.store, config()).await?;
    let id = submit_until(&first, &s.store, &short, &s.alice, "node_checkpoint").await?;
    drop(first);
    // Well past the delay: nothing ran it to its end.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let record = s
        .store
        .get_execution(&id, Scope::All)
        .await?
        .ok_or("stored")?;
    assert!(!record.status.is_terminal(), "kept running: {record:?}");
    // Its lease is still the dropped engine's; on SQLite a new engine takes everything.
    if db.backend() == flowrunner_store::Backend::Sqlite {
        let second = engine(&s.store, config()).await?;
        let done = finished(&second, &id, Duration::from_secs(10)).await?;
        assert_eq!(done.status, ExecutionStatus::Completed);
        assert_journal(&history(&second, &id).await?);
        second.shutdown().await;
    }
    Ok(())
}

/// The snapshots of plain node completions are not stored (docs/executions.md); that of a node
/// that read a secret for the first time is. An execution stopped after such a node and one
/// more resumes from the stored snapshot moved past the later completion: no node runs again,
/// later nodes see the earlier outputs, and the secret stays redacted.
async fn a_resume_rebuilds_the_snapshot_from_the_completions_after_it(
    db: &TestDatabase,
) -> TestResult {
    let s = setup(db).await?;
    s.store
        .put_secret(&s.alice.id, "api_key", "s3cr3t-value")
        .await?;
    let base = hanging_server(1)?;
    let definition = format!(
        r#"
metadata: {{ name: rebuilt }}
inputs:
  name: {{ type: string, required: true }}
start: one
nodes:
  one: {{ type: transform, params: {{ value: "hi {{{{ input.name }}}}" }}, next: keyed }}
  keyed: {{ type: transform, params: {{ value: "key={{{{ secrets.api_key }}}}" }}, next: check }}
  check: {{ type: condition, params: {{ if: "input.name == 'ann'" }}, next: {{ "true": call, "false": two }} }}
  two: {{ type: transform, params: {{ value: "wrong branch" }} }}
  call: {{ type: http.request, params: {{ url: "{base}/call" }}, timeout: 60s, next: last }}
  last:
    type: transform
    params:
      value: {{ one: "{{{{ nodes.one.output }}}}", keyed: "{{{{ nodes.keyed.output }}}}", ok: "{{{{ nodes.call.output.body.ok }}}}", again: "{{{{ secrets.api_key }}}}" }}
"#
    );
    let f = flow(&s.store, &s.alice, &definition).await?;
    let first = engine(&s.store, config()).await?;
    let run = request(&f, &s.alice, json!({"name": "ann"}));
    let id = first.submit(run).await?.execution.id;
    until_events(&s.store, &id, Duration::from_secs(10), |events| {
        events
            .iter()
            .any(|e| e.kind == "node_started" && e.node_id.as_deref() == Some("call"))
    })
    .await?;
    // The stored snapshot is the one of `keyed`, the node that read the secret: the
    // completions of `one` and `check` carry none.
    let stored = s
        .store
        .get_execution(&id, Scope::All)
        .await?
        .ok_or("stored")?;
    let snapshot = stored.snapshot.ok_or("a snapshot")?;
    assert_eq!(snapshot["steps"], 2, "{snapshot}");
    assert_eq!(snapshot["next_node"], "check", "{snapshot}");
    assert_eq!(snapshot["secret_keys"], json!(["api_key"]), "{snapshot}");
    first.shutdown().await;

    let second = engine(&s.store, config()).await?;
    let done = finished(&second, &id, Duration::from_secs(20)).await?;
    assert_eq!(done.status, ExecutionStatus::Completed, "{done:?}");
    assert_eq!(
        done.result,
        Some(json!({"one": "hi ann", "keyed": "key=***", "ok": true, "again": "***"}))
    );
    let events = history(&second, &id).await?;
    assert_journal(&events);
    assert!(!format!("{done:?} {events:?}").contains("s3cr3t-value"));
    let completed: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "node_completed")
        .filter_map(|e| e.node_id.as_deref())
        .collect();
    assert_eq!(completed, ["one", "keyed", "check", "call", "last"]);
    let resumed = events
        .iter()
        .find(|e| e.kind == "resumed")
        .ok_or("a resumed entry")?;
    assert_eq!(resumed.data["node_id"], "call");
    second.shutdown().await;
    Ok(())
}
