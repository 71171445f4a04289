//! Crash recovery of the real binary: `flowrunner serve` is killed with SIGKILL in the middle of
//! a few hundred executions (some in a delay, some in an HTTP call, some queued) and started
//! again on the same SQLite database. Every execution must then finish exactly once, every
//! completed node must be recorded exactly once, and interrupted delays must resume with their
//! remaining time instead of starting over. Talks to the server only over HTTP and WebSocket.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

const EXECUTIONS: usize = 300;
/// Every third execution waits this long: long enough to be mid-delay at the kill.
const LONG_DELAY_MS: i64 = 4_000;
/// Path of every execution, in order.
const PATH: [&str; 5] = ["prepare", "pause", "call", "shape", "finish"];
const ADMIN_EMAIL: &str = "recovery@example.com";
const ADMIN_PASSWORD: &str = "recovery-password";

/// Delay of execution `n`: 4 s for every third, else 300 to 2,500 ms.
fn delay_ms(n: usize) -> i64 {
    if n.is_multiple_of(3) {
        LONG_DELAY_MS
    } else {
        300 + (n as i64 * 97) % 2_200
    }
}

/// A `flowrunner serve` process; SIGKILLed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(db: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flowrunner"))
            .arg("serve")
            .env("FLOWRUNNER_BIND", "127.0.0.1:0")
            .env(
                "FLOWRUNNER_DATABASE_URL",
                format!("sqlite://{}", db.display()),
            )
            .env("FLOWRUNNER_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("FLOWRUNNER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("FLOWRUNNER_BCRYPT_COST", "4")
            .env("RUST_LOG", "info,actix_web::middleware::logger=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn flowrunner serve");
        let pipe = child.stderr.take().expect("stderr pipe");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some((_, rest)) = line.split_once("FlowRunner listening on http://")
                    && let Some(tx) = tx.take()
                {
                    tx.send(rest.trim().to_string()).ok();
                }
                let mut text = sink.lock().expect("stderr buffer");
                text.push_str(&line);
                text.push('\n');
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => {
                    let addr = addr.parse().expect("listening address");
                    return Server {
                        child,
                        addr,
                        stderr,
                    };
                }
                Err(_) => {
                    let exited = child.try_wait().expect("poll server");
                    if exited.is_some() || Instant::now() > deadline {
                        child.kill().ok();
                        child.wait().ok();
                        // Let the reader thread take in the last lines.
                        thread::sleep(Duration::from_millis(200));
                        let text = stderr.lock().expect("stderr buffer").clone();
                        panic!(
                            "flowrunner serve did not start (exit: {exited:?}); its stderr:\n{text}"
                        );
                    }
                }
            }
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    fn kill(&mut self) {
        self.child.kill().ok();
        self.child.wait().expect("reap flowrunner");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP/1.1 server answering every request with 200 `{"ok":true}` after 20 ms, counting
/// the requests it received.
fn start_echo_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind echo server");
    let addr = listener.local_addr().expect("echo address");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let counter = Arc::clone(&counter);
            thread::spawn(move || serve_echo_connection(stream, &counter));
        }
    });
    (addr, hits)
}

