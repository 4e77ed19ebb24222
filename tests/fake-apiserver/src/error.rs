//! API errors, served as `metav1.Status` bodies like a real API server's.

use serde_json::{Value, json};

use crate::resources::GroupResource;

/// An error the API answers with (`kind: Status`).
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

fn details(gr: &GroupResource, name: &str) -> Value {
    json!({"name": name, "group": gr.group, "kind": gr.resource})
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn not_found(gr: &GroupResource, name: &str) -> Self {
        ApiError {
            details: Some(details(gr, name)),
            ..Self::new(
                404,
                "NotFound",
                format!("{} \"{name}\" not found", gr.display()),
            )
        }
    }

    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn already_exists(gr: &GroupResource, name: &str) -> Self {
        ApiError {
            details: Some(details(gr, name)),
            ..Self::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", gr.display()),
            )
        }
    }

    pub fn conflict(gr: &GroupResource, name: &str, why: &str) -> Self {
        ApiError {
            details: Some(details(gr, name)),
            ..Self::new(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {} \"{name}\": {why}",
                    gr.display()
                ),
            )
        }
    }

    pub fn modified(gr: &GroupResource, name: &str) -> Self {
        Self::conflict(
            gr,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn invalid(gr: &GroupResource, name: &str, message: impl Into<String>) -> Self {
        ApiError {
            details: Some(details(gr, name)),
            ..Self::new(422, "Invalid", message)
        }
    }

    pub fn gone(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(ct: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: application/json, application/yaml, application/json-patch+json, \
                 application/merge-patch+json, application/apply-patch+yaml, \
                 application/strategic-merge-patch+json (got {ct:?}; this test server does \
                 not speak protobuf or CBOR)"
            ),
        )
    }

    /// An injected error for a status code.
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "InternalError",
        };
        Self::new(code, reason, format!("injected fault: {code} {reason}"))
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}
