//! Executions: idempotent creation, scoping, listing, the finished guard, leases and the journal.

use chrono::{Duration, Utc};
use flowrunner_domain::{AccountId, ExecutionId, ExecutionStatus, LogLevel, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{
    Error, EventFilter, ExecutionEvent, ExecutionFilter, ExecutionUpdate, FlowRecord, NewExecution,
    Result, Scope, Store,
};
use serde_json::json;

use crate::common::{account, new_flow};

store_tests!(
    create_is_idempotent_per_account_and_flow,
    get_and_list_respect_scope_and_filters,
    finished_executions_cannot_change,
    leases_are_exclusive_until_expiry,
    journal_appends_are_ordered_unique_and_filterable,
    executions_outlive_their_flow_and_account,
);

fn run(flow: &FlowRecord, account: &AccountId, key: Option<&str>) -> NewExecution {
    NewExecution {
        flow_id: flow.id.clone(),
        revision_id: flow.revision_id.clone(),
        revision: flow.revision,
        flow_version: flow.version.clone(),
        account_id: account.clone(),
        input: json!({"key": "value", "n": 1}),
        idempotency_key: key.map(str::to_string),
        owner: None,
        lease_until: None,
    }
}

async fn setup(store: &Store) -> Result<(AccountId, FlowRecord)> {
    let user = account(store, "runner", Role::User).await?;
    let flow = store.create_flow(new_flow(&user, "f", &[])).await?;
    Ok((user.id, flow))
}

async fn create_is_idempotent_per_account_and_flow(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let (user, flow) = setup(&store).await?;
    let (first, created) = store
        .create_execution(run(&flow, &user, Some("k1")))
        .await?;
    assert!(created);
    assert!(first.id.as_str().starts_with("exec-"));
    assert_eq!(first.status, ExecutionStatus::Queued);
    assert_eq!(first.input, json!({"key": "value", "n": 1}));
    assert_eq!(
        store.get_execution(&first.id, Scope::All).await?,
        Some(first.clone())
    );

    let (again, created) = store
        .create_execution(run(&flow, &user, Some("k1")))
        .await?;
    assert!(!created);
    assert_eq!(again, first);
    let (other_key, created) = store
        .create_execution(run(&flow, &user, Some("k2")))
        .await?;
    assert!(created);
    assert_ne!(other_key.id, first.id);
    // No key: always a new execution.
    let (a, ca) = store.create_execution(run(&flow, &user, None)).await?;
    let (b, cb) = store.create_execution(run(&flow, &user, None)).await?;
    assert!(ca && cb && a.id != b.id);
    // Same key, another account: independent.
    let other = account(&store, "other", Role::User).await?;
    let (_, created) = store
        .create_execution(run(&flow, &other.id, Some("k1")))
        .await?;
    assert!(created);
    Ok(())
}

async fn get_and_list_respect_scope_and_filters(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let (user, flow) = setup(&store).await?;
    let other = account(&store, "other", Role::User).await?;
    let other_flow = store.create_flow(new_flow(&other, "g", &[])).await?;
    let mut mine = Vec::new();
    for _ in 0..3 {
        mine.push(store.create_execution(run(&flow, &user, None)).await?.0);
    }
    let theirs = store
        .create_execution(run(&other_flow, &other.id, None))
        .await?
        .0;
    store
        .update_execution(
            &mine[0].id,
            ExecutionUpdate {
                status: Some(ExecutionStatus::Running),
                ..Default::default()
            },
        )
        .await?;

    assert_eq!(
        store
            .get_execution(&theirs.id, Scope::Owner(user.clone()))
            .await?,
        None
    );
    assert!(store.get_execution(&theirs.id, Scope::All).await?.is_some());
    assert_eq!(
        store
            .get_execution(&ExecutionId::generate(), Scope::All)
            .await?,
        None
    );

    let (page, total) = store
        .list_executions(Scope::Owner(user.clone()), ExecutionFilter::default(), 2, 0)
        .await?;
    assert_eq!(total, 3);
    assert_eq!(
        page.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        [mine[2].id.clone(), mine[1].id.clone()]
    );
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
    assert_eq!((page.len(), total), (1, 1));
    assert_eq!(
        store
            .list_executions(Scope::Owner(user.clone()), by_flow, 10, 0)
            .await?
            .1,
        0
    );
    let running = ExecutionFilter {
        flow_id: None,
        status: Some(ExecutionStatus::Running),
    };
    let (page, total) = store.list_executions(Scope::All, running, 10, 0).await?;
    assert_eq!((total, page[0].id.clone()), (1, mine[0].id.clone()));
    Ok(())
}

async fn finished_executions_cannot_change(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let (user, flow) = setup(&store).await?;
    let (exec, _) = store.create_execution(run(&flow, &user, None)).await?;
    let started_at = Utc::now();
    let running = store
        .update_execution(
            &exec.id,
            ExecutionUpdate {
                status: Some(ExecutionStatus::Running),
                started_at: Some(started_at),
                snapshot: Some(json!({"at": "start"})),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(running.status, ExecutionStatus::Running);
    assert!(running.started_at.is_some());
    assert_eq!(running.completed_at, None);
    assert!(
        store
            .claim_execution(
                &exec.id,
                "worker-1",
                Utc::now() + Duration::seconds(30),
                Utc::now()
            )
            .await?
    );

    let done = store
        .update_execution(
            &exec.id,
            ExecutionUpdate {
                status: Some(ExecutionStatus::Completed),
                result: Some(json!({"output": 42})),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(done.status, ExecutionStatus::Completed);
    assert_eq!(done.result, Some(json!({"output": 42})));
    assert_eq!(done.snapshot, Some(json!({"at": "start"})));
    assert!(done.completed_at.is_some());
    assert_eq!(
        (done.owner.clone(), done.lease_until),
        (None, None),
        "lease released"
    );

    let cancel = ExecutionUpdate {
        status: Some(ExecutionStatus::Cancelled),
        ..Default::default()
    };
    assert!(matches!(
        store.update_execution(&exec.id, cancel.clone()).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(
        store
            .update_execution(&exec.id, ExecutionUpdate::default())
            .await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(store.get_execution(&exec.id, Scope::All).await?, Some(done));
    assert_eq!(
        store
            .update_execution(&ExecutionId::generate(), cancel)
            .await?,
        None
    );
    assert!(
        !store
            .claim_execution(
                &exec.id,
                "worker-1",
                Utc::now() + Duration::seconds(30),
                Utc::now()
            )
            .await?
    );

    // Racing terminal updates: exactly one wins.
    let (exec, _) = store.create_execution(run(&flow, &user, None)).await?;
    let complete = ExecutionUpdate {
        status: Some(ExecutionStatus::Completed),
        ..Default::default()
    };
    let fail = ExecutionUpdate {
        status: Some(ExecutionStatus::Failed),
        error: Some("boom".into()),
        ..Default::default()
    };
    let (a, b) = tokio::join!(
        store.update_execution(&exec.id, complete),
        store.update_execution(&exec.id, fail)
    );
    assert_eq!(
        [a.is_ok(), b.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{a:?} {b:?}"
    );
    Ok(())
}

async fn leases_are_exclusive_until_expiry(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let (user, flow) = setup(&store).await?;
    let (exec, _) = store.create_execution(run(&flow, &user, None)).await?;
    let now = Utc::now();
    assert!(
        store
            .claim_execution(&exec.id, "w1", now + Duration::seconds(10), now)
            .await?
    );
    assert!(
        !store
            .claim_execution(&exec.id, "w2", now + Duration::seconds(10), now)
            .await?
    );
    assert!(
        store
            .claim_execution(&exec.id, "w1", now + Duration::seconds(20), now)
            .await?,
        "renewal"
    );
    let later = now + Duration::seconds(21);
    assert!(
        store
            .claim_execution(&exec.id, "w2", later + Duration::seconds(10), later)
            .await?,
        "takeover"
    );
    let record = store
        .get_execution(&exec.id, Scope::All)
        .await?
        .expect("exists");
    assert_eq!(record.owner.as_deref(), Some("w2"));
    assert!(
        !store
            .claim_execution(&ExecutionId::generate(), "w1", now, now)
            .await?
    );
    Ok(())
}

async fn journal_appends_are_ordered_unique_and_filterable(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let (user, flow) = setup(&store).await?;
    let (a, _) = store.create_execution(run(&flow, &user, None)).await?;
    let (b, _) = store.create_execution(run(&flow, &user, None)).await?;
    let event =
        |exec: &ExecutionId, seq: i64, kind: &str, level: Option<LogLevel>| ExecutionEvent {
            execution_id: exec.clone(),
            seq,
            kind: kind.to_string(),
            node_id: Some("start".into()),
            node_type: Some("http.request".into()),
            level,
            message: level.map(|l| format!("{l} message")),
            data: Some(json!({"seq": seq})),
            created_at: Utc::now(),
        };
    assert_eq!(store.last_event_seq(&a.id).await?, None);
    store
        .append_execution_events(vec![
            event(&a.id, 1, "execution_started", None),
            event(&a.id, 2, "log", Some(LogLevel::Info)),
            event(&b.id, 1, "log", Some(LogLevel::Error)),
            event(&a.id, 3, "log", Some(LogLevel::Error)),
            event(&a.id, 4, "node_completed", None),
        ])
        .await?;
    assert_eq!(store.last_event_seq(&a.id).await?, Some(4));
    assert_eq!(store.last_event_seq(&b.id).await?, Some(1));

    // A duplicate sequence number is refused and nothing of that batch is stored.
    let dup = store
        .append_execution_events(vec![
            event(&a.id, 5, "log", None),
            event(&a.id, 2, "log", None),
        ])
        .await;
    assert!(matches!(dup, Err(Error::Conflict(_))), "{dup:?}");
    assert_eq!(store.last_event_seq(&a.id).await?, Some(4));

    let (all, total) = store
        .list_execution_events(&a.id, EventFilter::default(), 100, 0)
        .await?;
    assert_eq!(total, 4);
    assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(all[1].data, Some(json!({"seq": 2})));
    assert_eq!(all[1].level, Some(LogLevel::Info));
    let after = EventFilter {
        after_seq: Some(2),
        ..Default::default()
    };
    let (page, total) = store.list_execution_events(&a.id, after, 1, 0).await?;
    assert_eq!((page[0].seq, total), (3, 2));
    let logs = EventFilter {
        kind: Some("log".into()),
        ..Default::default()
    };
    assert_eq!(store.list_execution_events(&a.id, logs, 10, 0).await?.1, 2);
    let errors = EventFilter {
        level: Some(LogLevel::Error),
        ..Default::default()
    };
    let (errs, total) = store.list_execution_events(&a.id, errors, 10, 0).await?;
    assert_eq!((errs[0].seq, total), (3, 1));
    store.append_execution_events(vec![]).await?;
    Ok(())
}

async fn executions_outlive_their_flow_and_account(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let _admin = account(&store, "admin", Role::Admin).await?;
    let (user, flow) = setup(&store).await?;
    let (exec, _) = store.create_execution(run(&flow, &user, None)).await?;
    store
        .append_execution_events(vec![ExecutionEvent {
            execution_id: exec.id.clone(),
            seq: 1,
            kind: "log".into(),
            node_id: None,
            node_type: None,
            level: Some(LogLevel::Info),
            message: Some("hello".into()),
            data: None,
            created_at: Utc::now(),
        }])
        .await?;
    assert!(store.delete_flow(&flow.id, Scope::All).await?);
    assert_eq!(
        store
            .get_execution(&exec.id, Scope::All)
            .await?
            .map(|e| e.id),
        Some(exec.id.clone())
    );
    assert!(store.delete_account(&user).await?);
    assert_eq!(
        store
            .get_execution(&exec.id, Scope::All)
            .await?
            .map(|e| e.id),
        Some(exec.id.clone())
    );
    assert_eq!(
        store
            .list_execution_events(&exec.id, EventFilter::default(), 10, 0)
            .await?
            .1,
        1
    );
    Ok(())
}
