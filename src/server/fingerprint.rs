//! The request fingerprint: SHA-256 over a length-prefixed framing of the request.

use http::{HeaderMap, HeaderName, Method, Uri};
use sha2::{Digest, Sha256};

use crate::store::Fingerprint;

/// Feeds the framed request to `sink`. Every variable-length field is preceded by its
/// length as a `u64`, and the header section by its count of names and each name by its
/// count of values, so two different requests never produce the same byte stream (a
/// property test below checks it).
fn frame(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fingerprint_headers: &[HeaderName],
    body: &[u8],
    sink: &mut impl FnMut(&[u8]),
) {
    let mut field = |bytes: &[u8]| {
        sink(&(bytes.len() as u64).to_be_bytes());
        sink(bytes);
    };
    field(method.as_str().as_bytes());
    field(
        uri.path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    field(body);
    sink(&(fingerprint_headers.len() as u64).to_be_bytes());
    for name in fingerprint_headers {
        let values = headers.get_all(name);
        sink(&(values.iter().count() as u64).to_be_bytes());
        for value in values {
            sink(&(value.len() as u64).to_be_bytes());
            sink(value.as_bytes());
        }
    }
}

/// The fingerprint of a request.
pub(crate) fn compute(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    fingerprint_headers: &[HeaderName],
    body: &[u8],
) -> Fingerprint {
    let mut hasher = Sha256::new();
    frame(
        method,
        uri,
        headers,
        fingerprint_headers,
        body,
        &mut |bytes| {
            hasher.update(bytes);
        },
    );
    Fingerprint::from_bytes(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Req {
        method: Method,
        path: String,
        body: Vec<u8>,
        auth: Vec<Vec<u8>>,
        cookie: Vec<Vec<u8>>,
    }

    fn names() -> Vec<HeaderName> {
        vec![http::header::AUTHORIZATION, http::header::COOKIE]
    }

    fn encode(req: &Req) -> Vec<u8> {
        let mut headers = HeaderMap::new();
        for (name, values) in names().into_iter().zip([&req.auth, &req.cookie]) {
            for v in values {
                headers.append(&name, HeaderValue::from_bytes(v).unwrap());
            }
        }
        let uri: Uri = req.path.parse().unwrap();
        let mut out = Vec::new();
        frame(&req.method, &uri, &headers, &names(), &req.body, &mut |b| {
            out.extend_from_slice(b)
        });
        out
    }

    fn req() -> impl Strategy<Value = Req> {
        let value = proptest::collection::vec(0x20u8..0x7f, 0..6);
        (
            prop_oneof![Just(Method::POST), Just(Method::PATCH), Just(Method::PUT)],
            "/[a-c/?=]{0,6}",
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(value.clone(), 0..3),
            proptest::collection::vec(value, 0..3),
        )
            .prop_map(|(method, path, body, auth, cookie)| Req {
                method,
                path,
                body,
                auth,
                cookie,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn different_requests_never_share_an_encoding(a in req(), b in req()) {
            let same = a.method == b.method
                && a.path == b.path
                && a.body == b.body
                && a.auth == b.auth
                && a.cookie == b.cookie;
            prop_assert_eq!(encode(&a) == encode(&b), same, "{:?} vs {:?}", a, b);
        }
    }

    #[test]
    fn body_bytes_cannot_pose_as_a_header() {
        let a = Req {
            method: Method::POST,
            path: "/x".into(),
            body: b"ab".to_vec(),
            auth: vec![],
            cookie: vec![],
        };
        let b = Req {
            method: Method::POST,
            path: "/x".into(),
            body: b"a".to_vec(),
            auth: vec![b"b".to_vec()],
            cookie: vec![],
        };
        assert_ne!(encode(&a), encode(&b));
    }

    #[test]
    fn the_digest_depends_on_the_credential() {
        let uri: Uri = "/orders".parse().unwrap();
        let mut alice = HeaderMap::new();
        alice.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer alice"),
        );
        let mut bob = HeaderMap::new();
        bob.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer bob"),
        );
        let a = compute(&Method::POST, &uri, &alice, &names(), b"{}");
        let b = compute(&Method::POST, &uri, &bob, &names(), b"{}");
        assert_ne!(a, b);
        assert_eq!(a, compute(&Method::POST, &uri, &alice, &names(), b"{}"));
    }
}
