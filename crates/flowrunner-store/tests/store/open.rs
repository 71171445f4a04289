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
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(applied[0].starts_with("2026"), "{applied:?}");
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
