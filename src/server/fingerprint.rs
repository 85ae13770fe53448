//! The request fingerprint: two SHA-256 digests over a length-prefixed framing, one of the
//! request (method, authority, path and query, body), one of the caller (the fingerprint
//! headers and cookies).

use http::{header, HeaderMap, HeaderName, Method, Uri};
use sha2::{Digest, Sha256};

use crate::store::{Fingerprint, RecordKey};

/// Feeds one variable-length field to `sink`, preceded by its length as a `u64`.
fn field(sink: &mut impl FnMut(&[u8]), bytes: &[u8]) {
    sink(&(bytes.len() as u64).to_be_bytes());
    sink(bytes);
}

/// [`field`] of `bytes` lower-cased (ASCII), without allocating.
fn field_lowercase(sink: &mut impl FnMut(&[u8]), bytes: &[u8]) {
    sink(&(bytes.len() as u64).to_be_bytes());
    let mut buf = [0u8; 64];
    for chunk in bytes.chunks(buf.len()) {
        let lower = &mut buf[..chunk.len()];
        lower.copy_from_slice(chunk);
        lower.make_ascii_lowercase();
        sink(lower);
    }
}

/// The authority a request was sent to: the URI's (HTTP/2, absolute-form), else the
/// `Host` header (HTTP/1.1 origin-form), else empty; without a default port (`:80`,
/// `:443`) or a trailing dot, which name the same host.
fn authority<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a [u8] {
    let raw = match uri.authority() {
        Some(authority) => authority.as_str().as_bytes(),
        None => headers.get(header::HOST).map_or(&b""[..], |v| v.as_bytes()),
    };
    let host = raw
        .strip_suffix(b":443")
        .or_else(|| raw.strip_suffix(b":80"))
        .unwrap_or(raw);
    host.strip_suffix(b".").unwrap_or(host)
}

/// Feeds the framed request to `sink`: every field length-prefixed, so two different
/// requests never produce the same byte stream (a property test below checks it). A gRPC
/// call's method is framed as `grpc:POST`, which no HTTP method can be (`:` is not a
/// token character): a gRPC call and an HTTP request (gRPC-Web among them) with the same
/// key, path and bytes are different requests, whose answers are framed differently.
fn frame_request(
    method: &Method,
    grpc: bool,
    uri: &Uri,
    headers: &HeaderMap,
    with_authority: bool,
    body: &[u8],
    sink: &mut impl FnMut(&[u8]),
) {
    if grpc {
        let method = method.as_str().as_bytes();
        sink(&((b"grpc:".len() + method.len()) as u64).to_be_bytes());
        sink(b"grpc:");
        sink(method);
    } else {
        field(sink, method.as_str().as_bytes());
    }
    // The authority is lower-cased: `Example.com` and `example.com` are one host.
    let authority = if with_authority {
        authority(uri, headers)
    } else {
        &[]
    };
    field_lowercase(sink, authority);
    field(
        sink,
        uri.path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    field(sink, body);
}

/// The values of the cookie `name` in the request's `Cookie` headers, in order.
fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b';'))
        .filter_map(move |pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Feeds the framed caller to `sink`: the count of headers, then each header's count of
/// values and the values; then the same for the named cookies. With named cookies, the
/// `Cookie` header itself is left out (an empty value list in its place).
fn frame_caller(
    headers: &HeaderMap,
    fingerprint_headers: &[HeaderName],
    named_cookies: Option<&[String]>,
    sink: &mut impl FnMut(&[u8]),
) {
    sink(&(fingerprint_headers.len() as u64).to_be_bytes());
    for name in fingerprint_headers {
        if named_cookies.is_some() && name == header::COOKIE {
            sink(&0u64.to_be_bytes());
            continue;
        }
        let values = headers.get_all(name);
        sink(&(values.iter().count() as u64).to_be_bytes());
        for value in values {
            field(sink, value.as_bytes());
        }
    }
    let named_cookies = named_cookies.unwrap_or_default();
    sink(&(named_cookies.len() as u64).to_be_bytes());
    for name in named_cookies {
        sink(&(cookie_values(headers, name).count() as u64).to_be_bytes());
        for value in cookie_values(headers, name) {
            field(sink, value);
        }
    }
}

/// What of a request enters its fingerprint, besides the request line and body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Credentials<'a> {
    pub(crate) headers: &'a [HeaderName],
    /// `Some`: only these cookies, not the whole `Cookie` header.
    pub(crate) cookies: Option<&'a [String]>,
    /// Whether the authority enters the request digest.
    pub(crate) authority: bool,
    /// The caller digest of a request with none of these headers and cookies
    /// ([`anonymous_caller`] of the same headers and cookies).
    pub(crate) anonymous: &'a [u8; 32],
}

