//! Turning a response into a record and a record back into a response.

use bytes::Bytes;
use http::{header, response::Parts, HeaderMap, HeaderName, HeaderValue, Response};
use http_body::Body;

use super::body::ResponseBody;
use crate::{protocol::IDEMPOTENT_REPLAYED, store::StoredResponse};

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
    let mut kept = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let drop = HOP_BY_HOP.contains(name)
            || name.as_str().starts_with("proxy-")
            || *name == IDEMPOTENT_REPLAYED
            || unstored.contains(name)
            || named_by_connection
                .iter()
                .any(|n| n.eq_ignore_ascii_case(name.as_str()));
        if !drop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

/// The record of a response whose body was read to `body` (`None`: too large to keep).
pub(crate) fn to_record(
    parts: &Parts,
    body: Option<Bytes>,
    unstored: &[HeaderName],
) -> StoredResponse {
    StoredResponse {
        status: parts.status,
        headers: recordable_headers(&parts.headers, unstored),
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
}
