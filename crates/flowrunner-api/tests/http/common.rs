//! `TestApp`: the real server on 127.0.0.1:0 over a fresh database, with an admin and a user.

use std::net::TcpListener;
use std::time::Duration;

use flowrunner_api::{BootstrapAdmin, RunningServer, ServerConfig};
use flowrunner_domain::{AccountId, Role};
use flowrunner_store::testing::TestDatabase;
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const USER_PASSWORD: &str = "user-password-1";

/// A small valid flow definition (two nodes).
pub fn definition(name: &str, version: &str) -> String {
    format!(
        "metadata:\n  name: \"{name}\"\n  description: \"About {name}\"\n  version: \"{version}\"\n  tags: [\"meta\"]\n\nnodes:\n  start:\n    type: \"http.request\"\n    params:\n      url: \"https://api.example.com/data\"\n      method: \"GET\"\n    next:\n      default: \"end\"\n\n  end:\n    type: \"webhook\"\n    params:\n      url: \"https://webhook.example.com/callback\"\n      method: \"POST\"\n"
    )
}

/// A definition with an unknown node type and a dangling `next` (two errors).
pub const BROKEN_DEFINITION: &str = "metadata:\n  name: broken\nnodes:\n  start:\n    type: no.such.type\n    next:\n      default: missing\n";

/// An HTTP answer.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub headers: ureq::http::HeaderMap,
}

impl Resp {
    /// The error code of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no envelope>")
    }
}

/// A logged-in account.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub email: String,
    pub password: String,
    pub token: String,
}

pub struct TestApp {
    runtime: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    config: ServerConfig,
    agent: ureq::Agent,
    pub base: String,
    pub admin: Session,
    pub user: Session,
    // Dropped last: the server and its pool go first.
    db: TestDatabase,
}

fn test_config(db: &TestDatabase) -> ServerConfig {
    let mut config = ServerConfig::new(db.url());
    config.executions.blocking_threads = 2;
    config.executions.cancel_wait = Duration::from_secs(5);
    // SQLite: no key configured, so the key file beside the database is exercised.
    // PostgreSQL requires one.
    if db.sqlite_path().is_none() {
        config.database.secret_key = Some(flowrunner_store::format_secret_key(&db.secret_key()));
    }
    config.database.pool_size = 4;
    config.admin = Some(BootstrapAdmin {
        email: ADMIN_EMAIL.into(),
        password: ADMIN_PASSWORD.into(),
    });
    config.bcrypt_cost = 4;
    config.workers = Some(2);
    config.shutdown_timeout = Duration::from_secs(5);
    config
}

impl TestApp {
    /// A server over a fresh SQLite file.
    pub fn start() -> Self {
        Self::start_on(TestDatabase::sqlite().expect("sqlite test database"))
    }

    /// Like [`TestApp::start`] with an adjusted configuration.
    pub fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let db = TestDatabase::sqlite().expect("sqlite test database");
        let mut config = test_config(&db);
        adjust(&mut config);
        Self::launch(db, config)
    }

    /// A server over the given database.
    pub fn start_on(db: TestDatabase) -> Self {
        let config = test_config(&db);
        Self::launch(db, config)
    }

    fn launch(db: TestDatabase, config: ServerConfig) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let server = boot(&runtime, &config);
        let base = format!("http://{}", server.local_addr());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let placeholder = Session {
            id: String::new(),
            email: String::new(),
            password: String::new(),
            token: String::new(),
        };
        let mut app = TestApp {
            runtime,
            server: Some(server),
            config,
            agent,
            base,
            admin: placeholder.clone(),
            user: placeholder,
            db,
        };
        let login = app.post(
            "/api/v1/auth/login",
            None,
            json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
        );
        assert_eq!(login.status, 200, "admin login: {login:?}");
        app.admin = Session {
            id: login.body["account_id"]
                .as_str()
                .expect("account id")
                .to_string(),
            email: ADMIN_EMAIL.into(),
            password: ADMIN_PASSWORD.into(),
            token: login.body["token"].as_str().expect("token").to_string(),
        };
        app.user = app.create_user("user@example.com", Role::User);
        app
    }

    pub fn is_postgres(&self) -> bool {
        self.db.sqlite_path().is_none()
    }

    /// Creates an account through the API (as the admin) and logs it in.
    pub fn create_user(&self, email: &str, role: Role) -> Session {
        let created = self.post(
            "/api/v1/accounts",
            Some(&self.admin.token),
            json!({"name": "Test User", "email": email, "password": USER_PASSWORD, "role": role.as_str()}),
        );
        assert_eq!(created.status, 201, "{created:?}");
        let token = self.login(email, USER_PASSWORD);
        Session {
            id: created.body["id"].as_str().expect("id").to_string(),
            email: email.into(),
            password: USER_PASSWORD.into(),
            token,
        }
    }

    pub fn login(&self, email: &str, password: &str) -> String {
        let r = self.post(
            "/api/v1/auth/login",
            None,
            json!({"username": email, "password": password}),
        );
        assert_eq!(r.status, 200, "login {email}: {r:?}");
        r.body["token"].as_str().expect("token").to_string()
    }

    /// A correctly signed token that expired an hour ago.
    pub fn expired_token(&self, account_id: &str) -> String {
        let server = self.server.as_ref().expect("running");
        let id = AccountId::parse(account_id).expect("account id");
        let issued_at = chrono::Utc::now() - chrono::Duration::hours(3);
        server
            .state()
            .auth()
            .tokens()
            .issue_at(&id, Role::User, issued_at)
            .expect("issue")
            .token
    }

    /// Any method, optional bearer token, optional raw body with a content type.
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, Vec<u8>)>,
    ) -> Resp {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(token) = token {
            builder = builder.header("Authorization", format!("Bearer {token}"));
        }
        let result = match body {
            Some((content_type, bytes)) => {
                let request = builder
                    .header("Content-Type", content_type)
                    .body(bytes)
                    .expect("request");
                self.agent.run(request)
            }
            None => self.agent.run(builder.body(()).expect("request")),
        };
        let mut response = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .body_mut()
            .with_config()
            .limit(16 * 1024 * 1024)
            .read_to_string()
            .expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Resp {
            status,
            body,
            headers,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let body = body.map(|v| ("application/json", serde_json::to_vec(&v).expect("json")));
        self.raw(method, path, token, body)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.request("GET", path, token, None)
    }

    pub fn post(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request("POST", path, token, Some(body))
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: Value) -> Resp {
        self.request("PUT", path, token, Some(body))
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Resp {
        self.request("DELETE", path, token, None)
    }

    /// Creates a flow as `token`'s account; returns its id.
    pub fn create_flow(&self, token: &str, name: &str, tags: &[&str]) -> String {
        let r = self.post(
            "/api/v1/flows",
            Some(token),
            json!({"name": name, "definition": definition(name, "1.0.0"), "tags": tags}),
        );
        assert_eq!(r.status, 201, "{r:?}");
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Stops the server gracefully and starts a new one on the same database (new port).
    pub fn restart(&mut self) {
        if let Some(server) = self.server.take() {
            self.runtime.block_on(server.stop()).expect("graceful stop");
        }
        let server = boot(&self.runtime, &self.config);
        self.base = format!("http://{}", server.local_addr());
        self.server = Some(server);
    }

    /// The running server's application state (store, token service).
    pub fn state(&self) -> &flowrunner_api::AppState {
        self.server.as_ref().expect("running").state()
    }

    /// Runs a future on the server's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    pub fn sqlite_path(&self) -> Option<&std::path::Path> {
        self.db.sqlite_path()
    }
}

fn boot(runtime: &tokio::runtime::Runtime, config: &ServerConfig) -> RunningServer {
    runtime.block_on(async {
        let state = flowrunner_api::setup::prepare(config)
            .await
            .expect("prepare");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        flowrunner_api::start(state, config, listener).expect("start")
    })
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _stopped = self.runtime.block_on(server.stop());
        }
    }
}

