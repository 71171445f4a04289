//! `cargo xtask bench server`: end-to-end benchmark of the release server, driven only over
//! HTTP and WebSocket like any client (throughput, durable per-node overhead, memory and
//! wake-up of sleeping executions). How to read the figures: docs/benchmarks.md.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::{Value, json};

const USAGE: &str = "\
cargo xtask bench server [options]

Builds `flowrunner` in release mode, starts it on 127.0.0.1 with a fresh SQLite database in a
temporary directory and measures, in one run:
  1. executions/s and latency of a 3-node transform flow under concurrent clients
  2. durable per-node overhead: (median of a 40-node chain - median of a 10-node chain) / 30
  3. server RSS with many executions waiting in a `delay` node, and how promptly they wake

Options:
  --clients N       concurrent client threads for (1) and for starting (3) [64]
  --executions N    executions in (1) [20000]
  --samples N       sequential executions of each chain in (2) [200]
  --sleepers N      executions waiting in a delay in (3) [10000]
  --sleep SECONDS   length of that delay [20]
  --wait run|ws|poll  how a client waits for completion: `run` (default) asks the run request
                    itself to answer once the execution has ended (POST /flows/{id}/run?wait=120);
                    `ws` starts it, then follows its WebSocket until the terminal message;
                    `poll` starts it, then polls GET /executions/{id}
  --access-log      keep the server's per-request access log (off by default)
  --only LIST       comma-separated subset of: throughput,overhead,memory
  --bin PATH        benchmark this `flowrunner` executable instead of building one
  --database-url URL  run the server on this database instead of a fresh SQLite file, e.g. an
                    empty PostgreSQL database (postgres://user@host/db); a fixed bench secret
                    key is set for it
";

/// Goals printed next to the results.
const GOAL_EXEC_PER_SEC: f64 = 5_000.0;
const GOAL_US_PER_NODE: f64 = 100.0;
const GOAL_RSS_MIB: f64 = 256.0;

const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench-password-not-secret";

/// An execution a client ran to its end.
struct Execution {
    id: String,
    /// When the client learnt that it had ended.
    seen: Instant,
}

/// How a client waits for an execution to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitMode {
    /// `POST /flows/{id}/run?wait=…`: the run request itself answers once the execution ended.
    Run,
    /// Open `/ws/executions/{id}` and read until the terminal message (pushed by the server).
    WebSocket,
    /// `GET /executions/{id}` with a short, growing pause between attempts.
    Poll,
}

#[derive(Debug, Clone)]
struct Options {
    clients: usize,
    executions: usize,
    samples: usize,
    sleepers: usize,
    sleep: Duration,
    wait: WaitMode,
    access_log: bool,
    bin: Option<PathBuf>,
    database_url: Option<String>,
    throughput: bool,
    overhead: bool,
    memory: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            clients: 64,
            executions: 20_000,
            samples: 200,
            sleepers: 10_000,
            sleep: Duration::from_secs(20),
            wait: WaitMode::Run,
            access_log: false,
            bin: None,
            database_url: None,
            throughput: true,
            overhead: true,
            memory: true,
        }
    }
}

fn parse_options(args: &[String]) -> Result<Options> {
    fn number(flag: &str, value: Option<&String>) -> Result<usize> {
        let text = value.with_context(|| format!("{flag} needs a value"))?;
        let n: usize = text
            .parse()
            .with_context(|| format!("{flag}: `{text}` is not a number"))?;
        ensure!(n > 0, "{flag} must be positive");
        Ok(n)
    }
    let mut opts = Options::default();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clients" => opts.clients = number(arg, args.next())?,
            "--executions" => opts.executions = number(arg, args.next())?,
            "--samples" => opts.samples = number(arg, args.next())?,
            "--sleepers" => opts.sleepers = number(arg, args.next())?,
            "--sleep" => opts.sleep = Duration::from_secs(number(arg, args.next())? as u64),
            "--wait" => {
                opts.wait = match args.next().map(String::as_str) {
                    Some("run") => WaitMode::Run,
                    Some("ws") => WaitMode::WebSocket,
                    Some("poll") => WaitMode::Poll,
                    other => bail!("--wait expects `run`, `ws` or `poll`, got {other:?}"),
                }
            }
            "--access-log" => opts.access_log = true,
            "--bin" => opts.bin = Some(PathBuf::from(args.next().context("--bin needs a path")?)),
            "--database-url" => {
                opts.database_url = Some(args.next().context("--database-url needs a URL")?.clone())
            }
            "--only" => {
                let list = args.next().context("--only needs a value")?;
                opts.throughput = false;
                opts.overhead = false;
                opts.memory = false;
                for part in list.split(',') {
                    match part.trim() {
                        "throughput" => opts.throughput = true,
                        "overhead" => opts.overhead = true,
                        "memory" => opts.memory = true,
                        other => bail!("--only: unknown phase `{other}`"),
                    }
                }
            }
            "--help" | "-h" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    Ok(opts)
}

