//! Restart on the same SQLite file: everything persists, including sessions and revocations.

use serde_json::json;

use crate::common::{TestApp, USER_PASSWORD, definition};

#[test]
fn state_sessions_and_revocations_survive_a_restart() {
    let mut app = TestApp::start();
    let flow_id = app.create_flow(&app.user.token, "Persistent", &["keep"]);
    let secrets = format!("/api/v1/accounts/{}/secrets", app.user.id);
    assert_eq!(
        app.post(
            &secrets,
            Some(&app.user.token),
            json!({"key": "KEEP_ME", "value": "v"})
        )
        .status,
        201
    );
    let revoked = app.login(&app.user.email, USER_PASSWORD);
    assert_eq!(
        app.post("/api/v1/auth/logout", Some(&revoked), json!({}))
            .status,
        200
    );
    let key_file = {
        let mut name = app
            .sqlite_path()
            .expect("sqlite")
            .to_path_buf()
            .into_os_string();
        name.push(".key");
        std::path::PathBuf::from(name)
    };
    let key_before = std::fs::read_to_string(&key_file).expect("key file beside the database");
    let old_base = app.base.clone();

    app.restart();
    assert_ne!(app.base, old_base, "a new listener");

    // Sessions: tokens issued before the restart still work (the JWT secret is persisted).
    assert_eq!(
        app.get("/api/v1/accounts", Some(&app.admin.token)).status,
        200
    );
    let flow = app.get(&format!("/api/v1/flows/{flow_id}"), Some(&app.user.token));
    assert_eq!(flow.status, 200, "{flow:?}");
    assert_eq!(flow.body["definition"], definition("Persistent", "1.0.0"));
    assert_eq!(flow.body["tags"], json!(["keep"]));
    // Revocations persist.
    assert_eq!(app.get("/api/v1/flows", Some(&revoked)).status, 401);
    // Accounts and secrets persist; the same secrets key is used.
    assert_eq!(
        app.get("/api/v1/accounts", Some(&app.admin.token)).body["total"],
        2
    );
    let listed = app.get(&secrets, Some(&app.user.token));
    assert_eq!(listed.body["secrets"][0]["key"], "KEEP_ME");
    assert_eq!(
        std::fs::read_to_string(&key_file).expect("key file"),
        key_before
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file)
                .expect("metadata")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // Secrets can still be replaced (the key decrypts/encrypts consistently) and logins work.
    assert_eq!(
        app.post(
            &secrets,
            Some(&app.user.token),
            json!({"key": "KEEP_ME", "value": "w"})
        )
        .status,
        200
    );
    app.login(&app.user.email, USER_PASSWORD);
}
