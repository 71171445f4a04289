//! Template behaviour: typed single expressions, interpolation, constants, strict undefined,
//! bare expressions.
#![allow(clippy::unwrap_used)]

use flowrunner_dsl::template::{StringMode, TemplateCompiler, ValueTemplate, json_to_value};
use serde_json::{Value, json};

fn ctx() -> minijinja::Value {
    json_to_value(&json!({
        "input": {"amount": 150, "price": 2.5, "name": "Ada", "flag": true, "obj": {"a": 1, "b": [1, 2]},
                  "list": [1, "two", null], "none": null, "country": "FR"},
        "nodes": {"fetch": {"output": {"status_code": 200, "body": {"items": [{"price": 1}, {"price": 2}]}}}},
        "secrets": {"TOKEN": "s3cr3t"},
        "execution": {"id": "exe_1", "started_at": "2030-01-01T00:00:00Z"},
        "flow": {"name": "demo", "version": "1.0.0"},
        "error": null,
    }))
}

fn render(v: Value) -> Result<Value, flowrunner_dsl::RenderError> {
    ValueTemplate::compile(&v).expect("compiles").render(&ctx())
}

#[test]
fn single_expression_keeps_type() {
    assert_eq!(render(json!("{{ input.amount }}")).unwrap(), json!(150));
    assert_eq!(render(json!("{{ input.price }}")).unwrap(), json!(2.5));
    assert_eq!(render(json!("  {{ input.flag }}\n")).unwrap(), json!(true));
    assert_eq!(
        render(json!("{{ input.obj }}")).unwrap(),
        json!({"a": 1, "b": [1, 2]})
    );
    assert_eq!(
        render(json!("{{ input.list }}")).unwrap(),
        json!([1, "two", null])
    );
    assert_eq!(render(json!("{{ input.none }}")).unwrap(), json!(null));
    assert_eq!(
        render(json!("{{ input.amount > 100 }}")).unwrap(),
        json!(true)
    );
    assert_eq!(render(json!("{{ input.name }}")).unwrap(), json!("Ada"));
    assert_eq!(render(json!("{{- input.amount -}}")).unwrap(), json!(150));
    assert_eq!(
        render(json!(
            "{{ nodes.fetch.output.body['items'] | map(attribute='price') | sum }}"
        ))
        .unwrap(),
        json!(3)
    );
    assert_eq!(
        render(json!("{{ {'k': input.amount} }}")).unwrap(),
        json!({"k": 150})
    );
    assert_eq!(render(json!("{{ range(3) }}")).unwrap(), json!([0, 1, 2]));
    assert_eq!(render(json!("{{ dict(a=1) }}")).unwrap(), json!({"a": 1}));
    assert_eq!(
        render(json!("{{ input.obj | items | list }}")).unwrap(),
        json!([["a", 1], ["b", [1, 2]]])
    );
    assert_eq!(render(json!("{{ 7 / 2 }}")).unwrap(), json!(3.5));
    assert_eq!(render(json!("{{ 7 // 2 }}")).unwrap(), json!(3));
    assert_eq!(
        render(json!("{{ input.amount | string }}")).unwrap(),
        json!("150")
    );
    assert_eq!(render(json!("{{ '5' | int }}")).unwrap(), json!(5));
    assert_eq!(
        render(json!("{{ input.obj | tojson }}")).unwrap(),
        json!("{\"a\": 1, \"b\": [1, 2]}")
    );
}

#[test]
fn interpolation_gives_strings() {
    assert_eq!(
        render(json!("Hi {{ input.name }}, {{ input.amount }}")).unwrap(),
        json!("Hi Ada, 150")
    );
    assert_eq!(
        render(json!("{{ input.amount }}{{ input.amount }}")).unwrap(),
        json!("150150")
    );
    assert_eq!(
        render(json!("{% if input.flag %}yes{% endif %}")).unwrap(),
        json!("yes")
    );
    assert_eq!(
        render(json!("Bearer {{ secrets.TOKEN }}")).unwrap(),
        json!("Bearer s3cr3t")
    );
    assert_eq!(
        render(json!("{{ flow.name }}@{{ execution.id }}")).unwrap(),
        json!("demo@exe_1")
    );
    // No HTML escaping.
    assert_eq!(render(json!("<{{ '&' }}>")).unwrap(), json!("<&>"));
}

