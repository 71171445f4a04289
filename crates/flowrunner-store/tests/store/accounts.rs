//! Accounts: uniqueness, paging, updates, the last-admin guard and cascading deletes.

use flowrunner_domain::{AccountId, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{AccountChanges, Error, NewAccount, Result, Scope};

use crate::common::{Raw, account, new_flow};

store_tests!(
    create_get_and_find_by_email,
    duplicate_email_conflicts_case_insensitively,
    list_pages_with_total_and_role_filter,
    update_changes_fields_and_token_validity,
    update_to_taken_email_conflicts,
    last_admin_cannot_be_demoted_or_deleted,
    concurrent_demotions_keep_one_admin,
    delete_cascades_flows_and_secrets,
);

async fn create_get_and_find_by_email(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    assert_eq!(store.count_accounts().await?, 0);
    let created = store
        .create_account(NewAccount {
            email: "  Alice@Example.COM ".into(),
            name: "Alice".into(),
            role: Role::Admin,
            password_hash: "h".into(),
        })
        .await?;
    assert!(created.id.as_str().starts_with("account-"));
    assert_eq!(created.email, "alice@example.com");
    assert_eq!(created.tokens_valid_after, None);
    assert_eq!(created.created_at, created.updated_at);
    assert_eq!(store.get_account(&created.id).await?, Some(created.clone()));
    assert_eq!(
        store.find_account_by_email("ALICE@example.com").await?,
        Some(created.clone())
    );
    assert_eq!(store.find_account_by_email("bob@example.com").await?, None);
    assert_eq!(store.get_account(&AccountId::generate()).await?, None);
    assert_eq!(store.count_accounts().await?, 1);
    Ok(())
}

async fn duplicate_email_conflicts_case_insensitively(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    account(&store, "dup", Role::User).await?;
    let again = store
        .create_account(NewAccount {
            email: "DUP@example.com".into(),
            name: "Other".into(),
            role: Role::User,
            password_hash: "h".into(),
        })
        .await;
    assert!(
        matches!(again, Err(Error::Conflict(ref m)) if m.contains("email")),
        "{again:?}"
    );
    assert_eq!(store.count_accounts().await?, 1);
    Ok(())
}

async fn list_pages_with_total_and_role_filter(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let mut ids = Vec::new();
    for i in 0..5 {
        let role = if i % 2 == 0 { Role::User } else { Role::Admin };
        ids.push(account(&store, &format!("user{i}"), role).await?.id);
    }
    let (page, total) = store.list_accounts(None, 2, 0).await?;
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|a| a.id.clone()).collect::<Vec<_>>(),
        ids[..2].to_vec()
    );
    let (page, total) = store.list_accounts(None, 2, 4).await?;
    assert_eq!((page.len(), total), (1, 5));
    assert_eq!(page[0].id, ids[4]);
    let (page, total) = store.list_accounts(None, 10, 10).await?;
    assert_eq!((page.len(), total), (0, 5));
    let (admins, total) = store.list_accounts(Some(Role::Admin), 10, 0).await?;
    assert_eq!(total, 2);
    assert!(admins.iter().all(|a| a.role == Role::Admin));
    let (users, total) = store.list_accounts(Some(Role::User), 1, 1).await?;
    assert_eq!((users.len(), total), (1, 3));
    assert_eq!(users[0].id, ids[2]);
    let (none, total) = store.list_accounts(None, -1, -5).await?;
    assert_eq!((none.len(), total), (0, 5));
    Ok(())
}

