//! Flows: creation with revision 1, scoping, paging, tag filter, updates and soft deletion.

use flowrunner_domain::{AccountId, FlowId, Role};
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{Error, FlowChanges, Result, Scope};

use crate::common::{Raw, account, new_flow};

store_tests!(
    create_and_get_with_scope,
    create_for_missing_owner_is_not_found,
    list_newest_first_with_paging_scope_and_tags,
    every_update_stores_a_new_revision,
    update_respects_scope,
    soft_delete_hides_but_keeps_revisions,
);

async fn create_and_get_with_scope(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let alice = account(&store, "alice", Role::User).await?;
    let bob = account(&store, "bob", Role::User).await?;
    let mut new = new_flow(&alice, "Orders", &["prod", "etl", "prod"]);
    new.description = None;
    let flow = store.create_flow(new.clone()).await?;
    assert!(flow.id.as_str().starts_with("flow-"));
    assert!(flow.revision_id.as_str().starts_with("rev-"));
    assert_eq!(flow.revision, 1);
    assert_eq!(
        flow.tags,
        vec!["prod", "etl"],
        "duplicates dropped, order kept"
    );
    assert_eq!(flow.description, None);
    assert_eq!(flow.definition, new.definition);
    assert_eq!(flow.owner_id, alice.id);

    assert_eq!(
        store.get_flow(&flow.id, Scope::All).await?,
        Some(flow.clone())
    );
    assert_eq!(
        store
            .get_flow(&flow.id, Scope::Owner(alice.id.clone()))
            .await?,
        Some(flow.clone())
    );
    assert_eq!(
        store
            .get_flow(&flow.id, Scope::Owner(bob.id.clone()))
            .await?,
        None
    );
    assert_eq!(store.get_flow(&FlowId::generate(), Scope::All).await?, None);
    Ok(())
}

async fn create_for_missing_owner_is_not_found(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let ghost = account(&store, "ghost", Role::User).await?;
    let mut new = new_flow(&ghost, "f", &[]);
    new.owner_id = AccountId::generate();
    assert!(matches!(store.create_flow(new).await, Err(Error::NotFound)));
    Ok(())
}

async fn list_newest_first_with_paging_scope_and_tags(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let alice = account(&store, "alice", Role::User).await?;
    let bob = account(&store, "bob", Role::User).await?;
    let mut created = Vec::new();
    for (i, tags) in [
        vec!["prod"],
        vec!["dev"],
        vec!["prod", "etl"],
        vec!["production"],
        vec![],
    ]
    .into_iter()
    .enumerate()
    {
        created.push(
            store
                .create_flow(new_flow(&alice, &format!("a{i}"), &tags))
                .await?,
        );
    }
    let bobs = store.create_flow(new_flow(&bob, "b", &["prod"])).await?;

    let (all, total) = store.list_flows(Scope::All, None, 100, 0).await?;
    assert_eq!(total, 6);
    assert_eq!(all[0].id, bobs.id, "newest first");
    assert_eq!(all[1].id, created[4].id);
    assert_eq!(all[5].id, created[0].id);

    let alice_scope = Scope::Owner(alice.id.clone());
    let (page, total) = store.list_flows(alice_scope.clone(), None, 2, 1).await?;
    assert_eq!(total, 5);
    assert_eq!(
        page.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["a3", "a2"]
    );
    assert!(page.iter().all(|f| f.definition.contains("metadata")));

    let (prod, total) = store
        .list_flows(alice_scope.clone(), Some("prod"), 10, 0)
        .await?;
    assert_eq!(total, 2, "exact tag match: `production` is not `prod`");
    assert_eq!(
        prod.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
        ["a2", "a0"]
    );
    let (prod_all, total) = store.list_flows(Scope::All, Some("prod"), 1, 0).await?;
    assert_eq!((prod_all.len(), total), (1, 3));
    let (none, total) = store.list_flows(Scope::All, Some("pro"), 10, 0).await?;
    assert_eq!((none.len(), total), (0, 0));
    let (none, total) = store
        .list_flows(Scope::All, Some("\"prod\""), 10, 0)
        .await?;
    assert_eq!((none.len(), total), (0, 0));
    let (bob_list, total) = store
        .list_flows(Scope::Owner(bob.id.clone()), None, 10, 0)
        .await?;
    assert_eq!((bob_list.len(), total), (1, 1));
    Ok(())
}

