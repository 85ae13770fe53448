//! Turning a response into a record and a record back into a response.

use bytes::Bytes;
use http::{header, response::Parts, HeaderMap, HeaderName, HeaderValue, Response};
use http_body::Body;

use super::body::ResponseBody;
use crate::{
    protocol::IDEMPOTENCY_EXPIRES,
    store::{StoredResponse, MAX_HEADERS},
};

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1). `Trailer`
/// is not one: it names the trailers the response ends with, and HTTP/1.1 sends only
/// those it names.
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// The names the `Connection` header lists: they describe the connection too.
fn named_by_connection(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// Whether a header named `name` is worth recording: not hop-by-hop, not named by the
/// `Connection` header, not `proxy-*`, not `unstored` (the layer's list holds the replay
/// markers too).
fn recordable(name: &HeaderName, by_connection: &[&str], unstored: &[HeaderName]) -> bool {
    !(HOP_BY_HOP.contains(name)
        || name.as_str().starts_with("proxy-")
        || unstored.contains(name)
        || by_connection
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_str())))
}

/// The end-to-end headers of a response worth recording: hop-by-hop headers, headers the
/// `Connection` header names, `proxy-*`, and the configured `unstored` headers removed.
pub(crate) fn recordable_headers(headers: &HeaderMap, unstored: &[HeaderName]) -> HeaderMap {
    let by_connection = named_by_connection(headers);
    let mut kept = HeaderMap::with_capacity(headers.len().min(64));
    for (name, value) in headers {
        // `try_append` cannot fail here (there are fewer than the input map holds).
        if recordable(name, &by_connection, unstored)
            && kept.try_append(name.clone(), value.clone()).is_err()
        {
            break;
        }
    }
    kept
}

/// A response's headers lent to its record while the record is written: the recordable
/// ones moved (not copied) into the record, the others kept aside, all given back to the
/// response by [`give_back`].
pub(crate) struct Lent {
    aside: HeaderMap,
    /// The body and trailers, when the record could not take them.
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

/// What [`give_back`] returns besides the headers: the body and trailers, as given.
pub(crate) type GivenBack = (Option<Bytes>, Option<HeaderMap>);

/// The record of the response with `parts`, its headers moved out of `parts` (see
/// [`to_record`] for what is kept); [`give_back`] returns them.
pub(crate) fn lend(
    parts: &mut Parts,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
    unstored: &[HeaderName],
) -> (StoredResponse, Lent) {
    let mut headers = std::mem::take(&mut parts.headers);
    let mut aside = HeaderMap::new();
    let left_out: Vec<HeaderName> = {
        let by_connection = named_by_connection(&headers);
        headers
            .keys()
            .filter(|name| !recordable(name, &by_connection, unstored))
            .cloned()
            .collect()
    };
    for name in left_out {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            let (name, values) = entry.remove_entry_mult();
            for value in values {
                aside.append(&name, value);
            }
        }
    }
    // The trailers the record may not keep (the unstored names) are left out of a copy.
    let (trailers, original_trailers) = match trailers {
        Some(all) if all.keys().any(|name| !recordable(name, &[], unstored)) => {
            (Some(recordable_headers(&all, unstored)), Some(all))
        }
        trailers => (trailers, None),
    };
    if headers.len() > MAX_HEADERS || trailers.as_ref().is_some_and(|t| t.len() > MAX_HEADERS) {
        let record = too_many(parts);
        // Given back whole: the record keeps none of them.
        std::mem::swap(&mut headers, &mut aside);
        give_all(&mut aside, headers);
        let lent = Lent {
            aside,
            body,
            trailers: original_trailers.or(trailers),
        };
        return (record, lent);
    }
    let record = StoredResponse {
        status: parts.status,
        headers,
        body,
        trailers,
    };
    let lent = Lent {
        aside,
        body: None,
        trailers: original_trailers,
    };
    (record, lent)
}

/// Puts the headers `lend` took back into `parts`, and gives back the body and trailers it
/// was given.
pub(crate) fn give_back(parts: &mut Parts, record: StoredResponse, lent: Lent) -> GivenBack {
    parts.headers = record.headers;
    give_all(&mut parts.headers, lent.aside);
    (record.body.or(lent.body), lent.trailers.or(record.trailers))
}

/// Appends every value of `from` to `to`.
fn give_all(to: &mut HeaderMap, from: HeaderMap) {
    if to.is_empty() {
        *to = from;
        return;
    }
    let mut last = None;
    for (name, value) in from {
        if let Some(name) = name {
            last = Some(name);
        }
        if let Some(name) = &last {
            to.append(name, value);
        }
    }
}

/// The record of a response with more headers (or trailers) than a record may hold.
fn too_many(parts: &Parts) -> StoredResponse {
    StoredResponse {
        status: parts.status,
        headers: HeaderMap::new(),
        body: None,
        trailers: None,
    }
}

