//! Helpers shared by the engine tests: a store with two accounts, flows, an engine, and
//! waiting for executions to finish.
#![allow(dead_code)]

use std::time::Duration;

use flowrunner_domain::Role;
use flowrunner_engine::{
    Engine, EngineConfig, ExecutionId, ExecutionRecord, RunRequest, Scope, StoredEvent,
};
use flowrunner_runtime::Runtime;
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Account, EventFilter, FlowRecord, NewAccount, NewFlow, Store};

/// Errors of a test.
pub type TestError = Box<dyn std::error::Error + Send + Sync>;
/// Result of a test.
pub type TestResult<T = ()> = Result<T, TestError>;

/// A store with a user ("alice") and another user ("bob").
pub struct Setup {
    pub store: Store,
    pub alice: Account,
    pub bob: Account,
}

pub async fn account(store: &Store, name: &str) -> TestResult<Account> {
    Ok(store
        .create_account(NewAccount {
            email: format!("{name}@example.com"),
            name: name.to_string(),
            role: Role::User,
            password_hash: "x".into(),
        })
        .await?)
}

pub async fn setup(db: &TestDatabase) -> TestResult<Setup> {
    let store = db.open().await?;
    let alice = account(&store, "alice").await?;
    let bob = account(&store, "bob").await?;
    Ok(Setup { store, alice, bob })
}

pub async fn flow(store: &Store, owner: &Account, definition: &str) -> TestResult<FlowRecord> {
    Ok(store
        .create_flow(NewFlow {
            owner_id: owner.id.clone(),
            name: "test".into(),
            description: None,
            version: "1.0.0".into(),
            tags: Vec::new(),
            definition: definition.to_string(),
        })
        .await?)
}

pub fn runtime() -> TestResult<Runtime> {
    Ok(Runtime::builder().blocking_threads(2).build()?)
}

pub fn config() -> EngineConfig {
    EngineConfig {
        lease: Duration::from_secs(5),
        ..EngineConfig::default()
    }
}

pub async fn engine(store: &Store, config: EngineConfig) -> TestResult<Engine> {
    Ok(Engine::start(store.clone(), runtime()?, config).await?)
}

pub fn request(flow: &FlowRecord, owner: &Account, input: serde_json::Value) -> RunRequest {
    RunRequest {
        flow_id: flow.id.clone(),
        scope: Scope::Owner(owner.id.clone()),
        input,
        idempotency_key: None,
    }
}

/// Polls until the execution reaches a terminal status.
pub async fn finished(
    engine: &Engine,
    id: &ExecutionId,
    within: Duration,
) -> TestResult<ExecutionRecord> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(record) = engine.get(id, Scope::All).await?
            && record.status.is_terminal()
        {
            return Ok(record);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("execution {id} did not finish within {within:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Submits a run of `flow` (empty input) and waits until its journal holds an entry of `kind`.
pub async fn submit_until(
    engine: &Engine,
    store: &Store,
    flow: &FlowRecord,
    owner: &Account,
    kind: &str,
) -> TestResult<ExecutionId> {
    let id = engine
        .submit(request(flow, owner, serde_json::json!({})))
        .await?
        .execution
        .id;
    until_events(store, &id, Duration::from_secs(10), |events| {
        events.iter().any(|e| e.kind == kind)
    })
    .await?;
    Ok(id)
}

/// Polls until `check` holds for the execution's stored events.
pub async fn until_events(
    store: &Store,
    id: &ExecutionId,
    within: Duration,
    check: impl Fn(&[flowrunner_store::ExecutionEvent]) -> bool,
) -> TestResult<()> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (events, _) = store
            .list_execution_events(id, EventFilter::default(), i64::MAX, 0)
            .await?;
        if check(&events) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(
                format!("condition on the events of {id} not met within {within:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every stored event of an execution, through `watch` (history only).
pub async fn history(engine: &Engine, id: &ExecutionId) -> TestResult<Vec<StoredEvent>> {
    let watch = engine.watch(id, Scope::All).await?.ok_or("not found")?;
    Ok(watch.history)
}

/// Asserts the journal invariants: seq 0..n without gaps, exactly one terminal event (last),
/// and no node completed twice at the same step.
pub fn assert_journal(events: &[StoredEvent]) {
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (0..events.len() as u64).collect();
    assert_eq!(seqs, expected, "seq must be contiguous from 0");
    let terminals = events.iter().filter(|e| e.is_terminal()).count();
    assert_eq!(terminals, 1, "exactly one terminal event");
    assert!(
        events.last().is_some_and(StoredEvent::is_terminal),
        "terminal event last"
    );
    for event in events {
        assert_eq!(
            event.data.get("seq").and_then(|s| s.as_u64()),
            Some(event.seq),
            "data.seq"
        );
        if event.kind.starts_with("node_") {
            assert!(event.node_type.is_some(), "node_type of {event:?}");
        }
    }
}
