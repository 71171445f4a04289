//! The group-commit journal writer: batching, ordering, rejection of one message without
//! losing the others (a duplicate `seq` is a conflict), `on_commit` only after the commit, one
//! terminal state per execution, claims and leases, and idempotency keys (per account and flow,
//! for 24 hours).

use std::sync::{Arc, Mutex};

use chrono::{Duration, SubsecRound, Utc};
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, LogLevel, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{
    ClaimScope, Error, EventFilter, ExecutionRecord, FlowRecord, JournalEntry, JournalWriter,
    NewEvent, NewExecution, Result, RowChange, Scope, Store, WriterConfig,
};
use serde_json::json;

use crate::common::{self, Raw, account, new_flow};

store_tests!(
    concurrent_writes_are_batched,
    entries_of_one_execution_commit_in_order,
    a_rejected_entry_does_not_poison_its_batch,
    on_commit_sees_only_durable_entries,
    terminal_entries_finish_once,
    claims_and_leases,
    idempotency_keys_are_per_account_and_flow_and_expire_after_a_day,
);

async fn setup(db: &TestDatabase) -> Result<(Store, FlowRecord, AccountId)> {
    let store = db.open().await?;
    let owner = account(&store, "writer", Role::User).await?;
    let flow = store
        .create_flow(new_flow(&owner, "journaled", &[]))
        .await?;
    Ok((store, flow, owner.id))
}

