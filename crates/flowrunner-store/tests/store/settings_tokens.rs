//! Settings (race-free initialisation) and token revocation.

use chrono::{Duration, Utc};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Result, Store};

store_tests!(
    settings_get_set_and_init,
    settings_init_is_race_free,
    tokens_revoke_check_and_prune
);

async fn settings_get_set_and_init(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    assert_eq!(store.get_setting("jwt_secret").await?, None);
    assert_eq!(
        store
            .get_or_init_setting("jwt_secret", "first".into())
            .await?,
        "first"
    );
    assert_eq!(
        store
            .get_or_init_setting("jwt_secret", "second".into())
            .await?,
        "first"
    );
    assert_eq!(
        store.get_setting("jwt_secret").await?.as_deref(),
        Some("first")
    );
    store.set_setting("jwt_secret", "replaced").await?;
    assert_eq!(
        store.get_setting("jwt_secret").await?.as_deref(),
        Some("replaced")
    );
    store.set_setting("other", "x").await?;
    assert_eq!(store.get_setting("other").await?.as_deref(), Some("x"));
    assert_eq!(
        store.get_setting("jwt_secret").await?.as_deref(),
        Some("replaced")
    );
    Ok(())
}

async fn settings_init_is_race_free(db: &TestDatabase) -> Result<()> {
    // Two stores (two pools, as two server processes would have) racing on one key.
    let first = db.open().await?;
    let second = db.open().await?;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let store: Store = if i % 2 == 0 {
            first.clone()
        } else {
            second.clone()
        };
        tasks.push(tokio::spawn(async move {
            store
                .get_or_init_setting("race", format!("value-{i}"))
                .await
        }));
    }
    let mut seen = Vec::new();
    for task in tasks {
        seen.push(task.await??);
    }
    let stored = first.get_setting("race").await?.expect("initialised");
    assert!(stored.starts_with("value-"));
    assert!(seen.iter().all(|v| *v == stored), "{seen:?} vs {stored}");
    Ok(())
}

async fn tokens_revoke_check_and_prune(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let now = Utc::now();
    store
        .revoke_token("expired", now - Duration::minutes(5))
        .await?;
    store.revoke_token("live", now + Duration::hours(1)).await?;
    store.revoke_token("live", now + Duration::hours(1)).await?; // idempotent
    assert!(store.is_token_revoked("expired").await?);
    assert!(store.is_token_revoked("live").await?);
    assert!(!store.is_token_revoked("never").await?);

    assert_eq!(store.prune_revoked_tokens(now).await?, 1);
    assert!(!store.is_token_revoked("expired").await?);
    assert!(store.is_token_revoked("live").await?);
    assert_eq!(store.prune_revoked_tokens(now).await?, 0);
    assert_eq!(
        store.prune_revoked_tokens(now + Duration::hours(2)).await?,
        1
    );
    assert!(!store.is_token_revoked("live").await?);
    Ok(())
}
