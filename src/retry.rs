//! The one retry and back-off policy of vismig: delays that double from a first delay up
//! to a cap, with equal jitter, until a number of attempts or a time budget runs out.
//! The backfill's scanners and writers, the Elasticsearch bulk item retry and the
//! ConfigMap conflict retry all follow it; each loop keeps its own idea of what to retry.

use std::time::{Duration, Instant};

/// How a retry loop waits between attempts and when it gives up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The nominal delay after the first failure; each later one doubles it.
    pub first_delay: Duration,
    /// No nominal delay grows beyond this.
    pub max_delay: Duration,
    /// Give up once this many attempts (the first one included) have failed.
    pub max_attempts: Option<u32>,
    /// Give up on a failure that comes this long after the first attempt started.
    pub max_elapsed: Option<Duration>,
}

impl Backoff {
    /// Starts the schedule of one operation; its clock runs from now.
    pub fn start(&self) -> Schedule {
        Schedule { policy: self.clone(), failures: 0, started: Instant::now() }
    }

    /// The delay after failure number `failure` (1-based) before jitter:
    /// `first_delay * 2^(failure-1)`, capped at `max_delay`.
    pub fn nominal_delay(&self, failure: u32) -> Duration {
        // 2^20 times any first delay worth having is past every cap; stop doubling there.
        let factor = 1u32 << failure.saturating_sub(1).min(20);
        self.first_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// The delay actually slept: somewhere in the upper half of `nominal` ("equal jitter"),
/// so that workers or processes that failed together do not all retry together, while
/// the back-off still grows.
pub fn jittered(nominal: Duration) -> Duration {
    let half = nominal / 2;
    let spread = u64::try_from((nominal - half).as_nanos()).unwrap_or(u64::MAX);
    half + Duration::from_nanos(rand::random_range(0..=spread))
}

/// One operation's progress through a [`Backoff`]: count the failures, say how long to
/// wait before the next attempt, or that it is time to give up.
#[derive(Debug)]
pub struct Schedule {
    policy: Backoff,
    failures: u32,
    started: Instant,
}

impl Schedule {
    /// Records a failed attempt. Returns the (jittered) delay before the next attempt, or
    /// `None` when the policy's attempts or time are spent.
    pub fn next_delay(&mut self) -> Option<Duration> {
        self.failures += 1;
        let attempts_spent = self.policy.max_attempts.is_some_and(|max| self.failures >= max);
        let time_spent = self.policy.max_elapsed.is_some_and(|max| self.started.elapsed() >= max);
        if attempts_spent || time_spent {
            return None;
        }
        Some(jittered(self.policy.nominal_delay(self.failures)))
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Backoff {
        Backoff {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
            max_attempts: None,
            max_elapsed: None,
        }
    }

    #[test]
    fn nominal_delays_double_up_to_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..=9).map(|n| p.nominal_delay(n).as_millis()).collect();
        assert_eq!(ms, [200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000]);
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_secs(15), "no overflow");
    }

    #[test]
    fn jitter_stays_in_the_upper_half_of_the_nominal_delay() {
        for nominal in [Duration::ZERO, Duration::from_nanos(1), Duration::from_millis(200), Duration::from_secs(15)] {
            for _ in 0..200 {
                let d = jittered(nominal);
                assert!(d >= nominal / 2 && d <= nominal, "{nominal:?} -> {d:?}");
            }
        }
    }

    #[test]
    fn delays_grow_within_their_jitter_range() {
        let mut s = policy().start();
        for failure in 1..=9 {
            let nominal = policy().nominal_delay(failure);
            let d = s.next_delay().expect("no limit set");
            assert!(d >= nominal / 2 && d <= nominal, "failure {failure}: {d:?} for {nominal:?}");
        }
        assert_eq!(s.failures(), 9);
    }

    #[test]
    fn gives_up_after_max_attempts_failed() {
        let mut s = Backoff { max_attempts: Some(3), ..policy() }.start();
        assert!(s.next_delay().is_some());
        assert!(s.next_delay().is_some());
        assert_eq!(s.next_delay(), None, "the third failure is the last attempt");
        assert_eq!(s.failures(), 3);
    }

    #[test]
    fn gives_up_once_max_elapsed_is_spent() {
        let mut spent = Backoff { max_elapsed: Some(Duration::ZERO), ..policy() }.start();
        assert_eq!(spent.next_delay(), None);
        let mut fresh = Backoff { max_elapsed: Some(Duration::from_secs(600)), ..policy() }.start();
        assert!(fresh.next_delay().is_some());
    }
}
