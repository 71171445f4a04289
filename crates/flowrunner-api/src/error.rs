//! The crate's error type and its one mapping to HTTP statuses and the reference's error envelope.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

/// Everything the HTTP layer can fail with: request errors (mapped to 4xx), internal failures
/// (500, cause logged, never shown) and start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 401 `unauthorized`: no usable credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 405 `invalid_request`: the path exists but not with this method.
    #[error("method {method} is not allowed here")]
    MethodNotAllowed {
        /// The rejected method.
        method: String,
        /// The methods the resource accepts, for the `Allow` header.
        allow: &'static str,
    },
    /// 400 `invalid_request` (malformed JSON, bad headers...).
    #[error("{message}")]
    InvalidRequest {
        /// Human-readable reason.
        message: String,
        /// Optional structured details.
        details: Option<Value>,
    },
    /// 413 `invalid_request`: the body is over the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 415 `invalid_request`: the body is not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422 `validation_error`: the request is well-formed but its content is not acceptable.
    #[error("{message}")]
    Validation {
        /// Human-readable reason.
        message: String,
        /// Structured details (`field`, `reason`, `diagnostics`...).
        details: Option<Value>,
    },
    /// 409 `conflict`: the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// 500 `internal_error`; the cause is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503 `internal_error`: a dependency (the database) does not answer; the cause is logged.
    #[error("service unavailable: {0}")]
    Unavailable(String),
    /// The configuration is unusable (start-up only).
    #[error("configuration error: {0}")]
    Config(String),
    /// A file or socket operation failed (start-up only).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The store failed outside a request (start-up, migrations, account creation).
    #[error(transparent)]
    Store(flowrunner_store::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A 422 naming the offending field, in the reference's `details` shape.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let field = field.into();
        let reason = reason.into();
        Error::Validation {
            message: format!("Invalid value for `{field}`: {reason}"),
            details: Some(json!({ "field": field, "reason": reason })),
        }
    }

    /// A 400 without details.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            message: message.into(),
            details: None,
        }
    }

    /// A 500 whose cause is only logged.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Error::Internal(cause.to_string())
    }

    /// Maps a store error met while serving a request; `what` names the resource in messages.
    pub fn from_store(err: flowrunner_store::Error, what: &str) -> Self {
        use flowrunner_store::Error as S;
        match err {
            S::NotFound => Error::NotFound(format!("{what} not found")),
            S::Conflict(_) => Error::Conflict(format!("{what} conflicts with an existing one")),
            other => Error::from(other),
        }
    }

    /// The wire error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed { .. }
            | Error::InvalidRequest { .. }
            | Error::PayloadTooLarge { .. }
            | Error::UnsupportedMediaType(_) => "invalid_request",
            Error::Validation { .. } => "validation_error",
            Error::Conflict(_) => "conflict",
            Error::Internal(_)
            | Error::Unavailable(_)
            | Error::Config(_)
            | Error::Io(_)
            | Error::Store(_) => "internal_error",
        }
    }
}

impl From<flowrunner_store::Error> for Error {
    fn from(err: flowrunner_store::Error) -> Self {
        use flowrunner_store::Error as S;
        match err {
            S::NotFound => Error::NotFound("Resource not found".into()),
            S::Conflict(_) => {
                Error::Conflict("The request conflicts with an existing resource".into())
            }
            S::LastAdmin => {
                Error::Conflict("The last admin account cannot be deleted or demoted".into())
            }
            other => Error::Store(other),
        }
    }
}

