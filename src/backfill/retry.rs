//! Retry with exponential back-off for transient store errors, shared by the scanner
//! and the writer. While it backs off, the process reports not ready (`/readyz`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::{Control, Metrics};
use crate::store::{StoreError, StoreResult};

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Give up (and stop the run with its checkpoint intact) after this long.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
            max_elapsed: Duration::from_secs(600),
        }
    }
}

/// Why a retried operation did not produce a value.
#[derive(Debug)]
pub enum Gave {
    /// A permanent error, or transient errors for longer than `max_elapsed`.
    Up(StoreError),
    /// The run is stopping; the operation was abandoned.
    Cancelled,
}

pub struct Retrier {
    pub policy: RetryPolicy,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
}

impl Retrier {
    pub async fn run<T, F, Fut>(
        &self,
        stage: &'static str,
        cancel: &mut watch::Receiver<bool>,
        mut op: F,
    ) -> Result<T, Gave>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let started = Instant::now();
        let mut delay = self.policy.first_delay;
        let mut failures = 0u32;
        loop {
            match op().await {
                Ok(v) => {
                    if failures > 0 {
                        tracing::info!(stage, failures, "store answered again; continuing");
                        self.control.set_ready();
                    }
                    return Ok(v);
                }
                Err(StoreError::Transient(msg)) if started.elapsed() < self.policy.max_elapsed => {
                    failures += 1;
                    self.metrics.errors_total.with_label_values(&[stage, "transient"]).inc();
                    tracing::warn!(stage, attempt = failures, retry_in_ms = delay.as_millis() as u64, error = %msg, "transient error; backing off");
                    self.control.set_not_ready(format!("backing off after a {stage} error: {msg}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.changed() => {}
                    }
                    if *cancel.borrow() {
                        return Err(Gave::Cancelled);
                    }
                    delay = (delay * 2).min(self.policy.max_delay);
                }
                Err(e) => {
                    let kind = if matches!(e, StoreError::Transient(_)) { "gave_up" } else { "permanent" };
                    self.metrics.errors_total.with_label_values(&[stage, kind]).inc();
                    return Err(Gave::Up(e));
                }
            }
        }
    }
}