fn serve_echo_connection(stream: TcpStream, hits: &AtomicUsize) {
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if !matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            return;
        }
        let mut content_length = 0;
        loop {
            let mut header = String::new();
            if !matches!(reader.read_line(&mut header), Ok(n) if n > 0) {
                return;
            }
            if header.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.trim().eq_ignore_ascii_case("content-length")
            {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        hits.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(20));
        let reply = r#"{"ok":true}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// A logged-in client.
struct Api {
    addr: SocketAddr,
    token: String,
    agent: ureq::Agent,
}

impl Api {
    fn login(addr: SocketAddr) -> Api {
        let mut api = Api::with_token(addr, "");
        let body = api.post(
            "/auth/login",
            &json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}),
            200,
        );
        api.token = body["token"].as_str().expect("token").to_string();
        api
    }

    /// A client with its own connection.
    fn with_token(addr: SocketAddr, token: &str) -> Api {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Api {
            addr,
            token: token.to_string(),
            agent,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/api/v1{path}", self.addr)
    }

    fn read(mut response: ureq::http::Response<ureq::Body>, what: &str, expect: u16) -> Value {
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().expect("read body");
        assert_eq!(status, expect, "{what}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"))
    }

    fn post(&self, path: &str, body: &Value, expect: u16) -> Value {
        let response = self
            .agent
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Api::read(response, &format!("POST {path}"), expect)
    }

    fn get(&self, path: &str) -> Value {
        let response = self
            .agent
            .get(&self.url(path))
            .header("Authorization", &format!("Bearer {}", self.token))
            .call()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Api::read(response, &format!("GET {path}"), 200)
    }

    fn count(&self, flow_id: &str, status: &str) -> u64 {
        self.get(&format!(
            "/executions?flow_id={flow_id}&status={status}&limit=1"
        ))["total"]
            .as_u64()
            .expect("total")
    }

    /// Every message of the execution's WebSocket (history, then live, then the close), using
    /// the `?token=` form of authentication. Fails unless the server closes normally (1000).
    fn ws_history(&self, execution_id: &str) -> Vec<Value> {
        let stream = TcpStream::connect(self.addr).expect("connect WebSocket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let url = format!(
            "ws://{}/ws/executions/{execution_id}?token={}",
            self.addr, self.token
        );
        let (mut socket, _) = tungstenite::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("WebSocket handshake for {execution_id}: {e}"));
        let mut messages = Vec::new();
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    messages.push(
                        serde_json::from_str(text.as_str()).expect("WebSocket message is JSON"),
                    );
                }
                Ok(tungstenite::Message::Close(frame)) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code));
                    assert_eq!(
                        code,
                        Some(1000),
                        "{execution_id}: abnormal close {frame:?} after {messages:?}"
                    );
                    // Send the reply queued by tungstenite. The close handshake is then complete
                    // on the WebSocket level; the server's TCP close is not waited for.
                    socket.flush().ok();
                    return messages;
                }
                Ok(_) => {}
                Err(e) => panic!("WebSocket of {execution_id}: {e} after {messages:?}"),
            }
        }
    }
}

fn timestamp(value: &Value, what: &str) -> DateTime<Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {value}"));
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} `{text}`: {e}"))
        .with_timezone(&Utc)
}

fn flow_yaml(echo: SocketAddr) -> String {
    format!(
        r#"metadata:
  name: recovery
inputs:
  n: {{ type: integer, required: true }}
  wait: {{ type: string, required: true }}
nodes:
  prepare:
    type: transform
    params: {{ value: {{ n: "{{{{ input.n }}}}" }} }}
    next: pause
  pause:
    type: delay
    params: {{ duration: "{{{{ input.wait }}}}" }}
    next: call
  call:
    type: http.request
    params:
      method: POST
      url: "http://{echo}/echo"
      json: {{ n: "{{{{ input.n }}}}" }}
      timeout: 10s
    next: shape
  shape:
    type: transform
    params:
      value:
        n: "{{{{ nodes.prepare.output.n }}}}"
        status: "{{{{ nodes.call.output.status_code }}}}"
        waited_ms: "{{{{ nodes.pause.output.waited_ms }}}}"
    next: finish
  finish:
    type: transform
    params: {{ value: {{ done: true }} }}
output: "{{{{ nodes.shape.output }}}}"
"#
    )
}

/// One started execution.
#[derive(Debug, Clone)]
struct Started {
    n: usize,
    id: String,
    created_at: DateTime<Utc>,
}

