//! `flowrunner serve` as an operator runs it: it starts on a fresh SQLite file, answers
//! `/healthz`, and shuts down gracefully (exit status 0) on SIGTERM and on SIGINT, keeping
//! what it stored for the next start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    addr: String,
}

fn start(dir: &tempfile::TempDir) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowrunner"))
        .arg("serve")
        .env("FLOWRUNNER_BIND", "127.0.0.1:0")
        .env(
            "FLOWRUNNER_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("fr.db").display()),
        )
        .env("FLOWRUNNER_ADMIN_EMAIL", "ops@example.com")
        .env("FLOWRUNNER_ADMIN_PASSWORD", "correct horse battery")
        .env("FLOWRUNNER_BCRYPT_COST", "4")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn flowrunner serve");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server prints its address before anything ends it")
            .expect("read stderr");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.trim().to_string();
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Server { child, addr }
}

fn healthz(addr: &str) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    agent
        .get(&format!("http://{addr}/healthz"))
        .call()
        .expect("GET /healthz")
        .status()
        .as_u16()
}

fn stop_with(server: Server, signal: &str) {
    let Server { mut child, .. } = server;
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                status.success(),
                "{signal}: graceful shutdown exits 0, got {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{signal}: the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_answers_and_stops_gracefully_on_sigterm_and_sigint() {
    let dir = tempfile::tempdir().expect("tempdir");

    let server = start(&dir);
    assert_eq!(healthz(&server.addr), 200);
    stop_with(server, "-TERM");

    // Same database: it starts again (migrations already applied, admin already there).
    let server = start(&dir);
    assert_eq!(healthz(&server.addr), 200);
    stop_with(server, "-INT");
}
