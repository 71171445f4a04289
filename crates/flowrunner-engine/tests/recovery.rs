//! Crash recovery: an engine in a child process (this test binary, re-run in "child" mode) is
//! SIGKILLed while executions wait in delays, run, or sit queued; a new engine on the same
//! SQLite file must finish every one exactly once, without duplicated or lost node
//! completions, with delays resumed for their remaining time.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowrunner_engine::{EngineConfig, ExecutionId, ExecutionStatus, FlowId, RunRequest, Scope};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Store, StoreConfig};
use serde_json::json;

use common::{TestResult, assert_journal, engine, finished, flow, history, setup};

const CHILD_DB: &str = "FLOWRUNNER_ENGINE_CHILD_DB";
const CHILD_FLOWS: &str = "FLOWRUNNER_ENGINE_CHILD_FLOWS";
const READY: &str = "CHILD-READY ";

/// Long delay, then a transform: killed mid-delay.
const SLEEPY: &str = r#"
metadata: { name: sleepy }
start: before
nodes:
  before: { type: transform, params: { value: 1 }, next: pause }
  pause: { type: delay, params: { duration: 3s }, next: after }
  after: { type: transform, params: { value: "{{ nodes.pause.output.waited_ms }}" } }
"#;

/// One at a time: the first is killed mid-delay, the others never started.
const SERIAL: &str = r#"
metadata: { name: serial, concurrency: 1 }
start: first
nodes:
  first: { type: transform, params: { value: 1 }, next: pause }
  pause: { type: delay, params: { duration: 1s }, next: last }
  last: { type: transform, params: { value: 2 } }
"#;

/// Runs only inside the child process: starts an engine, submits work, reports the ids once
/// every delay has recorded its wake-up time, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_engine_process() -> TestResult {
    let (Ok(url), Ok(flows)) = (std::env::var(CHILD_DB), std::env::var(CHILD_FLOWS)) else {
        return Ok(()); // Not the child: nothing to do.
    };
    let (sleepy, serial) = flows.split_once(',').ok_or("flows")?;
    let store = Store::open(StoreConfig::new(url)).await?;
    let engine = engine(&store, EngineConfig::default()).await?;
    let run = |flow: &str| RunRequest {
        flow_id: FlowId::from_trusted(flow.to_string()),
        scope: Scope::All,
        input: json!({}),
        idempotency_key: None,
    };
    let mut sleepy_ids = Vec::new();
    for _ in 0..5 {
        sleepy_ids.push(engine.submit(run(sleepy)).await?.execution.id.to_string());
    }
    let mut serial_ids = Vec::new();
    for _ in 0..3 {
        serial_ids.push(engine.submit(run(serial)).await?.execution.id.to_string());
    }
    let waiting: Vec<&String> = sleepy_ids.iter().chain(serial_ids.first()).collect();
    for id in waiting {
        let id = ExecutionId::from_trusted(id.clone());
        common::until_events(&store, &id, Duration::from_secs(10), |events| {
            events.iter().any(|e| e.kind == "node_checkpoint")
        })
        .await?;
    }
    println!(
        "{READY}{}",
        json!({"sleepy": sleepy_ids, "serial": serial_ids})
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    Err("the child was not killed".into())
}