#[test]
fn sigkill_mid_flight_then_restart_finishes_every_execution_exactly_once() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("fr.db");
    let (echo, hits) = start_echo_server();

    let mut server = Server::start(&db);
    let api = Api::login(server.addr);
    let flow = api.post("/flows", &json!({ "definition": flow_yaml(echo) }), 201);
    let flow_id = flow["id"].as_str().expect("flow id").to_string();

    // Start every execution from 8 client threads.
    let next = AtomicUsize::new(0);
    let started: Mutex<Vec<Started>> = Mutex::new(Vec::with_capacity(EXECUTIONS));
    thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let api = Api::with_token(api.addr, &api.token);
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= EXECUTIONS {
                        break;
                    }
                    let input = json!({ "n": n, "wait": format!("{}ms", delay_ms(n)) });
                    let run = api.post(
                        &format!("/flows/{flow_id}/run"),
                        &json!({ "input": input }),
                        202,
                    );
                    assert_eq!(run["flow_id"], flow_id.as_str(), "{run}");
                    let id = run["execution_id"]
                        .as_str()
                        .expect("execution_id")
                        .to_string();
                    let created_at = timestamp(&run["created_at"], "created_at");
                    started
                        .lock()
                        .expect("started")
                        .push(Started { n, id, created_at });
                }
            });
        }
    });
    let all_posted = Instant::now();
    eprintln!(
        "[recovery] {EXECUTIONS} executions started after {:?}",
        test_started.elapsed()
    );
    let mut started = started.into_inner().expect("started");
    started.sort_by_key(|s| s.n);
    assert_eq!(started.len(), EXECUTIONS);

    // Kill once some have completed, and at least 1.5 s after the last start, so that every
    // long delay has run for a while (and has a while to go).
    let mut completed_before_kill;
    loop {
        completed_before_kill = api.count(&flow_id, "completed");
        if completed_before_kill >= 20 && all_posted.elapsed() >= Duration::from_millis(1_500) {
            break;
        }
        assert!(
            test_started.elapsed() < Duration::from_secs(40),
            "only {completed_before_kill} executions completed before the kill deadline; server stderr:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(50));
    }
    let unfinished_at_kill = EXECUTIONS as u64 - completed_before_kill;
    let hits_before_kill = hits.load(Ordering::SeqCst);
    server.kill();
    let killed_at = Utc::now();
    eprintln!(
        "[recovery] SIGKILL after {:?}, {unfinished_at_kill} unfinished",
        test_started.elapsed()
    );
    assert!(
        unfinished_at_kill >= 30,
        "the kill should hit many unfinished executions, only {unfinished_at_kill} were"
    );

    let restarted_at = Utc::now();
    let server = Server::start(&db);
    let api = Api::login(server.addr);
    eprintln!("[recovery] restarted after {:?}", test_started.elapsed());

    // Wait until every execution is terminal.
    let deadline = Instant::now() + Duration::from_secs(40);
    let (completed, failed, cancelled) = loop {
        let counts = (
            api.count(&flow_id, "completed"),
            api.count(&flow_id, "failed"),
            api.count(&flow_id, "cancelled"),
        );
        if (counts.0 + counts.1 + counts.2) as usize >= EXECUTIONS {
            break counts;
        }
        assert!(
            Instant::now() < deadline,
            "not every execution finished after the restart: {counts:?} of {EXECUTIONS}; server stderr:\n{}",
            server.stderr()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        (completed, failed, cancelled),
        (EXECUTIONS as u64, 0, 0),
        "server stderr:\n{}",
        server.stderr()
    );

    eprintln!("[recovery] all terminal after {:?}", test_started.elapsed());

    // The list holds exactly the executions started, once each.
    let mut listed = BTreeSet::new();
    let mut offset = 0;
    loop {
        let page = api.get(&format!(
            "/executions?flow_id={flow_id}&limit=100&offset={offset}"
        ));
        assert_eq!(
            page["total"].as_u64(),
            Some(EXECUTIONS as u64),
            "{}",
            page["total"]
        );
        let rows = page["executions"].as_array().expect("executions");
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let id = row["id"].as_str().expect("id").to_string();
            assert!(listed.insert(id.clone()), "{id} listed twice");
        }
        offset += rows.len();
    }
    let expected: BTreeSet<String> = started.iter().map(|s| s.id.clone()).collect();
    assert_eq!(listed, expected);

    let mut resumed_long = 0;
    for run in &started {
        let id = &run.id;
        let execution = api.get(&format!("/executions/{id}"));
        assert_eq!(execution["status"], "completed", "{execution}");
        assert_eq!(execution["result"]["n"], json!(run.n), "{execution}");
        assert_eq!(execution["result"]["status"], json!(200), "{execution}");
        let completed_at = timestamp(&execution["completed_at"], "completed_at");

        // The WebSocket history: contiguous sequence numbers, every node of the path completed
        // exactly once and in order, one terminal message, last.
        let messages = api.ws_history(id);
        assert!(!messages.is_empty(), "{id}: empty WebSocket history");
        let mut previous_seq: Option<u64> = None;
        let mut nodes = Vec::new();
        let mut terminal = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            assert_eq!(message["execution_id"], id.as_str(), "{message}");
            timestamp(&message["timestamp"], "message timestamp");
            let seq = message["seq"]
                .as_u64()
                .unwrap_or_else(|| panic!("{id}: message without seq: {message}"));
            if let Some(previous) = previous_seq {
                assert_eq!(
                    seq,
                    previous + 1,
                    "{id}: seq not contiguous in {messages:#?}"
                );
            }
            previous_seq = Some(seq);
            match message["type"].as_str() {
                Some("node_completed") => {
                    nodes.push(message["node_id"].as_str().expect("node_id").to_string())
                }
                Some(
                    kind @ ("execution_completed" | "execution_failed" | "execution_cancelled"),
                ) => {
                    terminal.push((i, kind.to_string()));
                }
                _ => {}
            }
        }
        assert_eq!(
            nodes, PATH,
            "{id}: node records duplicated, lost or out of order: {messages:#?}"
        );
        assert_eq!(
            terminal,
            vec![(messages.len() - 1, "execution_completed".to_string())],
            "{id}: expected exactly one terminal message, last: {messages:#?}"
        );

        // The execution log: started once, completed once (a resume adds its own line).
        let logs = api.get(&format!("/executions/{id}/logs?limit=100"));
        let lines: Vec<&str> = logs["logs"]
            .as_array()
            .expect("logs")
            .iter()
            .filter_map(|l| l["message"].as_str())
            .collect();
        for once in ["Execution started", "Execution completed"] {
            let count = lines.iter().filter(|l| **l == once).count();
            assert_eq!(count, 1, "{id}: {count} `{once}` log lines in {lines:?}");
        }

        // Delays run their full length, and an interrupted one resumes with its remaining
        // time: had it started over after the restart, it would end 4 s after the restart.
        let delay = chrono::TimeDelta::milliseconds(delay_ms(run.n));
        assert!(
            completed_at - run.created_at >= delay,
            "{id}: finished before its {delay} delay"
        );
        if delay_ms(run.n) == LONG_DELAY_MS && completed_at > killed_at {
            resumed_long += 1;
            assert!(
                completed_at < restarted_at + chrono::TimeDelta::milliseconds(3_500),
                "{id} (created {}, killed {killed_at}, restarted {restarted_at}) completed at {completed_at}: \
                 its delay started over instead of resuming",
                run.created_at
            );
        }
    }
    assert!(
        resumed_long >= 10,
        "only {resumed_long} long delays were interrupted: the test proves little"
    );

    // Each execution called the HTTP server at least once; only calls in flight at the kill may
    // have been repeated.
    let hits = hits.load(Ordering::SeqCst);
    assert!(
        hits >= EXECUTIONS,
        "{hits} HTTP calls for {EXECUTIONS} executions"
    );
    assert!(
        hits - EXECUTIONS <= unfinished_at_kill as usize,
        "{hits} HTTP calls: more repeats than executions in flight at the kill ({unfinished_at_kill}; \
         {hits_before_kill} calls before it)"
    );
}