#[test]
fn constants() {
    let t = ValueTemplate::compile(
        &json!({"a": "plain } text {", "b": [1, 2.5, true, null], "c": {"d": "x"}}),
    )
    .unwrap();
    assert!(t.is_constant());
    assert_eq!(
        t.render(&ctx()).unwrap(),
        json!({"a": "plain } text {", "b": [1, 2.5, true, null], "c": {"d": "x"}})
    );
    assert!(t.field("c").unwrap().is_constant());
    assert!(t.field("missing").is_none());
    let mixed = ValueTemplate::compile(&json!({"a": "{{ input.amount }}", "b": "x"})).unwrap();
    assert!(!mixed.is_constant());
    assert!(mixed.field("b").unwrap().is_constant());
    assert_eq!(mixed.field_names().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn strict_undefined_is_an_error() {
    let e = render(json!("{{ nodes.missing.output }}")).unwrap_err();
    assert!(e.to_string().contains("{{ nodes.missing.output }}"), "{e}");
    assert!(e.message.contains("undefined value `nodes.missing`"), "{e}");
    assert!(render(json!("x {{ input.nope }} y")).is_err());
    assert!(render(json!("{{ input.nope.deeper }}")).is_err());
    assert_eq!(
        render(json!("{{ input.nope | default('d') }}")).unwrap(),
        json!("d")
    );
    assert_eq!(
        render(json!("{{ input.nope is defined }}")).unwrap(),
        json!(false)
    );
    assert_eq!(
        render(json!("{{ nodes.other is defined }}")).unwrap(),
        json!(false)
    );
}

#[test]
fn syntax_errors_at_compile_time() {
    assert!(ValueTemplate::compile(&json!("{{ input. }}")).is_err());
    assert!(ValueTemplate::compile(&json!("a {% if %}")).is_err());
    assert!(ValueTemplate::compile(&json!({"x": ["{{ 1 + }}"]})).is_err());
}

#[test]
fn bare_expressions() {
    let mut c = TemplateCompiler::new();
    let gt = c
        .compile_string("input.amount > 100", StringMode::Expression)
        .unwrap();
    let tmpl = c
        .compile_string("{{ input.amount > 1000 }}", StringMode::Expression)
        .unwrap();
    let sw = c
        .compile_string("input.country", StringMode::Expression)
        .unwrap();
    let lit = c.compile_string("'fixed'", StringMode::Expression).unwrap();
    // In template mode a bare expression is just a constant string.
    let plain = c
        .compile_string("input.amount > 100", StringMode::Template)
        .unwrap();
    assert!(
        c.compile_string("input.amount >", StringMode::Expression)
            .is_err()
    );
    c.finish().unwrap();
    assert!(gt.variables.contains("input.amount"));
    assert_eq!(gt.template.render(&ctx()).unwrap(), json!(true));
    assert_eq!(tmpl.template.render(&ctx()).unwrap(), json!(false));
    assert_eq!(sw.template.render(&ctx()).unwrap(), json!("FR"));
    assert_eq!(lit.template.render(&ctx()).unwrap(), json!("fixed"));
    assert_eq!(
        plain.template.render(&ctx()).unwrap(),
        json!("input.amount > 100")
    );
}

#[test]
fn render_before_finish_is_an_error_not_a_panic() {
    let mut c = TemplateCompiler::new();
    let t = c
        .compile_string("{{ input.amount }}", StringMode::Template)
        .unwrap();
    assert!(t.template.render(&ctx()).is_err());
    drop(c);
}

#[test]
fn templates_are_send_sync_and_cheap() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<ValueTemplate>();
    let t = ValueTemplate::compile(
        &json!({"a": "{{ input.amount }}", "b": "n={{ input.name }}", "c": 1}),
    )
    .unwrap();
    let ctx = ctx();
    let start = std::time::Instant::now();
    for _ in 0..10_000 {
        t.render(&ctx).unwrap();
    }
    let per = start.elapsed() / 10_000;
    eprintln!("render of a 3-field object: {per:?}");
    // Generous bound (debug build, shared CI machine).
    assert!(per < std::time::Duration::from_millis(1), "{per:?}");
}

#[test]
fn parsed_flow_output_and_default_pattern() {
    let src = r#"
metadata: { name: t }
nodes:
  small: { type: transform, params: { value: 1 } }
output: "{{ nodes.small.output | default(nodes.large.output) }}"
"#;
    let p = flowrunner_dsl::parse(src, &flowrunner_dsl::BuiltinCatalog);
    // `nodes.large` does not exist: reported statically.
    let d = p.unwrap_err();
    assert_eq!(d.0[0].code, "unknown_node_reference");
}
