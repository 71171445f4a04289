//! Flows: CRUD shapes, metadata defaults, validation, pagination, revisions and ownership.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{BROKEN_DEFINITION, TestApp, definition};

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("object").keys().cloned().collect()
}

fn summary_keys() -> BTreeSet<String> {
    [
        "id",
        "name",
        "description",
        "version",
        "created_at",
        "updated_at",
        "tags",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The whole life of a flow; reused by the PostgreSQL test.
pub fn lifecycle(app: &TestApp) {
    let token = app.user.token.as_str();
    let created = app.post(
        "/api/v1/flows",
        Some(token),
        json!({"name": "My Flow", "description": "A simple flow", "definition": definition("My Flow", "1.0.0"), "tags": ["production"]}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    assert_eq!(keys(&created.body), summary_keys());
    let id = created.body["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("flow-"), "{id}");
    assert_eq!(created.body["name"], "My Flow");
    assert_eq!(created.body["description"], "A simple flow");
    assert_eq!(created.body["version"], "1.0.0");
    assert_eq!(created.body["tags"], json!(["production"]));
    assert_eq!(created.body["created_at"], created.body["updated_at"]);

    let got = app.get(&format!("/api/v1/flows/{id}"), Some(token));
    assert_eq!(got.status, 200);
    let mut detail_keys = summary_keys();
    detail_keys.insert("definition".into());
    assert_eq!(keys(&got.body), detail_keys);
    assert_eq!(got.body["definition"], definition("My Flow", "1.0.0"));

    let listed = app.get("/api/v1/flows", Some(token));
    assert_eq!(listed.status, 200);
    assert_eq!(
        keys(&listed.body),
        ["flows", "total", "limit", "offset"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.body["limit"], 10);
    assert_eq!(listed.body["offset"], 0);
    assert_eq!(keys(&listed.body["flows"][0]), summary_keys());

    std::thread::sleep(std::time::Duration::from_millis(5));
    let updated = app.put(
        &format!("/api/v1/flows/{id}"),
        Some(token),
        json!({"name": "Updated Flow", "description": "An updated flow", "definition": definition("Updated Flow", "1.0.1"), "tags": ["production", "updated"]}),
    );
    assert_eq!(updated.status, 200, "{updated:?}");
    assert_eq!(keys(&updated.body), summary_keys());
    assert_eq!(updated.body["name"], "Updated Flow");
    assert_eq!(updated.body["version"], "1.0.1");
    assert_eq!(updated.body["tags"], json!(["production", "updated"]));
    assert_eq!(updated.body["created_at"], created.body["created_at"]);
    assert_ne!(updated.body["updated_at"], created.body["updated_at"]);

    let versions = app.get(&format!("/api/v1/flows/{id}/versions"), Some(token));
    assert_eq!(versions.status, 200);
    assert_eq!(versions.body["flow_id"], id.as_str());
    let list = versions.body["versions"].as_array().expect("versions");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["revision"], 1);
    assert_eq!(list[0]["version"], "1.0.0");
    assert_eq!(list[1]["revision"], 2);
    assert_eq!(list[1]["version"], "1.0.1");
    assert!(list[0]["id"].as_str().expect("rev id").starts_with("rev-"));

    let deleted = app.delete(&format!("/api/v1/flows/{id}"), Some(token));
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"message": "Flow deleted successfully"})
    );
    let gone = app.get(&format!("/api/v1/flows/{id}"), Some(token));
    assert_eq!(gone.status, 404);
    assert_eq!(gone.code(), "not_found");
    assert_eq!(
        app.delete(&format!("/api/v1/flows/{id}"), Some(token))
            .status,
        404
    );
    assert_eq!(app.get("/api/v1/flows", Some(token)).body["total"], 0);
}

#[test]
fn flow_lifecycle() {
    lifecycle(&TestApp::start());
}

#[test]
fn fields_default_to_the_metadata() {
    let app = TestApp::start();
    let r = app.post(
        "/api/v1/flows",
        Some(&app.user.token),
        json!({"definition": definition("From Meta", "2.3.4")}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.body["name"], "From Meta");
    assert_eq!(r.body["description"], "About From Meta");
    assert_eq!(r.body["version"], "2.3.4");
    assert_eq!(r.body["tags"], json!(["meta"]));

    let missing = app.post("/api/v1/flows", Some(&app.user.token), json!({"name": "x"}));
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["error"]["details"]["field"], "definition");
    let wrong = app.post(
        "/api/v1/flows",
        Some(&app.user.token),
        json!({"definition": definition("x", "1.0.0"), "tags": "a"}),
    );
    assert_eq!(wrong.status, 422);
    assert_eq!(wrong.body["error"]["details"]["field"], "tags");
}

#[test]
fn invalid_definitions_are_rejected_with_every_diagnostic() {
    let app = TestApp::start();
    let r = app.post(
        "/api/v1/flows",
        Some(&app.user.token),
        json!({"name": "Broken", "definition": BROKEN_DEFINITION}),
    );
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.code(), "validation_error");
    let diagnostics = r.body["error"]["details"]["diagnostics"]
        .as_array()
        .expect("diagnostics");
    assert!(diagnostics.len() >= 2, "{diagnostics:?}");
    for d in diagnostics {
        for key in ["severity", "code", "message", "line", "column", "node"] {
            assert!(d.get(key).is_some(), "{key} missing in {d}");
        }
        assert!(d["line"].as_u64().expect("line") >= 1);
    }
    assert!(
        diagnostics
            .iter()
            .any(|d| d["code"] == "unknown_node_type" && d["node"] == "start"),
        "{diagnostics:?}"
    );
    assert_eq!(
        app.get("/api/v1/flows", Some(&app.user.token)).body["total"],
        0,
        "nothing saved"
    );

    // Update with a broken definition: rejected, the flow is unchanged.
    let id = app.create_flow(&app.user.token, "Good", &[]);
    let r = app.put(
        &format!("/api/v1/flows/{id}"),
        Some(&app.user.token),
        json!({"definition": "nodes: ["}),
    );
    assert_eq!(r.status, 422);
    let got = app.get(&format!("/api/v1/flows/{id}"), Some(&app.user.token));
    assert_eq!(got.body["definition"], definition("Good", "1.0.0"));
}

#[test]
fn validate_reports_without_saving_and_warnings_do_not_block() {
    let app = TestApp::start();
    let token = Some(app.user.token.as_str());
    let ok = app.post(
        "/api/v1/flows/validate",
        token,
        json!({"definition": definition("V", "1.0.0")}),
    );
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, json!({"valid": true, "diagnostics": []}));

    let bad = app.post(
        "/api/v1/flows/validate",
        token,
        json!({"definition": BROKEN_DEFINITION}),
    );
    assert_eq!(bad.status, 200);
    assert_eq!(bad.body["valid"], false);
    assert!(
        bad.body["diagnostics"]
            .as_array()
            .expect("array")
            .iter()
            .any(|d| d["severity"] == "error")
    );

    let with_warning = format!(
        "{}  orphan:\n    type: \"log\"\n    params:\n      message: \"never runs\"\n",
        definition("W", "1.0.0")
    );
    let warned = app.post(
        "/api/v1/flows/validate",
        token,
        json!({"definition": with_warning}),
    );
    assert_eq!(warned.status, 200);
    assert_eq!(warned.body["valid"], true, "{warned:?}");
    let diagnostics = warned.body["diagnostics"].as_array().expect("array");
    assert!(
        diagnostics
            .iter()
            .any(|d| d["severity"] == "warning" && d["node"] == "orphan"),
        "{diagnostics:?}"
    );
    assert_eq!(
        app.get("/api/v1/flows", token).body["total"],
        0,
        "validate saves nothing"
    );

    let saved = app.post("/api/v1/flows", token, json!({"definition": with_warning}));
    assert_eq!(saved.status, 201, "warnings do not block saving: {saved:?}");

    let missing = app.post("/api/v1/flows/validate", token, json!({}));
    assert_eq!(missing.status, 422);
    assert_eq!(missing.body["error"]["details"]["field"], "definition");
}

