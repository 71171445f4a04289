//! The group-commit journal writer: batching, ordering, rejection of one message without
//! losing the others, `on_commit` only after the commit, the finished guard, claims and leases,
//! and the 24-hour idempotency window.

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, LogLevel, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{
    Error, EventFilter, ExecutionRecord, FlowRecord, JournalEntry, JournalWriter, NewEvent,
    NewExecution, Result, RowChange, Scope, Store, WriterConfig,
};
use serde_json::json;

use crate::common::{Raw, account, new_flow};

store_tests!(
    concurrent_writes_are_batched,
    entries_of_one_execution_commit_in_order,
    a_rejected_entry_does_not_poison_its_batch,
    on_commit_sees_only_durable_entries,
    terminal_entries_finish_once,
    claims_and_leases,
    idempotency_keys_expire_after_a_day,
);

async fn setup(db: &TestDatabase) -> Result<(Store, FlowRecord, AccountId)> {
    let store = db.open().await?;
    let owner = account(&store, "writer", Role::User).await?;
    let flow = store
        .create_flow(new_flow(&owner, "journaled", &[]))
        .await?;
    Ok((store, flow, owner.id))
}

fn new_execution(flow: &FlowRecord, account: &AccountId, key: Option<&str>) -> NewExecution {
    NewExecution {
        flow_id: flow.id.clone(),
        revision_id: flow.revision_id.clone(),
        revision: flow.revision,
        flow_version: flow.version.clone(),
        account_id: account.clone(),
        input: json!({"n": 1}),
        idempotency_key: key.map(str::to_string),
        owner: Some("worker-a".into()),
        lease_until: Some(Utc::now() + Duration::seconds(30)),
    }
}

fn event(id: &ExecutionId, seq: i64, kind: &str) -> NewEvent {
    NewEvent {
        execution_id: id.clone(),
        seq,
        kind: kind.to_string(),
        node_id: Some("n1".into()),
        node_type: Some("transform".into()),
        level: (kind == "log").then_some(LogLevel::Info),
        message: (kind == "log").then(|| format!("line {seq}")),
        data: json!({"seq": seq, "type": kind}).to_string(),
        created_at: Utc::now(),
    }
}

fn entry(id: &ExecutionId, seq: i64, kind: &str) -> JournalEntry<(ExecutionId, i64)> {
    JournalEntry {
        event: event(id, seq, kind),
        snapshot: None,
        change: RowChange::None,
        payload: (id.clone(), seq),
    }
}

type Committed = Arc<Mutex<Vec<(ExecutionId, i64)>>>;

fn writer(store: &Store) -> Result<(JournalWriter<(ExecutionId, i64)>, Committed)> {
    let committed: Committed = Arc::default();
    let sink = Arc::clone(&committed);
    let writer = store.start_writer(WriterConfig::default(), move |payloads| {
        sink.lock().expect("lock").extend(payloads);
    })?;
    Ok((writer, committed))
}

async fn create(
    writer: &JournalWriter<(ExecutionId, i64)>,
    flow: &FlowRecord,
    account: &AccountId,
) -> Result<ExecutionRecord> {
    Ok(writer
        .create_execution(new_execution(flow, account, None))
        .await?
        .0)
}

async fn concurrent_writes_are_batched(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, committed) = writer(&store)?;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(create(&writer, &flow, &owner).await?.id);
    }
    let before = writer.stats();
    let mut tasks = Vec::new();
    for id in &ids {
        for seq in 0..20 {
            let writer = writer.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                writer.append(entry(&id, seq, "log")).await?.wait().await
            }));
        }
    }
    for task in tasks {
        task.await.expect("join")?;
    }
    let after = writer.stats();
    let messages = after.messages - before.messages;
    let commits = after.commits - before.commits;
    assert_eq!(messages, 400);
    assert!(
        commits < messages / 4,
        "400 concurrent writes took {commits} commits: not batched"
    );
    assert_eq!(committed.lock().expect("lock").len(), 400);
    for id in &ids {
        let (events, total) = store
            .list_execution_events(id, EventFilter::default(), 100, 0)
            .await?;
        assert_eq!(total, 20);
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
    }
    writer.close().await?;
    Ok(())
}

