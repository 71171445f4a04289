//! Executions as the rest of FlowRunner sees them: written only through the group-commit writer,
//! read through the pool. Status transitions and the row fields they set, scoping and listing
//! filters, journal filters, and history that outlives its flow and account. The writer's own
//! rules (batching, rejection of one entry, one terminal state, claims and leases, idempotency
//! keys) are tested in `writer.rs`.

use chrono::{DateTime, Duration, SubsecRound, Utc};
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, LogLevel, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{
    Error, EventFilter, ExecutionFilter, ExecutionRecord, FlowRecord, JournalEntry, JournalWriter,
    NewEvent, Result, RowChange, Scope, Store, WriterConfig,
};
use serde_json::json;

use crate::common::{account, new_execution, new_flow};

store_tests!(
    status_moves_from_queued_through_running_to_a_terminal_state,
    row_changes_need_an_unfinished_execution_and_a_terminal_finish,
    get_and_list_respect_scope_and_filters,
    journal_reads_filter_by_seq_kind_and_level,
    executions_outlive_their_flow_and_account,
);

type Writer = JournalWriter<()>;

async fn setup(db: &TestDatabase) -> Result<(Store, Writer, AccountId, FlowRecord)> {
    let store = db.open().await?;
    let user = account(&store, "runner", Role::User).await?;
    let flow = store.create_flow(new_flow(&user, "f", &[])).await?;
    let writer = store.start_writer(WriterConfig::default(), |_: Vec<()>| {})?;
    Ok((store, writer, user.id, flow))
}

async fn create(
    writer: &Writer,
    flow: &FlowRecord,
    account: &AccountId,
) -> Result<ExecutionRecord> {
    Ok(writer
        .create_execution(new_execution(flow, account, None))
        .await?
        .0)
}

fn event(id: &ExecutionId, seq: i64, kind: &str, level: Option<LogLevel>) -> NewEvent {
    NewEvent {
        execution_id: id.clone(),
        seq,
        kind: kind.to_string(),
        node_id: Some("start".into()),
        node_type: Some("http.request".into()),
        level,
        message: level.map(|l| format!("{l} message")),
        data: json!({"seq": seq, "type": kind}).to_string(),
        created_at: Utc::now(),
    }
}

fn entry(id: &ExecutionId, seq: i64, kind: &str, change: RowChange) -> JournalEntry<()> {
    JournalEntry {
        event: event(id, seq, kind, None),
        snapshot: None,
        change,
        payload: (),
    }
}

fn log(id: &ExecutionId, seq: i64, level: LogLevel) -> JournalEntry<()> {
    JournalEntry {
        event: event(id, seq, "log", Some(level)),
        snapshot: None,
        change: RowChange::None,
        payload: (),
    }
}

/// Appends one entry and waits for its commit.
async fn commit(writer: &Writer, entry: JournalEntry<()>) -> Result<()> {
    writer.append(entry).await?.wait().await
}

fn start(owner: &str, lease_until: DateTime<Utc>, started_at: DateTime<Utc>) -> RowChange {
    RowChange::Start {
        owner: owner.into(),
        lease_until,
        started_at,
    }
}

fn finish(status: ExecutionStatus, error: Option<&str>) -> RowChange {
    RowChange::Finish {
        status,
        result: None,
        error: error.map(str::to_string),
        error_node: error.map(|_| "fetch".to_string()),
        completed_at: Utc::now(),
    }
}

async fn get(store: &Store, id: &ExecutionId) -> Result<ExecutionRecord> {
    Ok(store
        .get_execution(id, Scope::All)
        .await?
        .expect("execution exists"))
}