#[test]
fn list_paginates_filters_by_tag_and_checks_parameters() {
    let app = TestApp::start();
    let token = app.user.token.as_str();
    for i in 0..3 {
        app.create_flow(
            token,
            &format!("f{i}"),
            if i == 1 { &["blue"] } else { &["red"] },
        );
    }
    let page = app.get("/api/v1/flows?limit=2", Some(token));
    assert_eq!(page.status, 200);
    assert_eq!(page.body["flows"].as_array().expect("flows").len(), 2);
    assert_eq!(page.body["total"], 3);
    assert_eq!(page.body["limit"], 2);
    let rest = app.get("/api/v1/flows?limit=2&offset=2", Some(token));
    assert_eq!(rest.body["flows"].as_array().expect("flows").len(), 1);
    assert_eq!(rest.body["offset"], 2);
    assert_eq!(rest.body["total"], 3);
    let past = app.get("/api/v1/flows?offset=10", Some(token));
    assert_eq!(past.body["flows"], json!([]));
    assert_eq!(past.body["total"], 3);

    let red = app.get("/api/v1/flows?tag=red", Some(token));
    assert_eq!(red.body["total"], 2);
    assert!(
        red.body["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .all(|f| f["tags"] == json!(["red"]))
    );
    assert_eq!(
        app.get("/api/v1/flows?tag=green", Some(token)).body["total"],
        0
    );
    assert_eq!(app.get("/api/v1/flows?limit=100", Some(token)).status, 200);

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
    ] {
        let r = app.get(&format!("/api/v1/flows?{query}"), Some(token));
        assert_eq!(r.status, 422, "{query}");
        assert_eq!(r.code(), "validation_error");
        assert_eq!(r.body["error"]["details"]["field"], field, "{query}");
    }
}

