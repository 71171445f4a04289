//! Start-up without HTTP: migrations, the first administrator, the persisted JWT secret and
//! configuration errors.

use flowrunner_api::setup::{self, FALLBACK_ADMIN_EMAIL, JWT_SECRET_SETTING};
use flowrunner_api::{BootstrapAdmin, Error, ServerConfig};
use flowrunner_domain::{AccountId, Role};
use flowrunner_store::testing::TestDatabase;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(db: &TestDatabase) -> ServerConfig {
    let mut config = ServerConfig::new(db.url());
    config.bcrypt_cost = 4;
    config
}

#[test]
fn empty_database_gets_one_generated_admin_and_a_persisted_jwt_secret() {
    let db = TestDatabase::sqlite().expect("db");
    let config = config(&db);
    runtime().block_on(async {
        let first = setup::prepare(&config).await.expect("prepare");
        assert_eq!(first.store().count_accounts().await.expect("count"), 1);
        let admin = first
            .store()
            .find_account_by_email(FALLBACK_ADMIN_EMAIL)
            .await
            .expect("find")
            .expect("admin");
        assert_eq!(admin.role, Role::Admin);
        assert!(
            admin.password_hash.starts_with("$2b$04$"),
            "hashed with the configured cost"
        );
        let secret = first
            .store()
            .get_setting(JWT_SECRET_SETTING)
            .await
            .expect("setting")
            .expect("stored");
        assert_eq!(secret.len(), 64);
        let token = first.auth().login(&admin.id, admin.role).expect("token");

        // A second start: no new account, the same secret, so the old token still verifies.
        let second = setup::prepare(&config).await.expect("prepare again");
        assert_eq!(second.store().count_accounts().await.expect("count"), 1);
        assert_eq!(
            second
                .store()
                .get_setting(JWT_SECRET_SETTING)
                .await
                .expect("setting"),
            Some(secret)
        );
        let principal = second
            .authenticate(&token.token)
            .await
            .expect("still valid");
        assert_eq!(principal.account_id, admin.id);
    });
}

#[test]
fn configured_admin_and_jwt_secret_are_used() {
    let db = TestDatabase::sqlite().expect("db");
    let mut config = config(&db);
    config.admin = Some(BootstrapAdmin {
        email: "Boss@Example.com".into(),
        password: "boss-password".into(),
    });
    config.jwt_secret = Some("x".repeat(40));
    runtime().block_on(async {
        let state = setup::prepare(&config).await.expect("prepare");
        let boss = state
            .store()
            .find_account_by_email("boss@example.com")
            .await
            .expect("find")
            .expect("created");
        assert_eq!(boss.role, Role::Admin);
        assert_eq!(
            state
                .store()
                .get_setting(JWT_SECRET_SETTING)
                .await
                .expect("setting"),
            None
        );
        let token = state.auth().login(&boss.id, Role::Admin).expect("token");
        let other = flowrunner_auth::TokenService::new("x".repeat(40).as_bytes(), config.token_ttl)
            .expect("tokens");
        other
            .verify(&token.token)
            .expect("signed with the configured secret");
        assert!(AccountId::parse(boss.id.as_str()).is_ok());
    });
}

#[test]
fn configuration_errors_are_reported() {
    let db = TestDatabase::sqlite().expect("db");
    runtime().block_on(async {
        let mut short_password = config(&db);
        short_password.admin = Some(BootstrapAdmin {
            email: "a@example.com".into(),
            password: "short".into(),
        });
        assert!(matches!(
            setup::prepare(&short_password).await,
            Err(Error::Config(_))
        ));

        let mut weak_secret = config(&db);
        weak_secret.jwt_secret = Some("too-short".into());
        assert!(matches!(
            setup::prepare(&weak_secret).await,
            Err(Error::Config(_))
        ));

        let mut bad_cost = config(&db);
        bad_cost.bcrypt_cost = 99;
        assert!(matches!(
            setup::prepare(&bad_cost).await,
            Err(Error::Config(_))
        ));

        let postgres = ServerConfig::new("postgres://nobody@127.0.0.1:1/none");
        let err = setup::prepare(&postgres).await.expect_err("no secret key");
        assert!(
            matches!(&err, Error::Config(m) if m.contains("FLOWRUNNER_SECRET_KEY")),
            "{err}"
        );
    });
}

#[test]
fn migrate_applies_once_and_create_account_checks_input() {
    let db = TestDatabase::sqlite().expect("db");
    let database = flowrunner_api::DatabaseConfig::new(db.url());
    runtime().block_on(async {
        assert!(!setup::migrate(&database).await.expect("migrate").is_empty());
        assert!(setup::migrate(&database).await.expect("again").is_empty());

        let store = setup::open_store(&database).await.expect("open");
        let hasher = flowrunner_auth::PasswordHasher::new(4).expect("hasher");
        let input = setup::AccountInput {
            email: "cli@example.com".into(),
            name: "From CLI".into(),
            password: "cli-password".into(),
            role: Role::User,
        };
        let account = setup::create_account(&store, &hasher, input.clone())
            .await
            .expect("created");
        assert_eq!(account.email, "cli@example.com");
        assert!(
            hasher
                .verify("cli-password", &account.password_hash)
                .expect("verify")
        );
        assert!(matches!(
            setup::create_account(&store, &hasher, input.clone()).await,
            Err(Error::Conflict(_))
        ));
        let bad = setup::AccountInput {
            email: "nope".into(),
            ..input
        };
        assert!(matches!(
            setup::create_account(&store, &hasher, bad).await,
            Err(Error::Validation { .. })
        ));
    });
}
