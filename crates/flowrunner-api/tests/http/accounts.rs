//! Accounts: roles, self-service limits, the last admin, duplicates and shapes.

use std::collections::BTreeSet;

use flowrunner_domain::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, USER_PASSWORD};

fn account_keys() -> BTreeSet<String> {
    ["id", "name", "email", "role", "created_at", "updated_at"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn assert_account_shape(v: &Value) {
    let keys: BTreeSet<String> = v.as_object().expect("object").keys().cloned().collect();
    assert_eq!(keys, account_keys(), "{v}");
    assert!(!v.to_string().contains("$2"), "no password hash: {v}");
}

/// Admin and user rules on accounts; reused by the PostgreSQL test.
pub fn rules(app: &TestApp) {
    let admin = Some(app.admin.token.as_str());
    let user = Some(app.user.token.as_str());

    let created = app.post(
        "/api/v1/accounts",
        admin,
        json!({"name": "New Account", "email": "New@Example.com", "password": "your-password", "role": "user"}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_account_shape(&created.body);
    assert_eq!(created.body["email"], "new@example.com");
    assert_eq!(created.body["role"], "user");
    let new_id = created.body["id"].as_str().expect("id").to_string();
    assert!(new_id.starts_with("account-"));

    let dup = app.post(
        "/api/v1/accounts",
        admin,
        json!({"name": "Dup", "email": "NEW@example.com", "password": "whatever-1"}),
    );
    assert_eq!(dup.status, 409, "{dup:?}");

    let listed = app.get("/api/v1/accounts", admin);
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["total"], 3);
    assert_eq!(listed.body["limit"], 10);
    assert_eq!(listed.body["offset"], 0);
    for a in listed.body["accounts"].as_array().expect("accounts") {
        assert_account_shape(a);
    }
    let admins = app.get("/api/v1/accounts?role=admin", admin);
    assert_eq!(admins.body["total"], 1);
    assert_eq!(admins.body["accounts"][0]["id"], app.admin.id.as_str());
    let paged = app.get("/api/v1/accounts?limit=1&offset=1", admin);
    assert_eq!(
        paged.body["accounts"].as_array().expect("accounts").len(),
        1
    );
    assert_eq!(paged.body["total"], 3);
    let bad_role = app.get("/api/v1/accounts?role=root", admin);
    assert_eq!(bad_role.status, 422);
    assert_eq!(bad_role.body["error"]["details"]["field"], "role");

    // Users: no listing, no creating, only their own account.
    assert_eq!(app.get("/api/v1/accounts", user).status, 403);
    let forbidden = app.post(
        "/api/v1/accounts",
        user,
        json!({"name": "x", "email": "x@example.com", "password": "password-1"}),
    );
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.code(), "forbidden");
    let own = app.get(&format!("/api/v1/accounts/{}", app.user.id), user);
    assert_eq!(own.status, 200);
    assert_account_shape(&own.body);
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{new_id}"), user).status,
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{}", app.user.id), admin)
            .status,
        200
    );

    std::thread::sleep(std::time::Duration::from_millis(5));
    let renamed = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        user,
        json!({"name": "Renamed", "email": "renamed@example.com", "role": "user"}),
    );
    assert_eq!(renamed.status, 200, "{renamed:?}");
    assert_account_shape(&renamed.body);
    assert_eq!(renamed.body["name"], "Renamed");
    assert_eq!(renamed.body["email"], "renamed@example.com");
    assert_ne!(renamed.body["updated_at"], own.body["updated_at"]);
    assert_eq!(renamed.body["created_at"], own.body["created_at"]);

    let promote = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        user,
        json!({"role": "admin"}),
    );
    assert_eq!(promote.status, 403);
    let other = app.put(
        &format!("/api/v1/accounts/{new_id}"),
        user,
        json!({"name": "Hijack"}),
    );
    assert_eq!(other.status, 404);
    let taken = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        user,
        json!({"email": app.admin.email}),
    );
    assert_eq!(taken.status, 409);
    assert_eq!(
        app.delete(&format!("/api/v1/accounts/{new_id}"), user)
            .status,
        403
    );
    assert_eq!(
        app.delete(&format!("/api/v1/accounts/{}", app.user.id), user)
            .status,
        403
    );

    // The last admin can be neither demoted nor deleted.
    let demote = app.put(
        &format!("/api/v1/accounts/{}", app.admin.id),
        admin,
        json!({"role": "user"}),
    );
    assert_eq!(demote.status, 409, "{demote:?}");
    let delete_last = app.delete(&format!("/api/v1/accounts/{}", app.admin.id), admin);
    assert_eq!(delete_last.status, 409);
    assert_eq!(
        app.get("/api/v1/flows", admin).status,
        200,
        "the admin still works"
    );

    // With a second admin, the first may go.
    let promoted = app.put(
        &format!("/api/v1/accounts/{new_id}"),
        admin,
        json!({"role": "admin"}),
    );
    assert_eq!(promoted.status, 200);
    assert_eq!(promoted.body["role"], "admin");
    let deleted = app.delete(&format!("/api/v1/accounts/{new_id}"), admin);
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"message": "Account deleted successfully"})
    );
    assert_eq!(
        app.get(&format!("/api/v1/accounts/{new_id}"), admin).status,
        404
    );
    assert_eq!(
        app.delete(&format!("/api/v1/accounts/{new_id}"), admin)
            .status,
        404
    );
}

#[test]
fn account_rules() {
    rules(&TestApp::start());
}

#[test]
fn account_input_is_validated() {
    let app = TestApp::start();
    let admin = Some(app.admin.token.as_str());
    let cases = [
        (
            json!({"name": "A", "email": "not-an-email", "password": "password-1"}),
            "email",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "password": "short"}),
            "password",
        ),
        (
            json!({"name": "  ", "email": "a@example.com", "password": "password-1"}),
            "name",
        ),
        (
            json!({"name": "A", "email": "a@example.com", "password": "password-1", "role": "root"}),
            "role",
        ),
        (
            json!({"email": "a@example.com", "password": "password-1"}),
            "name",
        ),
        (
            json!({"name": "A", "email": 7, "password": "password-1"}),
            "email",
        ),
    ];
    for (body, field) in cases {
        let r = app.post("/api/v1/accounts", admin, body.clone());
        assert_eq!(r.status, 422, "{body}: {r:?}");
        assert_eq!(r.code(), "validation_error");
        assert_eq!(r.body["error"]["details"]["field"], field, "{body}");
    }
    let r = app.put(
        &format!("/api/v1/accounts/{}", app.user.id),
        admin,
        json!({"email": "nope"}),
    );
    assert_eq!(r.status, 422);
    // The default role is user.
    let r = app.post(
        "/api/v1/accounts",
        admin,
        json!({"name": "D", "email": "d@example.com", "password": "password-1"}),
    );
    assert_eq!(r.body["role"], "user");
}

#[test]
fn demoting_an_admin_takes_effect_immediately() {
    let app = TestApp::start();
    let second = app.create_user("second-admin@example.com", Role::Admin);
    assert_eq!(app.get("/api/v1/accounts", Some(&second.token)).status, 200);
    let r = app.put(
        &format!("/api/v1/accounts/{}", second.id),
        Some(&app.admin.token),
        json!({"role": "user"}),
    );
    assert_eq!(r.status, 200);
    // The role changed: old tokens stop working; a new login is a plain user.
    assert_eq!(app.get("/api/v1/accounts", Some(&second.token)).status, 401);
    let token = app.login(&second.email, USER_PASSWORD);
    assert_eq!(app.get("/api/v1/accounts", Some(&token)).status, 403);
}