#[test]
fn users_see_only_their_flows_and_admins_see_all() {
    let app = TestApp::start();
    let admin_flow = app.create_flow(&app.admin.token, "admin's", &[]);
    let user_flow = app.create_flow(&app.user.token, "user's", &[]);
    let user = Some(app.user.token.as_str());
    let admin = Some(app.admin.token.as_str());

    assert_eq!(app.get("/api/v1/flows", user).body["total"], 1);
    assert_eq!(app.get("/api/v1/flows", admin).body["total"], 2);
    for path in [
        format!("/api/v1/flows/{admin_flow}"),
        format!("/api/v1/flows/{admin_flow}/versions"),
    ] {
        let r = app.get(&path, user);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(r.code(), "not_found");
    }
    let put = app.put(
        &format!("/api/v1/flows/{admin_flow}"),
        user,
        json!({"definition": definition("x", "1.0.0")}),
    );
    assert_eq!(put.status, 404);
    assert_eq!(
        app.delete(&format!("/api/v1/flows/{admin_flow}"), user)
            .status,
        404
    );
    assert_eq!(
        app.get(&format!("/api/v1/flows/{admin_flow}"), admin)
            .status,
        200,
        "still there"
    );

    assert_eq!(
        app.get(&format!("/api/v1/flows/{user_flow}"), admin).status,
        200
    );
    assert_eq!(
        app.delete(&format!("/api/v1/flows/{user_flow}"), admin)
            .status,
        200
    );
    for bad_id in ["flow-doesnotexist", "exec-123", "nonsense"] {
        assert_eq!(
            app.get(&format!("/api/v1/flows/{bad_id}"), admin).status,
            404,
            "{bad_id}"
        );
    }
}