/// The record of a response whose body was read to `body` (`None`: too large to keep),
/// followed by `trailers` (without the `unstored` names, as the headers). A response with more headers or trailers
/// than a record may hold is recorded without them and its body (its retry learns it
/// ran, and it never runs again), rather than stored in a form no store could read back.
pub(crate) fn to_record(
    parts: &Parts,
    body: Option<Bytes>,
    trailers: Option<HeaderMap>,
    unstored: &[HeaderName],
) -> StoredResponse {
    let headers = recordable_headers(&parts.headers, unstored);
    let trailers = trailers.map(|all| recordable_headers(&all, unstored));
    if headers.len() > MAX_HEADERS || trailers.as_ref().is_some_and(|t| t.len() > MAX_HEADERS) {
        return too_many(parts);
    }
    StoredResponse {
        status: parts.status,
        headers,
        body,
        trailers,
    }
}

/// Writes into `headers` when a record completed now and kept for `ttl` expires, as
/// `Idempotency-Expires` (an HTTP-date, rounded down, so never later than the store's).
pub(crate) fn advertise_expiry(headers: &mut HeaderMap, ttl: std::time::Duration) {
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + ttl);
    if let Ok(value) = HeaderValue::try_from(expires) {
        headers.insert(IDEMPOTENCY_EXPIRES, value);
    }
}

/// The replay of a record that has its body, then its trailers.
/// It carries each of the `markers`, with the value `true`.
pub(crate) fn replay<B: Body>(
    stored: StoredResponse,
    body: Bytes,
    markers: &[HeaderName],
) -> Response<ResponseBody<B>> {
    let body = match stored.trailers {
        None => ResponseBody::full(body),
        trailers => ResponseBody::held(body, None, None, trailers),
    };
    let mut response = Response::new(body);
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers;
    for marker in markers {
        response
            .headers_mut()
            .insert(marker.clone(), HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::IDEMPOTENT_REPLAYED;

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
        let kept = recordable_headers(&headers, &[header::SET_COOKIE, IDEMPOTENT_REPLAYED]);
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
        let record = to_record(&parts, Some(Bytes::from_static(b"body")), None, &[]);
        assert_eq!(record.status, parts.status);
        assert!(record.headers.is_empty());
        assert_eq!(
            record.body, None,
            "the retry learns it ran, never runs it again"
        );
    }

    #[test]
    fn lent_headers_are_recorded_without_the_unstored_ones_and_all_given_back() {
        let mut response = Response::new(());
        for (name, value) in [
            ("content-type", "application/json"),
            ("set-cookie", "a=1"),
            ("set-cookie", "b=2"),
            ("connection", "x-conn-only"),
            ("x-conn-only", "1"),
            ("vary", "accept"),
            ("vary", "origin"),
        ] {
            response
                .headers_mut()
                .append(name, HeaderValue::from_static(value));
        }
        let (mut parts, ()) = response.into_parts();
        let before = parts.headers.clone();
        let body = Bytes::from_static(b"{}");
        let (record, lent) = lend(&mut parts, Some(body.clone()), None, &[header::SET_COOKIE]);
        assert_eq!(
            record.headers,
            recordable_headers(&before, &[header::SET_COOKIE])
        );
        assert_eq!(record.body.as_ref(), Some(&body));
        assert_eq!(give_back(&mut parts, record, lent), (Some(body), None));
        assert_eq!(parts.headers.len(), before.len());
        for name in before.keys() {
            let given: Vec<_> = parts.headers.get_all(name).iter().collect();
            let had: Vec<_> = before.get_all(name).iter().collect();
            assert_eq!(given, had, "{name}");
        }
    }

    #[test]
    fn unstored_trailers_are_not_recorded_but_given_back() {
        let (mut parts, ()) = Response::new(()).into_parts();
        let mut trailers = HeaderMap::new();
        trailers.append("grpc-status", HeaderValue::from_static("0"));
        trailers.append("x-secret", HeaderValue::from_static("token"));
        let unstored = [HeaderName::from_static("x-secret")];
        let (record, lent) = lend(&mut parts, None, Some(trailers.clone()), &unstored);
        let recorded = record.trailers.clone().unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded["grpc-status"], "0");
        assert_eq!(
            give_back(&mut parts, record, lent),
            (None, Some(trailers.clone()))
        );
        let kept = to_record(&parts, None, Some(trailers), &unstored).trailers;
        assert_eq!(kept, Some(recorded));
    }

    #[test]
    fn a_response_with_too_many_headers_gets_them_and_its_body_back() {
        let mut response = Response::new(());
        for i in 0..(MAX_HEADERS as u32 + 1) {
            response
                .headers_mut()
                .append("x-many", HeaderValue::from(i));
        }
        response
            .headers_mut()
            .append("set-cookie", HeaderValue::from_static("a=1"));
        let (mut parts, ()) = response.into_parts();
        let before = parts.headers.clone();
        let body = Bytes::from_static(b"body");
        let (record, lent) = lend(&mut parts, Some(body.clone()), None, &[header::SET_COOKIE]);
        assert!(record.headers.is_empty());
        assert_eq!(record.body, None, "the retry learns it ran");
        assert_eq!(give_back(&mut parts, record, lent), (Some(body), None));
        assert_eq!(parts.headers, before);
    }
}
