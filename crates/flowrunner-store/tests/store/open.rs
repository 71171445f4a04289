//! Opening, migrating, reopening and URL handling.

use flowrunner_domain::Role;
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{
    Backend, BlockingStore, Error, FlowChanges, Result, Scope, Store, StoreConfig,
};

use crate::common::{account, new_flow};

store_tests!(
    migrate_applies_once,
    reopen_keeps_data,
    ping_and_backend,
    concurrent_writers_do_not_collide
);

async fn migrate_applies_once(db: &TestDatabase) -> Result<()> {
    let config = db.config();
    let sync = tokio::task::spawn_blocking(move || BlockingStore::connect(config)).await??;
    let store = Store::from_blocking(sync);
    let applied = store.migrate().await?;
    let folder = match db.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = format!("{}/../../migrations/{folder}", env!("CARGO_MANIFEST_DIR"));
    let mut expected: Vec<String> = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|entry| Ok(entry?.file_name().to_string_lossy().replace('-', "")))
                .collect::<std::io::Result<_>>()
        })
        .map_err(|e| Error::Database(Box::new(e)))?;
    expected.sort();
    let versions: Vec<String> = applied.iter().map(|v| v.replace('-', "")).collect();
    assert_eq!(versions.len(), expected.len(), "{applied:?}");
    for (version, folder) in versions.iter().zip(&expected) {
        assert!(
            folder.starts_with(version.as_str()),
            "{applied:?} vs {expected:?}"
        );
    }
    assert!(store.migrate().await?.is_empty());
    // Open migrates too, and finds nothing left to do.
    let reopened = db.open().await?;
    assert!(reopened.migrate().await?.is_empty());
    Ok(())
}

async fn reopen_keeps_data(db: &TestDatabase) -> Result<()> {
    let (user, flow) = {
        let store = db.open().await?;
        let user = account(&store, "persist", Role::Admin).await?;
        let flow = store.create_flow(new_flow(&user, "kept", &["x"])).await?;
        store.put_secret(&user.id, "K", "value").await?;
        store.get_or_init_setting("jwt_secret", "s".into()).await?;
        (user, flow)
    };
    let store = db.open().await?;
    assert_eq!(store.get_account(&user.id).await?, Some(user.clone()));
    assert_eq!(store.get_flow(&flow.id, Scope::All).await?, Some(flow));
    assert_eq!(
        store.secret_value(&user.id, "K").await?.as_deref(),
        Some("value")
    );
    assert_eq!(store.get_setting("jwt_secret").await?.as_deref(), Some("s"));
    Ok(())
}

