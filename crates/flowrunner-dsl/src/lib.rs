//! FlowRunner's flow language: YAML text to a validated, typed flow graph.
//!
//! [`parse`] turns a flow file into a [`Flow`] (or every problem found, as [`Diagnostics`]);
//! [`validate`] returns just the diagnostics. Node types are checked against a
//! [`NodeCatalog`] ([`BuiltinCatalog`] for the eight built-ins). Every string in node params
//! and `output` is compiled once into a [`ValueTemplate`].
//! The language is described in `docs/dsl.md`.
//!
//! ```
//! use flowrunner_dsl::{parse, validate, BuiltinCatalog, template::json_to_value};
//!
//! let source = r#"
//! metadata:
//!   name: double
//! inputs:
//!   amount: { type: number, required: true }
//! nodes:
//!   compute:
//!     type: transform
//!     params:
//!       value: { doubled: "{{ input.amount * 2 }}" }
//! "#;
//! let parsed = parse(source, &BuiltinCatalog).expect("valid flow");
//! let flow = parsed.flow;
//! assert_eq!(flow.start, "compute");
//! let input = flow.check_input(&serde_json::json!({"amount": 21})).unwrap();
//! let ctx = json_to_value(&serde_json::json!({ "input": input }));
//! let params = flow.nodes["compute"].params.render(&ctx).unwrap();
//! assert_eq!(params["value"]["doubled"], 42);
//!
//! // Problems are reported all at once, with positions and stable codes.
//! let diags = validate("metadata: {}\nnodes:\n  a: {type: nope}\n", &BuiltinCatalog);
//! let codes: Vec<&str> = diags.iter().map(|d| d.code.as_str()).collect();
//! assert_eq!(codes, ["missing_field", "unknown_node_type"]);
//! assert_eq!(diags[1].to_string(), "3:13: error[unknown_node_type] node `a`: unknown node type `nope`; known types: http.request, webhook, transform, condition, switch, delay, log, fail");
//! ```
#![warn(missing_docs)]

pub mod catalog;
pub mod diagnostics;
pub mod input;
pub mod model;
mod parser;
pub mod semantics;
pub mod template;
mod yaml;

pub use catalog::*;
pub use diagnostics::{Diagnostic, Diagnostics, Severity, codes};
pub use input::InputError;
pub use model::*;
pub use parser::*;
pub use template::{RenderError, ValueTemplate};