async fn entries_of_one_execution_commit_in_order(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, committed) = writer(&store)?;
    let id = create(&writer, &flow, &owner).await?.id;
    // Fire and forget, then wait only for the last: the earlier ones are committed too.
    let mut last = None;
    for seq in 0..300 {
        last = Some(writer.append(entry(&id, seq, "log")).await?);
    }
    last.expect("tickets").wait().await?;
    let (events, _) = store
        .list_execution_events(&id, EventFilter::default(), 1000, 0)
        .await?;
    assert_eq!(events.len(), 300);
    let order: Vec<i64> = committed
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(order, (0..300).collect::<Vec<_>>(), "on_commit order");
    writer.close().await?;
    Ok(())
}

async fn a_rejected_entry_does_not_poison_its_batch(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, committed) = writer(&store)?;
    let id = create(&writer, &flow, &owner).await?.id;
    writer
        .append(entry(&id, 0, "started"))
        .await?
        .wait()
        .await?;
    // Queue a burst without waiting so that it lands in few batches, with a duplicate of
    // seq 0 and an entry of an unknown execution in the middle.
    let mut tickets = Vec::new();
    for seq in 1..=10 {
        tickets.push((seq, writer.append(entry(&id, seq, "log")).await?));
        if seq == 5 {
            tickets.push((-1, writer.append(entry(&id, 0, "log")).await?));
            let ghost = ExecutionId::generate();
            tickets.push((-2, writer.append(entry(&ghost, 0, "log")).await?));
        }
    }
    let mut rejected = 0;
    for (seq, ticket) in tickets {
        match ticket.wait().await {
            Ok(()) => assert!(seq > 0, "entry {seq} should have been rejected"),
            Err(_) if seq < 0 => rejected += 1,
            Err(err) => panic!("entry {seq} was lost: {err}"),
        }
    }
    assert_eq!(rejected, 2);
    assert!(writer.stats().rejected >= 2);
    let (events, _) = store
        .list_execution_events(&id, EventFilter::default(), 100, 0)
        .await?;
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (0..=10).collect::<Vec<_>>()
    );
    assert_eq!(
        events.first().map(|e| e.kind.as_str()),
        Some("started"),
        "seq 0 kept"
    );
    let published: Vec<i64> = committed
        .lock()
        .expect("lock")
        .iter()
        .filter(|(e, _)| *e == id)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        published,
        (0..=10).collect::<Vec<_>>(),
        "rejected entries are not published"
    );
    writer.close().await?;
    Ok(())
}

async fn on_commit_sees_only_durable_entries(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let reader = store.blocking().clone();
    let seen: Arc<Mutex<Vec<(i64, bool)>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let writer = store.start_writer(
        WriterConfig::default(),
        move |payloads: Vec<(ExecutionId, i64)>| {
            for (id, seq) in payloads {
                // Another connection must already see the row: the callback runs after COMMIT.
                let visible = reader
                    .list_execution_events(&id, EventFilter::default(), 1000, 0)
                    .map(|(events, _)| events.iter().any(|e| e.seq == seq))
                    .unwrap_or(false);
                sink.lock().expect("lock").push((seq, visible));
            }
        },
    )?;
    let id = writer
        .create_execution(new_execution(&flow, &owner, None))
        .await?
        .0
        .id;
    let mut last = None;
    for seq in 0..50 {
        last = Some(writer.append(entry(&id, seq, "log")).await?);
    }
    last.expect("ticket").wait().await?;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 50);
    assert!(seen.iter().all(|(_, visible)| *visible), "{seen:?}");
    writer.close().await?;
    Ok(())
}

