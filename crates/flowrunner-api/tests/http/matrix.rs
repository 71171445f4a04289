//! Authorization matrix: every endpoint crossed with every kind of caller, asserting the exact
//! status. Each cell gets fresh accounts, tokens and resources, so cells cannot affect each other.

use std::sync::atomic::{AtomicUsize, Ordering};

use flowrunner_domain::Role;
use serde_json::{Value, json};

use crate::common::{TestApp, USER_PASSWORD, definition, delay_flow};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    NoToken,
    Malformed,
    Expired,
    Revoked,
    OtherUser,
    Owner,
    Admin,
}

const CALLERS: [Caller; 7] = [
    Caller::NoToken,
    Caller::Malformed,
    Caller::Expired,
    Caller::Revoked,
    Caller::OtherUser,
    Caller::Owner,
    Caller::Admin,
];

/// The resources of one cell: an owner (a plain user) with a flow and a secret, another user.
struct Cell {
    owner_id: String,
    owner_email: String,
    flow_id: String,
    /// An offline flow of the owner that waits ten minutes.
    waiting_flow_id: String,
    /// A running execution of that flow.
    execution_id: String,
    n: usize,
}

/// One endpoint: how to call it and the status for the other user, the owner and an admin.
/// Every row expects 401 for missing, malformed, expired and revoked tokens unless `public`.
struct Row {
    name: &'static str,
    method: &'static str,
    path: fn(&Cell) -> String,
    body: fn(&Cell) -> Option<Value>,
    other: u16,
    owner: u16,
    admin: u16,
    public: bool,
}

fn no_body(_: &Cell) -> Option<Value> {
    None
}

