//! Secrets: create, replace, list, delete, validation, isolation, never returned, encrypted.

use serde_json::json;

use crate::common::TestApp;

/// The secret rules; reused by the PostgreSQL test.
pub fn lifecycle(app: &TestApp) {
    let user = Some(app.user.token.as_str());
    let base = format!("/api/v1/accounts/{}/secrets", app.user.id);

    let empty = app.get(&base, user);
    assert_eq!(empty.status, 200);
    assert_eq!(empty.body, json!({"secrets": []}));

    let created = app.post(
        &base,
        user,
        json!({"key": "NEW_API_KEY", "value": "super-secret-value-1"}),
    );
    assert_eq!(created.status, 201, "{created:?}");
    let keys: Vec<&String> = created.body.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert_eq!(created.body["key"], "NEW_API_KEY");
    assert_eq!(created.body["created_at"], created.body["updated_at"]);

    std::thread::sleep(std::time::Duration::from_millis(5));
    let replaced = app.post(
        &base,
        user,
        json!({"key": "NEW_API_KEY", "value": "super-secret-value-2"}),
    );
    assert_eq!(replaced.status, 200, "{replaced:?}");
    assert_eq!(replaced.body["created_at"], created.body["created_at"]);
    assert_ne!(replaced.body["updated_at"], created.body["updated_at"]);

    assert_eq!(
        app.post(&base, user, json!({"key": "A_KEY", "value": ""}))
            .status,
        201
    );
    let listed = app.get(&base, user);
    assert_eq!(listed.status, 200);
    let names: Vec<&str> = listed.body["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .map(|s| s["key"].as_str().expect("key"))
        .collect();
    assert_eq!(names, ["A_KEY", "NEW_API_KEY"]);
    for text in [
        created.body.to_string(),
        replaced.body.to_string(),
        listed.body.to_string(),
    ] {
        assert!(
            !text.contains("super-secret-value"),
            "a value leaked: {text}"
        );
    }

    let deleted = app.delete(&format!("{base}/NEW_API_KEY"), user);
    assert_eq!(deleted.status, 200);
    assert_eq!(
        deleted.body,
        json!({"message": "Secret deleted successfully"})
    );
    assert_eq!(app.delete(&format!("{base}/NEW_API_KEY"), user).status, 404);
    assert_eq!(app.delete(&format!("{base}/not-a-key"), user).status, 404);
    assert_eq!(
        app.get(&base, user).body["secrets"]
            .as_array()
            .expect("secrets")
            .len(),
        1
    );

    // Validation.
    for (body, field) in [
        (json!({"key": "lower", "value": "v"}), "key"),
        (json!({"key": "9START", "value": "v"}), "key"),
        (
            json!({"key": format!("A{}", "B".repeat(128)), "value": "v"}),
            "key",
        ),
        (
            json!({"key": "BIG", "value": "x".repeat(64 * 1024 + 1)}),
            "value",
        ),
        (json!({"key": "NO_VALUE"}), "value"),
        (json!({"value": "v"}), "key"),
    ] {
        let r = app.post(&base, user, body);
        assert_eq!(r.status, 422, "{r:?}");
        assert_eq!(r.body["error"]["details"]["field"], field);
    }
    assert_eq!(
        app.post(
            &base,
            user,
            json!({"key": "MAX", "value": "x".repeat(64 * 1024)})
        )
        .status,
        201
    );

    // Isolation: a user cannot see or touch another account's secrets; an admin can.
    let admin_base = format!("/api/v1/accounts/{}/secrets", app.admin.id);
    assert_eq!(app.get(&admin_base, user).status, 404);
    assert_eq!(
        app.post(&admin_base, user, json!({"key": "X", "value": "v"}))
            .status,
        404
    );
    assert_eq!(app.delete(&format!("{admin_base}/X"), user).status, 404);
    let admin = Some(app.admin.token.as_str());
    assert_eq!(app.get(&base, admin).status, 200);
    assert_eq!(
        app.post(&base, admin, json!({"key": "FROM_ADMIN", "value": "v"}))
            .status,
        201
    );
    assert_eq!(app.delete(&format!("{base}/FROM_ADMIN"), admin).status, 200);
    assert_eq!(
        app.get("/api/v1/accounts/account-doesnotexist/secrets", admin)
            .status,
        404
    );
    assert_eq!(
        app.post(
            "/api/v1/accounts/account-doesnotexist/secrets",
            admin,
            json!({"key": "K", "value": "v"})
        )
        .status,
        404
    );
}

#[test]
fn secret_lifecycle() {
    lifecycle(&TestApp::start());
}

#[test]
fn values_are_encrypted_at_rest() {
    let app = TestApp::start();
    let marker = "plaintext-marker-0123456789";
    let base = format!("/api/v1/accounts/{}/secrets", app.user.id);
    assert_eq!(
        app.post(
            &base,
            Some(&app.user.token),
            json!({"key": "K", "value": marker})
        )
        .status,
        201
    );
    let path = app.sqlite_path().expect("sqlite").to_path_buf();
    let mut files = vec![path.clone()];
    for suffix in ["-wal", "-shm"] {
        let mut name = path.clone().into_os_string();
        name.push(suffix);
        files.push(name.into());
    }
    let mut seen = 0;
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            seen += bytes.len();
            assert!(
                !bytes.windows(marker.len()).any(|w| w == marker.as_bytes()),
                "{} holds the plaintext",
                file.display()
            );
        }
    }
    assert!(seen > 0, "database files were read");
}
