//! What every admin API handler answers with: one refusal type (turned into the
//! common error body by the router), JSON answers, and the one way handlers run a
//! blocking key-file operation.

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Response, StatusCode};
use serde_json::Value;

use crate::keys::write::WriteError;
use crate::observe::body::ResBody;

/// A refusal of the admin API.
#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    /// The `Allow` header of a `405`.
    pub(super) allow: Option<&'static str>,
}

pub(super) type ApiResult = Result<Response<ResBody>, ApiError>;

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            allow: None,
        }
    }
}

pub(super) fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        let (status, code) = match &e {
            WriteError::ReadOnly(_) => (StatusCode::CONFLICT, "keys_file_read_only"),
            WriteError::NotFound(_) => (StatusCode::NOT_FOUND, "key_not_found"),
            WriteError::NameTaken(_) => (StatusCode::CONFLICT, "name_taken"),
            WriteError::Invalid(_) | WriteError::Rejected(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request")
            }
            WriteError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "keys_file_error"),
            // cluster: 409 revision_conflict, 503 cluster_unavailable.
            WriteError::Cluster(r) => r.status_code(),
        };
        Self::new(status, code, e.to_string())
    }
}

pub(super) fn json_response(status: StatusCode, v: &Value) -> Response<ResBody> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    let mut r = Response::new(ResBody::full(Bytes::from(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// Runs a blocking key-file operation off the async workers.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the operation did not complete",
        )
    })?
}
