//! Secrets: upsert semantics, listing, deletion, encryption at rest and key handling.

use flowrunner_domain::{AccountId, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Error, Result, Store, StoreConfig, generate_secret_key};

use crate::common::{Raw, account};

store_tests!(
    put_reports_created_then_updated,
    list_delete_and_values,
    values_are_encrypted_at_rest,
    wrong_key_fails_without_panicking,
    ciphertexts_cannot_be_swapped_between_rows,
    large_values_round_trip,
    missing_account_or_key_is_reported,
);

async fn put_reports_created_then_updated(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let user = account(&store, "u", Role::User).await?;
    let (first, created) = store.put_secret(&user.id, "API_KEY", "one").await?;
    assert!(created);
    assert_eq!(first.key, "API_KEY");
    assert_eq!(first.created_at, first.updated_at);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (second, created) = store.put_secret(&user.id, "API_KEY", "two").await?;
    assert!(!created);
    assert_eq!(second.created_at, first.created_at);
    assert!(second.updated_at > first.updated_at, "updated_at moves");
    assert_eq!(
        store.secret_value(&user.id, "API_KEY").await?.as_deref(),
        Some("two")
    );
    assert_eq!(store.list_secrets(&user.id).await?, vec![second]);
    Ok(())
}

async fn list_delete_and_values(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let a = account(&store, "a", Role::User).await?;
    let b = account(&store, "b", Role::User).await?;
    store.put_secret(&a.id, "Z_KEY", "z").await?;
    store.put_secret(&a.id, "A_KEY", "a").await?;
    store.put_secret(&b.id, "A_KEY", "b's").await?;
    let keys: Vec<String> = store
        .list_secrets(&a.id)
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, ["A_KEY", "Z_KEY"]);
    let values = store.secret_values(&a.id).await?;
    assert_eq!(values.len(), 2);
    assert_eq!(values.get("A_KEY").map(String::as_str), Some("a"));
    assert_eq!(values.get("Z_KEY").map(String::as_str), Some("z"));
    assert_eq!(
        store
            .secret_values(&b.id)
            .await?
            .get("A_KEY")
            .map(String::as_str),
        Some("b's")
    );

    assert!(store.delete_secret(&a.id, "A_KEY").await?);
    assert!(!store.delete_secret(&a.id, "A_KEY").await?);
    assert_eq!(store.secret_value(&a.id, "A_KEY").await?, None);
    assert_eq!(store.list_secrets(&a.id).await?.len(), 1);
    assert_eq!(
        store.list_secrets(&b.id).await?.len(),
        1,
        "other accounts untouched"
    );
    assert!(
        store
            .secret_values(&AccountId::generate())
            .await?
            .is_empty()
    );
    Ok(())
}

async fn values_are_encrypted_at_rest(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let user = account(&store, "u", Role::User).await?;
    let plaintext = "postgres://admin:hunter2@db.internal/prod";
    store
        .put_secret(&user.id, "DATABASE_URL", plaintext)
        .await?;
    store.put_secret(&user.id, "SAME", plaintext).await?;
    let rows = Raw::open(db).secret_rows();
    assert_eq!(rows.len(), 2);
    for (key, nonce, ciphertext) in &rows {
        assert_eq!(nonce.len(), 12, "{key}");
        assert_eq!(
            ciphertext.len(),
            plaintext.len() + 16,
            "ciphertext plus tag"
        );
        assert!(
            !ciphertext.windows(7).any(|w| w == b"hunter2"),
            "{key}: plaintext visible"
        );
        assert_ne!(ciphertext.as_slice(), plaintext.as_bytes());
    }
    assert_ne!(rows[0].1, rows[1].1, "fresh nonce per value");
    assert_ne!(rows[0].2, rows[1].2);
    Ok(())
}

async fn wrong_key_fails_without_panicking(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let user = account(&store, "u", Role::User).await?;
    store.put_secret(&user.id, "K", "v").await?;
    drop(store);

    let other = Store::open(StoreConfig {
        secret_key: Some(generate_secret_key()),
        ..db.config()
    })
    .await?;
    assert!(matches!(
        other.secret_values(&user.id).await,
        Err(Error::Crypto)
    ));
    assert!(matches!(
        other.secret_value(&user.id, "K").await,
        Err(Error::Crypto)
    ));
    // Metadata stays readable without decrypting.
    assert_eq!(other.list_secrets(&user.id).await?.len(), 1);

    let keyless = Store::open(StoreConfig {
        secret_key: None,
        ..db.config()
    })
    .await?;
    assert!(matches!(
        keyless.secret_values(&user.id).await,
        Err(Error::NoSecretKey)
    ));
    assert!(matches!(
        keyless.put_secret(&user.id, "K", "v").await,
        Err(Error::NoSecretKey)
    ));
    assert_eq!(keyless.list_secrets(&user.id).await?.len(), 1);
    Ok(())
}

async fn ciphertexts_cannot_be_swapped_between_rows(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let a = account(&store, "a", Role::User).await?;
    let b = account(&store, "b", Role::User).await?;
    store.put_secret(&a.id, "TOKEN", "a-secret").await?;
    store.put_secret(&b.id, "TOKEN", "b-secret").await?;
    store.put_secret(&a.id, "OTHER", "other").await?;
    // Copy a's TOKEN ciphertext into b's row and into a's OTHER row.
    let mut raw = Raw::open(db);
    for (target_account, target_key) in [(&b.id, "TOKEN"), (&a.id, "OTHER")] {
        raw.execute(&format!(
            "UPDATE secrets SET nonce = (SELECT nonce FROM secrets WHERE account_id = '{a}' AND key = 'TOKEN'),
                 ciphertext = (SELECT ciphertext FROM secrets WHERE account_id = '{a}' AND key = 'TOKEN')
             WHERE account_id = '{target_account}' AND key = '{target_key}'",
            a = a.id
        ));
    }
    assert!(matches!(
        store.secret_value(&b.id, "TOKEN").await,
        Err(Error::Crypto)
    ));
    assert!(matches!(
        store.secret_value(&a.id, "OTHER").await,
        Err(Error::Crypto)
    ));
    assert_eq!(
        store.secret_value(&a.id, "TOKEN").await?.as_deref(),
        Some("a-secret")
    );
    Ok(())
}

async fn large_values_round_trip(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let user = account(&store, "u", Role::User).await?;
    let big: String = "0123456789abcdef€"
        .chars()
        .cycle()
        .take(64 * 1024 / 2)
        .collect();
    assert!(big.len() >= 32 * 1024);
    let big64: String = "x".repeat(64 * 1024);
    store.put_secret(&user.id, "BIG", &big).await?;
    store.put_secret(&user.id, "BIG64", &big64).await?;
    store.put_secret(&user.id, "EMPTY", "").await?;
    let values = store.secret_values(&user.id).await?;
    assert_eq!(values.get("BIG"), Some(&big));
    assert_eq!(values.get("BIG64"), Some(&big64));
    assert_eq!(values.get("EMPTY").map(String::as_str), Some(""));
    Ok(())
}

async fn missing_account_or_key_is_reported(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let ghost = AccountId::generate();
    assert!(matches!(
        store.put_secret(&ghost, "K", "v").await,
        Err(Error::NotFound)
    ));
    assert!(store.list_secrets(&ghost).await?.is_empty());
    assert!(!store.delete_secret(&ghost, "K").await?);
    assert_eq!(store.secret_value(&ghost, "K").await?, None);
    Ok(())
}
