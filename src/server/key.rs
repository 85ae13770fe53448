//! Reading and validating the `Idempotency-Key` header.

use http::{HeaderMap, HeaderName};

/// The longest key accepted, in bytes (after unquoting).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Why a request's key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    Missing,
    Repeated,
    Empty,
    TooLong,
    BadCharacter,
    /// A key read from a JSON body that is not a JSON string.
    NotAString,
}

impl KeyError {
    /// What is wrong, naming the `place` the layer reads keys from (the header, a body
    /// field) when it is known.
    pub(crate) fn detail(self, place: Option<&str>) -> String {
        let header = place.unwrap_or("an idempotency key header");
        match self {
            Self::Missing => format!("this endpoint requires {header}"),
            Self::Repeated => format!("{header} was given more than once"),
            Self::Empty => "the idempotency key is empty".to_owned(),
            Self::TooLong => "the idempotency key is longer than 255 bytes".to_owned(),
            Self::NotAString => format!("{header} must be a JSON string"),
            Self::BadCharacter => {
                "the idempotency key may only contain visible ASCII characters (0x21 to 0x7E)"
                    .to_owned()
            }
        }
    }
}

/// The key of a request: `Ok(None)` when the header is absent.
pub(crate) fn extract<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, KeyError> {
    let (value, repeated) = if few_names(headers) {
        let mut values = headers.iter().filter(|(n, _)| *n == name).map(|(_, v)| v);
        (values.next(), values.next().is_some())
    } else {
        let mut values = headers.get_all(name).iter();
        (values.next(), values.next().is_some())
    };
    match value {
        None => Ok(None),
        Some(_) if repeated => Err(KeyError::Repeated),
        Some(value) => validate(value.as_bytes()).map(Some),
    }
}

/// Whether the request carries the header `name`.
pub(crate) fn present(headers: &HeaderMap, name: &HeaderName) -> bool {
    if few_names(headers) {
        headers.keys().any(|n| n == name)
    } else {
        headers.contains_key(name)
    }
}

/// Whether `headers` hold few enough names (an API client's request) that reading them
/// one by one is cheaper than hashing the names looked for.
pub(crate) fn few_names(headers: &HeaderMap) -> bool {
    headers.keys_len() <= 8
}

/// Validates a raw header value, unquoting an RFC 8941 string (`"abc"`).
pub(crate) fn validate(raw: &[u8]) -> Result<&str, KeyError> {
    let key = match raw {
        [b'"', inner @ .., b'"'] => {
            // A structured-field string may escape `"` and `\`; such a key is not one a
            // client would mint, and accepting it would mean two spellings of one key.
            if inner.contains(&b'\\') || inner.contains(&b'"') {
                return Err(KeyError::BadCharacter);
            }
            inner
        }
        other => other,
    };
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong);
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(KeyError::BadCharacter);
    }
    Ok(std::str::from_utf8(key).expect("visible ASCII is UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn plain_and_quoted_keys() {
        assert_eq!(validate(b"order-1"), Ok("order-1"));
        assert_eq!(validate(b"\"order-1\""), Ok("order-1"));
        assert_eq!(validate(b"\"\""), Err(KeyError::Empty));
        assert_eq!(validate(b""), Err(KeyError::Empty));
        assert_eq!(validate(b"\"a\\\"b\""), Err(KeyError::BadCharacter));
        assert_eq!(
            validate(b"\"a\"b\""),
            Err(KeyError::BadCharacter),
            "a bare quote inside"
        );
        assert_eq!(
            validate(b"\"a\\b\""),
            Err(KeyError::BadCharacter),
            "a backslash inside"
        );
        assert_eq!(validate(&[b'k'; 255]).map(str::len), Ok(255));
        assert_eq!(validate(&[b'k'; 256]), Err(KeyError::TooLong));
        assert_eq!(validate(b"has space"), Err(KeyError::BadCharacter));
        assert_eq!(validate(b"tab\there"), Err(KeyError::BadCharacter));
        assert_eq!(validate("clé".as_bytes()), Err(KeyError::BadCharacter));
    }

    #[test]
    fn each_refusal_says_what_is_wrong() {
        let all = [
            KeyError::Missing,
            KeyError::Repeated,
            KeyError::Empty,
            KeyError::TooLong,
            KeyError::BadCharacter,
            KeyError::NotAString,
        ];
        let details: std::collections::HashSet<_> = all.iter().map(|e| e.detail(None)).collect();
        assert_eq!(details.len(), all.len(), "each detail is its own");
        for (err, word) in all.iter().zip([
            "requires",
            "more than once",
            "empty",
            "255",
            "visible ASCII",
            "JSON string",
        ]) {
            assert!(
                err.detail(None).contains(word),
                "{err:?}: {}",
                err.detail(None)
            );
        }
    }

    #[test]
    fn repeated_header_is_refused() {
        let name = HeaderName::from_static("idempotency-key");
        // Among few other headers (read one by one) and among many (looked up).
        for others in [1, 12] {
            let mut headers = HeaderMap::new();
            for i in 0..others {
                let other = HeaderName::try_from(format!("x-other-{i}")).unwrap();
                headers.append(other, HeaderValue::from_static("b"));
            }
            assert_eq!(extract(&headers, &name), Ok(None), "{others}");
            assert!(!present(&headers, &name));
            headers.append(&name, HeaderValue::from_static("a"));
            assert_eq!(extract(&headers, &name), Ok(Some("a")), "{others}");
            assert!(present(&headers, &name));
            headers.append(&name, HeaderValue::from_static("a"));
            assert_eq!(
                extract(&headers, &name),
                Err(KeyError::Repeated),
                "{others}"
            );
        }
    }

    proptest! {
        #![proptest_config(crate::proptest_config(10_000))]
        /// Fuzzing the key parser: any bytes are accepted exactly when valid, never a panic.
        #[test]
        fn accepted_keys_are_exactly_the_valid_ones(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let valid = !raw.is_empty() && raw.len() <= MAX_KEY_LEN && raw.iter().all(|b| (0x21..=0x7e).contains(b));
            match validate(&raw) {
                Ok(key) => {
                    // Either the raw key itself, or a quoted key whose inside is valid.
                    let unquoted = raw.len() >= 2 && raw[0] == b'"' && raw[raw.len() - 1] == b'"';
                    prop_assert!(valid);
                    if unquoted { prop_assert_eq!(key.as_bytes(), &raw[1..raw.len() - 1]); }
                    else { prop_assert_eq!(key.as_bytes(), &raw[..]); }
                }
                Err(_) => prop_assert!(!valid || raw.first() == Some(&b'"')),
            }
        }

        #[test]
        fn quoting_a_valid_key_gives_the_same_key(key in "[!#-\\[\\]-~]{1,255}") {
            let quoted = format!("\"{key}\"");
            prop_assert_eq!(validate(quoted.as_bytes()), Ok(key.as_str()));
            prop_assert_eq!(validate(key.as_bytes()), Ok(key.as_str()));
        }
    }
}
