//! gRPC calls through the layer: which calls it protects (the unary methods the app names),
//! how their outcome is read (the `grpc-status` the answer ends with), and the layer's own
//! answers as gRPC statuses.
//!
//! Unary and streaming calls look alike on the wire (a `POST` of `application/grpc`), so
//! the layer protects only the methods it is told are unary; every other gRPC call passes
//! through untouched.

use std::{fmt, sync::Arc};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, StatusCode};

use super::problem_details::ProblemDetails;
use crate::protocol::IDEMPOTENCY_PROBLEM;

/// How a request speaks: plain HTTP, or gRPC (its answers and refusals are gRPC statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Grpc,
}

/// Decides whether a gRPC method path is one the layer protects.
pub(crate) type MethodPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The gRPC methods the layer protects, by their paths (`/package.Service/Method`).
#[derive(Clone, Default)]
pub(crate) enum GrpcMethods {
    /// None: every gRPC call passes through.
    #[default]
    None,
    Named(Arc<[Box<str>]>),
    Matching(MethodPredicate),
}

impl GrpcMethods {
    /// Whether any method is protected.
    pub(crate) fn any(&self) -> bool {
        !matches!(self, Self::None)
    }

    /// Whether the call to `path` is protected.
    pub(crate) fn protects(&self, path: &str) -> bool {
        match self {
            Self::None => false,
            Self::Named(paths) => paths.iter().any(|named| &**named == path),
            Self::Matching(predicate) => predicate(path),
        }
    }
}

impl fmt::Debug for GrpcMethods {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Named(paths) => f.debug_tuple("Named").field(paths).finish(),
            Self::Matching(_) => f.write_str("Matching(..)"),
        }
    }
}

/// Why `path` is not a gRPC method path (`/package.Service/Method`), if it is not.
pub(crate) fn invalid_method_path(path: &str) -> Option<&'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Some("it must start with '/'");
    };
    let Some((service, method)) = rest.split_once('/') else {
        return Some("it must be /package.Service/Method");
    };
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return Some("it must be /package.Service/Method");
    }
    if !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Some("it must be visible ASCII");
    }
    None
}

/// Whether the request is a gRPC call: `application/grpc`, alone or with a `+codec`
/// (gRPC-Web, `application/grpc-web`, carries its status in the body and is plain HTTP
/// here).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    let prefix = b"application/grpc";
    value.len() >= prefix.len()
        && value[..prefix.len()].eq_ignore_ascii_case(prefix)
        && matches!(value.get(prefix.len()), None | Some(b'+' | b';'))
}

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// How long a client's gRPC retry policy waits before its next attempt (gRFC A6).
const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC status code in `fields` (a trailers-only answer's headers, or the trailers),
/// read as gRPC clients read it: decimal digits only (tonic takes `+14` for `UNKNOWN`).
fn code_in(fields: &HeaderMap) -> Option<u32> {
    let digits = fields.get(GRPC_STATUS)?.as_bytes();
    if digits.is_empty() || digits.len() > 3 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The codes that say "not done, try again", each with the HTTP status it stands for:
/// `UNAVAILABLE` (`503`) and `RESOURCE_EXHAUSTED` (`429`). No other code is ever
/// transient, whatever `transient_statuses` holds: an app that adds `500` or `504` for
/// its HTTP routes must not release a gRPC call that failed or ran out of time after its
/// write (`INTERNAL`, `DEADLINE_EXCEEDED`).
const TRANSIENT_CODES: [(u32, StatusCode); 2] = [
    (14, StatusCode::SERVICE_UNAVAILABLE),
    (8, StatusCode::TOO_MANY_REQUESTS),
];

/// Whether the status in `fields` says "not done, try again": a transient code whose HTTP
/// status is one of the `transient` statuses (by default both are).
pub(crate) fn is_transient(transient: &[StatusCode], fields: &HeaderMap) -> bool {
    code_in(fields).is_some_and(|code| {
        TRANSIENT_CODES
            .iter()
            .any(|(known, status)| *known == code && transient.contains(status))
    })
}

/// The layer's answer to a gRPC call it refuses: a trailers-only response (HTTP `200`,
/// the status in its headers) with the problem's code, its title and detail as
/// `grpc-message`, its wait as `grpc-retry-pushback-ms`, its `type` URI as
/// `idempotency-problem`, and its documentation as `link` (as an HTTP answer has it).
pub(crate) fn render(details: &ProblemDetails) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, HeaderValue::from(details.kind.grpc_code()));
    let message = format!("{}: {}", details.title, details.detail);
    headers.insert(GRPC_MESSAGE, percent_encoded(&message));
    if let Some(wait) = details.retry_after {
        headers.insert(GRPC_RETRY_PUSHBACK, HeaderValue::from(wait * 1000));
    }
    if let Ok(uri) = HeaderValue::try_from(details.kind.uri()) {
        headers.insert(IDEMPOTENCY_PROBLEM, uri);
    }
    // The documentation, as an HTTP answer links it (`link` metadata).
    let docs = details.documentation.as_deref();
    if let Some(link) = docs.and_then(super::problem_details::describedby) {
        headers.insert(header::LINK, link);
    }
    response
}

/// `message` as `grpc-message` carries it: every byte outside printable ASCII, and `%`,
/// percent-encoded.
fn percent_encoded(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = Vec::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            out.push(byte);
        } else {
            out.extend_from_slice(&[
                b'%',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]);
        }
    }
    HeaderValue::from_bytes(&out).unwrap_or_else(|_| HeaderValue::from_static("refused"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn grpc_calls_are_told_by_their_content_type() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC;x=1",
        ] {
            assert!(is_grpc(&content_type(grpc)), "{grpc}");
        }
        for other in [
            "application/grpc-web",
            "application/json",
            "application/grp",
        ] {
            assert!(!is_grpc(&content_type(other)), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn method_paths_are_checked() {
        assert_eq!(invalid_method_path("/orders.v1.Orders/Create"), None);
        for bad in [
            "orders.v1.Orders/Create",
            "/Create",
            "//Create",
            "/a/",
            "/a/b/c",
            "/a b/c",
        ] {
            assert!(invalid_method_path(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn unavailable_and_resource_exhausted_are_transient_by_default() {
        let transient = crate::server::defaults::TRANSIENT_STATUSES;
        let status = |code: &str| {
            let mut fields = HeaderMap::new();
            fields.insert(GRPC_STATUS, HeaderValue::from_str(code).unwrap());
            is_transient(&transient, &fields)
        };
        assert!(status("14") && status("8"));
        for recorded in [
            "0", "2", "3", "4", "9", "13", "99", "x", "+14", " 14", "014x", "",
        ] {
            assert!(!status(recorded), "{recorded}");
        }
        assert!(!is_transient(&transient, &HeaderMap::new()));
        // Only those two, whatever else the HTTP list holds; and only while it holds
        // theirs.
        let mut fields = HeaderMap::new();
        fields.insert(GRPC_STATUS, HeaderValue::from_static("4"));
        let every = [
            StatusCode::GATEWAY_TIMEOUT,
            StatusCode::INTERNAL_SERVER_ERROR,
        ];
        assert!(
            !is_transient(&every, &fields),
            "DEADLINE_EXCEEDED is recorded"
        );
        fields.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert!(!is_transient(&[StatusCode::TOO_MANY_REQUESTS], &fields));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encoded("in progress: 100%"), "in progress: 100%25");
        assert_eq!(percent_encoded("café\n"), "caf%C3%A9%0A");
    }
}