fn empty_body(_: &Cell) -> Option<Value> {
    Some(json!({}))
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "healthz",
            method: "GET",
            path: |_| "/healthz".into(),
            body: no_body,
            other: 200,
            owner: 200,
            admin: 200,
            public: true,
        },
        Row {
            name: "login",
            method: "POST",
            path: |_| "/api/v1/auth/login".into(),
            body: |c| Some(json!({"username": c.owner_email, "password": USER_PASSWORD})),
            other: 200,
            owner: 200,
            admin: 200,
            public: true,
        },
        Row {
            name: "refresh",
            method: "POST",
            path: |_| "/api/v1/auth/refresh".into(),
            body: empty_body,
            other: 200,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "logout",
            method: "POST",
            path: |_| "/api/v1/auth/logout".into(),
            body: empty_body,
            other: 200,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "list flows",
            method: "GET",
            path: |_| "/api/v1/flows".into(),
            body: no_body,
            other: 200,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "create flow",
            method: "POST",
            path: |_| "/api/v1/flows".into(),
            body: |_| Some(json!({"definition": definition("New", "1.0.0")})),
            other: 201,
            owner: 201,
            admin: 201,
            public: false,
        },
        Row {
            name: "validate flow",
            method: "POST",
            path: |_| "/api/v1/flows/validate".into(),
            body: |_| Some(json!({"definition": definition("V", "1.0.0")})),
            other: 200,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "get flow",
            method: "GET",
            path: |c| format!("/api/v1/flows/{}", c.flow_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "update flow",
            method: "PUT",
            path: |c| format!("/api/v1/flows/{}", c.flow_id),
            body: |_| Some(json!({"definition": definition("Changed", "1.0.1")})),
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "delete flow",
            method: "DELETE",
            path: |c| format!("/api/v1/flows/{}", c.flow_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "flow versions",
            method: "GET",
            path: |c| format!("/api/v1/flows/{}/versions", c.flow_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "list accounts",
            method: "GET",
            path: |_| "/api/v1/accounts".into(),
            body: no_body,
            other: 403,
            owner: 403,
            admin: 200,
            public: false,
        },
        Row {
            name: "create account",
            method: "POST",
            path: |_| "/api/v1/accounts".into(),
            body: |c| {
                Some(
                    json!({"name": "N", "email": format!("created{}@example.com", c.n), "password": "password-1"}),
                )
            },
            other: 403,
            owner: 403,
            admin: 201,
            public: false,
        },
        Row {
            name: "get account",
            method: "GET",
            path: |c| format!("/api/v1/accounts/{}", c.owner_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "update account",
            method: "PUT",
            path: |c| format!("/api/v1/accounts/{}", c.owner_id),
            body: |_| Some(json!({"name": "Renamed"})),
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "change role",
            method: "PUT",
            path: |c| format!("/api/v1/accounts/{}", c.owner_id),
            body: |_| Some(json!({"role": "admin"})),
            other: 404,
            owner: 403,
            admin: 200,
            public: false,
        },
        Row {
            name: "delete account",
            method: "DELETE",
            path: |c| format!("/api/v1/accounts/{}", c.owner_id),
            body: no_body,
            other: 403,
            owner: 403,
            admin: 200,
            public: false,
        },
        Row {
            name: "list secrets",
            method: "GET",
            path: |c| format!("/api/v1/accounts/{}/secrets", c.owner_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "create secret",
            method: "POST",
            path: |c| format!("/api/v1/accounts/{}/secrets", c.owner_id),
            body: |_| Some(json!({"key": "NEW_KEY", "value": "v"})),
            other: 404,
            owner: 201,
            admin: 201,
            public: false,
        },
        Row {
            name: "replace secret",
            method: "POST",
            path: |c| format!("/api/v1/accounts/{}/secrets", c.owner_id),
            body: |_| Some(json!({"key": "OWNER_KEY", "value": "v2"})),
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "delete secret",
            method: "DELETE",
            path: |c| format!("/api/v1/accounts/{}/secrets/OWNER_KEY", c.owner_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "run flow",
            method: "POST",
            path: |c| format!("/api/v1/flows/{}/run", c.waiting_flow_id),
            body: |_| Some(json!({"input": {}})),
            other: 404,
            owner: 202,
            admin: 202,
            public: false,
        },
        Row {
            name: "list executions",
            method: "GET",
            path: |_| "/api/v1/executions".into(),
            body: no_body,
            other: 200,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "get execution",
            method: "GET",
            path: |c| format!("/api/v1/executions/{}", c.execution_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "execution logs",
            method: "GET",
            path: |c| format!("/api/v1/executions/{}/logs", c.execution_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            name: "cancel execution",
            method: "DELETE",
            path: |c| format!("/api/v1/executions/{}", c.execution_id),
            body: no_body,
            other: 404,
            owner: 200,
            admin: 200,
            public: false,
        },
        Row {
            // Without upgrade headers: authorization and ownership are checked first, then the
            // missing upgrade is a 400.
            name: "execution stream",
            method: "GET",
            path: |c| format!("/ws/executions/{}", c.execution_id),
            body: no_body,
            other: 404,
            owner: 400,
            admin: 400,
            public: false,
        },
    ]
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Sets up a fresh cell and returns it with the token the caller kind uses.
fn setup(app: &TestApp, caller: Caller) -> (Cell, Option<String>) {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let owner = app.create_user(&format!("owner{n}@example.com"), Role::User);
    let flow_id = app.create_flow(&owner.token, "Owned", &[]);
    let waiting_flow_id = app.create_flow_from(&owner.token, &delay_flow("10m", "wait", None));
    let execution_id = app.run_flow(&owner.token, &waiting_flow_id, json!({}));
    let secret = app.post(
        &format!("/api/v1/accounts/{}/secrets", owner.id),
        Some(&owner.token),
        json!({"key": "OWNER_KEY", "value": "v"}),
    );
    assert_eq!(secret.status, 201);
    let token = match caller {
        Caller::NoToken => None,
        Caller::Malformed => Some("this.is.not-a-token".to_string()),
        Caller::Expired => Some(app.expired_token(&owner.id)),
        Caller::Revoked => {
            let token = app.login(&owner.email, USER_PASSWORD);
            assert_eq!(
                app.post("/api/v1/auth/logout", Some(&token), json!({}))
                    .status,
                200
            );
            Some(token)
        }
        Caller::OtherUser => Some(
            app.create_user(&format!("other{n}@example.com"), Role::User)
                .token,
        ),
        Caller::Owner => Some(owner.token.clone()),
        Caller::Admin => Some(app.login(&app.admin.email, &app.admin.password)),
    };
    (
        Cell {
            owner_id: owner.id,
            owner_email: owner.email,
            flow_id,
            waiting_flow_id,
            execution_id,
            n,
        },
        token,
    )
}

fn expected(row: &Row, caller: Caller) -> u16 {
    match caller {
        Caller::NoToken | Caller::Malformed | Caller::Expired | Caller::Revoked if !row.public => {
            401
        }
        Caller::NoToken | Caller::Malformed | Caller::Expired | Caller::Revoked => row.owner,
        Caller::OtherUser => row.other,
        Caller::Owner => row.owner,
        Caller::Admin => row.admin,
    }
}

#[test]
fn authorization_matrix() {
    let app = TestApp::start();
    let mut failures = Vec::new();
    let mut cells = 0;
    for row in rows() {
        for caller in CALLERS {
            let (cell, token) = setup(&app, caller);
            let r = app.request(
                row.method,
                &(row.path)(&cell),
                token.as_deref(),
                (row.body)(&cell),
            );
            let want = expected(&row, caller);
            cells += 1;
            if r.status != want {
                failures.push(format!(
                    "{} as {caller:?}: expected {want}, got {} {}",
                    row.name, r.status, r.body
                ));
            } else if r.status >= 400 && r.body["error"]["code"].as_str().is_none() {
                failures.push(format!(
                    "{} as {caller:?}: {} without the error envelope",
                    row.name, r.status
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {cells} cells failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
