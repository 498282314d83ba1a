//! The throttle: a governor rate limiter on records per second, rebuilt when the rate
//! changes at run time (`PUT /rate`, or the health throttle's limit), plus pause/resume
//! (the operator's and the health throttle's). One call per batch, from the
//! scanners, so the limit applies to reads of the primary as much as to writes.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::watch;

use crate::metrics::{Control, Metrics};

pub struct Throttle {
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    burst: Option<u32>,
    batch_size: u32,
    limiter: Mutex<Option<(u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl Throttle {
    pub fn new(control: Arc<Control>, metrics: Arc<Metrics>, burst: Option<u32>, batch_size: usize) -> Self {
        Self { control, metrics, burst, batch_size: batch_size.max(1) as u32, limiter: Mutex::new(None) }
    }

    /// The limiter for the current rate (None when unlimited). A new limiter starts with
    /// a full burst, so the burst is kept near one batch to bound the overshoot.
    fn current(&self) -> Option<Arc<DefaultDirectRateLimiter>> {
        self.metrics.rate_limit_records_per_second.set(i64::from(*self.control.rate.borrow()));
        let rate = self.control.effective_rate();
        self.metrics.rate_effective_records_per_second.set(i64::from(rate));
        let per_second = NonZeroU32::new(rate)?;
        let mut slot = self.limiter.lock().unwrap();
        if let Some((r, limiter)) = slot.as_ref()
            && *r == rate
        {
            return Some(limiter.clone());
        }
        let burst = self.burst.unwrap_or_else(|| self.batch_size.max(rate / 10)).max(1);
        let quota = Quota::per_second(per_second).allow_burst(NonZeroU32::new(burst).expect("burst >= 1"));
        let limiter = Arc::new(RateLimiter::direct(quota));
        *slot = Some((rate, limiter.clone()));
        Some(limiter)
    }

    /// Waits until `records` may pass; returns false if `cancel` fired meanwhile.
    pub async fn acquire(&self, records: usize, cancel: &mut watch::Receiver<bool>) -> bool {
        let started = Instant::now();
        let passed = self.wait(records, cancel).await;
        self.metrics.throttle_wait_seconds_total.inc_by(started.elapsed().as_secs_f64());
        passed
    }

    async fn wait(&self, records: usize, cancel: &mut watch::Receiver<bool>) -> bool {
        let mut paused = self.control.paused.subscribe();
        let mut health_paused = self.control.health_pause.subscribe();
        loop {
            if *cancel.borrow() {
                return false;
            }
            if !*paused.borrow_and_update() && !*health_paused.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = paused.changed() => {}
                _ = health_paused.changed() => {}
                _ = cancel.changed() => {}
            }
        }
        let mut left = records as u32;
        while left > 0 {
            let Some(limiter) = self.current() else { return true };
            let burst = self.burst.unwrap_or(u32::MAX);
            // until_n_ready refuses more than the burst at once: take it in pieces.
            let piece = left.min(burst).min(self.batch_size.max(1)).max(1);
            let piece = NonZeroU32::new(piece).expect("piece >= 1");
            tokio::select! {
                r = limiter.until_n_ready(piece) => {
                    if r.is_err() {
                        // The rate changed to one whose burst is smaller than this piece:
                        // take one record at a time.
                        let one = NonZeroU32::new(1).unwrap();
                        let _ = limiter.until_n_ready(one).await;
                        left -= 1;
                        continue;
                    }
                }
                _ = cancel.changed() => return false,
            }
            left -= piece.get();
        }
        true
    }
}
