//! Additive increase, multiplicative decrease of the health throttle's limit: halved
//! (`decrease`) when a bound is exceeded, raised by `increase` per interval while all
//! hold, and dropped once it reaches the rate it started from (never above
//! `migration.rate`).

use crate::config::health::Health;

#[derive(Debug, Default)]
pub struct Aimd {
    /// The health limit in records per second; None when the health throttle holds nothing back.
    limit: Option<f64>,
    /// The rate the limit started from: `migration.rate`, or the rate observed when it
    /// is unlimited.
    start: f64,
}

impl Aimd {
    pub fn limit(&self) -> Option<u32> {
        self.limit.map(|l| l.round().max(1.0) as u32)
    }

    /// Lowers the limit; `ceiling` is the configured rate (0 = unlimited), `observed`
    /// the records per second the run copied lately.
    pub fn decrease(&mut self, h: &Health, ceiling: u32, observed: f64) {
        let from = match self.limit {
            Some(l) => l,
            None => {
                self.start = if ceiling > 0 { f64::from(ceiling) } else { observed.max(f64::from(h.min_rate)) };
                self.start
            }
        };
        self.limit = Some((from * h.decrease).max(f64::from(h.min_rate)));
    }

    /// Raises the limit by one step; drops it at the ceiling.
    pub fn increase(&mut self, h: &Health, ceiling: u32) {
        let Some(limit) = self.limit else { return };
        let step = h.increase.map(f64::from).unwrap_or(self.start / 20.0).max(1.0);
        let top = if ceiling > 0 { f64::from(ceiling) } else { self.start };
        let next = limit + step;
        self.limit = (next < top).then_some(next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_on_trouble_climbs_back_in_steps_and_lets_go_at_the_rate() {
        let h = Health { min_rate: 100, ..Default::default() };
        let mut a = Aimd::default();
        a.increase(&h, 2000);
        assert_eq!(a.limit(), None, "nothing to raise");
        a.decrease(&h, 2000, 1500.0);
        assert_eq!(a.limit(), Some(1000), "from the configured rate");
        a.decrease(&h, 2000, 900.0);
        a.decrease(&h, 2000, 500.0);
        a.decrease(&h, 2000, 250.0);
        assert_eq!(a.limit(), Some(125));
        a.decrease(&h, 2000, 125.0);
        assert_eq!(a.limit(), Some(100), "never below minRate");
        for _ in 0..18 {
            a.increase(&h, 2000);
        }
        assert_eq!(a.limit(), Some(1900), "+100 (a twentieth of 2000) per step");
        a.increase(&h, 2000);
        assert_eq!(a.limit(), None, "at the rate: no health limit");
    }

    #[test]
    fn an_unlimited_rate_starts_from_the_observed_one() {
        let h = Health { increase: Some(1000), ..Default::default() };
        let mut a = Aimd::default();
        a.decrease(&h, 0, 8000.0);
        assert_eq!(a.limit(), Some(4000));
        for _ in 0..3 {
            a.increase(&h, 0);
        }
        assert_eq!(a.limit(), Some(7000));
        a.increase(&h, 0);
        assert_eq!(a.limit(), None);
    }
}
