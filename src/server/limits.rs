//! The bounds of the layer's durations, and [`ConfigError`] for a value outside them.
//!
//! A duration outside its bounds is refused when the layer is configured, never clamped
//! in silence and never a panic on a request: a zero lease would let two requests run at
//! once, and a lease or TTL of `Duration::MAX` overflows every store's clock.

use std::{fmt, time::Duration};

/// The shortest lease: 1 second (the lease is renewed every third of it).
pub const MIN_LEASE: Duration = Duration::from_secs(1);
/// The longest lease: 24 hours.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 60 * 60);
/// The shortest TTL of a record: 1 second.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL of a record: 365 days.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// The shortest wait for an in-flight request: 1 millisecond.
pub const MIN_WAIT_FOR_IN_FLIGHT: Duration = Duration::from_millis(1);
/// The longest wait for an in-flight request: 10 minutes.
pub const MAX_WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10 * 60);
/// The shortest store timeout: 1 millisecond.
pub const MIN_STORE_TIMEOUT: Duration = Duration::from_millis(1);
/// The longest store timeout: 10 minutes.
pub const MAX_STORE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// The longest completion retry period: 24 hours (zero: try once).
pub const MAX_COMPLETION_RETRY: Duration = Duration::from_secs(24 * 60 * 60);

/// A layer configured with a value it cannot work with (a duration outside its bounds,
/// an empty list, a malformed URL); says which knob and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    knob: &'static str,
    why: Why,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Why {
    OutOfBounds {
        value: Duration,
        min: Duration,
        max: Duration,
    },
    Invalid(&'static str),
    /// One value of a list, refused.
    InvalidValue {
        value: String,
        why: &'static str,
    },
}

impl ConfigError {
    /// The builder method whose value was refused (`"lease"`, `"ttl"`, …).
    pub fn knob(&self) -> &'static str {
        self.knob
    }

    /// A value of `knob` refused for the reason `why`.
    pub(crate) fn invalid(knob: &'static str, why: &'static str) -> Self {
        Self {
            knob,
            why: Why::Invalid(why),
        }
    }

    /// The value `value` of `knob` refused for the reason `why`.
    pub(crate) fn invalid_value(knob: &'static str, value: &str, why: &'static str) -> Self {
        Self {
            knob,
            why: Why::InvalidValue {
                value: value.to_owned(),
                why,
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.why {
            Why::OutOfBounds { value, min, max } => write!(
                f,
                "{} must be between {min:?} and {max:?}, not {value:?}",
                self.knob
            ),
            Why::Invalid(why) => write!(f, "{}: {why}", self.knob),
            Why::InvalidValue { value, why } => write!(f, "{}: {value:?}: {why}", self.knob),
        }
    }
}

impl std::error::Error for ConfigError {}

/// `value` if it lies within `min..=max`, else the error naming `knob`.
pub(crate) fn check(
    knob: &'static str,
    value: Duration,
    min: Duration,
    max: Duration,
) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError {
            knob,
            why: Why::OutOfBounds { value, min, max },
        })
    }
}
