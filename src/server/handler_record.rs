//! The handler's response read into the record a store writes inside the handler's
//! transaction (feature `postgres`), and the note that it committed.

use bytes::Bytes;
use http::Response;
use http_body::Body;
use http_body_util::{BodyExt, Full};

use super::{
    completion::{BoxError, CommitError, Committed},
    idempotency_key::{Completed, HandlerClaim, IdempotencyKey},
    record::{advertise_expiry, to_record},
};
use crate::store::{RecordKey, StoredResponse};

/// A response read into the record to write (none when the request holds no claim), and
/// what the first caller gets.
pub(crate) struct Prepared {
    record: Option<StoredResponse>,
    completed: Completed,
}

/// Where a store completes the record in the handler's transaction.
pub(crate) struct Target<'a> {
    pub(crate) key: &'a RecordKey,
    pub(crate) claim: &'a HandlerClaim,
}

impl Prepared {
    /// The record to write: `None` when the request holds no claim (a fail-open layer
    /// runs it unprotected), and the transaction only commits.
    pub(crate) fn record(&self) -> Option<&StoredResponse> {
        self.record.as_ref()
    }

    /// The transaction committed: the layer answers with this response, and does not
    /// complete the record again.
    pub(crate) fn committed(self, claim: Option<&HandlerClaim>) -> Committed {
        if let Some(claim) = claim {
            claim.set_completed(self.completed.clone());
        }
        let completed = self.completed;
        let mut response = Response::new(Full::new(completed.body));
        *response.status_mut() = completed.status;
        *response.headers_mut() = completed.headers;
        Committed { response }
    }
}

/// Where `key`'s record is completed, when the request holds a claim.
pub(crate) fn target(key: &IdempotencyKey) -> Option<Target<'_>> {
    Some(Target {
        key: key.record_key(),
        claim: key.claim()?,
    })
}

/// Reads `response` whole into the record to write: the layer's usual record (hop-by-hop
/// and unstored headers left out; the body left out past `max_response_body`, so a retry
/// learns it ran without a replay; the trailers kept), and the response as the first
/// caller gets it.
pub(crate) async fn prepare<B>(
    claim: Option<&HandlerClaim>,
    response: Response<B>,
) -> Result<Prepared, CommitError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (mut parts, body) = response.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|err| CommitError::RolledBack(err.into()))?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let record = claim.map(|claim| {
        let config = &claim.config;
        if config.advertise_expiry {
            advertise_expiry(&mut parts.headers, config.ttl);
        }
        let kept = (body.len() <= config.max_response_body).then(|| body.clone());
        to_record(&parts, kept, trailers.clone(), &config.not_recorded)
    });
    Ok(Prepared {
        record,
        completed: Completed {
            status: parts.status,
            headers: parts.headers,
            body,
            trailers,
        },
    })
}
