//! The JSON a route reads from request bodies: a field named by a JSON pointer (the key,
//! or a field left out of the fingerprint), and the canonical form the fingerprint
//! hashes.

use std::fmt;

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer,
};
use serde_json::value::RawValue;

use super::limits::ConfigError;

/// A field of a JSON body: a top-level name (`request_id`), or an RFC 6901 JSON pointer
/// (`/payment/idempotency_key`, with `~1` for `/` and `~0` for `~`).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Pointer {
    tokens: Vec<String>,
    /// As configured, for messages.
    shown: String,
}

impl Pointer {
    /// `field` read as a pointer when it starts with `/`, else as a top-level name.
    pub(crate) fn parse(knob: &'static str, field: &str) -> Result<Self, ConfigError> {
        if field.is_empty() {
            return Err(ConfigError::invalid(knob, "the field name is empty"));
        }
        let tokens = match field.strip_prefix('/') {
            Some(path) => path
                .split('/')
                .map(|token| {
                    let mut escapes = token.split('~').skip(1);
                    if escapes.any(|rest| !(rest.starts_with('0') || rest.starts_with('1'))) {
                        Err(ConfigError::invalid(
                            knob,
                            "a JSON pointer escapes only ~0 (~) and ~1 (/)",
                        ))
                    } else {
                        Ok(token.replace("~1", "/").replace("~0", "~"))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![field.to_owned()],
        };
        Ok(Self {
            tokens,
            shown: field.to_owned(),
        })
    }

    /// The value at this pointer in `value`, if any.
    pub(crate) fn get<'a>(&self, value: &'a Json) -> Option<&'a Json> {
        self.tokens.iter().try_fold(value, |at, token| match at {
            Json::Object(members) => members
                .iter()
                .find(|(name, _)| name == token)
                .map(|(_, v)| v),
            Json::Array(items) => index(token).and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// Removes the value at this pointer from `value`, if there is one.
    pub(crate) fn remove(&self, value: &mut Json) {
        let Some((last, parents)) = self.tokens.split_last() else {
            return;
        };
        let mut at = value;
        for token in parents {
            let next = match at {
                Json::Object(members) => members
                    .iter_mut()
                    .find(|(name, _)| name == token)
                    .map(|(_, v)| v),
                Json::Array(items) => index(token).and_then(|i| items.get_mut(i)),
                _ => None,
            };
            match next {
                Some(next) => at = next,
                None => return,
            }
        }
        match at {
            Json::Object(members) => members.retain(|(name, _)| name != last),
            // An element is replaced by `null` rather than removed: the elements after it
            // keep their positions, so two arrays differing elsewhere still differ.
            Json::Array(items) => {
                if let Some(item) = index(last).and_then(|i| items.get_mut(i)) {
                    *item = Json::Literal("null".to_owned());
                }
            }
            _ => {}
        }
    }
}

/// An array index as RFC 6901 writes one: `0`, or digits without a leading zero.
fn index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = token.len() > 1 && token.starts_with('0');
    (digits && !leading_zero)
        .then(|| token.parse().ok())
        .flatten()
}

impl fmt::Display for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Pointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)
    }
}

/// A JSON body as the fingerprint sees it: numbers, `true`, `false` and `null` kept as
/// the text the client sent (a float read would make `0.30000000000000001` and `0.3` one
/// number), object members sorted by key, and each member name once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Json {
    /// Members sorted by key (by their UTF-8 bytes), no name twice.
    Object(Vec<(String, Json)>),
    Array(Vec<Json>),
    String(String),
    /// A number, `true`, `false` or `null`, as sent.
    Literal(String),
}

/// How deep a body may nest: serde_json's own limit for its values.
const MAX_DEPTH: usize = 128;

