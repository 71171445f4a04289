//! Engine overhead per node: in-memory runtime (no journal, no subscriber) on chains of
//! `transform` nodes and on a chain with `condition` branches.

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowrunner_dsl::Flow;
use flowrunner_runtime::{ExecutionOutcome, ExecutionRequest, Runtime};
use serde_json::json;

/// A chain of `transform` nodes; `constant` ones render no template (pure engine overhead).
fn transform_chain_of(nodes: usize, constant: bool) -> String {
    let mut yaml = String::from(
        "metadata:\n  name: chain\ninputs:\n  x:\n    type: integer\n    required: true\nstart: n0\nnodes:\n",
    );
    for i in 0..nodes {
        let value = if constant {
            "1".to_string()
        } else if i == 0 {
            "{{ input.x }}".to_string()
        } else {
            format!("{{{{ nodes.n{}.output + 1 }}}}", i - 1)
        };
        let _ = write!(
            yaml,
            "  n{i}:\n    type: transform\n    params:\n      value: \"{value}\"\n"
        );
        if i + 1 < nodes {
            let _ = write!(yaml, "    next:\n      default: n{}\n", i + 1);
        }
    }
    yaml
}

/// Five `condition` nodes, each followed by the `transform` of the branch taken: 10 node runs.
fn condition_chain() -> String {
    let mut yaml = String::from(
        "metadata:\n  name: branches\ninputs:\n  x:\n    type: integer\n    required: true\nstart: c0\nnodes:\n",
    );
    for i in 0..5 {
        let _ = write!(
            yaml,
            "  c{i}:\n    type: condition\n    params:\n      if: \"input.x % 2 == 0\"\n    next:\n      \"true\": p{i}\n      \"false\": q{i}\n"
        );
        let source = if i == 0 {
            "input.x".to_string()
        } else {
            format!("nodes.p{}.output", i - 1)
        };
        let _ = write!(
            yaml,
            "  p{i}:\n    type: transform\n    params:\n      value: \"{{{{ {source} + 1 }}}}\"\n"
        );
        if i + 1 < 5 {
            let _ = writeln!(yaml, "    next: c{}", i + 1);
        }
        let _ = write!(
            yaml,
            "  q{i}:\n    type: transform\n    params:\n      value: 0\n"
        );
        if i + 1 < 5 {
            let _ = writeln!(yaml, "    next: c{}", i + 1);
        }
    }
    yaml
}

fn transform_chain(nodes: usize) -> String {
    transform_chain_of(nodes, false)
}

fn parse(runtime: &Runtime, yaml: &str) -> Arc<Flow> {
    match runtime.parse(yaml) {
        Ok(parsed) => Arc::new(parsed.flow),
        Err(diags) => panic!("benchmark flow is invalid:\n{diags}\n{yaml}"),
    }
}

fn bench(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let runtime = Runtime::builder()
        .blocking_threads(1)
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("engine");
    for nodes in [10usize, 100] {
        let flow = parse(&runtime, &transform_chain(nodes));
        group.throughput(Throughput::Elements(nodes as u64));
        group.bench_function(format!("transform_chain_{nodes}"), |b| {
            b.iter(|| {
                let request = ExecutionRequest::new(Arc::clone(&flow), json!({"x": 1}));
                let outcome = tokio.block_on(runtime.run(request));
                assert!(
                    matches!(outcome, Ok(ExecutionOutcome::Completed { .. })),
                    "{outcome:?}"
                );
                black_box(outcome)
            });
        });
    }
    let flow = parse(&runtime, &transform_chain_of(100, true));
    group.throughput(Throughput::Elements(100));
    group.bench_function("constant_transform_chain_100", |b| {
        b.iter(|| {
            let request = ExecutionRequest::new(Arc::clone(&flow), json!({"x": 1}));
            let outcome = tokio.block_on(runtime.run(request));
            assert!(
                matches!(outcome, Ok(ExecutionOutcome::Completed { .. })),
                "{outcome:?}"
            );
            black_box(outcome)
        });
    });
    let flow = parse(&runtime, &condition_chain());
    group.throughput(Throughput::Elements(10));
    group.bench_function("condition_chain_10", |b| {
        b.iter(|| {
            let request = ExecutionRequest::new(Arc::clone(&flow), json!({"x": 2}));
            let outcome = tokio.block_on(runtime.run(request));
            assert!(
                matches!(outcome, Ok(ExecutionOutcome::Completed { .. })),
                "{outcome:?}"
            );
            black_box(outcome)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
