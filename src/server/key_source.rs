//! Where a route's key comes from: the header, a JSON body field, or a function of the
//! request.

use std::sync::Arc;

use bytes::Bytes;
use http::{request::Parts, HeaderName};

use super::json_body::Pointer;

/// Reads a request's key from its head and body.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts, &Bytes) -> Option<String> + Send + Sync>;

/// Where the key of a request is read.
#[derive(Clone, Default)]
pub(crate) enum KeySource {
    /// The configured header.
    #[default]
    Header,
    /// A string field of the JSON body.
    Json(Pointer),
    /// The app's function of the request head and body.
    Request(KeyFn),
}

impl KeySource {
    /// Whether the key is in the body, which must then be read before the key is known.
    pub(crate) fn reads_body(&self) -> bool {
        !matches!(self, Self::Header)
    }

    /// Where the key is read, as the invalid-key problem names it.
    pub(crate) fn place(&self, header: &HeaderName) -> String {
        match self {
            Self::Header => format!("the {} header", display_name(header)),
            Self::Json(pointer) => format!("the `{pointer}` field of the JSON body"),
            Self::Request(_) => "an idempotency key in the request".to_owned(),
        }
    }
}

/// A header name as people write it: `x-payment-key` as `X-Payment-Key`.
fn display_name(name: &HeaderName) -> String {
    let mut shown = String::with_capacity(name.as_str().len());
    let mut word_start = true;
    for c in name.as_str().chars() {
        shown.push(if word_start {
            c.to_ascii_uppercase()
        } else {
            c
        });
        word_start = c == '-';
    }
    shown
}