async fn status_moves_from_queued_through_running_to_a_terminal_state(
    db: &TestDatabase,
) -> Result<()> {
    let (store, writer, user, flow) = setup(db).await?;
    let queued = create(&writer, &flow, &user).await?;
    assert!(queued.id.as_str().starts_with("exec-"));
    assert_eq!(queued.status, ExecutionStatus::Queued);
    assert_eq!(queued.input, json!({"key": "value", "n": 1}));
    assert_eq!(
        (
            queued.revision_id.clone(),
            queued.revision,
            queued.flow_version.as_str()
        ),
        (
            flow.revision_id.clone(),
            flow.revision,
            flow.version.as_str()
        )
    );
    assert_eq!(
        (queued.started_at, queued.completed_at, queued.owner.clone()),
        (None, None, None)
    );
    assert_eq!(
        get(&store, &queued.id).await?,
        queued,
        "read back unchanged"
    );

    // A snapshot alone leaves the status alone.
    let mut checkpoint = entry(&queued.id, 1, "node_checkpoint", RowChange::None);
    checkpoint.snapshot = Some(json!({"at": "queued"}).to_string());
    commit(&writer, checkpoint).await?;
    let still_queued = get(&store, &queued.id).await?;
    assert_eq!(still_queued.status, ExecutionStatus::Queued);
    assert_eq!(still_queued.snapshot, Some(json!({"at": "queued"})));

    let started_at = Utc::now().trunc_subsecs(6);
    let lease_until = started_at + Duration::seconds(30);
    let mut started = entry(
        &queued.id,
        2,
        "execution_started",
        start("worker-1", lease_until, started_at),
    );
    started.snapshot = Some(json!({"at": "start"}).to_string());
    commit(&writer, started).await?;
    let running = get(&store, &queued.id).await?;
    assert_eq!(running.status, ExecutionStatus::Running);
    assert_eq!(running.started_at, Some(started_at));
    assert_eq!(running.owner.as_deref(), Some("worker-1"));
    assert_eq!(running.lease_until, Some(lease_until));
    assert_eq!(running.snapshot, Some(json!({"at": "start"})));
    assert_eq!(running.completed_at, None);

    commit(
        &writer,
        entry(
            &queued.id,
            3,
            "execution_failed",
            finish(ExecutionStatus::Failed, Some("boom")),
        ),
    )
    .await?;
    let failed = get(&store, &queued.id).await?;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(
        (failed.error.as_deref(), failed.error_node.as_deref()),
        (Some("boom"), Some("fetch"))
    );
    assert_eq!(failed.result, None);
    assert!(failed.completed_at.is_some());
    assert_eq!(failed.started_at, Some(started_at), "kept");
    assert_eq!(failed.snapshot, Some(json!({"at": "start"})), "kept");
    assert_eq!(
        (failed.owner, failed.lease_until),
        (None, None),
        "lease released"
    );
    assert_eq!(store.last_event_seq(&queued.id).await?, Some(3));
    writer.close().await?;
    Ok(())
}

async fn row_changes_need_an_unfinished_execution_and_a_terminal_finish(
    db: &TestDatabase,
) -> Result<()> {
    let (store, writer, user, flow) = setup(db).await?;
    let now = Utc::now();
    let exec = create(&writer, &flow, &user).await?;

    // `Finish` with a status that is not terminal is refused and stores nothing.
    let bad = commit(
        &writer,
        entry(
            &exec.id,
            1,
            "execution_running",
            finish(ExecutionStatus::Running, None),
        ),
    )
    .await;
    assert!(matches!(bad, Err(Error::Conflict(_))), "{bad:?}");
    assert_eq!(get(&store, &exec.id).await?, exec);
    assert_eq!(store.last_event_seq(&exec.id).await?, None);

    // Row changes of an execution that does not exist are refused.
    let ghost = ExecutionId::generate();
    for change in [
        start("worker-1", now, now),
        finish(ExecutionStatus::Cancelled, None),
    ] {
        let missing = commit(&writer, entry(&ghost, 1, "ghost", change)).await;
        assert!(matches!(missing, Err(Error::Conflict(_))), "{missing:?}");
    }
    assert_eq!(store.get_execution(&ghost, Scope::All).await?, None);

    // A queued execution may be cancelled directly; then it cannot be started any more.
    commit(
        &writer,
        entry(
            &exec.id,
            1,
            "execution_cancelled",
            finish(ExecutionStatus::Cancelled, None),
        ),
    )
    .await?;
    let cancelled = get(&store, &exec.id).await?;
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert_eq!(cancelled.started_at, None);
    let restart = commit(
        &writer,
        entry(
            &exec.id,
            2,
            "execution_started",
            start("worker-1", now + Duration::seconds(30), now),
        ),
    )
    .await;
    assert!(matches!(restart, Err(Error::Conflict(_))), "{restart:?}");
    assert_eq!(get(&store, &exec.id).await?, cancelled);
    assert_eq!(store.last_event_seq(&exec.id).await?, Some(1));
    writer.close().await?;
    Ok(())
}