async fn update_changes_fields_and_token_validity(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let _admin = account(&store, "root", Role::Admin).await?;
    let user = account(&store, "carol", Role::User).await?;

    let renamed = store
        .update_account(
            &user.id,
            AccountChanges {
                name: Some("Caroline".into()),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(renamed.name, "Caroline");
    assert!(renamed.updated_at >= user.updated_at);
    assert_eq!(
        renamed.tokens_valid_after, None,
        "a rename keeps tokens valid"
    );

    let same_role = store
        .update_account(
            &user.id,
            AccountChanges {
                role: Some(Role::User),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(
        same_role.tokens_valid_after, None,
        "an unchanged role keeps tokens valid"
    );

    let repassed = store
        .update_account(
            &user.id,
            AccountChanges {
                password_hash: Some("new-hash".into()),
                email: Some("Carol2@Example.com".into()),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(repassed.password_hash, "new-hash");
    assert_eq!(repassed.email, "carol2@example.com");
    let first_cutoff = repassed.tokens_valid_after.expect("set on password change");
    assert_eq!(first_cutoff, repassed.updated_at);

    let promoted = store
        .update_account(
            &user.id,
            AccountChanges {
                role: Some(Role::Admin),
                ..Default::default()
            },
        )
        .await?
        .expect("exists");
    assert_eq!(promoted.role, Role::Admin);
    assert!(promoted.tokens_valid_after.expect("set on role change") >= first_cutoff);
    assert_eq!(store.get_account(&user.id).await?, Some(promoted));

    let missing = store
        .update_account(&AccountId::generate(), AccountChanges::default())
        .await?;
    assert_eq!(missing, None);
    Ok(())
}

async fn update_to_taken_email_conflicts(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let a = account(&store, "a", Role::Admin).await?;
    let b = account(&store, "b", Role::User).await?;
    let res = store
        .update_account(
            &b.id,
            AccountChanges {
                email: Some("A@EXAMPLE.COM".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(res, Err(Error::Conflict(_))), "{res:?}");
    assert_eq!(
        store.get_account(&b.id).await?.map(|x| x.email),
        Some("b@example.com".into())
    );
    // Changing one's own email to a different case of itself is fine.
    let same = store
        .update_account(
            &a.id,
            AccountChanges {
                email: Some("A@Example.com".into()),
                ..Default::default()
            },
        )
        .await?;
    assert_eq!(same.map(|x| x.email), Some("a@example.com".into()));
    Ok(())
}

async fn last_admin_cannot_be_demoted_or_deleted(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let admin = account(&store, "admin", Role::Admin).await?;
    let user = account(&store, "user", Role::User).await?;
    let demote = AccountChanges {
        role: Some(Role::User),
        ..Default::default()
    };

    assert!(matches!(
        store.update_account(&admin.id, demote.clone()).await,
        Err(Error::LastAdmin)
    ));
    assert!(matches!(
        store.delete_account(&admin.id).await,
        Err(Error::LastAdmin)
    ));
    assert_eq!(
        store.get_account(&admin.id).await?.map(|a| a.role),
        Some(Role::Admin)
    );

    // With a second admin, the first can go.
    store
        .update_account(
            &user.id,
            AccountChanges {
                role: Some(Role::Admin),
                ..Default::default()
            },
        )
        .await?;
    let demoted = store
        .update_account(&admin.id, demote)
        .await?
        .expect("exists");
    assert_eq!(demoted.role, Role::User);
    assert!(matches!(
        store.delete_account(&user.id).await,
        Err(Error::LastAdmin)
    ));
    assert!(store.delete_account(&admin.id).await?);
    assert!(!store.delete_account(&admin.id).await?);
    assert_eq!(store.count_accounts().await?, 1);
    Ok(())
}

async fn concurrent_demotions_keep_one_admin(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let a = account(&store, "a1", Role::Admin).await?;
    let b = account(&store, "a2", Role::Admin).await?;
    for _round in 0..3 {
        let demote = AccountChanges {
            role: Some(Role::User),
            ..Default::default()
        };
        let (ra, rb) = tokio::join!(
            store.update_account(&a.id, demote.clone()),
            store.update_account(&b.id, demote.clone()),
        );
        let ok = [ra.is_ok(), rb.is_ok()].iter().filter(|x| **x).count();
        let refused = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, Err(Error::LastAdmin)))
            .count();
        assert_eq!((ok, refused), (1, 1), "{ra:?} {rb:?}");
        let (_, admins) = store.list_accounts(Some(Role::Admin), 10, 0).await?;
        assert_eq!(admins, 1);
        // Restore both admins for the next round.
        let promote = AccountChanges {
            role: Some(Role::Admin),
            ..Default::default()
        };
        store.update_account(&a.id, promote.clone()).await?;
        store.update_account(&b.id, promote).await?;
    }
    let (ra, rb) = tokio::join!(store.delete_account(&a.id), store.delete_account(&b.id));
    assert!(
        matches!(
            (&ra, &rb),
            (Ok(true), Err(Error::LastAdmin)) | (Err(Error::LastAdmin), Ok(true))
        ),
        "{ra:?} {rb:?}"
    );
    Ok(())
}

async fn delete_cascades_flows_and_secrets(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let _admin = account(&store, "admin", Role::Admin).await?;
    let user = account(&store, "gone", Role::User).await?;
    let keep = account(&store, "keep", Role::User).await?;
    let flow = store.create_flow(new_flow(&user, "f", &["t"])).await?;
    let kept_flow = store.create_flow(new_flow(&keep, "k", &["t"])).await?;
    store.put_secret(&user.id, "K", "v").await?;
    store.put_secret(&keep.id, "K", "v").await?;

    assert!(store.delete_account(&user.id).await?);
    assert_eq!(store.get_account(&user.id).await?, None);
    assert_eq!(store.get_flow(&flow.id, Scope::All).await?, None);
    assert!(store.list_secrets(&user.id).await?.is_empty());
    assert_eq!(store.find_account_by_email("gone@example.com").await?, None);

    let mut raw = Raw::open(db);
    let user_filter = format!("account_id = '{}'", user.id);
    assert_eq!(raw.count("secrets", &user_filter), 0);
    assert_eq!(raw.count("flows", &format!("owner_id = '{}'", user.id)), 0);
    assert_eq!(
        raw.count("flow_revisions", &format!("flow_id = '{}'", flow.id)),
        0
    );
    assert_eq!(
        raw.count("flow_tags", &format!("flow_id = '{}'", flow.id)),
        0
    );

    // The other account is untouched, and the email can be reused.
    assert!(store.get_flow(&kept_flow.id, Scope::All).await?.is_some());
    assert_eq!(store.list_secrets(&keep.id).await?.len(), 1);
    account(&store, "gone", Role::User).await?;
    Ok(())
}