fn ids(value: &serde_json::Value, key: &str) -> Vec<ExecutionId> {
    value[key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .map(|s| ExecutionId::from_trusted(s.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_engine_is_resumed_exactly_once() -> TestResult {
    if std::env::var(CHILD_DB).is_ok() {
        return Ok(()); // Inside the child: only `child_engine_process` runs.
    }
    let db = TestDatabase::sqlite()?;
    let s = setup(&db).await?;
    let sleepy = flow(&s.store, &s.alice, SLEEPY).await?;
    let serial = flow(&s.store, &s.alice, SERIAL).await?;

    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_engine_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, db.url())
        .env(CHILD_FLOWS, format!("{},{}", sleepy.id, serial.id))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("child stdout")?;
    let line = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split_once(READY).map(|(_, rest)| rest.to_string()))
    })
    .await?;
    let Some(line) = line else {
        let _ = child.kill();
        return Err("the child engine did not get ready".into());
    };
    let submitted: serde_json::Value = serde_json::from_str(&line)?;
    // Let the delays run a while, then SIGKILL: no shutdown, no flush.
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill()?;
    child.wait()?;
    let killed_at = Utc::now();
    let sleepy_ids = ids(&submitted, "sleepy");
    let serial_ids = ids(&submitted, "serial");
    assert_eq!((sleepy_ids.len(), serial_ids.len()), (5, 3));

    // Before restart: nothing finished, the queued ones never started.
    for id in &serial_ids[1..] {
        let record = s
            .store
            .get_execution(id, Scope::All)
            .await?
            .ok_or("queued")?;
        assert_eq!(record.status, ExecutionStatus::Queued);
    }

    let engine = engine(&s.store, common::config()).await?;
    for id in &sleepy_ids {
        let record = finished(&engine, id, Duration::from_secs(15)).await?;
        assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
        let started = record.started_at.ok_or("started_at")?;
        let completed = record.completed_at.ok_or("completed_at")?;
        // The delay kept its original wake-up time: restarted from zero it would end at
        // least 3 s after the kill.
        assert!(
            completed - started >= chrono::TimeDelta::milliseconds(3000),
            "{record:?}"
        );
        assert!(
            completed < killed_at + chrono::TimeDelta::milliseconds(2750),
            "delay restarted instead of resumed: killed {killed_at}, completed {completed}"
        );
        let waited = record
            .result
            .as_ref()
            .and_then(|r| r.as_i64().or_else(|| r.as_str()?.parse().ok()));
        assert!(
            waited.is_some_and(|w| (3000..3600).contains(&w)),
            "{waited:?}"
        );
        let events = history(&engine, id).await?;
        assert_journal(&events);
        assert_completions_once(&events, &["before", "pause", "after"]);
        assert!(
            events.iter().any(|e| e.kind == "resumed"),
            "resumed from its snapshot"
        );
    }
    let mut records = Vec::new();
    for id in &serial_ids {
        let record = finished(&engine, id, Duration::from_secs(15)).await?;
        assert_eq!(record.status, ExecutionStatus::Completed, "{record:?}");
        let events = history(&engine, id).await?;
        assert_journal(&events);
        assert_completions_once(&events, &["first", "pause", "last"]);
        records.push(record);
    }
    // The queued ones started from the beginning, one at a time, in order.
    for id in &serial_ids[1..] {
        let events = history(&engine, id).await?;
        assert_eq!(events.first().map(|e| e.kind.as_str()), Some("started"));
        assert!(!events.iter().any(|e| e.kind == "resumed"));
    }
    for pair in records.windows(2) {
        assert!(
            pair[1].started_at >= pair[0].completed_at,
            "FIFO after recovery"
        );
    }
    let started: Vec<Option<DateTime<Utc>>> = records.iter().map(|r| r.started_at).collect();
    assert!(started.windows(2).all(|w| w[0] <= w[1]));
    engine.shutdown().await;
    Ok(())
}

/// A clean shutdown leaves executions unfinished and unowned; the next engine finishes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_leaves_work_for_the_next_start() -> TestResult {
    if std::env::var(CHILD_DB).is_ok() {
        return Ok(());
    }
    let db = TestDatabase::sqlite()?;
    let s = setup(&db).await?;
    let serial = flow(&s.store, &s.alice, SERIAL).await?;
    let first = engine(&s.store, common::config()).await?;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let run = common::request(&serial, &s.alice, json!({}));
        ids.push(first.submit(run).await?.execution.id);
    }
    common::until_events(&s.store, &ids[0], Duration::from_secs(10), |events| {
        events.iter().any(|e| e.kind == "node_checkpoint")
    })
    .await?;
    first.shutdown().await;
    let run = common::request(&serial, &s.alice, json!({}));
    assert!(matches!(
        first.submit(run).await,
        Err(flowrunner_engine::Error::ShuttingDown)
    ));
    for id in &ids {
        let record = s
            .store
            .get_execution(id, Scope::All)
            .await?
            .ok_or("exists")?;
        assert!(!record.status.is_terminal(), "not marked: {record:?}");
        assert_eq!(record.owner, None, "lease released");
    }
    let second = engine(&s.store, common::config()).await?;
    for id in &ids {
        let record = finished(&second, id, Duration::from_secs(10)).await?;
        assert_eq!(record.status, ExecutionStatus::Completed);
        let events = history(&second, id).await?;
        assert_journal(&events);
        assert_completions_once(&events, &["first", "pause", "last"]);
    }
    second.shutdown().await;
    Ok(())
}

fn assert_completions_once(events: &[flowrunner_engine::StoredEvent], nodes: &[&str]) {
    let completed: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "node_completed")
        .filter_map(|e| e.node_id.as_deref())
        .collect();
    assert_eq!(
        completed, nodes,
        "each node completed exactly once, in order"
    );
}