/// An object's members as sent, refusing a name given twice (serde_json would keep the
/// last, while a handler that derives `Deserialize` refuses the body).
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for Visit<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members: Vec<(String, &'a RawValue)> = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((name, value));
                }
                members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                if let Some(pair) = members.windows(2).find(|pair| pair[0].0 == pair[1].0) {
                    return Err(serde::de::Error::custom(format_args!(
                        "the member {:?} appears twice",
                        pair[0].0
                    )));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

impl Json {
    /// Parses `body`, or says why it is not JSON.
    pub(crate) fn parse(body: &[u8]) -> Result<Self, String> {
        let raw: &RawValue = serde_json::from_slice(body).map_err(|err| err.to_string())?;
        Self::from_raw(raw, 0)
    }

    fn from_raw(raw: &RawValue, depth: usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        let text = raw.get();
        let read = |err: serde_json::Error| err.to_string();
        Ok(match text.as_bytes().first() {
            Some(b'{') => {
                let Members(members) = serde_json::from_str(text).map_err(read)?;
                let members = members
                    .into_iter()
                    .map(|(name, value)| Ok((name, Self::from_raw(value, depth + 1)?)))
                    .collect::<Result<_, String>>()?;
                Self::Object(members)
            }
            Some(b'[') => {
                let items: Vec<&RawValue> = serde_json::from_str(text).map_err(read)?;
                let items = items
                    .into_iter()
                    .map(|item| Self::from_raw(item, depth + 1))
                    .collect::<Result<_, String>>()?;
                Self::Array(items)
            }
            Some(b'"') => Self::String(serde_json::from_str(text).map_err(read)?),
            _ => Self::Literal(text.trim().to_owned()),
        })
    }

    /// The canonical form: members in key order, no insignificant whitespace, strings
    /// as `serde_json` escapes them, literals as sent.
    pub(crate) fn canonical(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Object(members) => {
                out.push(b'{');
                for (i, (name, member)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_string(name, out);
                    out.push(b':');
                    member.write(out);
                }
                out.push(b'}');
            }
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::String(text) => write_string(text, out),
            Self::Literal(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

fn write_string(text: &str, out: &mut Vec<u8>) {
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(field: &str) -> Pointer {
        Pointer::parse("test", field).unwrap()
    }

    fn json(text: &str) -> Json {
        Json::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn names_and_pointers_find_fields() {
        let body = json(r#"{"a":{"b/c":[1,{"~d":"x"}]},"key":"k-1"}"#);
        assert_eq!(pointer("key").get(&body), Some(&Json::String("k-1".into())));
        assert_eq!(
            pointer("/a/b~1c/1/~0d").get(&body),
            Some(&Json::String("x".into()))
        );
        assert_eq!(pointer("/a/missing").get(&body), None);
        assert_eq!(pointer("/a/b~1c/9").get(&body), None);
        assert_eq!(pointer("/a/b~1c/01").get(&body), None, "no leading zero");
        assert_eq!(pointer("/a/b~1c/+1").get(&body), None);
        assert!(Pointer::parse("test", "").is_err());
        assert!(Pointer::parse("test", "/a~2").is_err());
        assert!(Pointer::parse("test", "/a~").is_err());
        assert!(Pointer::parse("test", "/~~01").is_err());
    }

    #[test]
    fn removal_leaves_the_rest() {
        let mut body = json(r#"{"a":{"t":1,"u":2},"list":[1,2,3],"n":0}"#);
        pointer("/a/t").remove(&mut body);
        pointer("/list/1").remove(&mut body);
        pointer("/absent/x").remove(&mut body);
        pointer("n").remove(&mut body);
        assert_eq!(body.canonical(), br#"{"a":{"u":2},"list":[1,null,3]}"#);
    }

    #[test]
    fn canonical_form_ignores_order_and_whitespace_only() {
        let a = json(r#"{ "b": [1, {"y":2,"x":"é"}], "a": 1.0 }"#);
        let b = json(r#"{"a":1.0,"b":[1,{"x":"\u00e9","y":2}]}"#);
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(
            b.canonical(),
            r#"{"a":1.0,"b":[1,{"x":"é","y":2}]}"#.as_bytes()
        );
        assert_ne!(
            a.canonical(),
            json(r#"{"a":1,"b":[1,{"x":"é","y":2}]}"#).canonical()
        );
        assert_ne!(
            a.canonical(),
            json(r#"{"a":1.0,"b":[{"x":"é","y":2},1]}"#).canonical()
        );
    }

    #[test]
    fn numbers_stay_as_sent() {
        for (one, other) in [
            ("12345678901234567890123", "12345678901234567890124"),
            ("0.30000000000000001", "0.3"),
            ("1e2", "100.0"),
        ] {
            assert_ne!(
                json(one).canonical(),
                json(other).canonical(),
                "{one} vs {other}"
            );
        }
    }

    #[test]
    fn a_member_named_twice_or_a_deep_body_is_refused() {
        let err = Json::parse(br#"{"k":"a","k":"b"}"#).unwrap_err();
        assert!(err.contains("twice"), "{err}");
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(Json::parse(deep.as_bytes()).is_err());
        assert!(Json::parse(b"{not json").is_err());
    }
}
