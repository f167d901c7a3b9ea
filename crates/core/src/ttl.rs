//! TTL arithmetic: when a worker expires, how long it has left, and how an
//! extension moves its expiry.

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::duration::Human;

/// A worker's lifetime: when it was provisioned and when it expires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl {
    /// Provisioning time.
    pub provisioned_at: Timestamp,
    /// Expiry.
    pub expires_at: Timestamp,
}

/// A refused TTL computation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    /// The result falls outside the representable time range.
    #[error("TTL of {0} is out of range")]
    OutOfRange(String),
    /// An extension would leave more than the allowed time to live.
    #[error("extending by {by} would leave {would_leave} to live, more than the maximum of {max}")]
    ExceedsMaximum {
        /// The extension asked for.
        by: String,
        /// What would remain after it.
        would_leave: String,
        /// The maximum remaining lifetime.
        max: String,
    },
}

fn signed(d: Duration) -> Result<SignedDuration, TtlError> {
    SignedDuration::try_from(d).map_err(|_| TtlError::OutOfRange(Human(d).to_string()))
}

impl Ttl {
    /// A TTL of `ttl` starting at `provisioned_at`.
    ///
    /// # Errors
    /// [`TtlError::OutOfRange`] if the expiry is not a representable time.
    pub fn new(provisioned_at: Timestamp, ttl: Duration) -> Result<Self, TtlError> {
        let expires_at = provisioned_at
            .checked_add(signed(ttl)?)
            .map_err(|_| TtlError::OutOfRange(Human(ttl).to_string()))?;
        Ok(Self {
            provisioned_at,
            expires_at,
        })
    }

    /// Whether the worker has expired at `now` (expiry itself counts).
    pub fn is_expired(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// Time left at `now`; negative once expired.
    pub fn expires_in(&self, now: Timestamp) -> SignedDuration {
        self.expires_at.duration_since(now)
    }

    /// Extends the TTL by `by`, counted from the current expiry, or from
    /// `now` if the worker has already expired (an extension always buys
    /// `by` of life from the moment it is granted or later).
    ///
    /// # Errors
    /// [`TtlError::ExceedsMaximum`] if more than `max_remaining` would be
    /// left at `now`; [`TtlError::OutOfRange`] on overflow.
    pub fn extend(
        &self,
        by: Duration,
        now: Timestamp,
        max_remaining: Duration,
    ) -> Result<Ttl, TtlError> {
        let base = self.expires_at.max(now);
        let expires_at = base
            .checked_add(signed(by)?)
            .map_err(|_| TtlError::OutOfRange(Human(by).to_string()))?;
        let remaining = expires_at.duration_since(now);
        if remaining > signed(max_remaining)? {
            return Err(TtlError::ExceedsMaximum {
                by: Human(by).to_string(),
                would_leave: Human(remaining.unsigned_abs()).to_string(),
                max: Human(max_remaining).to_string(),
            });
        }
        Ok(Ttl {
            provisioned_at: self.provisioned_at,
            expires_at,
        })
    }

    /// A phrase for tables: `in 3h12m` or `expired 5m ago`.
    pub fn describe(&self, now: Timestamp) -> ExpiresIn {
        ExpiresIn(self.expires_in(now))
    }
}

/// Time to expiry, displayed as `in 3h12m`, `now` or `expired 5m ago`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpiresIn(pub SignedDuration);

impl fmt::Display for ExpiresIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.is_zero() {
            f.write_str("now")
        } else if d.is_negative() {
            write!(f, "expired {} ago", Human(d.unsigned_abs()))
        } else {
            write!(f, "in {}", Human(d.unsigned_abs()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + secs).unwrap()
    }

    #[test]
    fn expiry_is_provisioning_time_plus_ttl() {
        let ttl = Ttl::new(t(0), Duration::from_secs(4 * H)).unwrap();
        assert_eq!(ttl.expires_at, t(4 * 3600));
        assert!(!ttl.is_expired(t(4 * 3600 - 1)));
        assert!(ttl.is_expired(t(4 * 3600)));
        assert_eq!(ttl.describe(t(3600 + 600)).to_string(), "in 2h50m");
        assert_eq!(
            ttl.describe(t(4 * 3600 + 300)).to_string(),
            "expired 5m ago"
        );
        assert_eq!(ttl.describe(t(4 * 3600)).to_string(), "now");
    }

    #[test]
    fn an_extension_adds_to_the_current_expiry() {
        let ttl = Ttl::new(t(0), Duration::from_secs(4 * H)).unwrap();
        let max = Duration::from_secs(168 * H);
        let longer = ttl
            .extend(Duration::from_secs(2 * H), t(3600), max)
            .unwrap();
        assert_eq!(longer.expires_at, t(6 * 3600));
        assert_eq!(longer.provisioned_at, t(0));
    }

    #[test]
    fn an_expired_worker_is_extended_from_now() {
        let ttl = Ttl::new(t(0), Duration::from_secs(H)).unwrap();
        let later = ttl
            .extend(
                Duration::from_secs(H),
                t(5 * 3600),
                Duration::from_secs(168 * H),
            )
            .unwrap();
        assert_eq!(later.expires_at, t(6 * 3600));
    }

    #[test]
    fn an_extension_beyond_the_maximum_is_refused() {
        let ttl = Ttl::new(t(0), Duration::from_secs(100 * H)).unwrap();
        let err = ttl
            .extend(
                Duration::from_secs(100 * H),
                t(0),
                Duration::from_secs(168 * H),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "extending by 4d4h would leave 8d8h to live, more than the maximum of 7d"
        );
    }
}
