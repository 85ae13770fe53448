use std::{error::Error, fmt};

type BoxError = Box<dyn Error + Send + Sync>;

/// What went wrong in a store operation; see [`StoreError::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The caller's lock token is not the record's current token: its lease expired and the
    /// key was claimed again, or the record is gone. Not a fault of the store.
    Fenced,
    /// The store is full of records it may not evict (in-flight claims) and cannot take a
    /// new one.
    CapacityExhausted,
    /// The backend could not be reached or answered with an error.
    Unavailable,
    /// The operation did not finish within the configured store timeout.
    Timeout,
    /// A value under one of our keys could not be decoded (truncated, foreign, or written
    /// by an unknown format version).
    Corrupt,
    /// The store was configured wrongly (an invalid URL or table name): a mistake to fix
    /// in the application, found when the store is built.
    Configuration,
}

impl StoreErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Fenced => "lock token is no longer current",
            Self::CapacityExhausted => "store is full of in-flight records",
            Self::Unavailable => "store is unavailable",
            Self::Timeout => "store operation timed out",
            Self::Corrupt => "stored record could not be decoded",
            Self::Configuration => "store is configured wrongly",
        }
    }
}

/// An error from an [`IdempotencyStore`](super::IdempotencyStore) operation.
///
/// Opaque on purpose: match on [`kind`](Self::kind), and reach the backend's own error
/// through [`Error::source`]. Displayed with `{:#}`, it names every cause down the
/// chain (`store is unavailable: error performing tls handshake: invalid peer
/// certificate: NotValidForName`), where `{}` stops at the first.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<BoxError>,
}

impl StoreError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: StoreErrorKind, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            source: Some(source.into()),
        }
    }

    /// An error of `kind` with no underlying cause.
    pub fn from_kind(kind: StoreErrorKind) -> Self {
        Self { kind, source: None }
    }

    /// The [`StoreErrorKind::Fenced`] error.
    pub fn fenced() -> Self {
        Self::from_kind(StoreErrorKind::Fenced)
    }

    /// A [`StoreErrorKind::Corrupt`] error saying what was wrong with the stored value.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, what.into())
    }

    /// A [`StoreErrorKind::Unavailable`] error caused by the backend's `source`.
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::new(StoreErrorKind::Unavailable, source)
    }

    /// A [`StoreErrorKind::Configuration`] error saying what is wrong.
    pub fn configuration(what: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Configuration, what.into())
    }

    /// What went wrong.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.describe())?;
        let Some(source) = &self.source else {
            return Ok(());
        };
        write!(f, ": {source}")?;
        // `{:#}`: every cause down the chain (a TLS handshake's failing certificate, say),
        // each once.
        if f.alternate() {
            let mut shown = source.to_string();
            let mut cause = source.source();
            while let Some(err) = cause {
                let text = err.to_string();
                if !shown.contains(&text) {
                    write!(f, ": {text}")?;
                    shown = text;
                }
                cause = err.source();
            }
        }
        Ok(())
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}
