//! axum support (feature `axum`): the key as an extractor, and extractors whose rejections
//! release the key instead of being recorded.
//!
//! An axum extractor that rejects a request (a malformed JSON body, a wrong content type,
//! a path parameter of the wrong type) answers before the handler runs: nothing was
//! executed, so the corrected retry with the same key should run. axum's own rejections
//! carry no mark the layer could read, and the layer never guesses from a status code, so
//! the one line of setup is an import that puts drop-in extractors in their place:
//!
//! ```
//! // Instead of `use axum::{extract::{Path, Query}, Json};`
//! use tower_idempotency::axum::{Json, Path, Query};
//! # #[derive(serde::Deserialize)] struct NewOrder { item: String }
//!
//! async fn create_order(Json(order): Json<NewOrder>) -> Json<String> {
//!     Json(order.item)
//! }
//! ```
//!
//! They extract and respond exactly as axum's do, and mark their rejections
//! [`NotExecuted`]. [`ReleaseOnRejection`] does the same for any other extractor. A
//! handler marks its own answers with `NotExecuted` as a response part.
//!
//! [`IdempotencyKey`] is an extractor (`Option<IdempotencyKey>` where the key is
//! optional); [`Committed`] and [`CommitError`] are responses.

use std::{
    convert::Infallible,
    ops::{Deref, DerefMut},
};

use ::axum::{
    extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request},
    response::{IntoResponse, IntoResponseParts, Response, ResponseParts},
};
use http::request::Parts;

use crate::{
    protocol::IDEMPOTENCY_KEY,
    server::{key_rejection, KeyRejectionKind},
    CommitError, Committed, IdempotencyKey, NotExecuted,
};

/// The rejection of the [`IdempotencyKey`] extractor, marked [`NotExecuted`] (the layer
/// never records it): `400 invalid-key` when the request has no key, `500
/// not-intercepted` when it has one but no idempotency layer handled it (the layer is
/// missing in front of the route, or does not intercept the request's method).
#[derive(Debug)]
pub struct KeyRejection {
    kind: KeyRejectionKind,
}

impl IntoResponse for KeyRejection {
    fn into_response(self) -> Response {
        if self.kind == KeyRejectionKind::NotIntercepted {
            tracing::error!("a handler asked for the idempotency key of a request no idempotency layer intercepted");
        }
        NotExecuted::mark(key_rejection(self.kind).map(::axum::body::Body::from))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = KeyRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, KeyRejection> {
        if let Some(key) = parts.extensions.get::<IdempotencyKey>() {
            return Ok(key.clone());
        }
        let kind = if parts.headers.contains_key(IDEMPOTENCY_KEY) {
            KeyRejectionKind::NotIntercepted
        } else {
            KeyRejectionKind::Missing
        };
        Err(KeyRejection { kind })
    }
}

/// `None` when no idempotency layer intercepted the request (it carries no key).
impl<S: Send + Sync> OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Option<Self>, Infallible> {
        Ok(parts.extensions.get::<IdempotencyKey>().cloned())
    }
}

/// A response part: `(StatusCode::BAD_REQUEST, NotExecuted, "…")`.
impl IntoResponseParts for NotExecuted {
    type Error = Infallible;

    fn into_response_parts(self, mut res: ResponseParts) -> Result<ResponseParts, Infallible> {
        res.extensions_mut().insert(self);
        Ok(res)
    }
}

impl IntoResponse for Committed {
    fn into_response(self) -> Response {
        Committed::into_http(self).map(::axum::body::Body::new)
    }
}

impl IntoResponse for CommitError {
    fn into_response(self) -> Response {
        tracing::warn!(error = %self, "could not complete the idempotency record in the handler's transaction");
        CommitError::into_http(self).map(::axum::body::Body::new)
    }
}

/// Any extractor `E`, its rejection marked [`NotExecuted`]: the layer releases the key
/// instead of recording the rejection.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReleaseOnRejection<E>(pub E);

impl<S: Send + Sync, E: FromRequestParts<S>> FromRequestParts<S> for ReleaseOnRejection<E> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        E::from_request_parts(parts, state)
            .await
            .map(Self)
            .map_err(|rejection| NotExecuted::mark(rejection.into_response()))
    }
}

impl<S: Send + Sync, E: FromRequest<S>> FromRequest<S> for ReleaseOnRejection<E> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        E::from_request(req, state)
            .await
            .map(Self)
            .map_err(|rejection| NotExecuted::mark(rejection.into_response()))
    }
}

/// A drop-in for an axum extractor: the same tuple struct, extracting (and responding)
/// as axum's does, its rejection marked [`NotExecuted`].
macro_rules! drop_in {
    ($(#[$doc:meta])* $name:ident = $axum:ident via $via:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $name<T>(pub T);

        impl<T> Deref for $name<T> {
            type Target = T;

            fn deref(&self) -> &T {
                &self.0
            }
        }

        impl<T> DerefMut for $name<T> {
            fn deref_mut(&mut self) -> &mut T {
                &mut self.0
            }
        }

        impl<T> From<T> for $name<T> {
            fn from(value: T) -> Self {
                Self(value)
            }
        }

        drop_in!(@extract $name = $axum via $via);
    };
    (@extract $name:ident = $axum:ident via parts) => {
        impl<S: Send + Sync, T> FromRequestParts<S> for $name<T>
        where
            ::axum::extract::$axum<T>: FromRequestParts<S>,
        {
            type Rejection = Response;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
                let ReleaseOnRejection(::axum::extract::$axum(value)) =
                    <ReleaseOnRejection<::axum::extract::$axum<T>> as FromRequestParts<S>>::from_request_parts(parts, state).await?;
                Ok(Self(value))
            }
        }
    };
    (@extract $name:ident = $axum:ident via request) => {
        impl<S: Send + Sync, T> FromRequest<S> for $name<T>
        where
            ::axum::extract::$axum<T>: FromRequest<S>,
        {
            type Rejection = Response;

            async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
                let ReleaseOnRejection(::axum::extract::$axum(value)) =
                    <ReleaseOnRejection<::axum::extract::$axum<T>> as FromRequest<S>>::from_request(req, state).await?;
                Ok(Self(value))
            }
        }

        impl<T> IntoResponse for $name<T>
        where
            ::axum::extract::$axum<T>: IntoResponse,
        {
            fn into_response(self) -> Response {
                ::axum::extract::$axum(self.0).into_response()
            }
        }
    };
}

drop_in! {
    /// axum's `Json`, its rejection marked [`NotExecuted`]; as a response, axum's `Json`.
    Json = Json via request
}

drop_in! {
    /// axum's `Form`, its rejection marked [`NotExecuted`]; as a response, axum's `Form`.
    Form = Form via request
}

drop_in! {
    /// axum's `Query`, its rejection marked [`NotExecuted`].
    Query = Query via parts
}

drop_in! {
    /// axum's `Path`, its rejection marked [`NotExecuted`].
    Path = Path via parts
}