/// A run whose lease `worker-a` holds for the next 30 seconds.
fn new_execution(flow: &FlowRecord, account: &AccountId, key: Option<&str>) -> NewExecution {
    NewExecution {
        owner: Some("worker-a".into()),
        lease_until: Some(Utc::now() + Duration::seconds(30)),
        ..common::new_execution(flow, account, key)
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
            // The duplicate `(execution_id, seq)` is a conflict, not a database failure.
            Err(Error::Conflict(_)) if seq == -1 => rejected += 1,
            Err(_) if seq == -2 => rejected += 1,
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
    let (writer, committed) = writer(&store)?;
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

    let finish = |id: &ExecutionId, seq, status| {
        let mut e = entry(id, seq, "completed");
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
        .append(finish(&id, 1, ExecutionStatus::Completed))
        .await?
        .wait()
        .await?;
    let second = writer
        .append(finish(&id, 2, ExecutionStatus::Cancelled))
        .await?
        .wait()
        .await;
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    let done = store.get_execution(&id, Scope::All).await?.expect("exists");
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.snapshot, Some(json!({"next_seq": 1})), "kept");
    assert_eq!(
        (done.owner.clone(), done.lease_until),
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
    let late = writer.append(late).await?.wait().await;
    assert!(matches!(late, Err(Error::Conflict(_))), "{late:?}");
    assert_eq!(
        store.get_execution(&id, Scope::All).await?,
        Some(done),
        "unchanged"
    );

    // Two terminal entries queued back to back, without waiting (so usually in one batch):
    // the first queued wins, the second is rejected and stores no event.
    let raced = create(&writer, &flow, &owner).await?.id;
    let mut fail = finish(&raced, 1, ExecutionStatus::Failed);
    fail.change = RowChange::Finish {
        status: ExecutionStatus::Failed,
        result: None,
        error: Some("boom".into()),
        error_node: Some("n1".into()),
        completed_at: Utc::now(),
    };
    let first = writer
        .append(finish(&raced, 0, ExecutionStatus::Completed))
        .await?;
    let second = writer.append(fail).await?;
    first.wait().await?;
    let second = second.wait().await;
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    let record = store
        .get_execution(&raced, Scope::All)
        .await?
        .expect("exists");
    assert_eq!(
        (record.status, record.error),
        (ExecutionStatus::Completed, None)
    );
    let (events, total) = store
        .list_execution_events(&raced, EventFilter::default(), 10, 0)
        .await?;
    assert_eq!((events[0].seq, total), (0, 1), "one terminal event");
    let published: Vec<i64> = committed
        .lock()
        .expect("lock")
        .iter()
        .filter(|(e, _)| *e == raced)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(published, [0], "the rejected entry is not published");
    writer.close().await?;
    Ok(())
}

async fn claims_and_leases(db: &TestDatabase) -> Result<()> {
    let (store, flow, owner) = setup(db).await?;
    let (writer, _) = writer(&store)?;
    let now = Utc::now();
    let leased = |lease_owner: Option<&str>, lease_until| NewExecution {
        owner: lease_owner.map(str::to_string),
        lease_until,
        ..common::new_execution(&flow, &owner, None)
    };
    // Created oldest first.
    let mut ids = Vec::new();
    for new in [
        leased(None, None),
        leased(Some("worker-b"), Some(now + Duration::seconds(30))),
        leased(Some("worker-c"), Some(now - Duration::seconds(1))),
        leased(Some("worker-a"), Some(now + Duration::seconds(30))),
        leased(None, None),
    ] {
        ids.push(writer.create_execution(new).await?.0.id);
    }
    let [unowned, own, expired, live, finished] = <[ExecutionId; 5]>::try_from(ids).expect("5");
    writer.append(entry(&own, 0, "log")).await?.wait().await?;
    writer.append(entry(&own, 1, "log")).await?.wait().await?;
    let mut end = entry(&finished, 0, "cancelled");
    end.change = RowChange::Finish {
        status: ExecutionStatus::Cancelled,
        result: None,
        error: None,
        error_node: None,
        completed_at: now,
    };
    writer.append(end).await?.wait().await?;

    // `OwnAndAbandoned`: the unowned, worker-b's own and the expired ones, not worker-a's
    // live lease, never a finished execution.
    let until = (now + Duration::seconds(60)).trunc_subsecs(6);
    let claimed = writer
        .claim_unfinished("worker-b", until, now, ClaimScope::OwnAndAbandoned)
        .await?;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.record.id.clone())
            .collect::<Vec<_>>(),
        [unowned.clone(), own.clone(), expired.clone()],
        "oldest first"
    );
    assert_eq!(
        claimed.iter().map(|c| c.last_seq).collect::<Vec<_>>(),
        [None, Some(1), None]
    );
    for c in &claimed {
        assert_eq!(
            (c.record.owner.as_deref(), c.record.lease_until),
            (Some("worker-b"), Some(until))
        );
        assert_eq!(
            store
                .get_execution(&c.record.id, Scope::All)
                .await?
                .as_ref(),
            Some(&c.record)
        );
    }
    let kept = store
        .get_execution(&live, Scope::All)
        .await?
        .expect("exists");
    assert_eq!(kept.owner.as_deref(), Some("worker-a"));
    // Every lease is live now: another worker gets nothing unless told to take all.
    let none = writer
        .claim_unfinished(
            "worker-c",
            now + Duration::seconds(30),
            now,
            ClaimScope::OwnAndAbandoned,
        )
        .await?;
    assert!(none.is_empty(), "{none:?}");
    let all = writer
        .claim_unfinished(
            "worker-d",
            now + Duration::seconds(30),
            now,
            ClaimScope::Everything,
        )
        .await?;
    assert_eq!(
        all.iter().map(|c| c.record.id.clone()).collect::<Vec<_>>(),
        [unowned.clone(), own.clone(), expired.clone(), live.clone()],
        "every unfinished one, oldest first"
    );
    assert!(
        all.iter()
            .all(|c| c.record.owner.as_deref() == Some("worker-d"))
    );
    // Expired leases can be claimed by anyone.
    let later = now + Duration::seconds(90);
    let expired = writer
        .claim_unfinished(
            "worker-e",
            later + Duration::seconds(30),
            later,
            ClaimScope::OwnAndAbandoned,
        )
        .await?;
    assert_eq!(expired.len(), 4);
    assert_eq!(
        writer
            .renew_leases("worker-e", later + Duration::seconds(90))
            .await?,
        4
    );
    assert_eq!(writer.renew_leases("worker-d", later).await?, 0);
    assert_eq!(writer.release_leases("worker-e").await?, 4);
    let released = store
        .get_execution(&unowned, Scope::All)
        .await?
        .expect("exists");
    assert_eq!((released.owner, released.lease_until), (None, None));
    let done = store
        .get_execution(&finished, Scope::All)
        .await?
        .expect("exists");
    assert_eq!(
        (done.status, done.owner, done.lease_until),
        (ExecutionStatus::Cancelled, None, None),
        "claims and leases never touch a finished execution"
    );
    // While running, a process takes over only abandoned work: unowned (released) or another
    // owner's expired lease, never its own even when its lease ran out.
    let own_until = later + Duration::seconds(10);
    let claimed = writer
        .claim_unfinished("worker-g", own_until, later, ClaimScope::Abandoned)
        .await?;
    assert_eq!(claimed.len(), 4, "all four were released: {claimed:?}");
    let much_later = own_until + Duration::seconds(60);
    let none = writer
        .claim_unfinished("worker-g", much_later, much_later, ClaimScope::Abandoned)
        .await?;
    assert!(none.is_empty(), "its own expired leases: {none:?}");
    let taken = writer
        .claim_unfinished(
            "worker-h",
            much_later + Duration::seconds(30),
            much_later,
            ClaimScope::Abandoned,
        )
        .await?;
    assert_eq!(taken.len(), 4, "another owner's expired leases: {taken:?}");
    assert!(
        taken
            .iter()
            .all(|c| c.record.owner.as_deref() == Some("worker-h"))
    );
    let none = writer
        .claim_unfinished("worker-i", much_later, much_later, ClaimScope::Abandoned)
        .await?;
    assert!(none.is_empty(), "live leases stay: {none:?}");
    writer.close().await?;
    assert!(matches!(writer.flush().await, Err(Error::WriterClosed)));
    Ok(())
}