impl Error {
    /// Maps an engine error met while serving a request; `what` names the resource in
    /// messages. Invalid input is a 422 with one `{field, reason}` per problem in
    /// `details.errors` (the first one also as `details.field`/`details.reason`).
    pub fn from_engine(err: flowrunner_engine::Error, what: &str) -> Self {
        use flowrunner_engine::Error as E;
        match err {
            E::NotFound => Error::NotFound(format!("{what} not found")),
            E::AlreadyFinished => Error::Conflict("The execution has already finished".into()),
            E::InvalidInput(errors) => {
                let items: Vec<Value> = errors
                    .iter()
                    .map(|e| {
                        let field = if e.field.is_empty() {
                            "input".to_string()
                        } else {
                            format!("input.{}", e.field)
                        };
                        json!({ "field": field, "reason": e.reason })
                    })
                    .collect();
                let mut details = items
                    .first()
                    .cloned()
                    .unwrap_or_else(|| json!({ "field": "input", "reason": "is invalid" }));
                if let Some(obj) = details.as_object_mut() {
                    obj.insert("errors".into(), Value::Array(items));
                }
                Error::Validation {
                    message: format!(
                        "The input does not match the flow's inputs: {}",
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                    details: Some(details),
                }
            }
            E::InvalidFlow(message) => Error::Validation {
                message: format!("The flow definition cannot run: {message}"),
                details: Some(json!({ "field": "definition", "reason": message })),
            },
            E::ShuttingDown => Error::Unavailable("the execution engine is shutting down".into()),
            E::Store(err) => Error::from_store(err, what),
            E::Runtime(message) => Error::Internal(message),
        }
    }
}

impl From<flowrunner_auth::Error> for Error {
    fn from(err: flowrunner_auth::Error) -> Self {
        use flowrunner_auth::Error as A;
        match err {
            A::InvalidToken => Error::Unauthorized("Invalid token".into()),
            A::TokenExpired => Error::Unauthorized("Token expired".into()),
            A::TokenRevoked => Error::Unauthorized("Token is no longer valid".into()),
            A::PasswordTooLong => Error::field(
                "password",
                format!(
                    "must be at most {} bytes",
                    flowrunner_auth::MAX_PASSWORD_BYTES
                ),
            ),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<actix_web::error::BlockingError> for Error {
    fn from(err: actix_web::error::BlockingError) -> Self {
        Error::Internal(err.to_string())
    }
}

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::InvalidRequest { .. } => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) | Error::Config(_) | Error::Io(_) | Error::Store(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        let (message, details) = match self {
            Error::Internal(_) | Error::Config(_) | Error::Io(_) | Error::Store(_) => {
                log::error!("internal error while serving a request: {self}");
                ("An internal server error occurred".to_string(), None)
            }
            Error::Unavailable(_) => {
                log::error!("{self}");
                ("The service is temporarily unavailable".to_string(), None)
            }
            Error::InvalidRequest { message, details } | Error::Validation { message, details } => {
                (message.clone(), details.clone())
            }
            other => (other.to_string(), None),
        };
        let mut error = json!({ "code": self.code(), "message": message });
        if let (Some(details), Some(obj)) = (details, error.as_object_mut()) {
            obj.insert("details".into(), details);
        }
        let mut response = HttpResponse::build(status);
        match self {
            Error::Unauthorized(_) => {
                response
                    .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
            }
            Error::MethodNotAllowed { allow, .. } => {
                response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
            }
            _ => {}
        }
        response.json(json!({ "error": error }))
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::MessageBody;

    use super::*;

    fn body_of(err: &Error) -> Value {
        let bytes = err
            .error_response()
            .into_body()
            .try_into_bytes()
            .expect("bytes");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn envelope_shapes() {
        let v = body_of(&Error::field("name", "is required"));
        assert_eq!(v["error"]["code"], "validation_error");
        assert_eq!(v["error"]["details"]["field"], "name");
        assert_eq!(v["error"]["details"]["reason"], "is required");

        let v = body_of(&Error::NotFound("Flow not found".into()));
        assert_eq!(
            v,
            json!({"error": {"code": "not_found", "message": "Flow not found"}})
        );

        let internal = Error::internal("disk on fire at /var/db");
        assert_eq!(internal.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
        let v = body_of(&internal);
        assert_eq!(v["error"]["code"], "internal_error");
        assert!(!v.to_string().contains("disk"), "no cause leaks: {v}");

        assert_eq!(
            Error::PayloadTooLarge { limit: 1 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            Error::PayloadTooLarge { limit: 1 }.code(),
            "invalid_request"
        );
        assert_eq!(
            Error::from_store(flowrunner_store::Error::LastAdmin, "Account").status_code(),
            StatusCode::CONFLICT
        );
        assert_eq!(
            Error::from_store(flowrunner_store::Error::NotFound, "Flow").to_string(),
            "Flow not found"
        );
    }
}