async fn terminal_entries_finish_once(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, _) = writer(&store)?;
    let id = create(&writer, &flow, &owner).await?.id;
    let started_at = Utc::now();
    let mut start = entry(&id, 0, "started");
    start.snapshot = Some(json!({"next_seq": 1}).to_string());
    start.change = RowChange::Start {
        owner: "worker-a".into(),
        lease_until: Utc::now() + Duration::seconds(30),
        started_at,
    };
    writer.append(start).await?.wait().await?;
    let running = store.get_execution(&id, Scope::All).await?.expect("exists");
    assert_eq!(running.status, ExecutionStatus::Running);
    assert_eq!(running.snapshot, Some(json!({"next_seq": 1})));
    assert!(running.started_at.is_some());

    let finish = |seq, status| {
        let mut e = entry(&id, seq, "completed");
        e.change = RowChange::Finish {
            status,
            result: Some(json!({"ok": true})),
            error: None,
            error_node: None,
            completed_at: Utc::now(),
        };
        e
    };
    writer
        .append(finish(1, ExecutionStatus::Completed))
        .await?
        .wait()
        .await?;
    let second = writer
        .append(finish(2, ExecutionStatus::Cancelled))
        .await?
        .wait()
        .await;
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    let done = store.get_execution(&id, Scope::All).await?.expect("exists");
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(
        (done.owner, done.lease_until),
        (None, None),
        "lease released"
    );
    assert!(done.completed_at.is_some());
    assert_eq!(
        store.last_event_seq(&id).await?,
        Some(1),
        "no second terminal event"
    );
    // Snapshot updates of a finished execution are refused too.
    let mut late = entry(&id, 2, "node_completed");
    late.snapshot = Some("{}".into());
    assert!(writer.append(late).await?.wait().await.is_err());
    writer.close().await?;
    Ok(())
}

async fn claims_and_leases(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, _) = writer(&store)?;
    let a = create(&writer, &flow, &owner).await?.id;
    let b = create(&writer, &flow, &owner).await?.id;
    writer.append(entry(&b, 0, "log")).await?.wait().await?;
    writer.append(entry(&b, 1, "log")).await?.wait().await?;
    let now = Utc::now();
    // worker-a's leases are live: worker-b may not take them unless told to take all.
    let none = writer
        .claim_unfinished("worker-b", now + Duration::seconds(30), now, false)
        .await?;
    assert!(none.is_empty(), "{none:?}");
    let all = writer
        .claim_unfinished("worker-b", now + Duration::seconds(30), now, true)
        .await?;
    let ids: Vec<_> = all.iter().map(|c| c.record.id.clone()).collect();
    assert_eq!(ids, vec![a.clone(), b.clone()], "oldest first");
    assert_eq!(
        all.iter().map(|c| c.last_seq).collect::<Vec<_>>(),
        vec![None, Some(1)]
    );
    assert!(
        all.iter()
            .all(|c| c.record.owner.as_deref() == Some("worker-b"))
    );
    // Expired leases can be claimed by anyone.
    let later = now + Duration::seconds(60);
    let expired = writer
        .claim_unfinished("worker-c", later + Duration::seconds(30), later, false)
        .await?;
    assert_eq!(expired.len(), 2);
    assert_eq!(
        writer
            .renew_leases("worker-c", later + Duration::seconds(90))
            .await?,
        2
    );
    assert_eq!(writer.renew_leases("worker-b", later).await?, 0);
    assert_eq!(writer.release_leases("worker-c").await?, 2);
    let released = store.get_execution(&a, Scope::All).await?.expect("exists");
    assert_eq!(released.owner, None);
    writer.close().await?;
    assert!(matches!(writer.flush().await, Err(Error::WriterClosed)));
    Ok(())
}

async fn idempotency_keys_expire_after_a_day(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, _) = writer(&store)?;
    let (first, created) = writer
        .create_execution(new_execution(&flow, &owner, Some("k1")))
        .await?;
    assert!(created);
    let (again, created) = writer
        .create_execution(new_execution(&flow, &owner, Some("k1")))
        .await?;
    assert!(!created);
    assert_eq!(again.id, first.id);
    let (other, created) = writer
        .create_execution(new_execution(&flow, &owner, Some("k2")))
        .await?;
    assert!(created);
    assert_ne!(other.id, first.id);
    // The same key through the pooled API agrees.
    let (pooled, created) = store
        .create_execution(new_execution(&flow, &owner, Some("k1")))
        .await?;
    assert!(!created);
    assert_eq!(pooled.id, first.id);
    // A key older than 24 hours starts a new execution.
    Raw::open(db)
        .execute("UPDATE idempotency_keys SET created_at = '2000-01-01 00:00:00' WHERE key = 'k1'");
    let (fresh, created) = writer
        .create_execution(new_execution(&flow, &owner, Some("k1")))
        .await?;
    assert!(created);
    assert_ne!(fresh.id, first.id);
    let (again, created) = writer
        .create_execution(new_execution(&flow, &owner, Some("k1")))
        .await?;
    assert!(!created);
    assert_eq!(again.id, fresh.id);
    assert_eq!(fresh.revision, flow.revision);
    writer.close().await?;
    Ok(())
}