/// The caller digest of every request that carries none of `fingerprint_headers` and
/// `named_cookies`: the same for all of them, so a layer computes it once.
pub(crate) fn anonymous_caller(
    fingerprint_headers: &[HeaderName],
    named_cookies: Option<&[String]>,
) -> [u8; 32] {
    let mut caller = Sha256::new();
    frame_caller(
        &HeaderMap::new(),
        fingerprint_headers,
        named_cookies,
        &mut |bytes| caller.update(bytes),
    );
    caller.finalize().into()
}

/// Whether `headers` carry none of what identifies the caller: then the caller's frame is
/// that of an empty header map.
fn anonymous(headers: &HeaderMap, credentials: Credentials<'_>) -> bool {
    let named_cookies = credentials.cookies.is_some_and(|named| !named.is_empty());
    // A request with few header names (an API client's) is read once, name by name,
    // rather than hashed into once per name looked for.
    if super::key::few_names(headers) {
        return !headers.keys().any(|name| {
            (named_cookies && name == header::COOKIE) || credentials.headers.contains(name)
        });
    }
    let cookies_absent = !named_cookies || !headers.contains_key(header::COOKIE);
    cookies_absent
        && credentials
            .headers
            .iter()
            .all(|name| !headers.contains_key(name))
}

/// The fingerprint of a request (`grpc`: a gRPC call).
pub(crate) fn compute(
    method: &Method,
    grpc: bool,
    uri: &Uri,
    headers: &HeaderMap,
    credentials: Credentials<'_>,
    body: &[u8],
) -> Fingerprint {
    let mut request = Sha256::new();
    frame_request(
        method,
        grpc,
        uri,
        headers,
        credentials.authority,
        body,
        &mut |bytes| request.update(bytes),
    );
    let caller = if anonymous(headers, credentials) {
        *credentials.anonymous
    } else {
        let mut caller = Sha256::new();
        frame_caller(
            headers,
            credentials.headers,
            credentials.cookies,
            &mut |bytes| caller.update(bytes),
        );
        caller.finalize().into()
    };
    Fingerprint::new(request.finalize().into(), caller)
}