/// Entry point of `cargo xtask bench server [options]`.
pub fn run(args: &[String]) -> Result<()> {
    let opts = parse_options(args)?;
    let bin = match &opts.bin {
        Some(bin) => bin.clone(),
        None => build_release()?,
    };
    let server = Server::start(&bin, opts.access_log, opts.database_url.as_deref())?;
    println!(
        "server pid {} on http://{} (log: {})",
        server.pid(),
        server.addr,
        server.log_path.display()
    );
    let outcome = measure(&server, &opts);
    if outcome.is_err() {
        eprintln!("server log tail:\n{}", server.log_tail(40));
    }
    server.stop();
    let report = outcome?;
    print!("{}", report.render(&opts));
    Ok(())
}

/// `cargo build --release -p flowrunner`, returning the path of the built executable (honours
/// `CARGO_TARGET_DIR` and any other cargo configuration, since cargo reports the path).
fn build_release() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let args = [
        "build",
        "--release",
        "-p",
        "flowrunner",
        "--message-format=json-render-diagnostics",
    ];
    println!("$ cargo {}", args.join(" "));
    let out = Command::new(cargo)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    ensure!(
        out.status.success(),
        "`cargo build --release -p flowrunner` failed ({})",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "flowrunner")
        .find_map(|msg| msg["executable"].as_str().map(PathBuf::from))
        .context("cargo did not report the `flowrunner` executable")
}