async fn get_and_list_respect_scope_and_filters(db: &TestDatabase) -> Result<()> {
    let (store, writer, user, flow) = setup(db).await?;
    let other = account(&store, "other", Role::User).await?;
    let other_flow = store.create_flow(new_flow(&other, "g", &[])).await?;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(create(&writer, &flow, &user).await?);
    }
    let theirs = create(&writer, &other_flow, &other.id).await?;
    let now = Utc::now();
    commit(
        &writer,
        entry(
            &mine[0].id,
            1,
            "execution_started",
            start("worker-1", now + Duration::seconds(30), now),
        ),
    )
    .await?;

    assert_eq!(
        store
            .get_execution(&theirs.id, Scope::Owner(user.clone()))
            .await?,
        None
    );
    assert_eq!(
        store
            .get_execution(&theirs.id, Scope::Owner(other.id.clone()))
            .await?,
        Some(theirs.clone())
    );
    assert_eq!(
        store
            .get_execution(&ExecutionId::generate(), Scope::All)
            .await?,
        None
    );

    let ids = |page: &[ExecutionRecord]| page.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let (page, total) = store
        .list_executions(Scope::Owner(user.clone()), ExecutionFilter::default(), 2, 0)
        .await?;
    assert_eq!(total, 3);
    assert_eq!(
        ids(&page),
        [mine[2].id.clone(), mine[1].id.clone()],
        "newest first"
    );
    let (page, total) = store
        .list_executions(Scope::Owner(user.clone()), ExecutionFilter::default(), 2, 2)
        .await?;
    assert_eq!((ids(&page), total), (vec![mine[0].id.clone()], 3));
    let (all, total) = store
        .list_executions(Scope::All, ExecutionFilter::default(), 10, 0)
        .await?;
    assert_eq!((all.len(), total), (4, 4));

    let by_flow = ExecutionFilter {
        flow_id: Some(other_flow.id.clone()),
        status: None,
    };
    let (page, total) = store
        .list_executions(Scope::All, by_flow.clone(), 10, 0)
        .await?;
    assert_eq!((ids(&page), total), (vec![theirs.id.clone()], 1));
    assert_eq!(
        store
            .list_executions(Scope::Owner(user.clone()), by_flow, 10, 0)
            .await?
            .1,
        0
    );
    let with_status = |status| ExecutionFilter {
        flow_id: None,
        status: Some(status),
    };
    let (page, total) = store
        .list_executions(Scope::All, with_status(ExecutionStatus::Running), 10, 0)
        .await?;
    assert_eq!((ids(&page), total), (vec![mine[0].id.clone()], 1));
    assert_eq!(page[0].status, ExecutionStatus::Running);
    let (page, total) = store
        .list_executions(
            Scope::Owner(user.clone()),
            with_status(ExecutionStatus::Queued),
            10,
            0,
        )
        .await?;
    assert_eq!(
        (ids(&page), total),
        (vec![mine[2].id.clone(), mine[1].id.clone()], 2)
    );
    let (page, total) = store
        .list_executions(Scope::All, with_status(ExecutionStatus::Completed), 10, 0)
        .await?;
    assert_eq!((page.len(), total), (0, 0));
    writer.close().await?;
    Ok(())
}