/// A short, stable hash of a record key, for logs: keys are never logged in clear.
pub(crate) fn key_hash(key: &RecordKey) -> String {
    let digest = Sha256::digest(key.as_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Req {
        method: Method,
        grpc: bool,
        host: Vec<u8>,
        path: String,
        body: Vec<u8>,
        auth: Vec<Vec<u8>>,
        cookie: Vec<Vec<u8>>,
    }

    fn names() -> Vec<HeaderName> {
        vec![header::AUTHORIZATION, header::COOKIE]
    }

    fn headers(req: &Req) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, values) in names().into_iter().zip([&req.auth, &req.cookie]) {
            for v in values {
                headers.append(&name, HeaderValue::from_bytes(v).unwrap());
            }
        }
        if !req.host.is_empty() {
            headers.insert(header::HOST, HeaderValue::from_bytes(&req.host).unwrap());
        }
        headers
    }

    fn encode(req: &Req) -> (Vec<u8>, Vec<u8>) {
        let headers = headers(req);
        let uri: Uri = req.path.parse().unwrap();
        let (mut request, mut caller) = (Vec::new(), Vec::new());
        frame_request(
            &req.method,
            req.grpc,
            &uri,
            &headers,
            true,
            &req.body,
            &mut |b| request.extend_from_slice(b),
        );
        frame_caller(&headers, &names(), None, &mut |b| {
            caller.extend_from_slice(b)
        });
        (request, caller)
    }

    fn req() -> impl Strategy<Value = Req> {
        let value = proptest::collection::vec(0x20u8..0x7f, 0..6);
        (
            (
                prop_oneof![
                    Just(Method::POST),
                    Just(Method::PATCH),
                    Just(Method::PUT),
                    // An extension method spelled like a gRPC call's framed method.
                    Just(Method::from_bytes(b"grpc").unwrap()),
                ],
                any::<bool>(),
            ),
            proptest::collection::vec(b'a'..=b'c', 0..3),
            "/[a-c/?=]{0,6}",
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(value.clone(), 0..3),
            proptest::collection::vec(value, 0..3),
        )
            .prop_map(|((method, grpc), host, path, body, auth, cookie)| Req {
                method,
                grpc,
                host,
                path,
                body,
                auth,
                cookie,
            })
    }

    proptest! {
        #![proptest_config(crate::proptest_config(2000))]
        #[test]
        fn different_requests_never_share_an_encoding(a in req(), b in req()) {
            let same_request = a.method == b.method && a.grpc == b.grpc && a.host == b.host
                && a.path == b.path && a.body == b.body;
            let same_caller = a.auth == b.auth && a.cookie == b.cookie;
            let (ra, ca) = encode(&a);
            let (rb, cb) = encode(&b);
            prop_assert_eq!(ra == rb, same_request, "{:?} vs {:?}", a, b);
            prop_assert_eq!(ca == cb, same_caller, "{:?} vs {:?}", a, b);
        }
    }

    fn fingerprint(method: &Method, uri: &str, headers: &HeaderMap, body: &[u8]) -> Fingerprint {
        let names = [header::AUTHORIZATION, header::COOKIE];
        let cookies = ["session".to_owned()];
        let anonymous = anonymous_caller(&names, Some(&cookies));
        let credentials = Credentials {
            headers: &names,
            cookies: Some(&cookies),
            authority: true,
            anonymous: &anonymous,
        };
        compute(
            method,
            false,
            &uri.parse().unwrap(),
            headers,
            credentials,
            body,
        )
    }

    /// The caller digest the long way: always framed from the request's headers.
    fn framed_caller(
        headers: &HeaderMap,
        names: &[HeaderName],
        cookies: Option<&[String]>,
    ) -> [u8; 32] {
        let mut caller = Sha256::new();
        frame_caller(headers, names, cookies, &mut |b| caller.update(b));
        caller.finalize().into()
    }

    #[test]
    fn the_anonymous_shortcut_gives_the_framed_digest() {
        let session = ["session".to_owned()];
        let configs: [(&[HeaderName], Option<&[String]>); 5] = [
            (&[header::AUTHORIZATION, header::COOKIE], None),
            (&[header::AUTHORIZATION, header::COOKIE], Some(&session)),
            (&[header::AUTHORIZATION], Some(&session)),
            (&[header::AUTHORIZATION], Some(&[])),
            (&[], None),
        ];
        let requests: [&[(HeaderName, &'static str)]; 6] = [
            &[],
            &[(header::HOST, "a.example")],
            &[(header::AUTHORIZATION, "Bearer a")],
            &[(header::COOKIE, "theme=dark")],
            &[(header::COOKIE, "session=s1; theme=dark")],
            &[
                (header::AUTHORIZATION, "Bearer a"),
                (header::COOKIE, "session=s1"),
            ],
        ];
        let mut anonymous_seen = 0;
        for (names, cookies) in configs {
            let anonymous = anonymous_caller(names, cookies);
            // Each request alone, and among nine other headers: a request with many
            // header names is checked by lookups, one with few by reading them.
            for (request, padded) in requests.iter().flat_map(|r| [(r, false), (r, true)]) {
                let mut headers = HeaderMap::new();
                for (name, value) in *request {
                    headers.append(name, HeaderValue::from_static(value));
                }
                if padded {
                    for i in 0..9 {
                        let name = HeaderName::try_from(format!("x-pad-{i}")).unwrap();
                        headers.append(name, HeaderValue::from_static("1"));
                    }
                }
                let credentials = Credentials {
                    headers: names,
                    cookies,
                    authority: true,
                    anonymous: &anonymous,
                };
                let computed = compute(
                    &Method::POST,
                    false,
                    &"/o".parse().unwrap(),
                    &headers,
                    credentials,
                    b"",
                );
                let framed = framed_caller(&headers, names, cookies);
                assert_eq!(
                    computed.caller(),
                    &framed,
                    "{names:?} {cookies:?} {request:?}"
                );
                anonymous_seen += usize::from(framed == anonymous);
            }
        }
        // The shortcut is taken, and not only where nothing at all was sent.
        assert!(anonymous_seen > configs.len(), "{anonymous_seen}");
    }

    #[test]
    fn other_credentials_change_the_caller_digest_only() {
        let mut alice = HeaderMap::new();
        alice.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer alice"),
        );
        let mut bob = HeaderMap::new();
        bob.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bob"),
        );
        let a = fingerprint(&Method::POST, "/orders", &alice, b"{}");
        let b = fingerprint(&Method::POST, "/orders", &bob, b"{}");
        assert_eq!(a.request(), b.request());
        assert_ne!(a.caller(), b.caller());
        assert_eq!(a, fingerprint(&Method::POST, "/orders", &alice, b"{}"));
    }

    #[test]
    fn the_authority_is_part_of_the_request() {
        let host = |h: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_static(h));
            headers
        };
        let a = fingerprint(&Method::POST, "/orders", &host("a.example"), b"{}");
        let b = fingerprint(&Method::POST, "/orders", &host("b.example"), b"{}");
        assert_ne!(a.request(), b.request());
        assert_eq!(a.caller(), b.caller());
        // The URI's authority (HTTP/2) counts as the same host as the Host header.
        let absolute = fingerprint(
            &Method::POST,
            "http://a.example/orders",
            &HeaderMap::new(),
            b"{}",
        );
        assert_eq!(absolute.request(), a.request());
        for same in ["A.Example", "a.example.", "a.example:443", "a.example:80"] {
            let other = fingerprint(&Method::POST, "/orders", &host(same), b"{}");
            assert_eq!(other.request(), a.request(), "{same}");
        }
        let other_port = fingerprint(&Method::POST, "/orders", &host("a.example:8443"), b"{}");
        assert_ne!(other_port.request(), a.request());
    }

    #[test]
    fn only_named_cookies_enter_the_caller_digest() {
        let cookies = |c: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, HeaderValue::from_static(c));
            headers
        };
        let first = fingerprint(
            &Method::POST,
            "/o",
            &cookies("session=s1; _ga=GA1.2.3"),
            b"",
        );
        let analytics_changed =
            fingerprint(&Method::POST, "/o", &cookies("_ga=GA1.9.9;session=s1"), b"");
        let session_changed = fingerprint(
            &Method::POST,
            "/o",
            &cookies("session=s2; _ga=GA1.2.3"),
            b"",
        );
        assert_eq!(first, analytics_changed);
        assert_ne!(first.caller(), session_changed.caller());
        assert_eq!(first.request(), session_changed.request());
    }

    #[test]
    fn cookie_values_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; session=s1;x_session=no"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static(" session = s2 ;b"));
        let values: Vec<&[u8]> = cookie_values(&headers, "session").collect();
        assert_eq!(values, [&b"s1"[..], b"s2"]);
        assert_eq!(
            cookie_values(&headers, "b").count(),
            0,
            "a pair needs a value"
        );
        assert_eq!(
            cookie_values(&headers, "a").collect::<Vec<_>>(),
            [&b"1"[..]]
        );
    }

    #[test]
    fn key_hashes_are_short_stable_and_never_the_key() {
        let key = RecordKey::new("idem", "", "order-7f3a");
        let hash = key_hash(&key);
        assert_eq!(hash.len(), 16);
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(hash, key_hash(&RecordKey::new("idem", "", "order-7f3a")));
        assert_ne!(hash, key_hash(&RecordKey::new("idem", "", "order-7f3b")));
        assert!(!hash.contains("7f3a"));
    }

    #[test]
    fn body_bytes_cannot_pose_as_a_header() {
        let a = Req {
            method: Method::POST,
            grpc: false,
            host: vec![],
            path: "/x".into(),
            body: b"ab".to_vec(),
            auth: vec![],
            cookie: vec![],
        };
        let b = Req {
            body: b"a".to_vec(),
            auth: vec![b"b".to_vec()],
            ..a.clone()
        };
        assert_ne!(encode(&a), encode(&b));
    }
}
