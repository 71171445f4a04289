//! Test helpers: a tiny real HTTP/1.1 server on 127.0.0.1:0 and event utilities.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowrunner_runtime::{Event, EventKind, Runtime};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
pub enum Reply {
    Json(u16, String),
    Text(u16, String),
    /// Waits, then closes the connection without answering.
    Hang(Duration),
}

type Handler = dyn Fn(&Recorded, usize) -> Reply + Send + Sync;

pub struct TestServer {
    pub base: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl TestServer {
    /// Starts a server; `handler` gets each request and its 0-based index.
    pub fn start(handler: impl Fn(&Recorded, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let counter = Arc::new(AtomicUsize::new(0));
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let recorded = Arc::clone(&recorded);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || serve(stream, &*handler, &recorded, &counter));
            }
        });
        Self { base, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve(
    stream: TcpStream,
    handler: &Handler,
    recorded: &Mutex<Vec<Recorded>>,
    counter: &AtomicUsize,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request = Recorded {
            method,
            target,
            headers,
            body,
            at: Instant::now(),
        };
        let index = counter.fetch_add(1, Ordering::SeqCst);
        recorded.lock().expect("lock").push(request.clone());
        let (status, content_type, text) = match handler(&request, index) {
            Reply::Json(status, text) => (status, "application/json", text),
            Reply::Text(status, text) => (status, "text/plain; charset=utf-8", text),
            Reply::Hang(duration) => {
                std::thread::sleep(duration);
                return;
            }
        };
        let response = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-test: yes\r\n\r\n{text}",
            text.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

pub fn runtime() -> Runtime {
    Runtime::builder()
        .blocking_threads(2)
        .build()
        .expect("runtime")
}

/// Collects every event until (and including) the terminal one.
pub async fn collect(mut rx: tokio::sync::broadcast::Receiver<Event>) -> Vec<Event> {
    let mut events = Vec::new();
    while let Ok(event) = rx.recv().await {
        let end = event.kind.is_terminal();
        events.push(event);
        if end {
            break;
        }
    }
    events
}

pub fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

pub fn assert_contiguous(events: &[Event], first: u64) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(
            e.seq,
            first + i as u64,
            "seq gap at {i}: {:?}",
            kinds(events)
        );
    }
}

pub fn node_failures(events: &[Event]) -> Vec<(u32, bool, Option<u64>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NodeFailed {
                attempt,
                will_retry,
                retry_in_ms,
                ..
            } => Some((*attempt, *will_retry, *retry_in_ms)),
            _ => None,
        })
        .collect()
}
