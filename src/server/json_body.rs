//! The JSON a route reads from request bodies: a field named by a JSON pointer (the key,
//! or a field left out of the fingerprint), and the canonical form the fingerprint
//! hashes.

use std::fmt;

use serde_json::Value;

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
                    if token.replace("~0", "").replace("~1", "").contains('~') {
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
    pub(crate) fn get<'a>(&self, value: &'a Value) -> Option<&'a Value> {
        self.tokens.iter().try_fold(value, |at, token| match at {
            Value::Object(map) => map.get(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// Removes the value at this pointer from `value`, if there is one.
    pub(crate) fn remove(&self, value: &mut Value) {
        let Some((last, parents)) = self.tokens.split_last() else {
            return;
        };
        let mut at = value;
        for token in parents {
            at = match at {
                Value::Object(map) => match map.get_mut(token) {
                    Some(next) => next,
                    None => return,
                },
                Value::Array(items) => {
                    match token.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                        Some(next) => next,
                        None => return,
                    }
                }
                _ => return,
            };
        }
        match at {
            Value::Object(map) => {
                map.remove(last);
            }
            // An element is replaced by `null` rather than removed: the elements after it
            // keep their positions, so two arrays differing elsewhere still differ.
            Value::Array(items) => {
                if let Some(item) = last.parse::<usize>().ok().and_then(|i| items.get_mut(i)) {
                    *item = Value::Null;
                }
            }
            _ => {}
        }
    }
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

/// `value` in canonical form: object members sorted by key (by their UTF-8 bytes), no
/// insignificant whitespace, strings and numbers as `serde_json` writes them (so `1.0`
/// and `1` stay different, as they do in the JSON text).
pub(crate) fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(member, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Writing a string, a number, a boolean or null into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(field: &str) -> Pointer {
        Pointer::parse("test", field).unwrap()
    }

    #[test]
    fn names_and_pointers_find_fields() {
        let body: Value =
            serde_json::from_str(r#"{"a":{"b/c":[1,{"~d":"x"}]},"key":"k-1"}"#).unwrap();
        assert_eq!(pointer("key").get(&body), Some(&Value::from("k-1")));
        assert_eq!(pointer("/a/b~1c/1/~0d").get(&body), Some(&Value::from("x")));
        assert_eq!(pointer("/a/missing").get(&body), None);
        assert_eq!(pointer("/a/b~1c/9").get(&body), None);
        assert!(Pointer::parse("test", "").is_err());
        assert!(Pointer::parse("test", "/a~2").is_err());
    }

    #[test]
    fn removal_leaves_the_rest() {
        let mut body: Value =
            serde_json::from_str(r#"{"a":{"t":1,"u":2},"list":[1,2,3],"n":0}"#).unwrap();
        pointer("/a/t").remove(&mut body);
        pointer("/list/1").remove(&mut body);
        pointer("/absent/x").remove(&mut body);
        pointer("n").remove(&mut body);
        assert_eq!(body, serde_json::json!({"a":{"u":2},"list":[1,null,3]}));
    }

    #[test]
    fn canonical_form_ignores_order_and_whitespace_only() {
        let a: Value = serde_json::from_str(r#"{ "b": [1, {"y":2,"x":"é"}], "a": 1.0 }"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":1.0,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(
            canonical(&b),
            r#"{"a":1.0,"b":[1,{"x":"é","y":2}]}"#.as_bytes()
        );
        let other: Value = serde_json::from_str(r#"{"a":1,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        assert_ne!(
            canonical(&a),
            canonical(&other),
            "1.0 and 1 differ as text does"
        );
        let reordered: Value =
            serde_json::from_str(r#"{"a":1.0,"b":[{"x":"é","y":2},1]}"#).unwrap();
        assert_ne!(canonical(&a), canonical(&reordered), "array order matters");
    }
}
