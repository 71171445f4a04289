//! Login, refresh, logout and what invalidates tokens.

use chrono::{DateTime, Utc};
use flowrunner_domain::Role;
use serde_json::json;

use crate::common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, USER_PASSWORD};

fn parse_time(value: &serde_json::Value) -> DateTime<Utc> {
    let text = value.as_str().expect("timestamp string");
    assert!(text.ends_with('Z'), "UTC with Z: {text}");
    DateTime::parse_from_rfc3339(text)
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

#[test]
fn login_returns_the_documented_shape() {
    let app = TestApp::start();
    let r = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let keys: Vec<&str> = r
        .body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(r.body["token"].as_str().expect("token").split('.').count() == 3);
    assert_eq!(r.body["account_id"], app.admin.id.as_str());
    assert!(app.admin.id.starts_with("account-"));
    let expires = parse_time(&r.body["expires_at"]);
    let ttl = expires - Utc::now();
    assert!(
        ttl > chrono::Duration::minutes(59) && ttl <= chrono::Duration::minutes(60),
        "{ttl:?}"
    );

    // Email is matched case-insensitively.
    let r = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": "ADMIN@Example.com", "password": ADMIN_PASSWORD}),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn wrong_email_and_wrong_password_look_the_same() {
    let app = TestApp::start();
    let wrong_password = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": ADMIN_EMAIL, "password": "not-the-password"}),
    );
    let unknown = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": "nobody@example.com", "password": "x"}),
    );
    for r in [&wrong_password, &unknown] {
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.code(), "unauthorized");
    }
    assert_eq!(wrong_password.body, unknown.body);

    let missing = app.post("/api/v1/auth/login", None, json!({"username": ADMIN_EMAIL}));
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["error"]["details"]["field"], "password");
    let wrong_type = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": 5, "password": "x"}),
    );
    assert_eq!(wrong_type.status, 422);
    assert_eq!(wrong_type.body["error"]["details"]["field"], "username");
}

#[test]
fn refresh_issues_a_new_token_and_revokes_the_old_one() {
    let app = TestApp::start();
    let old = app.user.token.clone();
    let r = app.post("/api/v1/auth/refresh", Some(&old), json!({}));
    assert_eq!(r.status, 200, "{r:?}");
    let new = r.body["token"].as_str().expect("token").to_string();
    assert_ne!(new, old);
    assert_eq!(r.body["account_id"], app.user.id.as_str());
    parse_time(&r.body["expires_at"]);

    assert_eq!(app.get("/api/v1/flows", Some(&old)).status, 401);
    assert_eq!(
        app.post("/api/v1/auth/refresh", Some(&old), json!({}))
            .status,
        401
    );
    assert_eq!(app.get("/api/v1/flows", Some(&new)).status, 200);
}

#[test]
fn logout_revokes_the_token_only() {
    let app = TestApp::start();
    let second = app.login(&app.user.email, USER_PASSWORD);
    let r = app.post("/api/v1/auth/logout", Some(&app.user.token), json!({}));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"message": "Logged out successfully"}));
    let again = app.get("/api/v1/flows", Some(&app.user.token));
    assert_eq!(again.status, 401);
    assert_eq!(again.code(), "unauthorized");
    assert_eq!(
        app.post("/api/v1/auth/logout", Some(&app.user.token), json!({}))
            .status,
        401
    );
    // Another session of the same account is unaffected.
    assert_eq!(app.get("/api/v1/flows", Some(&second)).status, 200);
}

#[test]
fn password_change_invalidates_existing_tokens_but_not_new_ones() {
    let app = TestApp::start();
    let other_session = app.login(&app.user.email, USER_PASSWORD);
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        Some(&app.user.token),
        json!({"password": "a-brand-new-password"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(app.get("/api/v1/flows", Some(&app.user.token)).status, 401);
    assert_eq!(app.get("/api/v1/flows", Some(&other_session)).status, 401);

    let bad = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": app.user.email, "password": USER_PASSWORD}),
    );
    assert_eq!(bad.status, 401);
    // Issued right after the change: valid.
    let fresh = app.login(&app.user.email, "a-brand-new-password");
    assert_eq!(app.get("/api/v1/flows", Some(&fresh)).status, 200);
}

#[test]
fn deleting_an_account_invalidates_its_tokens() {
    let app = TestApp::start();
    let victim = app.create_user("victim@example.com", Role::User);
    assert_eq!(app.get("/api/v1/flows", Some(&victim.token)).status, 200);
    assert_eq!(
        app.delete(
            &format!("/api/v1/accounts/{}", victim.id),
            Some(&app.admin.token)
        )
        .status,
        200
    );
    assert_eq!(app.get("/api/v1/flows", Some(&victim.token)).status, 401);
    let login = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": victim.email, "password": USER_PASSWORD}),
    );
    assert_eq!(login.status, 401);
}

#[test]
fn expired_and_malformed_tokens_are_rejected() {
    let app = TestApp::start();
    let expired = app.expired_token(&app.user.id);
    for token in [expired.as_str(), "not-a-jwt", "a.b.c", ""] {
        let r = app.get("/api/v1/flows", Some(token));
        assert_eq!(r.status, 401, "{token}: {r:?}");
        assert_eq!(r.code(), "unauthorized");
    }
    let r = app.raw("GET", "/api/v1/flows", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
}

#[test]
fn healthz_needs_no_token_and_checks_the_database() {
    let app = TestApp::start();
    let r = app.get("/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"status": "ok", "database": "sqlite"}));
}

#[test]
fn expired_revocations_are_pruned_periodically() {
    let app = TestApp::start_with(|config| {
        config.token_ttl = std::time::Duration::from_secs(1);
        config.prune_interval = std::time::Duration::from_millis(50);
    });
    let token = app.login(&app.user.email, USER_PASSWORD);
    let jti = app
        .state()
        .auth()
        .tokens()
        .verify(&token)
        .expect("fresh token")
        .jti;
    assert_eq!(
        app.post("/api/v1/auth/logout", Some(&token), json!({}))
            .status,
        200
    );
    assert!(
        app.block_on(app.state().store().is_token_revoked(&jti))
            .expect("query"),
        "revocation stored"
    );
    // The token expires after 1 s; the pruner runs every 50 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while app
        .block_on(app.state().store().is_token_revoked(&jti))
        .expect("query")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "revocation was never pruned"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Once pruned, the token is still refused: it has expired.
    assert_eq!(app.get("/api/v1/flows", Some(&token)).status, 401);
}
