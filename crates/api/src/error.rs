//! The contract's error body: `{"errors":[{"code","title","detail","source":{"pointer"},"meta"}]}`
//! with the HTTP status that goes with it. Codes follow the contract's examples: 10009
//! authentication failed, 10005 not found, 10015 bad request / invalid value, 10032 invalid
//! enumerated value, 10007 conflict.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorObject {
    pub code: &'static str,
    pub title: String,
    pub detail: String,
    /// A JSON pointer into the request body (`/name`), when one field is at fault.
    pub pointer: Option<String>,
}

/// An API failure: the status and every error found (validation reports them all at once).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub errors: Vec<ErrorObject>,
}

impl ApiError {
    fn one(
        status: StatusCode,
        code: &'static str,
        title: &str,
        detail: impl Into<String>,
        pointer: Option<&str>,
    ) -> Self {
        ApiError {
            status,
            errors: vec![ErrorObject {
                code,
                title: title.to_owned(),
                detail: detail.into(),
                pointer: pointer.map(str::to_owned),
            }],
        }
    }
    pub fn unauthorized() -> Self {
        Self::one(
            StatusCode::UNAUTHORIZED,
            "10009",
            "Authentication failed",
            "Could not understand the provided credentials.",
            None,
        )
    }
    pub fn forbidden(detail: &str) -> Self {
        Self::one(StatusCode::FORBIDDEN, "10010", "Authorization failed", detail, None)
    }
    pub fn not_found() -> Self {
        Self::one(
            StatusCode::NOT_FOUND,
            "10005",
            "Resource not found",
            "The requested resource or URL could not be found.",
            Some("/"),
        )
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::one(StatusCode::BAD_REQUEST, "10015", "Bad Request", detail, Some("/"))
    }
    pub fn conflict(detail: impl Into<String>, pointer: &str) -> Self {
        Self::one(StatusCode::UNPROCESSABLE_ENTITY, "10007", "Already taken", detail, Some(pointer))
    }
    pub fn internal() -> Self {
        Self::one(
            StatusCode::INTERNAL_SERVER_ERROR,
            "10000",
            "Internal error",
            "The request could not be completed.",
            None,
        )
    }
    /// The same errors answered with 422, for lists whose contract gives that status to bad
    /// query parameters.
    pub fn unprocessable(mut self) -> Self {
        self.status = StatusCode::UNPROCESSABLE_ENTITY;
        self
    }
    /// Validation failures, all of them, as 422.
    pub fn invalid(errors: Vec<ErrorObject>) -> Self {
        ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, errors }
    }
}

impl ErrorObject {
    /// A field with a value outside its enumeration.
    pub fn invalid_enum(pointer: &str, allowed: &[&str]) -> Self {
        ErrorObject {
            code: "10032",
            title: "Invalid enumerated value".into(),
            detail: format!("The value must be one of: {}.", allowed.join(", ")),
            pointer: Some(pointer.into()),
        }
    }
    /// A field with an invalid value.
    pub fn invalid_value(pointer: &str, detail: impl Into<String>) -> Self {
        ErrorObject {
            code: "10015",
            title: format!("Invalid value for {}", pointer.trim_start_matches('/')),
            detail: detail.into(),
            pointer: Some(pointer.into()),
        }
    }
    /// A required field that is missing.
    pub fn required(pointer: &str) -> Self {
        ErrorObject {
            code: "10015",
            title: format!("Missing required parameter {}", pointer.trim_start_matches('/')),
            detail: "This field is required.".into(),
            pointer: Some(pointer.into()),
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::Conflict { scope } => {
                ApiError::conflict(format!("The {scope} is already in use."), &format!("/{scope}"))
            }
            store::StoreError::Failed(e) => {
                tracing::error!(error = %e, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors: Vec<_> = self
            .errors
            .iter()
            .map(|e| {
                let mut o = json!({
                    "code": e.code,
                    "title": e.title,
                    "detail": e.detail,
                    "meta": {"url": format!("https://developers.telnyx.com/docs/overview/errors/{}", e.code)},
                });
                if let Some(p) = &e.pointer {
                    o["source"] = json!({ "pointer": p });
                }
                o
            })
            .collect();
        (self.status, Json(json!({ "errors": errors }))).into_response()
    }
}
