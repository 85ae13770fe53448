//! Turning a response into a record and a record back into a response.

use bytes::Bytes;
use http::{header, response::Parts, HeaderMap, HeaderName, HeaderValue, Response};
use http_body::Body;

use super::body::ResponseBody;
use crate::{
    protocol::IDEMPOTENT_REPLAYED,
    store::{StoredResponse, MAX_HEADERS},
};

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// The end-to-end headers of a response worth recording: hop-by-hop headers, headers the
/// `Connection` header names, `proxy-*`, and the configured `unstored` headers removed.
pub(crate) fn recordable_headers(headers: &HeaderMap, unstored: &[HeaderName]) -> HeaderMap {
    let named_by_connection: Vec<&str> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut kept = HeaderMap::with_capacity(headers.len().min(64));
    for (name, value) in headers {
        let drop = HOP_BY_HOP.contains(name)
            || name.as_str().starts_with("proxy-")
            || *name == IDEMPOTENT_REPLAYED
            || unstored.contains(name)
            || named_by_connection
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_str()));
        // `try_append` cannot fail here (there are fewer than the input map holds).
        if !drop && kept.try_append(name.clone(), value.clone()).is_err() {
            break;
        }
    }
    kept
}

/// The record of a response whose body was read to `body` (`None`: too large to keep).
/// A response with more headers than a record may hold is recorded without headers and
/// body (its retry learns it ran, and it never runs again), rather than stored in a form
/// no store could read back.
pub(crate) fn to_record(
    parts: &Parts,
    body: Option<Bytes>,
    unstored: &[HeaderName],
) -> StoredResponse {
    let headers = recordable_headers(&parts.headers, unstored);
    if headers.len() > MAX_HEADERS {
        return StoredResponse {
            status: parts.status,
            headers: HeaderMap::new(),
            body: None,
        };
    }
    StoredResponse {
        status: parts.status,
        headers,
        body,
    }
}

/// The replay of a record that has its body.
pub(crate) fn replay<B: Body>(stored: StoredResponse, body: Bytes) -> Response<ResponseBody<B>> {
    let mut response = Response::new(ResponseBody::full(body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    response
        .headers_mut()
        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_set_cookie_are_not_recorded() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/json"),
            ("location", "/orders/1"),
            ("connection", "keep-alive, x-conn-only"),
            ("x-conn-only", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("proxy-authenticate", "Basic"),
            ("set-cookie", "session=secret"),
            ("idempotent-replayed", "true"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let kept = recordable_headers(&headers, &[header::SET_COOKIE]);
        let names: Vec<_> = kept.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "location"]);
    }

    #[test]
    fn a_response_with_more_headers_than_a_record_holds_is_kept_without_them() {
        let mut response = Response::new(());
        for i in 0..30_000 {
            response
                .headers_mut()
                .append("x-many", HeaderValue::from_str(&i.to_string()).unwrap());
        }
        let (parts, ()) = response.into_parts();
        let record = to_record(&parts, Some(Bytes::from_static(b"body")), &[]);
        assert_eq!(record.status, parts.status);
        assert!(record.headers.is_empty());
        assert_eq!(
            record.body, None,
            "the retry learns it ran, never runs it again"
        );
    }
}
