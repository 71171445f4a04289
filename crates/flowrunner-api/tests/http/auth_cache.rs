//! The authentication cache: changes made through this server's API take effect at once with
//! the cache enabled; changes made behind its back (another process) wait for the TTL.

use std::time::Duration;

use flowrunner_auth::SessionCacheConfig;
use flowrunner_domain::{AccountId, Role};
use flowrunner_store::AccountChanges;
use serde_json::json;

use crate::common::{TestApp, USER_PASSWORD};

/// A TTL no test outlives: a change that is not invalidated stays invisible for the whole test.
const LONG: Duration = Duration::from_secs(3600);

fn with_ttl(ttl: Duration) -> TestApp {
    TestApp::start_with(|config| {
        config.auth_cache = SessionCacheConfig {
            ttl,
            ..SessionCacheConfig::default()
        };
    })
}

/// Authenticates `token` a few times so the cache holds its entries; asserts 200.
fn warm(app: &TestApp, token: &str) {
    for _ in 0..3 {
        let r = app.get("/api/v1/flows", Some(token));
        assert_eq!(r.status, 200, "{r:?}");
    }
}

/// Logout, refresh, password change, role change and deletion through the API, each after the
/// affected tokens were authenticated (and so cached).
fn api_changes_take_effect_at_once(app: &TestApp) {
    assert!(app.state().session_cache().config().is_enabled());

    // Logout: the token is refused on the very next request; another session is not.
    let other = app.login(&app.user.email, USER_PASSWORD);
    let session = app.login(&app.user.email, USER_PASSWORD);
    warm(app, &session);
    warm(app, &other);
    let r = app.post("/api/v1/auth/logout", Some(&session), json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get("/api/v1/flows", Some(&session)).status, 401);
    assert_eq!(app.get("/api/v1/flows", Some(&other)).status, 200);

    // Refresh: the old token is refused at once, the new one works.
    warm(app, &other);
    let r = app.post("/api/v1/auth/refresh", Some(&other), json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    let refreshed = r.body["token"].as_str().expect("token").to_string();
    assert_eq!(app.get("/api/v1/flows", Some(&other)).status, 401);
    warm(app, &refreshed);

    // Password change (by the user): every earlier token of the account is refused at once.
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&refreshed),
        json!({"password": "another-password-1"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get("/api/v1/flows", Some(&refreshed)).status, 401);
    assert_eq!(app.get("/api/v1/flows", Some(&app.user.token)).status, 401);
    let after_password = app.login(&app.user.email, "another-password-1");
    warm(app, &after_password);

    // Role change (by an admin): promotion, then demotion, each seen at once.
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&app.admin.token),
        json!({"role": "admin"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        app.get("/api/v1/accounts", Some(&after_password)).status,
        401,
        "tokens issued before a role change die with it"
    );
    let as_admin = app.login(&app.user.email, "another-password-1");
    assert_eq!(app.get("/api/v1/accounts", Some(&as_admin)).status, 200);
    warm(app, &as_admin);
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&app.admin.token),
        json!({"role": "user"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get("/api/v1/accounts", Some(&as_admin)).status, 401);
    let as_user = app.login(&app.user.email, "another-password-1");
    assert_eq!(app.get("/api/v1/accounts", Some(&as_user)).status, 403);

    // A change that touches neither role nor password keeps the sessions.
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&as_user),
        json!({"name": "Renamed"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    warm(app, &as_user);

    // Deletion: the account's tokens are refused at once.
    let r = app.delete(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&app.admin.token),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = app.get("/api/v1/flows", Some(&as_user));
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.code(), "unauthorized");
    assert_eq!(app.get("/api/v1/flows", Some(&app.admin.token)).status, 200);
}

#[test]
fn api_changes_take_effect_at_once_with_the_default_cache() {
    let app = TestApp::start();
    assert_eq!(
        app.state().session_cache().config(),
        SessionCacheConfig::default()
    );
    api_changes_take_effect_at_once(&app);
}

#[test]
fn api_changes_take_effect_at_once_with_a_long_ttl() {
    // With an hour of TTL, a missing invalidation could not hide behind an expiry.
    api_changes_take_effect_at_once(&with_ttl(LONG));
}

#[test]
fn websocket_upgrades_refuse_a_logged_out_token_at_once() {
    let app = with_ttl(LONG);
    let flow = app.create_flow_from(&app.user.token, crate::common::LOG_FLOW);
    let execution = app.run_flow(&app.user.token, &flow, json!({"name": "cache"}));
    let url = app.ws_url(&format!(
        "/ws/executions/{execution}?token={}",
        app.user.token
    ));
    let (socket, _) = tungstenite::connect(url.as_str()).expect("upgrade");
    drop(socket);
    let r = app.post("/api/v1/auth/logout", Some(&app.user.token), json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    match tungstenite::connect(url.as_str()) {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected 401, got {other:?}"),
    }
}

/// What another process (or the CLI) does to the shared database, bypassing this server:
/// revokes `token`, changes `promoted`'s role and deletes `deleted`.
fn change_behind_the_back(app: &TestApp, token: &str, promoted: &str, deleted: &str) {
    let claims = app.state().auth().tokens().verify(token).expect("valid");
    let expires = claims.expires_at().expect("expiry");
    let store = app.state().store();
    app.block_on(store.revoke_token(&claims.jti, expires))
        .expect("revoke");
    let promoted = AccountId::parse(promoted).expect("id");
    app.block_on(store.update_account(
        &promoted,
        AccountChanges {
            role: Some(Role::Admin),
            ..AccountChanges::default()
        },
    ))
    .expect("update")
    .expect("exists");
    let deleted = AccountId::parse(deleted).expect("id");
    assert!(
        app.block_on(store.delete_account(&deleted))
            .expect("delete")
    );
}

#[test]
fn changes_behind_the_servers_back_wait_for_the_ttl() {
    let app = with_ttl(LONG);
    let promoted = app.create_user("promoted@example.com", Role::User);
    let deleted = app.create_user("deleted@example.com", Role::User);
    let tokens = [&app.user.token, &promoted.token, &deleted.token];
    for token in tokens {
        warm(&app, token);
    }
    let before = app.state().session_cache().size();
    assert!(
        before.tokens >= 3 && before.accounts >= 3,
        "entries cached: {before:?}"
    );

    change_behind_the_back(&app, &app.user.token, &promoted.id, &deleted.id);
    // Cached answers: the revocation, the role change (which moved the cut-off) and the
    // deletion are not seen yet. This is the documented staleness for changes made elsewhere.
    for token in tokens {
        assert_eq!(app.get("/api/v1/flows", Some(token)).status, 200);
    }

    // Once the entries are gone (what the TTL does), the store's answers win.
    app.state().session_cache().clear();
    for token in tokens {
        assert_eq!(app.get("/api/v1/flows", Some(token)).status, 401);
    }
}

#[test]
fn a_zero_ttl_disables_the_cache() {
    let app = with_ttl(Duration::ZERO);
    assert!(!app.state().session_cache().config().is_enabled());
    let promoted = app.create_user("promoted@example.com", Role::User);
    let deleted = app.create_user("deleted@example.com", Role::User);
    let tokens = [&app.user.token, &promoted.token, &deleted.token];
    for token in tokens {
        warm(&app, token);
    }
    change_behind_the_back(&app, &app.user.token, &promoted.id, &deleted.id);
    for token in tokens {
        assert_eq!(app.get("/api/v1/flows", Some(token)).status, 401);
    }
    assert_eq!(
        app.state().session_cache().size(),
        flowrunner_auth::CacheSize::default()
    );
}
