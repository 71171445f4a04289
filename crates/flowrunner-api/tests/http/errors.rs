//! The error envelope on every kind of failure.

use serde_json::json;

use crate::common::{TestApp, definition};

fn assert_envelope(r: &crate::common::Resp, status: u16, code: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.code(), code, "{r:?}");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{r:?}"
    );
    let content_type = r
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
}

#[test]
fn unknown_routes_and_wrong_methods() {
    let app = TestApp::start();
    let token = Some(app.admin.token.as_str());
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/flows",
        "/api/v1/flows/a/b/c",
    ] {
        assert_envelope(&app.get(path, token), 404, "not_found");
    }
    assert_envelope(&app.get("/nope", None), 404, "not_found");

    let r = app.raw(
        "PATCH",
        "/api/v1/flows",
        token,
        Some(("application/json", b"{}".to_vec())),
    );
    assert_envelope(&r, 405, "invalid_request");
    assert_eq!(
        r.headers.get("allow").and_then(|v| v.to_str().ok()),
        Some("GET, POST")
    );
    assert_envelope(&app.delete("/api/v1/flows", token), 405, "invalid_request");
    assert_envelope(&app.get("/api/v1/auth/login", None), 405, "invalid_request");
    assert_envelope(
        &app.get("/api/v1/flows/validate", token),
        405,
        "invalid_request",
    );
    assert_envelope(
        &app.request("POST", "/healthz", None, Some(json!({}))),
        405,
        "invalid_request",
    );
}

#[test]
fn malformed_and_mistyped_bodies() {
    let app = TestApp::start();
    let token = Some(app.user.token.as_str());
    for body in [
        &b"{"[..],
        b"not json",
        b"",
        b"{\"definition\": \"x\"} extra",
    ] {
        let r = app.raw(
            "POST",
            "/api/v1/flows",
            token,
            Some(("application/json", body.to_vec())),
        );
        assert_envelope(&r, 400, "invalid_request");
    }
    let r = app.raw(
        "POST",
        "/api/v1/flows",
        token,
        Some(("application/json", b"[1,2]".to_vec())),
    );
    assert_envelope(&r, 400, "invalid_request");

    let r = app.post("/api/v1/flows", token, json!({"definition": 42}));
    assert_envelope(&r, 422, "validation_error");
    assert_eq!(r.body["error"]["details"]["field"], "definition");
    assert!(r.body["error"]["details"]["reason"].as_str().is_some());
    let r = app.post(
        "/api/v1/flows",
        token,
        json!({"definition": definition("x", "1"), "name": null, "tags": [1]}),
    );
    assert_envelope(&r, 422, "validation_error");
    assert_eq!(r.body["error"]["details"]["field"], "tags[0]");

    let r = app.raw(
        "POST",
        "/api/v1/flows",
        token,
        Some(("text/plain", b"{}".to_vec())),
    );
    assert_envelope(&r, 415, "invalid_request");
    let r = app.raw(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(("application/x-www-form-urlencoded", b"username=a".to_vec())),
    );
    assert_envelope(&r, 415, "invalid_request");
    // `application/json; charset=utf-8` is fine.
    let r = app.raw(
        "POST",
        "/api/v1/flows/validate",
        token,
        Some((
            "application/json; charset=utf-8",
            br#"{"definition": "nodes: {}"}"#.to_vec(),
        )),
    );
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn bodies_over_the_limit_are_413() {
    let app = TestApp::start_with(|config| config.max_body_bytes = 8 * 1024);
    let token = Some(app.user.token.as_str());
    let big = json!({"definition": "x".repeat(9 * 1024)});
    let r = app.post("/api/v1/flows/validate", token, big);
    assert_envelope(&r, 413, "invalid_request");
    let r = app.post(
        "/api/v1/auth/login",
        None,
        json!({"username": "a", "password": "p".repeat(9 * 1024)}),
    );
    assert_envelope(&r, 413, "invalid_request");
    let fits = app.post(
        "/api/v1/flows/validate",
        token,
        json!({"definition": "x".repeat(7 * 1024)}),
    );
    assert_eq!(fits.status, 200, "{fits:?}");
}

#[test]
fn authentication_comes_before_body_checks() {
    let app = TestApp::start();
    let r = app.raw(
        "POST",
        "/api/v1/flows",
        None,
        Some(("application/json", b"{".to_vec())),
    );
    assert_envelope(&r, 401, "unauthorized");
    let r = app.raw(
        "POST",
        "/api/v1/flows",
        Some("garbage"),
        Some(("text/plain", b"x".to_vec())),
    );
    assert_envelope(&r, 401, "unauthorized");
    let mut builder = ureq::http::Request::builder()
        .method("GET")
        .uri(format!("{}/api/v1/flows", app.base));
    builder = builder.header("Authorization", format!("Basic {}", app.user.token));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let response = agent
        .run(builder.body(()).expect("request"))
        .expect("response");
    assert_eq!(response.status().as_u16(), 401);
}