async fn journal_reads_filter_by_seq_kind_and_level(db: &TestDatabase) -> Result<()> {
    let (store, writer, user, flow) = setup(db).await?;
    let a = create(&writer, &flow, &user).await?.id;
    let b = create(&writer, &flow, &user).await?.id;
    assert_eq!(store.last_event_seq(&a).await?, None);
    // Queued without waiting, awaited at the end: committed in order, maybe in one batch.
    let entries = [
        entry(&a, 1, "execution_started", RowChange::None),
        log(&a, 2, LogLevel::Info),
        log(&b, 1, LogLevel::Error), // seq is unique per execution only
        log(&a, 3, LogLevel::Error),
        log(&a, 4, LogLevel::Debug),
        log(&a, 5, LogLevel::Warn),
        entry(&a, 6, "node_completed", RowChange::None),
    ];
    let mut tickets = Vec::new();
    for entry in entries {
        tickets.push(writer.append(entry).await?);
    }
    for ticket in tickets {
        ticket.wait().await?;
    }
    assert_eq!(store.last_event_seq(&a).await?, Some(6));
    assert_eq!(store.last_event_seq(&b).await?, Some(1));
    assert_eq!(store.last_event_seq(&ExecutionId::generate()).await?, None);

    let seqs = |filter: EventFilter| {
        let (store, a) = (&store, &a);
        async move {
            let (events, total) = store.list_execution_events(a, filter, 100, 0).await?;
            Ok::<_, Error>((events.iter().map(|e| e.seq).collect::<Vec<_>>(), total))
        }
    };
    let (all, total) = store
        .list_execution_events(&a, EventFilter::default(), 100, 0)
        .await?;
    assert_eq!(total, 6);
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let info = &all[1];
    assert_eq!(
        (info.execution_id.clone(), info.kind.as_str(), info.level),
        (a.clone(), "log", Some(LogLevel::Info))
    );
    assert_eq!(info.message.as_deref(), Some("info message"));
    assert_eq!(
        (info.node_id.as_deref(), info.node_type.as_deref()),
        (Some("start"), Some("http.request"))
    );
    assert_eq!(info.data, Some(json!({"seq": 2, "type": "log"})));
    assert_eq!((all[0].level, all[0].message.as_deref()), (None, None));

    // A page of the filtered journal, with the total of the filter.
    let after = EventFilter {
        after_seq: Some(2),
        ..Default::default()
    };
    let (page, total) = store.list_execution_events(&a, after.clone(), 2, 1).await?;
    assert_eq!(
        (page.iter().map(|e| e.seq).collect::<Vec<_>>(), total),
        (vec![4, 5], 4)
    );
    assert_eq!(seqs(after).await?, (vec![3, 4, 5, 6], 4));
    let logs = EventFilter {
        kind: Some("log".into()),
        ..Default::default()
    };
    assert_eq!(seqs(logs).await?, (vec![2, 3, 4, 5], 4));
    let errors = EventFilter {
        level: Some(LogLevel::Error),
        ..Default::default()
    };
    assert_eq!(seqs(errors).await?, (vec![3], 1));
    // `min_level` is a minimum: that level and every more severe one, no entry without level.
    let at_least = |min| EventFilter {
        min_level: Some(min),
        ..Default::default()
    };
    assert_eq!(seqs(at_least(LogLevel::Warn)).await?, (vec![3, 5], 2));
    assert_eq!(seqs(at_least(LogLevel::Info)).await?, (vec![2, 3, 5], 3));
    assert_eq!(
        seqs(at_least(LogLevel::Debug)).await?,
        (vec![2, 3, 4, 5], 4)
    );
    assert_eq!(seqs(at_least(LogLevel::Error)).await?, (vec![3], 1));
    let logs_only = EventFilter {
        logs_only: true,
        ..Default::default()
    };
    assert_eq!(seqs(logs_only).await?, (vec![2, 3, 4, 5], 4));
    let combined = EventFilter {
        after_seq: Some(3),
        min_level: Some(LogLevel::Info),
        logs_only: true,
        ..Default::default()
    };
    assert_eq!(seqs(combined).await?, (vec![5], 1));
    let none = EventFilter {
        kind: Some("node_started".into()),
        ..Default::default()
    };
    assert_eq!(seqs(none).await?, (vec![], 0));

    let (of_b, total) = store
        .list_execution_events(&b, EventFilter::default(), 100, 0)
        .await?;
    assert_eq!(total, 1);
    assert_eq!(
        (of_b[0].execution_id.clone(), of_b[0].level),
        (b.clone(), Some(LogLevel::Error))
    );
    writer.close().await?;
    Ok(())
}

async fn executions_outlive_their_flow_and_account(db: &TestDatabase) -> Result<()> {
    let (store, writer, user, flow) = setup(db).await?;
    let _admin = account(&store, "admin", Role::Admin).await?;
    let exec = create(&writer, &flow, &user).await?;
    commit(&writer, log(&exec.id, 1, LogLevel::Info)).await?;
    assert!(store.delete_flow(&flow.id, Scope::All).await?);
    assert_eq!(get(&store, &exec.id).await?, exec);
    assert!(store.delete_account(&user).await?);
    assert_eq!(get(&store, &exec.id).await?, exec);
    assert_eq!(
        store
            .list_execution_events(&exec.id, EventFilter::default(), 10, 0)
            .await?
            .1,
        1
    );
    // The writer still finishes it.
    commit(
        &writer,
        entry(
            &exec.id,
            2,
            "execution_cancelled",
            finish(ExecutionStatus::Cancelled, None),
        ),
    )
    .await?;
    assert_eq!(
        get(&store, &exec.id).await?.status,
        ExecutionStatus::Cancelled
    );
    writer.close().await?;
    Ok(())
}