async fn every_update_stores_a_new_revision(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let alice = account(&store, "alice", Role::User).await?;
    let flow = store.create_flow(new_flow(&alice, "f", &["prod"])).await?;
    let scope = Scope::Owner(alice.id.clone());

    let renamed = store
        .update_flow(
            &flow.id,
            scope.clone(),
            FlowChanges {
                name: Some("Renamed".into()),
                description: Some(None),
                tags: Some(vec!["prod".into(), "updated".into()]),
                definition: Some(flow.definition.clone()),
                ..Default::default()
            },
        )
        .await?
        .expect("visible");
    assert_eq!(renamed.name, "Renamed");
    assert_eq!(renamed.description, None);
    assert_eq!(renamed.tags, vec!["prod", "updated"]);
    assert_eq!(renamed.revision, 2, "every update stores a revision");
    assert_ne!(renamed.revision_id, flow.revision_id);
    assert_eq!(renamed.definition, flow.definition);
    assert_eq!(renamed.created_at, flow.created_at);
    assert!(renamed.updated_at >= flow.updated_at);
    let (tagged, _) = store.list_flows(Scope::All, Some("updated"), 10, 0).await?;
    assert_eq!(tagged.len(), 1);

    let v2 = store
        .update_flow(
            &flow.id,
            scope.clone(),
            FlowChanges {
                definition: Some("nodes: {}\n".into()),
                version: Some("1.0.1".into()),
                tags: Some(vec![]),
                ..Default::default()
            },
        )
        .await?
        .expect("visible");
    assert_eq!(
        (v2.revision, v2.version.as_str(), v2.definition.as_str()),
        (3, "1.0.1", "nodes: {}\n")
    );
    assert_ne!(v2.revision_id, flow.revision_id);
    assert!(v2.tags.is_empty());
    assert_eq!(
        store.list_flows(Scope::All, Some("prod"), 10, 0).await?.1,
        0
    );
    assert_eq!(v2.name, "Renamed", "fields not given stay");

    let v3 = store
        .update_flow(
            &flow.id,
            scope.clone(),
            FlowChanges {
                version: Some("2.0.0".into()),
                ..Default::default()
            },
        )
        .await?
        .expect("visible");
    assert_eq!((v3.revision, v3.definition.as_str()), (4, "nodes: {}\n"));
    assert_eq!(
        store.get_flow(&flow.id, Scope::All).await?,
        Some(v3.clone())
    );

    let revisions = store
        .list_revisions(&flow.id, scope)
        .await?
        .expect("visible");
    assert_eq!(
        revisions.iter().map(|r| r.revision).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(revisions[0].definition, flow.definition);
    assert_eq!(revisions[0].id, flow.revision_id);
    assert_eq!(revisions[1].definition, flow.definition);
    assert_eq!(revisions[2].version, "1.0.1");
    assert_eq!(revisions[3].id, v3.revision_id);
    assert_eq!(
        store.get_revision(&revisions[1].id).await?,
        Some(revisions[1].clone())
    );
    Ok(())
}

async fn update_respects_scope(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let alice = account(&store, "alice", Role::User).await?;
    let bob = account(&store, "bob", Role::User).await?;
    let flow = store.create_flow(new_flow(&alice, "f", &[])).await?;
    let changes = FlowChanges {
        name: Some("hijacked".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .update_flow(&flow.id, Scope::Owner(bob.id.clone()), changes.clone())
            .await?,
        None
    );
    assert!(
        !store
            .delete_flow(&flow.id, Scope::Owner(bob.id.clone()))
            .await?
    );
    assert_eq!(
        store
            .list_revisions(&flow.id, Scope::Owner(bob.id.clone()))
            .await?,
        None
    );
    assert_eq!(
        store.get_flow(&flow.id, Scope::All).await?.map(|f| f.name),
        Some("f".into())
    );
    // An admin (Scope::All) may change it.
    let changed = store.update_flow(&flow.id, Scope::All, changes).await?;
    assert_eq!(changed.map(|f| f.name), Some("hijacked".into()));
    Ok(())
}

async fn soft_delete_hides_but_keeps_revisions(db: &TestDatabase) -> Result<()> {
    let store = db.open().await?;
    let alice = account(&store, "alice", Role::User).await?;
    let flow = store.create_flow(new_flow(&alice, "f", &["prod"])).await?;
    store
        .update_flow(
            &flow.id,
            Scope::All,
            FlowChanges {
                definition: Some("v2".into()),
                ..Default::default()
            },
        )
        .await?;
    let scope = Scope::Owner(alice.id.clone());
    assert!(store.delete_flow(&flow.id, scope.clone()).await?);
    assert!(
        !store.delete_flow(&flow.id, scope.clone()).await?,
        "already deleted"
    );
    assert_eq!(store.get_flow(&flow.id, Scope::All).await?, None);
    assert_eq!(
        store.list_flows(Scope::All, None, 10, 0).await?,
        (vec![], 0)
    );
    assert_eq!(
        store.list_flows(Scope::All, Some("prod"), 10, 0).await?,
        (vec![], 0)
    );
    assert_eq!(store.list_revisions(&flow.id, Scope::All).await?, None);
    assert_eq!(
        store
            .update_flow(&flow.id, Scope::All, FlowChanges::default())
            .await?,
        None
    );

    // The rows are still there, and revisions stay reachable by id (for past executions).
    let mut raw = Raw::open(db);
    assert_eq!(
        raw.count(
            "flows",
            &format!("id = '{}' AND deleted_at IS NOT NULL", flow.id)
        ),
        1
    );
    assert_eq!(
        raw.count("flow_revisions", &format!("flow_id = '{}'", flow.id)),
        2
    );
    assert!(store.get_revision(&flow.revision_id).await?.is_some());
    Ok(())
}
