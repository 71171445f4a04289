//! A representative subset on PostgreSQL when `FLOWRUNNER_TEST_POSTGRES_URL` is set.

use flowrunner_store::testing::TestDatabase;

use crate::common::TestApp;

#[test]
fn representative_subset_on_postgres() {
    let Some(db) = TestDatabase::postgres().expect("postgres test database") else {
        // TestDatabase::postgres printed the skip message.
        return;
    };
    let app = TestApp::start_on(db);
    assert!(app.is_postgres());
    let health = app.get("/healthz", None);
    assert_eq!(health.body["database"], "postgres");
    crate::flows::lifecycle(&app);
    crate::secrets::lifecycle(&app);
    crate::accounts::rules(&app);
    crate::executions::lifecycle(&app);
    crate::executions::run_and_wait(&app);
    crate::ws::late_join(&app);
}
