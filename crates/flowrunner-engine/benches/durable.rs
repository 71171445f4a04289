//! Durable execution in process on an SQLite temp file, every step persisted:
//! * `throughput/3-node/N`: N concurrent submissions of a 3-node transform flow, waited until
//!   all are finished (criterion's throughput is executions/s);
//! * `chain/10` and `chain/40`: one execution of a 10- or 40-node transform chain at a time;
//!   the durable overhead per node is `(chain/40 - chain/10) / 30`, printed at the end.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flowrunner_domain::Role;
use flowrunner_engine::{Engine, EngineConfig, RunRequest, Scope};
use flowrunner_runtime::Runtime;
use flowrunner_store::testing::TestDatabase;
use flowrunner_store::{FlowRecord, NewAccount, NewFlow, Store};
use serde_json::json;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn chain(nodes: usize) -> String {
    let mut text = String::from(
        "metadata: { name: chain }\ninputs:\n  n: { type: integer, default: 1 }\nstart: n0\nnodes:\n",
    );
    for i in 0..nodes {
        let next = if i + 1 < nodes {
            format!(", next: n{}", i + 1)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "  n{i}: {{ type: transform, params: {{ value: {{ step: {i}, n: \"{{{{ input.n }}}}\" }} }}{next} }}\n"
        ));
    }
    text
}

/// A flow that waits a minute (for the memory figure).
const WAITING: &str = "metadata: { name: waiting }\nstart: pause\nnodes:\n  pause: { type: delay, params: { duration: 60s }, next: done }\n  done: { type: transform, params: { value: 1 } }\n";

/// Resident set size of this process in MiB (Linux), if readable.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

struct Bench {
    _db: TestDatabase,
    engine: Engine,
    store: Store,
    flows: Vec<(usize, FlowRecord)>,
}

async fn setup() -> BenchResult<Bench> {
    let db = TestDatabase::sqlite()?;
    let store = db.open().await?;
    let owner = store
        .create_account(NewAccount {
            email: "bench@example.com".into(),
            name: "bench".into(),
            role: Role::User,
            password_hash: "x".into(),
        })
        .await?;
    let mut flows = Vec::new();
    for nodes in [0, 3, 10, 40] {
        let flow = store
            .create_flow(NewFlow {
                owner_id: owner.id.clone(),
                name: format!("chain-{nodes}"),
                description: None,
                version: "1.0.0".into(),
                tags: Vec::new(),
                definition: if nodes == 0 {
                    WAITING.to_string()
                } else {
                    chain(nodes)
                },
            })
            .await?;
        flows.push((nodes, flow));
    }
    let runtime = Runtime::builder().blocking_threads(2).build()?;
    let engine = Engine::start(store.clone(), runtime, EngineConfig::default()).await?;
    Ok(Bench {
        _db: db,
        engine,
        store,
        flows,
    })
}

impl Bench {
    fn flow(&self, nodes: usize) -> &FlowRecord {
        self.flows
            .iter()
            .find(|(n, _)| *n == nodes)
            .map(|(_, f)| f)
            .unwrap_or(&self.flows[0].1)
    }

    /// Submits `count` executions at once and waits until all have finished.
    async fn run(&self, nodes: usize, count: usize) -> BenchResult<Duration> {
        let flow = self.flow(nodes).id.clone();
        let started = Instant::now();
        let mut tasks = Vec::with_capacity(count);
        for _ in 0..count {
            let engine = self.engine.clone();
            let flow = flow.clone();
            tasks.push(tokio::spawn(async move {
                engine
                    .submit(RunRequest {
                        flow_id: flow,
                        scope: Scope::All,
                        input: json!({"n": 7}),
                        idempotency_key: None,
                    })
                    .await
            }));
        }
        for task in tasks {
            task.await??;
        }
        self.engine.wait_idle().await;
        Ok(started.elapsed())
    }
}

fn durable(c: &mut Criterion) {
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot start tokio: {err}");
            return;
        }
    };
    let bench = match tokio.block_on(setup()) {
        Ok(b) => b,
        Err(err) => {
            eprintln!("benchmark setup failed: {err}");
            return;
        }
    };
    let mut group = c.benchmark_group("throughput");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for count in [100usize, 1000] {
        group.throughput(Throughput::Elements(count as u64));
        group.bench_with_input(BenchmarkId::new("3-node", count), &count, |b, &count| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    match tokio.block_on(bench.run(3, count)) {
                        Ok(t) => total += t,
                        Err(err) => eprintln!("run failed: {err}"),
                    }
                }
                total
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("chain");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let mut per_execution = Vec::new();
    for nodes in [10usize, 40] {
        let mut spent = Duration::ZERO;
        let mut runs = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, &nodes| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    match tokio.block_on(bench.run(nodes, 1)) {
                        Ok(t) => total += t,
                        Err(err) => eprintln!("run failed: {err}"),
                    }
                }
                spent += total;
                runs += u32::try_from(iters).unwrap_or(u32::MAX);
                total
            });
        });
        per_execution.push(spent / runs.max(1));
    }
    group.finish();
    if let [ten, forty] = per_execution[..] {
        let per_node = forty.saturating_sub(ten) / 30;
        println!(
            "durable overhead per node: {per_node:?} (10-node chain {ten:?}, 40-node chain {forty:?} per execution)"
        );
    }
    let stats = bench.engine.writer_stats();
    println!(
        "writer: {} commits for {} writes ({:.1} writes per commit)",
        stats.commits,
        stats.messages,
        stats.messages as f64 / stats.commits.max(1) as f64
    );
    // Memory: 10,000 executions waiting in a `delay` (printed, not a criterion measurement).
    let before = rss_mib();
    let waiting = tokio.block_on(async {
        let flow = bench.flow(0).id.clone();
        let started = Instant::now();
        for _ in 0..10_000 {
            let run = RunRequest {
                flow_id: flow.clone(),
                scope: Scope::All,
                input: json!({}),
                idempotency_key: None,
            };
            if let Err(err) = bench.engine.submit(run).await {
                eprintln!("submit failed: {err}");
            }
        }
        let filter = flowrunner_store::ExecutionFilter {
            status: Some(flowrunner_engine::ExecutionStatus::Running),
            ..Default::default()
        };
        loop {
            match bench
                .store
                .list_executions(Scope::All, filter.clone(), 1, 0)
                .await
            {
                Ok((_, n)) if n >= 10_000 => break,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(err) => {
                    eprintln!("list failed: {err}");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        started.elapsed()
    });
    if let (Some(before), Some(after)) = (before, rss_mib()) {
        println!(
            "10,000 executions waiting in delay: RSS {after:.0} MiB (was {before:.0} MiB before submitting; all running after {waiting:?})"
        );
    }
    tokio.block_on(bench.engine.shutdown());
    drop(bench.store);
}

criterion_group!(benches, durable);
criterion_main!(benches);
