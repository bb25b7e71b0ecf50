//! Every refusal keygate makes, as one enum, and the one exhaustive match that turns
//! a refusal into a response: status, code, message, decision and extra headers.
//!
//! Messages are for the person debugging an integration: what was wrong and what to
//! change. They never contain a key or a key's hash.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Response, StatusCode};

use crate::keys::{KgFormatError, Level};
use crate::observe::body::ResBody;
use crate::observe::record::Decision;
use crate::policy::ALLOWED_METHODS;
use crate::proxy::hygiene::PathError;

/// The one error shape of keygate's own answers (data plane and admin API):
/// `{"error": {"status", "code", "message", "request_id"}}`, JSON, not cached.
pub(crate) fn error_response(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &HeaderValue,
) -> Response<ResBody> {
    let body = serde_json::json!({
        "error": {
            "status": status.as_u16(),
            "code": code,
            "message": message,
            "request_id": request_id.to_str().unwrap_or(""),
        }
    });
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    let mut res = Response::new(ResBody::full(Bytes::from(bytes)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(crate::proxy::requestid::HEADER, request_id.clone());
    res
}

/// Why a presented key is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    WhiteSpace,
    Empty,
    NotText,
    Kg(KgFormatError),
}

#[derive(Debug, Clone)]
pub(crate) enum Reject {
    Connect,
    BadPath(PathError),
    AmbiguousKey,
    MethodOverride,
    AmbiguousFraming,
    HeadersTooLarge,
    ApiDisabled,
    MissingKey,
    MalformedKey(Malformed),
    InvalidKey,
    ExpiredKey {
        name: Arc<str>,
    },
    KeyRateLimited {
        name: Arc<str>,
        retry_after: u64,
    },
    IpRateLimited {
        retry_after: u64,
    },
    PathNotAllowed,
    InsufficientPermission {
        name: Arc<str>,
        category: Option<Arc<str>>,
        method: Method,
        needed: Level,
        has: Level,
    },
    MethodNotAllowed(Method),
    BodyTooLarge {
        limit: u64,
    },
    /// The client's body framing was malformed (chunked) or broken off.
    BadRequestBody,
    /// The client paused longer than `timeouts.client_body_read` in its body.
    ClientTimeout,
    UpstreamUnavailable,
    UpstreamTimeout,
    // cluster: Redis unreachable for longer than cluster.on_redis_down.max_staleness.
    ClusterStale,
}

struct Parts {
    status: StatusCode,
    code: &'static str,
    message: String,
    decision: Decision,
}

impl Reject {
    pub(crate) fn decision(&self) -> Decision {
        self.parts().decision
    }

    /// The refusal's code, as in the error body and the access log's `reason`.
    pub(crate) fn code(&self) -> &'static str {
        self.parts().code
    }

    fn parts(&self) -> Parts {
        use Decision as D;
        use StatusCode as S;
        let p = |status, code, message: String, decision| Parts {
            status,
            code,
            message,
            decision,
        };
        match self {
            Self::Connect => p(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "CONNECT is not supported by this gateway".into(),
                D::BadRequest,
            ),
            Self::BadPath(e) => p(S::BAD_REQUEST, "bad_path", e.explain().into(), D::BadRequest),
            Self::AmbiguousKey => p(
                S::BAD_REQUEST,
                "ambiguous_api_key",
                "the request carries more than one API key value; send exactly one, in X-API-Key or Authorization: Bearer".into(),
                D::BadRequest,
            ),
            Self::MethodOverride => p(
                S::BAD_REQUEST,
                "method_override_not_allowed",
                "method-override headers (X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override) are not allowed; send the real method".into(),
                D::BadRequest,
            ),
            Self::AmbiguousFraming => p(
                S::BAD_REQUEST,
                "ambiguous_framing",
                "the request has both Content-Length and Transfer-Encoding; send one of them".into(),
                D::BadRequest,
            ),
            Self::HeadersTooLarge => p(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "the request headers are larger than this gateway accepts".into(),
                D::BadRequest,
            ),
            Self::ApiDisabled => p(
                S::UNAUTHORIZED,
                "api_disabled",
                "API access is switched off for this account; an administrator can switch it back on".into(),
                D::ApiDisabled,
            ),
            Self::MissingKey => p(
                S::UNAUTHORIZED,
                "missing_api_key",
                "no API key: send it in the X-API-Key header or as Authorization: Bearer <key>".into(),
                D::Unauthenticated,
            ),
            Self::MalformedKey(m) => p(
                S::UNAUTHORIZED,
                "malformed_api_key",
                match m {
                    Malformed::WhiteSpace => "the API key contains white space; send it exactly as issued, with a single space after 'Bearer'".into(),
                    Malformed::Empty => "the API key is empty".into(),
                    Malformed::NotText => "the API key contains characters no key has".into(),
                    Malformed::Kg(KgFormatError::Length) => "the API key has the wrong length for a kg_ key; check it was copied whole".into(),
                    Malformed::Kg(KgFormatError::Alphabet) => "the API key contains characters a kg_ key never has; check it was copied whole".into(),
                    Malformed::Kg(KgFormatError::Checksum) => "the API key's checksum does not match; check it was copied whole".into(),
                },
                D::Unauthenticated,
            ),
            Self::InvalidKey => p(
                S::UNAUTHORIZED,
                "invalid_api_key",
                "the API key is not valid: it is unknown or has been deleted".into(),
                D::Unauthenticated,
            ),
            Self::ExpiredKey { name } => p(
                S::UNAUTHORIZED,
                "expired_api_key",
                format!("key '{name}' has expired; ask for a new key or a later expiry"),
                D::Unauthenticated,
            ),
            Self::KeyRateLimited { name, retry_after } => p(
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("key '{name}' is over its rate limit; retry after {retry_after} s"),
                D::RateLimited,
            ),
            Self::IpRateLimited { retry_after } => p(
                S::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests without a valid API key from this address; retry after {retry_after} s"),
                D::RateLimited,
            ),
            Self::PathNotAllowed => p(
                S::FORBIDDEN,
                "path_not_allowed",
                "this path is not in any API category, so no key can reach it".into(),
                D::Forbidden,
            ),
            Self::InsufficientPermission {
                name,
                category,
                method,
                needed,
                has,
            } => {
                let what = match category {
                    Some(c) => format!("'{c}'"),
                    None => "paths outside the configured categories".into(),
                };
                let has = match has {
                    Level::None => "no access".to_string(),
                    l => format!("{l} access"),
                };
                p(
                    S::FORBIDDEN,
                    "insufficient_permission",
                    format!("key '{name}' has {has} to {what}; {method} needs {needed}"),
                    D::Forbidden,
                )
            }
            Self::MethodNotAllowed(m) => p(
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{m} is not allowed through this gateway; use one of {ALLOWED_METHODS}"),
                D::BadRequest,
            ),
            Self::BodyTooLarge { limit } => p(
                S::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {limit} bytes"),
                D::BadRequest,
            ),
            Self::BadRequestBody => p(
                S::BAD_REQUEST,
                "bad_request_body",
                "the request body could not be read: its chunked encoding is malformed or it ended early; check the client's framing".into(),
                D::BadRequest,
            ),
            Self::ClientTimeout => p(
                S::REQUEST_TIMEOUT,
                "client_timeout",
                "the request body paused longer than timeouts.client_body_read; send the body without long pauses".into(),
                D::BadRequest,
            ),
            Self::UpstreamUnavailable => p(
                S::BAD_GATEWAY,
                "upstream_unavailable",
                "the service behind the gateway is not reachable; try again shortly".into(),
                D::UpstreamError,
            ),
            Self::UpstreamTimeout => p(
                S::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "the service behind the gateway did not answer in time".into(),
                D::UpstreamError,
            ),
            // cluster: fail closed once the keys may be too old to trust.
            Self::ClusterStale => p(
                S::SERVICE_UNAVAILABLE,
                "cluster_unavailable",
                "the gateway has not reached its cluster store for longer than cluster.on_redis_down.max_staleness; try again shortly".into(),
                D::UpstreamError,
            ),
        }
    }

    /// The response for this refusal. `close` adds `Connection: close` (a request
    /// body that was not read must never be parsed as the next request).
    pub(crate) fn into_response(self, request_id: &HeaderValue, close: bool) -> Response<ResBody> {
        let parts = self.parts();
        let mut res = error_response(parts.status, parts.code, &parts.message, request_id);
        let h = res.headers_mut();
        match &self {
            Self::ApiDisabled
            | Self::MissingKey
            | Self::MalformedKey(_)
            | Self::InvalidKey
            | Self::ExpiredKey { .. } => {
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"keygate\""),
                );
            }
            Self::KeyRateLimited { retry_after, .. } | Self::IpRateLimited { retry_after } => {
                h.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Self::Connect | Self::MethodNotAllowed(_) => {
                h.insert(ALLOW, HeaderValue::from_static(ALLOWED_METHODS));
            }
            Self::BadPath(_)
            | Self::AmbiguousKey
            | Self::MethodOverride
            | Self::AmbiguousFraming
            | Self::HeadersTooLarge
            | Self::PathNotAllowed
            | Self::InsufficientPermission { .. }
            | Self::BodyTooLarge { .. }
            | Self::BadRequestBody
            | Self::ClientTimeout
            | Self::UpstreamUnavailable
            | Self::UpstreamTimeout
            | Self::ClusterStale => {}
        }
        if close {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        res
    }
}
