//! Rate limit on failed credentials, per client address.
//!
//! Each failure (a wrong token, a wrong pairing code) takes a cell from the address's
//! [`governor`] bucket: a burst of [`BURST`], then one every [`REFILL`]. When the bucket is
//! empty the address is blocked until it refills: every credential it presents in the meantime,
//! right or wrong, gets 429 with `Retry-After`, so guessing gains nothing by going faster. At
//! most `BURST + 60 s / REFILL` = 20 wrong tokens get checked per address in a minute.
//!
//! The key is the address the gate trusts (`trust::client_address`), never a header from a
//! peer that is not this machine.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failures allowed at once.
pub const BURST: u32 = 10;
/// One more failure allowed per this long.
pub const REFILL: Duration = Duration::from_secs(6);
/// Addresses tracked before old ones are dropped.
const MAX_TRACKED: usize = 10_000;

/// Failed-credential limiter.
pub struct FailureLimiter {
    buckets: DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
    clock: DefaultClock,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        let quota = Quota::with_period(REFILL)
            .expect("a non-zero period")
            .allow_burst(NonZeroU32::new(BURST).expect("non-zero"));
        Self {
            buckets: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }
}

impl FailureLimiter {
    /// How long `addr` must still wait, if it is blocked.
    pub fn blocked_for(&self, addr: IpAddr) -> Option<Duration> {
        let mut blocked = self.blocked.lock().expect("limiter lock");
        let until = *blocked.get(&addr)?;
        let now = Instant::now();
        if until <= now {
            blocked.remove(&addr);
            return None;
        }
        Some(until - now)
    }

    /// Counts a failure from `addr`; returns how long it is now blocked, if this failure
    /// emptied its bucket.
    pub fn fail(&self, addr: IpAddr) -> Option<Duration> {
        if self.buckets.len() > MAX_TRACKED {
            self.buckets.retain_recent();
        }
        match self.buckets.check_key(&addr) {
            Ok(()) => None,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now()).max(REFILL);
                let mut blocked = self.blocked.lock().expect("limiter lock");
                if blocked.len() > MAX_TRACKED {
                    let now = Instant::now();
                    blocked.retain(|_, until| *until > now);
                }
                blocked.insert(addr, Instant::now() + wait);
                Some(wait)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_failures_blocks_the_address_only() {
        let limiter = FailureLimiter::default();
        let attacker: IpAddr = "203.0.113.7".parse().unwrap();
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        for _ in 0..BURST {
            assert_eq!(limiter.fail(attacker), None);
            assert_eq!(limiter.blocked_for(attacker), None);
        }
        let wait = limiter.fail(attacker).expect("blocked after the burst");
        assert!(wait >= REFILL, "{wait:?}");
        assert!(limiter.blocked_for(attacker).is_some());
        assert_eq!(limiter.blocked_for(other), None);
        assert_eq!(limiter.fail(other), None);
    }
}