/// The server process under test; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    log_path: PathBuf,
    // Fields drop after `Drop::drop` has killed the server, so the database outlives it.
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(bin: &Path, access_log: bool, database_url: Option<&str>) -> Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("flowrunner-bench-")
            .tempdir()
            .context("creating a temp dir")?;
        let log_path = dir.path().join("server.log");
        let db = dir.path().join("fr.db");
        let rust_log = if access_log {
            "info"
        } else {
            "info,actix_web::middleware::logger=warn"
        };
        let mut child = Command::new(bin)
            .arg("serve")
            .env("FLOWRUNNER_BIND", "127.0.0.1:0")
            .env(
                "FLOWRUNNER_DATABASE_URL",
                database_url.map_or_else(|| format!("sqlite://{}", db.display()), str::to_string),
            )
            // Required with PostgreSQL (SQLite keeps its key beside the file); not secret.
            .env(
                "FLOWRUNNER_SECRET_KEY",
                "62656e63682d6b65792d6e6f742d7365637265742d6e6f742d7365637265742e",
            )
            .env("FLOWRUNNER_ADMIN_EMAIL", ADMIN_EMAIL)
            .env("FLOWRUNNER_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("server stderr")?;
        let mut log = std::fs::File::create(&log_path).context("creating the server log")?;
        let (tx, rx) = mpsc::channel();
        // Drains stderr for the whole life of the server (a full pipe would block it) into the
        // log file, and reports the listening address once.
        thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    // The receiver may have given up already; nothing else to tell then.
                    tx.send(addr).ok();
                }
                if writeln!(log, "{line}").is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(addr) => break Some(addr),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if child.try_wait().context("polling the server")?.is_some()
                        || Instant::now() > deadline
                    {
                        break None;
                    }
                }
            }
        };
        let Some(addr) = addr else {
            child.kill().ok();
            child.wait().ok();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the server did not report its address; its stderr:\n{log}");
        };
        Ok(Server {
            child,
            addr,
            log_path,
            _dir: dir,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `VmRSS` and `VmHWM` of the server process, in KiB.
    fn memory_kib(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading /proc")?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("{name} missing from /proc/<pid>/status"))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time (user + system) the server has used so far.
    fn cpu_time(&self) -> Result<Duration> {
        process_cpu_time(&format!("/proc/{}/stat", self.pid()))
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // SIGKILL: the benchmark is over and the database is thrown away.
            self.child.kill().ok();
        }
        self.child.wait().ok();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once("FlowRunner listening on http://")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// utime + stime from a `/proc/<pid>/stat` file (clock ticks, assumed 100 per second as on
/// every Linux configuration this runs on).
fn process_cpu_time(path: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // Fields after the `(comm)` one, which may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 12 and 13 after `(comm)` and state.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed stat")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// A logged-in API client. Each thread makes its own (one keep-alive connection each).
#[derive(Debug, Clone)]
struct Api {
    addr: SocketAddr,
    base: String,
    bearer: String,
    agent: ureq::Agent,
}

fn new_agent() -> ureq::Agent {
    // Requests and answers are small: ureq's default 128 KiB buffers only cost copying on the
    // cores the client shares with the server. No global or resolve timeout: with one, ureq
    // resolves the address on a new thread for every request (even for an IP address). Only
    // connecting and waiting for an answer are bounded (each bound costs socket calls).
    let limit = Some(Duration::from_secs(120));
    ureq::Agent::config_builder()
        .input_buffer_size(4 * 1024)
        .output_buffer_size(4 * 1024)
        .http_status_as_error(false)
        .timeout_connect(limit)
        .timeout_recv_response(limit)
        .build()
        .into()
}

impl Api {
    fn login(addr: SocketAddr) -> Result<Api> {
        let base = format!("http://{addr}/api/v1");
        let mut api = Api {
            addr,
            base,
            bearer: String::new(),
            agent: new_agent(),
        };
        let body = api.call(
            "POST",
            "/auth/login",
            Some(&json!({"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
            200,
        )?;
        let token = body["token"]
            .as_str()
            .context("login answer without `token`")?;
        api.bearer = format!("Bearer {token}");
        Ok(api)
    }

    /// A copy with its own connection.
    fn fresh(&self) -> Api {
        Api {
            agent: new_agent(),
            ..self.clone()
        }
    }

    /// Sends a request and returns the JSON body, failing unless the status is `expect`.
    fn call(&self, method: &str, path: &str, body: Option<&Value>, expect: u16) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let response = match (method, body) {
            ("GET", None) => self
                .agent
                .get(&url)
                .header("Authorization", &self.bearer)
                .call(),
            ("POST", Some(body)) => self
                .agent
                .post(&url)
                .header("Authorization", &self.bearer)
                .send_json(body),
            _ => bail!("unsupported request {method} {path}"),
        };
        let mut response = response.with_context(|| format!("{method} {path}"))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{method} {path}: reading the body"))?;
        ensure!(
            status == expect,
            "{method} {path}: expected {expect}, got {status}: {text}"
        );
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: body is not JSON: {text}"))
    }

    fn create_flow(&self, definition: &str) -> Result<String> {
        let flow = self.call(
            "POST",
            "/flows",
            Some(&json!({ "definition": definition })),
            201,
        )?;
        flow["id"]
            .as_str()
            .map(str::to_string)
            .context("flow without `id`")
    }

    /// `POST /flows/{id}/run{query}`, answered with `expect`; returns the body.
    fn run(&self, flow_id: &str, input: Value, query: &str, expect: u16) -> Result<Value> {
        self.call(
            "POST",
            &format!("/flows/{flow_id}/run{query}"),
            Some(&json!({ "input": input })),
            expect,
        )
    }

    /// `POST /flows/{id}/run`; returns the execution id.
    fn start(&self, flow_id: &str, input: Value) -> Result<String> {
        let body = self.run(flow_id, input, "", 202)?;
        body["execution_id"]
            .as_str()
            .map(str::to_string)
            .context("run answer without `execution_id`")
    }

    /// Runs the flow and waits until the execution is terminal; returns its id, final status
    /// and when the client learnt it.
    fn execute(&self, flow_id: &str, input: Value, mode: WaitMode) -> Result<Execution> {
        let (id, (status, seen)) = match mode {
            WaitMode::Run => {
                let body = self.run(flow_id, input, "?wait=120", 200)?;
                let seen = Instant::now();
                let id = body["execution_id"]
                    .as_str()
                    .context("run answer without `execution_id`")?;
                let status = body["status"]
                    .as_str()
                    .context("run answer without `status`")?;
                (id.to_string(), (status.to_string(), seen))
            }
            WaitMode::WebSocket => {
                let id = self.start(flow_id, input)?;
                let end = self.wait_ws(&id)?;
                (id, end)
            }
            WaitMode::Poll => {
                let id = self.start(flow_id, input)?;
                let end = self.wait_poll(&id)?;
                (id, end)
            }
        };
        ensure!(status == "completed", "execution {id} ended {status}");
        Ok(Execution { id, seen })
    }

    fn wait_ws(&self, execution_id: &str) -> Result<(String, Instant)> {
        let stream = TcpStream::connect(self.addr).context("connecting the WebSocket")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let uri: tungstenite::http::Uri =
            format!("ws://{}/ws/executions/{execution_id}", self.addr).parse()?;
        let request = tungstenite::ClientRequestBuilder::new(uri)
            .with_header("Authorization", self.bearer.as_str());
        // The messages are small: tungstenite's default 128 KiB read buffer, allocated and
        // zeroed for every connection, made the client cost more CPU than necessary on the
        // cores it shares with the server.
        let config = tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        let (mut socket, _) =
            tungstenite::client::client_with_config(request, stream, Some(config))
                .map_err(|e| anyhow!("WebSocket handshake for {execution_id}: {e}"))?;
        let mut terminal: Option<(String, Instant)> = None;
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(text)) => {
                    let event: Value = serde_json::from_str(text.as_str())
                        .context("WebSocket message is not JSON")?;
                    let status = match event["type"].as_str() {
                        Some("execution_completed") => "completed",
                        Some("execution_failed") => "failed",
                        Some("execution_cancelled") => "cancelled",
                        _ => continue,
                    };
                    terminal = Some((status.to_string(), Instant::now()));
                }
                Ok(tungstenite::Message::Close(_)) => {
                    // The server closes right after the terminal message. Send the reply
                    // tungstenite queued and drop the connection: the close handshake is
                    // complete, waiting for the server's TCP close would only add latency.
                    if let Err(e) = socket.flush() {
                        log_once(&format!("answering the WebSocket close failed: {e}"));
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) if terminal.is_some() => {
                    // The outcome is known; a reset while closing does not change it.
                    log_once(&format!(
                        "WebSocket closed uncleanly after the terminal message: {e}"
                    ));
                    break;
                }
                Err(e) => return Err(anyhow!("WebSocket of {execution_id}: {e}")),
            }
        }
        terminal.with_context(|| {
            format!("WebSocket of {execution_id} closed without a terminal message")
        })
    }

    fn wait_poll(&self, execution_id: &str) -> Result<(String, Instant)> {
        let mut pause = Duration::from_micros(500);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let execution = self.call("GET", &format!("/executions/{execution_id}"), None, 200)?;
            match execution["status"].as_str() {
                Some(status @ ("completed" | "failed" | "cancelled")) => {
                    return Ok((status.to_string(), Instant::now()));
                }
                Some(_) => {}
                None => bail!("execution {execution_id} without `status`: {execution}"),
            }
            ensure!(
                Instant::now() < deadline,
                "execution {execution_id} not finished after 120 s"
            );
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// `total` of `GET /executions?flow_id=..&status=..&limit=1`.
    fn count(&self, flow_id: &str, status: &str) -> Result<u64> {
        let page = self.call(
            "GET",
            &format!("/executions?flow_id={flow_id}&status={status}&limit=1"),
            None,
            200,
        )?;
        page["total"]
            .as_u64()
            .context("execution list without `total`")
    }
}

/// Prints a message the first time it is seen (rare, non-fatal oddities).
fn log_once(message: &str) {
    static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());
    if let Ok(mut seen) = SEEN.lock()
        && !seen.iter().any(|m| m == message)
    {
        eprintln!("note: {message}");
        seen.push(message.to_string());
    }
}

fn transform3_flow() -> String {
    "\
metadata:
  name: bench-transform-3
inputs:
  n: { type: integer, required: true }
nodes:
  first:
    type: transform
    params: { value: { n: \"{{ input.n }}\" } }
    next: second
  second:
    type: transform
    params: { value: { doubled: \"{{ nodes.first.output.n * 2 }}\" } }
    next: third
  third:
    type: transform
    params: { value: { n: \"{{ nodes.first.output.n }}\", doubled: \"{{ nodes.second.output.doubled }}\" } }
"
    .to_string()
}

fn chain_flow(nodes: usize) -> String {
    let mut yaml = format!("metadata:\n  name: bench-chain-{nodes}\nnodes:\n");
    for i in 1..=nodes {
        // Infallible: writing to a String.
        let _ = writeln!(
            yaml,
            "  step{i}:\n    type: transform\n    params: {{ value: {{ step: {i} }} }}"
        );
        if i < nodes {
            let _ = writeln!(yaml, "    next: step{}", i + 1);
        }
    }
    yaml
}

fn sleep_flow(sleep: Duration) -> String {
    format!(
        "\
metadata:
  name: bench-sleep
nodes:
  wait:
    type: delay
    params: {{ duration: {}ms }}
    timeout: 1h
    next: done
  done:
    type: transform
    params: {{ value: {{ woke: true }} }}
",
        sleep.as_millis()
    )
}

#[derive(Debug, Default)]
struct Report {
    throughput: Option<Throughput>,
    overhead: Option<Overhead>,
    memory: Option<Memory>,
    idle_rss_kib: u64,
    /// `/proc/loadavg` when the measurements started (other work on the machine skews them).
    load_average: String,
}

#[derive(Debug)]
struct Throughput {
    executions: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    server_cpu: Duration,
    client_cpu: Duration,
}

#[derive(Debug)]
struct Overhead {
    samples: usize,
    median10: Duration,
    median40: Duration,
    server_median10_ms: Option<f64>,
    server_median40_ms: Option<f64>,
    /// Server CPU time over all the sequential executions (both chains).
    server_cpu: Duration,
}

#[derive(Debug)]
struct Memory {
    sleepers: usize,
    post_time: Duration,
    waiting_seen: u64,
    rss_before_kib: u64,
    rss_kib: u64,
    hwm_kib: u64,
    lag_after_last_wake: Duration,
    first_completion_after_first_wake: Duration,
}

fn measure(server: &Server, opts: &Options) -> Result<Report> {
    let api = Api::login(server.addr)?;
    let transform3 = api.create_flow(&transform3_flow())?;
    let chain10 = api.create_flow(&chain_flow(10))?;
    let chain40 = api.create_flow(&chain_flow(40))?;
    let sleeper = api.create_flow(&sleep_flow(opts.sleep))?;

    println!("warming up");
    concurrent_runs(
        &api,
        &transform3,
        opts.clients.min(500),
        opts.clients,
        opts.wait,
    )?;
    let mut report = Report {
        idle_rss_kib: server.memory_kib()?.0,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".into()),
        ..Report::default()
    };

    if opts.throughput {
        println!(
            "throughput: {} executions of a 3-node flow from {} clients",
            opts.executions, opts.clients
        );
        let server_cpu = server.cpu_time()?;
        let client_cpu = process_cpu_time("/proc/self/stat")?;
        let started = Instant::now();
        let mut latencies =
            concurrent_runs(&api, &transform3, opts.executions, opts.clients, opts.wait)?;
        let elapsed = started.elapsed();
        latencies.sort();
        report.throughput = Some(Throughput {
            executions: opts.executions,
            elapsed,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
            max: latencies.last().copied().unwrap_or_default(),
            server_cpu: server.cpu_time()?.saturating_sub(server_cpu),
            client_cpu: process_cpu_time("/proc/self/stat")?.saturating_sub(client_cpu),
        });
    }

    if opts.overhead {
        println!(
            "overhead: {} sequential executions each of a 10-node and a 40-node chain",
            opts.samples
        );
        report.overhead = Some(overhead(server, &api, &chain10, &chain40, opts)?);
    }

    if opts.memory {
        println!(
            "memory: {} executions waiting {:?} in a delay",
            opts.sleepers, opts.sleep
        );
        report.memory = Some(memory(server, &api, &sleeper, opts)?);
    }
    Ok(report)
}

/// One kept-alive connection that sends `POST /flows/{id}/run?wait=120` and reads the answer,
/// with as little client work as it takes (the client shares the cores with the server): the
/// request head is built once, the answer's head parsed by httparse, its body read by length.
/// ureq, used everywhere else, costs about a third more CPU per request.
struct RunConnection {
    stream: TcpStream,
    /// The request up to the `Content-Length` value.
    head: Vec<u8>,
    /// The answer read so far.
    answer: Vec<u8>,
}

impl RunConnection {
    fn open(api: &Api, flow_id: &str) -> Result<Self> {
        let stream = TcpStream::connect(api.addr).context("connecting")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let head = format!(
            "POST /api/v1/flows/{flow_id}/run?wait=120 HTTP/1.1\r\nHost: {}\r\n\
             Authorization: {}\r\nContent-Type: application/json\r\nContent-Length: ",
            api.addr, api.bearer
        );
        Ok(Self {
            stream,
            head: head.into_bytes(),
            answer: Vec::with_capacity(4096),
        })
    }

    /// Runs the flow with `input` and waits for the answer, which must say `completed`.
    fn execute(&mut self, input: &Value) -> Result<Execution> {
        use std::io::Read as _;
        let body = serde_json::to_vec(&json!({ "input": input }))?;
        let mut request = Vec::with_capacity(self.head.len() + 8 + body.len());
        request.extend_from_slice(&self.head);
        write!(request, "{}\r\n\r\n", body.len())?;
        request.extend_from_slice(&body);
        self.stream.write_all(&request).context("sending the run")?;
        self.answer.clear();
        let mut chunk = [0u8; 4096];
        let (status, body) = loop {
            let n = self.stream.read(&mut chunk).context("reading the answer")?;
            ensure!(n > 0, "the server closed the connection");
            self.answer.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(head_len) = response.parse(&self.answer)? else {
                continue;
            };
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .context("answer without Content-Length")?;
            if self.answer.len() >= head_len + length {
                let body = &self.answer[head_len..head_len + length];
                break (
                    response.code.unwrap_or(0),
                    serde_json::from_slice::<Value>(body)?,
                );
            }
        };
        let seen = Instant::now();
        ensure!(status == 200, "run answered {status}: {body}");
        let id = body["execution_id"]
            .as_str()
            .context("run answer without `execution_id`")?;
        ensure!(
            body["status"] == "completed",
            "execution {id} ended {}",
            body["status"]
        );
        Ok(Execution {
            id: id.to_string(),
            seen,
        })
    }
}

/// Runs `total` executions of `flow` from `clients` threads, each starting one and waiting for
/// it before the next. Returns the latency (POST sent to completion observed) of each.
fn concurrent_runs(
    api: &Api,
    flow: &str,
    total: usize,
    clients: usize,
    wait: WaitMode,
) -> Result<Vec<Duration>> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Result<Vec<Duration>>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                scope.spawn(|| {
                    let api = api.fresh();
                    let mut connection = match wait {
                        WaitMode::Run => Some(RunConnection::open(&api, flow)?),
                        WaitMode::WebSocket | WaitMode::Poll => None,
                    };
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total || failed.load(Ordering::Relaxed) {
                            return Ok(latencies);
                        }
                        let started = Instant::now();
                        let outcome = match &mut connection {
                            Some(connection) => connection.execute(&json!({ "n": i })),
                            None => api.execute(flow, json!({ "n": i }), wait),
                        };
                        match outcome {
                            Ok(done) => latencies.push(done.seen - started),
                            Err(e) => {
                                failed.store(true, Ordering::Relaxed);
                                return Err(e);
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("client thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(total);
    for result in results {
        all.extend(result?);
    }
    Ok(all)
}

fn overhead(
    server: &Server,
    api: &Api,
    chain10: &str,
    chain40: &str,
    opts: &Options,
) -> Result<Overhead> {
    let cpu_before = server.cpu_time()?;
    let mut client10 = Vec::with_capacity(opts.samples);
    let mut client40 = Vec::with_capacity(opts.samples);
    let mut ids10 = Vec::with_capacity(opts.samples);
    let mut ids40 = Vec::with_capacity(opts.samples);
    // Interleaved, so that drift (a growing database, other load) affects both alike.
    for _ in 0..opts.samples {
        for (flow, times, ids) in [
            (chain10, &mut client10, &mut ids10),
            (chain40, &mut client40, &mut ids40),
        ] {
            let started = Instant::now();
            let done = api.execute(flow, json!({}), opts.wait)?;
            times.push(done.seen - started);
            ids.push(done.id);
        }
    }
    let server_cpu = server.cpu_time()?.saturating_sub(cpu_before);
    client10.sort();
    client40.sort();
    // The server's own view: `duration` (ms) of each execution, when it reports one.
    let server_median = |ids: &[String]| -> Result<Option<f64>> {
        let mut ms = Vec::with_capacity(ids.len());
        for id in ids {
            let execution = api.call("GET", &format!("/executions/{id}"), None, 200)?;
            match execution["duration"].as_f64() {
                Some(d) => ms.push(d),
                None => return Ok(None),
            }
        }
        ms.sort_by(f64::total_cmp);
        Ok(ms.get(ms.len() / 2).copied())
    };
    Ok(Overhead {
        samples: opts.samples,
        median10: percentile(&client10, 0.5),
        median40: percentile(&client40, 0.5),
        server_median10_ms: server_median(&ids10)?,
        server_median40_ms: server_median(&ids40)?,
        server_cpu,
    })
}

fn memory(server: &Server, api: &Api, flow: &str, opts: &Options) -> Result<Memory> {
    let n = opts.sleepers;
    let rss_before_kib = server.memory_kib()?.0;
    let next = AtomicUsize::new(0);
    let first_post = Instant::now();
    let results: Vec<Result<()>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..opts.clients)
            .map(|_| {
                scope.spawn(|| {
                    let api = api.fresh();
                    while next.fetch_add(1, Ordering::Relaxed) < n {
                        api.start(flow, json!({}))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("client thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect::<Result<()>>()?;
    let last_post = Instant::now();
    let post_time = last_post - first_post;
    let first_wake = first_post + opts.sleep;
    let last_wake = last_post + opts.sleep;
    ensure!(
        post_time < opts.sleep,
        "starting {n} executions took {post_time:?}, longer than their {:?} delay: use a longer --sleep",
        opts.sleep
    );

    // While they sleep: how many are in the delay (running), and the RSS, sampled until shortly
    // before the first wake-up.
    let mut waiting_seen = 0;
    let mut rss_kib = 0;
    let sample_until = first_wake
        .checked_sub(Duration::from_millis(500))
        .unwrap_or(first_wake);
    while Instant::now() < sample_until {
        waiting_seen = waiting_seen.max(api.count(flow, "running")?);
        rss_kib = rss_kib.max(server.memory_kib()?.0);
        thread::sleep(Duration::from_millis(250));
    }
    let hwm_kib = server.memory_kib()?.1;
    let completed_early = api.count(flow, "completed")?;
    ensure!(
        completed_early == 0,
        "{completed_early} executions completed before their delay ended"
    );

    let mut first_completion = None;
    let deadline = last_wake + Duration::from_secs(120);
    loop {
        let completed = api.count(flow, "completed")?;
        let now = Instant::now();
        if completed > 0 && first_completion.is_none() {
            first_completion = Some(now);
        }
        if completed as usize >= n {
            break;
        }
        if now > deadline {
            let failed = api.count(flow, "failed")?;
            bail!(
                "only {completed} of {n} sleeping executions completed ({failed} failed) 120 s after their wake-up"
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let done = Instant::now();
    Ok(Memory {
        sleepers: n,
        post_time,
        waiting_seen,
        rss_before_kib,
        rss_kib,
        hwm_kib,
        lag_after_last_wake: done.saturating_duration_since(last_wake),
        first_completion_after_first_wake: first_completion
            .unwrap_or(done)
            .saturating_duration_since(first_wake),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

impl Report {
    fn render(&self, opts: &Options) -> String {
        let mut out = String::new();
        let cores = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let wait = match opts.wait {
            WaitMode::Run => "the run request (`?wait=120`)",
            WaitMode::WebSocket => "WebSocket",
            WaitMode::Poll => "polling GET /executions/{id}",
        };
        // Infallible: writing to a String.
        let _ = writeln!(
            out,
            "\nFlowRunner server, release build, {}, loopback, {cores} cores (client and server share them), \
             completion observed via {wait}{}\n",
            if opts
                .database_url
                .as_deref()
                .is_some_and(|u| u.starts_with("postgres"))
            {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            if opts.access_log {
                ", access log on"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "load average (1, 5, 15 min) at the start: {}\n",
            self.load_average
        );
        let _ = writeln!(out, "{:<44} {:>26}   {:<14}", "metric", "result", "goal");
        let mut row = |metric: &str, result: String, goal: &str, met: Option<bool>| {
            let _ = writeln!(
                out,
                "{metric:<44} {result:>26}   {goal:<14} {}",
                met.map(verdict).unwrap_or("")
            );
        };
        row(
            "server RSS after start and warm-up",
            format!("{:.1} MiB", self.idle_rss_kib as f64 / 1024.0),
            "",
            None,
        );
        if let Some(t) = &self.throughput {
            let rate = t.executions as f64 / t.elapsed.as_secs_f64();
            row(
                &format!("throughput, 3-node flow, {} clients", opts.clients),
                format!("{rate:.0} exec/s"),
                ">= 5000/s",
                Some(rate >= GOAL_EXEC_PER_SEC),
            );
            row(
                "  latency p50 / p99 / max",
                format!("{} / {} / {}", ms(t.p50), ms(t.p99), ms(t.max)),
                "",
                None,
            );
            row(
                &format!("  {} executions in", t.executions),
                format!("{:.2} s", t.elapsed.as_secs_f64()),
                "",
                None,
            );
            let per_exec = |cpu: Duration| cpu.as_secs_f64() * 1e6 / t.executions as f64;
            row(
                "  CPU per execution: server / bench client",
                format!(
                    "{:.0} µs / {:.0} µs",
                    per_exec(t.server_cpu),
                    per_exec(t.client_cpu)
                ),
                "",
                None,
            );
        }
        if let Some(o) = &self.overhead {
            let per_node = (o.median40.as_secs_f64() - o.median10.as_secs_f64()) * 1e6 / 30.0;
            row(
                "durable per-node overhead (client clock)",
                format!("{per_node:.0} µs/node"),
                "<= 100 µs",
                Some(per_node <= GOAL_US_PER_NODE),
            );
            row(
                &format!("  median 10-node / 40-node, {} each", o.samples),
                format!("{} / {}", ms(o.median10), ms(o.median40)),
                "",
                None,
            );
            if let (Some(a), Some(b)) = (o.server_median10_ms, o.server_median40_ms) {
                row(
                    "  server `duration` medians (ms) -> per node",
                    format!("{a:.0} / {b:.0} -> {:.0} µs", (b - a) * 1e3 / 30.0),
                    "",
                    None,
                );
            }
            let nodes = (o.samples * 50) as f64;
            row(
                "  server CPU per node run (incl. per-execution)",
                format!("{:.0} µs", o.server_cpu.as_secs_f64() * 1e6 / nodes),
                "",
                None,
            );
        }
        if let Some(m) = &self.memory {
            let mib = m.rss_kib as f64 / 1024.0;
            row(
                &format!("server RSS, {} executions in a delay", m.sleepers),
                format!("{mib:.1} MiB"),
                "<= 256 MiB",
                Some(mib <= GOAL_RSS_MIB),
            );
            row(
                "  RSS just before starting them",
                format!("{:.1} MiB", m.rss_before_kib as f64 / 1024.0),
                "",
                None,
            );
            row(
                "  peak RSS of the process (VmHWM)",
                format!("{:.1} MiB", m.hwm_kib as f64 / 1024.0),
                "",
                None,
            );
            row(
                "  seen waiting (status running)",
                format!("{} of {}", m.waiting_seen, m.sleepers),
                "",
                None,
            );
            row(
                "  time to start them all",
                format!("{:.2} s", m.post_time.as_secs_f64()),
                "",
                None,
            );
            row(
                "  all completed, after the last wake-up",
                format!("{:.2} s", m.lag_after_last_wake.as_secs_f64()),
                "",
                None,
            );
            row(
                "  first completed, after the first wake-up",
                format!("{:.2} s", m.first_completion_after_first_wake.as_secs_f64()),
                "",
                None,
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_listening_line() {
        let line = "[2026-11-29T00:31:29.165Z INFO  flowrunner_api::server] FlowRunner listening on http://127.0.0.1:42837";
        assert_eq!(
            listening_addr(line),
            Some("127.0.0.1:42837".parse().expect("addr"))
        );
        assert_eq!(listening_addr("starting 2 workers"), None);
    }

    #[test]
    fn chain_flows_link_every_step() {
        let yaml = chain_flow(3);
        assert!(yaml.contains("next: step2") && yaml.contains("next: step3"));
        assert_eq!(yaml.matches("type: transform").count(), 3);
    }

    #[test]
    fn percentiles_pick_ranks() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn options_parse() {
        let args: Vec<String> = [
            "--clients",
            "8",
            "--wait",
            "poll",
            "--only",
            "overhead,memory",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let opts = parse_options(&args).expect("options");
        assert_eq!(opts.clients, 8);
        assert_eq!(opts.wait, WaitMode::Poll);
        assert!(!opts.throughput && opts.overhead && opts.memory);
        assert!(parse_options(&["--clients".to_string(), "0".to_string()]).is_err());
    }
}
