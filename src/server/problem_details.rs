//! [`ProblemDetails`]: a problem the layer answers itself, as the app's own error hook
//! sees it, and its default `application/problem+json` rendering.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::protocol::{ProblemType, PROBLEM_JSON};

/// A problem the layer answers itself instead of calling the inner service (or records
/// for a handler that failed): what [`IdempotencyLayer::problem_response`] is given.
///
/// [`to_response`](Self::to_response) renders it the default way (RFC 9457
/// `application/problem+json`, with `Retry-After` and a `Link` to its documentation).
///
/// [`IdempotencyLayer::problem_response`]: crate::IdempotencyLayer::problem_response
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProblemDetails {
    pub(crate) kind: ProblemType,
    pub(crate) status: StatusCode,
    pub(crate) title: &'static str,
    pub(crate) detail: String,
    pub(crate) retry_after: Option<u64>,
    pub(crate) original_status: Option<StatusCode>,
    pub(crate) documentation: Option<String>,
}

impl ProblemDetails {
    /// Which problem this is; [`ProblemType::uri`] is its stable `type`.
    pub fn problem_type(&self) -> ProblemType {
        self.kind
    }

    /// The status the contract gives it (`409`, `503`, …). The layer answers with it
    /// whatever the app's hook answers: clients (this crate's among them) act on it.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// A short summary, the same for every occurrence of this problem type.
    pub fn title(&self) -> &str {
        self.title
    }

    /// What happened to this request and what the client should do next.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// How long the client should wait before it retries the same request with the same
    /// key, where the contract says to retry (`in-progress`, `store-unavailable`). The
    /// layer sends it as `Retry-After` whatever the app's hook answers, and sends none
    /// where this is `None`.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.map(Duration::from_secs)
    }

    /// For `response-not-stored`: the status the request was answered with when it ran.
    pub fn original_status(&self) -> Option<StatusCode> {
        self.original_status
    }

    /// The page that documents this problem type (the configured documentation base
    /// followed by its [`slug`](ProblemType::slug)); `None` when the layer links to none.
    pub fn documentation(&self) -> Option<&str> {
        self.documentation.as_deref()
    }

    /// The default rendering: `application/problem+json` with `type`, `title`, `status`,
    /// `detail` (and `original_status` for `response-not-stored`), `Retry-After` where
    /// the contract gives one, and `Link: <…>; rel="describedby"` to the documentation.
    pub fn to_response(&self) -> Response<Bytes> {
        let mut body = serde_json::json!({
            "type": self.kind.uri(),
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(original) = self.original_status {
            body["original_status"] = original.as_u16().into();
        }
        let mut response = Response::new(Bytes::from(body.to_string()));
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        self.add_required_headers(&mut response);
        response
    }

    /// Makes `response` (the app's rendering) say what the contract says: this problem's
    /// status, `Retry-After` where the contract gives one and none where it does not (a
    /// conflict a client took for "in progress" would be retried), and the `Link` to the
    /// documentation where the app set none.
    pub(crate) fn enforce<B>(&self, response: &mut Response<B>) {
        *response.status_mut() = self.status;
        self.add_required_headers(response);
    }

    /// Sets `Retry-After` as the contract gives it (or removes it), and adds the `Link`
    /// to the documentation where `response` has none.
    fn add_required_headers<B>(&self, response: &mut Response<B>) {
        let headers = response.headers_mut();
        match self.retry_after {
            Some(seconds) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            }
            None => {
                headers.remove(header::RETRY_AFTER);
            }
        }
        if let Some(link) = self.documentation.as_deref().and_then(describedby) {
            if !headers.contains_key(header::LINK) {
                headers.insert(header::LINK, link);
            }
        }
    }
}

/// The `Link` header value pointing to `url` as the documentation of the response.
pub(crate) fn describedby(url: &str) -> Option<HeaderValue> {
    HeaderValue::try_from(format!("<{url}>; rel=\"describedby\"")).ok()
}
