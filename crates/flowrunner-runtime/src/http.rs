//! The blocking HTTP client used by `http.request` and `webhook` (one shared ureq agent),
//! and webhook signing.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use ureq::typestate::{WithBody, WithoutBody};
use ureq::{Agent, RequestBuilder};

use crate::node::NodeError;

/// Default largest response body accepted (10 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 10 * 1024 * 1024;
/// Default timeout of one HTTP request when neither the params nor the node give one.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Header carrying a webhook's signature, `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-FlowRunner-Signature";
/// Header carrying a webhook's delivery id (stable across retries of one node run).
pub const DELIVERY_HEADER: &str = "X-FlowRunner-Delivery";

/// Signs `body` with HMAC-SHA256 and returns the header value `sha256=<lowercase hex>`.
pub fn sign_payload(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let digest = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    };
    format!("sha256={}", hex::encode(digest))
}

/// Checks a `sha256=<hex>` signature of `body` in constant time (for webhook receivers).
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            mac.verify_slice(&expected).is_ok()
        }
        Err(_) => false,
    }
}

/// Builds the runtime's shared agent: statuses are returned, not errors.
pub(crate) fn new_agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(DEFAULT_HTTP_TIMEOUT))
        .user_agent(concat!("flowrunner/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// A fully resolved request.
#[derive(Debug, Clone)]
pub(crate) struct HttpCall {
    pub(crate) method: String,
    pub(crate) url: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) query: Vec<(String, String)>,
    pub(crate) body: Option<(Vec<u8>, Option<&'static str>)>,
    pub(crate) timeout: Duration,
    pub(crate) max_response_bytes: u64,
}

/// A received response.
#[derive(Debug, Clone)]
pub(crate) struct HttpReply {
    pub(crate) status: u16,
    pub(crate) headers: Map<String, Value>,
    pub(crate) body: Value,
}

/// Performs the call (blocking: run it on the runtime's pool).
pub(crate) fn perform(agent: &Agent, call: HttpCall) -> Result<HttpReply, NodeError> {
    let url = call.url.as_str();
    let result = match call.method.as_str() {
        "GET" => without_body(agent.get(url), &call),
        "HEAD" => without_body(agent.head(url), &call),
        "DELETE" => without_body(agent.delete(url), &call),
        "OPTIONS" => without_body(agent.options(url), &call),
        "POST" => with_body(agent.post(url), &call),
        "PUT" => with_body(agent.put(url), &call),
        "PATCH" => with_body(agent.patch(url), &call),
        other => {
            return Err(NodeError::permanent(format!(
                "unsupported HTTP method `{other}`"
            )));
        }
    };
    let mut response = result.map_err(|err| classify(&err, &call))?;
    let status = response.status().as_u16();
    let mut headers = Map::new();
    for (name, value) in response.headers() {
        let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match headers.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(&text);
            }
            _ => {
                headers.insert(name.as_str().to_string(), Value::String(text));
            }
        }
    }
    let is_json = response.body().mime_type().is_some_and(|mime| {
        mime.eq_ignore_ascii_case("application/json")
            || mime.to_ascii_lowercase().ends_with("+json")
    });
    let bytes = response
        .body_mut()
        .with_config()
        .limit(call.max_response_bytes)
        .read_to_vec()
        .map_err(|err| classify(&err, &call))?;
    let body = decode_body(&bytes, is_json);
    Ok(HttpReply {
        status,
        headers,
        body,
    })
}

fn decode_body(bytes: &[u8], is_json: bool) -> Value {
    if bytes.is_empty() {
        return if is_json {
            Value::Null
        } else {
            Value::String(String::new())
        };
    }
    if is_json && let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return value;
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn prepare<B>(mut builder: RequestBuilder<B>, call: &HttpCall) -> RequestBuilder<B> {
    for (name, value) in &call.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    for (name, value) in &call.query {
        builder = builder.query(name.as_str(), value.as_str());
    }
    builder
        .config()
        .timeout_global(Some(call.timeout))
        .http_status_as_error(false)
        .build()
}

fn without_body(
    builder: RequestBuilder<WithoutBody>,
    call: &HttpCall,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let builder = prepare(builder, call);
    match &call.body {
        None => builder.call(),
        Some((bytes, content_type)) => {
            let mut builder = builder.force_send_body();
            if let Some(content_type) = content_type {
                builder = builder.content_type(*content_type);
            }
            builder.send(bytes.as_slice())
        }
    }
}

fn with_body(
    builder: RequestBuilder<WithBody>,
    call: &HttpCall,
) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
    let mut builder = prepare(builder, call);
    match &call.body {
        None => builder.send_empty(),
        Some((bytes, content_type)) => {
            if let Some(content_type) = content_type {
                builder = builder.content_type(*content_type);
            }
            builder.send(bytes.as_slice())
        }
    }
}

fn classify(err: &ureq::Error, call: &HttpCall) -> NodeError {
    match err {
        ureq::Error::Timeout(_) => NodeError::new(format!(
            "HTTP request to {} timed out after {}",
            call.url,
            flowrunner_domain::format_duration(call.timeout)
        )),
        ureq::Error::BodyExceedsLimit(limit) => NodeError::permanent(format!(
            "HTTP response body exceeds max_response_bytes ({limit} bytes)"
        )),
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            NodeError::permanent(format!("invalid HTTP request to `{}`: {err}", call.url))
        }
        other => NodeError::new(format!("HTTP request to {} failed: {other}", call.url)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn signs_and_verifies() {
        // RFC 4231 test case 2.
        let sig = sign_payload(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(verify_signature(
            b"Jefe",
            b"what do ya want for nothing?",
            &sig
        ));
        assert!(!verify_signature(b"Jefe", b"other", &sig));
        assert!(!verify_signature(b"Jefe", b"x", "md5=00"));
        assert!(!verify_signature(b"Jefe", b"x", "sha256=zz"));
    }

    #[test]
    fn decodes_bodies() {
        assert_eq!(decode_body(br#"{"a":1}"#, true), json!({"a": 1}));
        assert_eq!(decode_body(b"not json", true), json!("not json"));
        assert_eq!(decode_body(br#"{"a":1}"#, false), json!("{\"a\":1}"));
        assert_eq!(decode_body(b"", false), json!(""));
    }
}