async fn idempotency_keys_are_per_account_and_flow_and_expire_after_a_day(
    db: &TestDatabase,
) -> Result<()> {
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
    assert_eq!(
        store.get_execution(&first.id, Scope::All).await?,
        Some(again),
        "the first execution, as stored"
    );
    // No key: always a new execution.
    let (a, created_a) = writer
        .create_execution(new_execution(&flow, &owner, None))
        .await?;
    let (b, created_b) = writer
        .create_execution(new_execution(&flow, &owner, None))
        .await?;
    assert!(created_a && created_b && a.id != b.id);
    // The same key of another account, or for another flow of the same account: independent.
    let other = account(&store, "other", Role::User).await?;
    let (theirs, created) = writer
        .create_execution(new_execution(&flow, &other.id, Some("k1")))
        .await?;
    assert!(created);
    assert_ne!(theirs.id, first.id);
    let owner_account = store.get_account(&owner).await?.expect("exists");
    let second_flow = store
        .create_flow(new_flow(&owner_account, "second", &[]))
        .await?;
    let (elsewhere, created) = writer
        .create_execution(new_execution(&second_flow, &owner, Some("k1")))
        .await?;
    assert!(created);
    assert_eq!(elsewhere.flow_id, second_flow.id);
    // A key older than 24 hours starts a new execution.
    Raw::open(db).execute(&format!(
        "UPDATE idempotency_keys SET created_at = '2000-01-01 00:00:00' \
         WHERE key = 'k1' AND account_id = '{owner}' AND flow_id = '{}'",
        flow.id
    ));
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

/// Under continuous commits the SQLite WAL starts over instead of growing without bound (a
/// passive checkpoint alone never lets it: new frames always arrive before the next write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_wal_stays_bounded_under_continuous_writes() -> Result<()> {
    let db = TestDatabase::sqlite()?;
    let wal = db
        .sqlite_path()
        .map(|path| path.with_extension("db-wal"))
        .expect("an SQLite file");
    let (store, flow, owner) = setup(&db).await?;
    // 256 frames (1 MiB of pages): the checkpointer restarts the WAL from there.
    let config = WriterConfig {
        wal_restart_frames: 256,
        ..WriterConfig::default()
    };
    let writer = store.start_writer(config, |_: Vec<(ExecutionId, i64)>| {})?;
    let id = create(&writer, &flow, &owner).await?.id;
    let filler = "x".repeat(16 * 1024);
    let chunks = 96; // 96 x 16 entries x 16 KiB = 24 MiB of journal data
    let mut seq = 0;
    let mut largest = 0u64;
    for _ in 0..chunks {
        let mut tickets = Vec::new();
        for _ in 0..16 {
            let mut e = entry(&id, seq, "log");
            e.event.message = Some(filler.clone());
            tickets.push(writer.append(e).await?);
            seq += 1;
        }
        for ticket in tickets {
            ticket.wait().await?;
        }
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let written = 24 * 1024 * 1024;
    assert!(
        largest < written / 2,
        "the WAL grew to {largest} bytes for {written} bytes written: it never started over"
    );
    let (_, total) = store
        .list_execution_events(&id, EventFilter::default(), 1, 0)
        .await?;
    assert_eq!(total, seq);
    writer.close().await?;
    Ok(())
}
