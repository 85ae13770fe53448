//! The client layer's defaults, each in one place: [`IdempotencyClientLayer::new`] starts
//! from these.
//!
//! [`IdempotencyClientLayer::new`]: super::IdempotencyClientLayer::new

use std::{num::NonZeroU32, time::Duration};

use http::{HeaderName, Method};

use crate::protocol;

/// The header that carries the key: `Idempotency-Key`.
pub const HEADER_NAME: HeaderName = protocol::IDEMPOTENCY_KEY;

/// The methods that get a key and retries: POST and PATCH.
pub const METHODS: [Method; 2] = [Method::POST, Method::PATCH];

/// The most attempts per call, the first included: 5.
pub const MAX_ATTEMPTS: NonZeroU32 = NonZeroU32::new(5).expect("not zero");

/// The most time a call may take, waits included: 30 seconds.
pub const MAX_ELAPSED: Duration = Duration::from_secs(30);

/// The ceiling of the first retry's wait: 100 ms, doubling for each later retry.
pub const BASE_DELAY: Duration = Duration::from_millis(100);

/// The highest ceiling of any retry's wait: 5 seconds.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    /// The README names these defaults with their values; they must agree.
    #[test]
    fn the_readme_shows_the_constants() {
        let readme = include_str!("../../README.md").replace('\n', " ");
        let phrases = [
            format!("`MAX_ATTEMPTS` {MAX_ATTEMPTS}"),
            format!("`MAX_ELAPSED` {} s", MAX_ELAPSED.as_secs()),
            format!("`BASE_DELAY` {} ms", BASE_DELAY.as_millis()),
            format!("`MAX_DELAY` {} s", MAX_DELAY.as_secs()),
        ];
        for phrase in phrases {
            assert!(readme.contains(&phrase), "README lacks {phrase}");
        }
        assert_eq!(HEADER_NAME, crate::defaults::HEADER_NAME);
    }
}
