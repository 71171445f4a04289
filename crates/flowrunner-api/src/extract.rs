//! Request extractors: the JSON body (with size, media type and field-level error reporting),
//! the authenticated caller, and query-string helpers.
//!
//! Body and query problems are reported when the handler asks for the parsed value, after the
//! caller was authenticated, so a request without credentials always gets 401 first.

use std::collections::HashMap;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{FromRequest, HttpRequest};
use flowrunner_auth::Principal;
use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::state::AppState;

/// The raw JSON request body, read up to the configured limit. Parse it with [`JsonBody::parse`].
#[derive(Debug)]
pub struct JsonBody {
    bytes: Result<Bytes>,
}

impl JsonBody {
    /// Deserializes the body: malformed JSON is 400 `invalid_request`; a missing field or a value
    /// of the wrong type is 422 `validation_error` naming the field in `details.field`.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T> {
        let bytes = self.bytes?;
        parse_json(&bytes)
    }

    /// Like [`JsonBody::parse`], but an empty body (no bytes or only whitespace) is
    /// `T::default()`.
    pub fn parse_or_default<T: DeserializeOwned + Default>(self) -> Result<T> {
        let bytes = self.bytes?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(T::default());
        }
        parse_json(&bytes)
    }
}

/// Parses a JSON object into `T` with the error mapping of [`JsonBody::parse`]. Every request
/// body of the API is an object; anything else is 400.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(
            match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                Ok(_) => Error::invalid_request("The request body must be a JSON object"),
                Err(e) => malformed(&e),
            },
        );
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(value) => value,
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            return Err(json_error(&path, &inner));
        }
    };
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

fn malformed(err: &serde_json::Error) -> Error {
    Error::invalid_request(format!("Malformed JSON body: {err}"))
}

fn json_error(path: &str, err: &serde_json::Error) -> Error {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => malformed(err),
        Category::Data => {
            let full = err.to_string();
            // serde_json appends " at line L column C"; the field name says more.
            let reason = full
                .rsplit_once(" at line ")
                .map_or(full.as_str(), |(head, _)| head)
                .to_string();
            let missing = reason
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(name, _)| name.to_string());
            let at_root = path.is_empty() || path == ".";
            let field = match (missing, at_root) {
                (Some(name), true) => name,
                (Some(name), false) => format!("{path}.{name}"),
                (None, false) => path.to_string(),
                (None, true) => {
                    return Error::invalid_request(format!(
                        "The request body must be a JSON object: {reason}"
                    ));
                }
            };
            let reason = if reason.starts_with("missing field") {
                "is required".to_string()
            } else {
                reason
            };
            Error::field(field, reason)
        }
    }
}

impl FromRequest for JsonBody {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, std::result::Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<web::Data<AppState>>()
            .map_or(crate::config::DEFAULT_MAX_BODY_BYTES, |s| {
                s.max_body_bytes()
            });
        if let Err(err) = check_content_type(req) {
            return Box::pin(async move { Ok(JsonBody { bytes: Err(err) }) });
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Box::pin(async move {
                Ok(JsonBody {
                    bytes: Err(Error::PayloadTooLarge { limit }),
                })
            });
        }
        let mut payload = payload.take();
        Box::pin(async move {
            let mut body = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
            while let Some(chunk) = payload.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    Err(err) => {
                        let err = Error::invalid_request(format!(
                            "Could not read the request body: {err}"
                        ));
                        return Ok(JsonBody { bytes: Err(err) });
                    }
                };
                if body.len() + chunk.len() > limit {
                    return Ok(JsonBody {
                        bytes: Err(Error::PayloadTooLarge { limit }),
                    });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(JsonBody {
                bytes: Ok(body.freeze()),
            })
        })
    }
}

/// A request with a body must declare JSON (`application/json` or `…+json`) or no type at all.
fn check_content_type(req: &HttpRequest) -> Result<()> {
    let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(
            "Content-Type must be application/json".into(),
        ))
    }
}

/// The authenticated caller (`Authorization: Bearer <token>`); 401 when absent or not valid.
#[derive(Debug, Clone)]
pub struct Caller(pub Principal);