/// An offline flow with declared inputs: two log nodes (info, warn) and a transform.
pub const LOG_FLOW: &str = "metadata:\n  name: greeter\n  version: \"1.0.0\"\ninputs:\n  name: { type: string, required: true }\n  count: { type: integer, default: 1 }\nnodes:\n  hello:\n    type: log\n    params:\n      message: \"hello {{ input.name }}\"\n    next: careful\n  careful:\n    type: log\n    params:\n      level: warn\n      message: \"careful {{ input.name }}\"\n    next: done\n  done:\n    type: transform\n    params:\n      value: { greeted: \"{{ input.name }}\", count: \"{{ input.count }}\" }\noutput: \"{{ nodes.done.output }}\"\n";

/// A flow that waits `wait`, then answers `{"label": label}`; with `concurrency` set, at most
/// that many of its executions run at once.
pub fn delay_flow(wait: &str, label: &str, concurrency: Option<u32>) -> String {
    let concurrency = concurrency.map_or(String::new(), |n| format!("  concurrency: {n}\n"));
    format!(
        "metadata:\n  name: waiter\n  version: \"1.0.0\"\n{concurrency}nodes:\n  pause:\n    type: delay\n    params:\n      duration: {wait}\n    next: done\n  done:\n    type: transform\n    params:\n      value: {{ label: {label} }}\noutput: \"{{{{ nodes.done.output }}}}\"\n"
    )
}

/// A flow whose only node calls `url` (GET, 30 s timeout, no retry).
pub fn http_flow(url: &str) -> String {
    format!(
        "metadata:\n  name: caller\n  version: \"1.0.0\"\nnodes:\n  call:\n    type: http.request\n    params:\n      url: \"{url}\"\n      timeout: 30s\n"
    )
}

/// A flow that fails at node `boom`.
pub const FAIL_FLOW: &str = "metadata:\n  name: failing\n  version: \"1.0.0\"\nnodes:\n  boom:\n    type: fail\n    params:\n      message: \"it broke\"\n";

impl TestApp {
    /// Creates a flow from a definition as `token`'s account; returns its id.
    pub fn create_flow_from(&self, token: &str, definition: &str) -> String {
        let r = self.post(
            "/api/v1/flows",
            Some(token),
            json!({"definition": definition}),
        );
        assert_eq!(r.status, 201, "{r:?}");
        r.body["id"].as_str().expect("id").to_string()
    }

    /// Runs a flow; asserts 202 and returns the execution id.
    pub fn run_flow(&self, token: &str, flow_id: &str, input: Value) -> String {
        let r = self.post(
            &format!("/api/v1/flows/{flow_id}/run"),
            Some(token),
            json!({ "input": input }),
        );
        assert_eq!(r.status, 202, "{r:?}");
        r.body["execution_id"]
            .as_str()
            .expect("execution id")
            .to_string()
    }

    /// Polls `GET /executions/{id}` until `done` holds for its body (5 s at most).
    pub fn wait_execution(&self, token: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = self.get(&format!("/api/v1/executions/{id}"), Some(token));
            assert_eq!(r.status, 200, "{r:?}");
            if done(&r.body) {
                return r.body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "execution {id} never reached the expected state: {}",
                r.body
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Polls until the execution has a terminal status.
    pub fn wait_finished(&self, token: &str, id: &str) -> Value {
        self.wait_execution(token, id, |e| {
            matches!(
                e["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        })
    }

    /// The `ws://` URL of a path.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.base.trim_start_matches("http://"), path)
    }
}