async fn ping_and_backend(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    store.ping().await?;
    assert_eq!(store.backend(), db.backend());
    assert_eq!(store.blocking().backend(), db.backend());
    let shown = format!("{store:?}");
    assert!(
        shown.contains(db.backend().as_str())
            || shown.contains("Sqlite")
            || shown.contains("Postgres"),
        "{shown}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_urls_are_rejected_before_connecting() {
    for url in [
        "mysql://localhost/x",
        "host=localhost dbname=test",
        "",
        "sqlite://",
    ] {
        let res = Store::open(StoreConfig::new(url)).await;
        assert!(matches!(res, Err(Error::InvalidUrl(_))), "{url}: {res:?}");
    }
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_with_a_pool_error() {
    let started = std::time::Instant::now();
    let res = Store::open(StoreConfig::new(
        "postgres://postgres@127.0.0.1:1/none?connect_timeout=2",
    ))
    .await;
    assert!(matches!(res, Err(Error::Pool(_))), "{res:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn sqlite_file_in_a_missing_directory_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/missing/sub/db.sqlite", dir.path().display());
    let res = Store::open(StoreConfig::new(url)).await;
    assert!(matches!(res, Err(Error::Pool(_))), "{res:?}");
}

#[tokio::test]
async fn sqlite_url_forms_open_the_same_file() -> Result<()> {
    let db = TestDatabase::sqlite()?;
    let path = db.sqlite_path().expect("sqlite").display().to_string();
    let store = Store::open(StoreConfig {
        url: format!("sqlite://{path}"),
        ..db.config()
    })
    .await?;
    account(&store, "one", Role::Admin).await?;
    let again = Store::open(StoreConfig {
        url: format!("sqlite:{path}"),
        ..db.config()
    })
    .await?;
    assert_eq!(again.backend(), Backend::Sqlite);
    assert_eq!(again.count_accounts().await?, 1);
    Ok(())
}

/// Many tasks writing at once through the pool: no `SQLITE_BUSY`, no lost update, revisions
/// numbered without gaps or duplicates.
async fn concurrent_writers_do_not_collide(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let owner = account(&store, "owner", Role::Admin).await?;
    let flow = store.create_flow(new_flow(&owner, "shared", &[])).await?;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let store = store.clone();
        let owner = owner.clone();
        let flow_id = flow.id.clone();
        tasks.push(tokio::spawn(async move {
            let me = account(&store, &format!("writer{i}"), Role::User).await?;
            store.put_secret(&me.id, "K", &format!("v{i}")).await?;
            store
                .put_secret(&owner.id, "SHARED", &format!("v{i}"))
                .await?;
            let changes = FlowChanges {
                definition: Some(format!("definition {i}")),
                ..Default::default()
            };
            store.update_flow(&flow_id, Scope::All, changes).await?;
            store.get_or_init_setting("once", format!("v{i}")).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    assert_eq!(store.count_accounts().await?, 25);
    let revisions = store
        .list_revisions(&flow.id, Scope::All)
        .await?
        .expect("flow");
    assert_eq!(
        revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
        (1..=25).collect::<Vec<_>>()
    );
    assert_eq!(
        store
            .get_flow(&flow.id, Scope::All)
            .await?
            .map(|f| f.revision),
        Some(25)
    );
    assert_eq!(store.list_secrets(&owner.id).await?.len(), 1);
    Ok(())
}

/// A SQLite database created before the journal became a WITHOUT ROWID table keeps every
/// journal row (and its constraints) through the upgrade.
#[test]
fn upgrading_sqlite_keeps_the_journal()
-> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, SqliteConnection};
    use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
    const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");

    let db = TestDatabase::sqlite()?;
    let path = db
        .sqlite_path()
        .ok_or("not a SQLite database")?
        .to_path_buf();
    {
        let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
        conn.run_next_migration(MIGRATIONS)?;
        conn.batch_execute(
            "INSERT INTO executions (id, flow_id, revision_id, revision, flow_version, account_id, status, input, created_at)
             VALUES ('exec-old', 'flow-old', 'rev-old', 1, '1.0.0', 'account-old', 'completed', '{}', '2026-11-28 10:00:00');
             INSERT INTO execution_events (execution_id, seq, kind, node_id, node_type, level, message, data, created_at) VALUES
             ('exec-old', 0, 'started', NULL, NULL, 'info', 'Execution started', '{\"seq\":0}', '2026-11-28 10:00:00'),
             ('exec-old', 1, 'log', 'a', 'log', 'warn', 'careful', '{\"seq\":1}', '2026-11-28 10:00:01'),
             ('exec-old', 2, 'completed', NULL, NULL, 'info', 'Execution completed', '{\"seq\":2}', '2026-11-28 10:00:02');",
        )?;
    }
    let store = BlockingStore::open(db.config())?;
    let id = flowrunner_domain::ExecutionId::from_trusted("exec-old".into());
    let events = store
        .execution_journal(&id, Scope::All)?
        .ok_or("the execution is gone")?;
    let rows: Vec<(i64, &str, Option<&str>)> = events
        .iter()
        .map(|e| (e.seq, e.kind.as_str(), e.message.as_deref()))
        .collect();
    assert_eq!(
        rows,
        vec![
            (0, "started", Some("Execution started")),
            (1, "log", Some("careful")),
            (2, "completed", Some("Execution completed")),
        ]
    );
    assert_eq!(events[1].node_id.as_deref(), Some("a"));
    // The key still rejects a duplicate (execution, seq).
    let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
    let duplicate = conn.batch_execute(
        "INSERT INTO execution_events (execution_id, seq, kind, created_at) VALUES ('exec-old', 1, 'log', '2026-11-28 10:00:03')",
    );
    assert!(duplicate.is_err(), "duplicate seq accepted");
    Ok(())
}