impl std::ops::Deref for Caller {
    type Target = Principal;
    fn deref(&self) -> &Principal {
        &self.0
    }
}

impl FromRequest for Caller {
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req);
        Box::pin(async move {
            let state =
                state.ok_or_else(|| Error::internal("application state is not configured"))?;
            let token = token?;
            Ok(Caller(state.authenticate(&token).await?))
        })
    }
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer_token(req: &HttpRequest) -> Result<String> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Error::Unauthorized("Authentication required".into()))?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("Invalid token".into()))?
        .trim();
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Error::Unauthorized("Invalid token".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(Error::Unauthorized("Expected a Bearer token".into()));
    }
    Ok(token.to_string())
}

/// The query string as name -> value (last occurrence wins); malformed encoding is 400.
pub fn query_params(req: &HttpRequest) -> Result<HashMap<String, String>> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map(|q| q.into_inner().into_iter().collect())
        .map_err(|e| Error::invalid_request(format!("Malformed query string: {e}")))
}

/// `limit` and `offset` of a list request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// At most this many items (1..=100, default 10).
    pub limit: u32,
    /// Items skipped (>= 0, default 0).
    pub offset: u64,
}

impl Page {
    /// Default page size.
    pub const DEFAULT_LIMIT: u32 = 10;
    /// Largest page size.
    pub const MAX_LIMIT: u32 = 100;

    /// Reads `limit` and `offset` from query parameters; out of range or not a number is 422.
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self> {
        let limit = match params.get("limit") {
            None => Self::DEFAULT_LIMIT,
            Some(text) => match text.trim().parse::<i64>() {
                Ok(n) if (1..=i64::from(Self::MAX_LIMIT)).contains(&n) => n as u32,
                _ => {
                    return Err(Error::field(
                        "limit",
                        format!("must be an integer from 1 to {}", Self::MAX_LIMIT),
                    ));
                }
            },
        };
        let offset = match params.get("offset") {
            None => 0,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => n,
                _ => return Err(Error::field("offset", "must be an integer >= 0")),
            },
        };
        Ok(Self { limit, offset })
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
        count: Option<u32>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    fn field_of(err: Error) -> (String, String) {
        match err {
            Error::Validation {
                details: Some(d), ..
            } => (
                d["field"].as_str().unwrap_or_default().to_string(),
                d["reason"].as_str().unwrap_or_default().to_string(),
            ),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert!(parse_json::<Sample>(br#"{"name":"x"}"#).is_ok());
        let (field, reason) = field_of(parse_json::<Sample>(br#"{}"#).expect_err("missing"));
        assert_eq!((field.as_str(), reason.as_str()), ("name", "is required"));
        let (field, reason) = field_of(parse_json::<Sample>(br#"{"name":5}"#).expect_err("type"));
        assert_eq!(field, "name");
        assert!(reason.contains("expected a string"), "{reason}");
        let (field, _) =
            field_of(parse_json::<Sample>(br#"{"name":"x","count":-1}"#).expect_err("range"));
        assert_eq!(field, "count");
        let (field, _) =
            field_of(parse_json::<Sample>(br#"{"name":"x","inner":{}}"#).expect_err("nested"));
        assert_eq!(field, "inner.flag");
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for bad in [
            &b"{"[..],
            b"",
            b"{\"name\":\"x\"} trailing",
            b"nul",
            b"\xff",
        ] {
            assert!(
                matches!(parse_json::<Sample>(bad), Err(Error::InvalidRequest { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_json::<Sample>(b"[1,2]"),
            Err(Error::InvalidRequest { .. })
        ));
    }

    #[test]
    fn pages() {
        let params = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            Page::from_params(&params(&[])).expect("default"),
            Page {
                limit: 10,
                offset: 0
            }
        );
        assert_eq!(
            Page::from_params(&params(&[("limit", "100"), ("offset", "7")])).expect("ok"),
            Page {
                limit: 100,
                offset: 7
            }
        );
        for (k, v) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "x"),
            ("offset", "-1"),
            ("offset", "1.5"),
        ] {
            let (field, _) = field_of(Page::from_params(&params(&[(k, v)])).expect_err("bad"));
            assert_eq!(field, k);
        }
    }
}
