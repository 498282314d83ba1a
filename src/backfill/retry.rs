//! Retry of transient store errors for the scanner and the writer, on the crate's one
//! back-off policy ([`crate::retry`]). While it backs off, the process reports not ready
//! (`/readyz`) and counts each error in `vismig_errors_total`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::metrics::{Control, Metrics};
use crate::retry::Backoff;
use crate::store::{StoreError, StoreResult};

/// The back-off for a store that errs: 200 ms doubling to 15 s, for up to ten minutes;
/// after that the run stops with its checkpoint intact.
pub fn store_backoff() -> Backoff {
    Backoff {
        first_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(15),
        max_attempts: None,
        max_elapsed: Some(Duration::from_secs(600)),
    }
}

/// Why a retried operation did not produce a value.
#[derive(Debug)]
pub enum Gave {
    /// A permanent error, or transient errors for longer than the policy allows.
    Up(StoreError),
    /// The run is stopping; the operation was abandoned.
    Cancelled,
}

/// Runs a store operation again after transient errors, on `policy`.
pub struct Retrier {
    pub policy: Backoff,
    pub control: Arc<Control>,
    pub metrics: Arc<Metrics>,
}

impl Retrier {
    /// Runs `op` until it succeeds, fails for good, or `cancel` turns true while backing
    /// off; `stage` names it in logs and metrics (`scan`, `write`).
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
        let mut schedule = self.policy.start();
        loop {
            let error = match op().await {
                Ok(v) => {
                    if schedule.failures() > 0 {
                        tracing::info!(stage, failures = schedule.failures(), "store answered again; continuing");
                        self.control.set_ready();
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            let delay = match &error {
                StoreError::Transient(_) => schedule.next_delay(),
                _ => None,
            };
            match (error, delay) {
                (StoreError::Transient(msg), Some(delay)) => {
                    self.metrics.errors_total.with_label_values(&[stage, "transient"]).inc();
                    tracing::warn!(stage, attempt = schedule.failures(), retry_in_ms = delay.as_millis() as u64, error = %msg, "transient error; backing off");
                    self.control.set_not_ready(format!("backing off after a {stage} error: {msg}"));
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = cancel.changed() => {}
                    }
                    if *cancel.borrow() {
                        return Err(Gave::Cancelled);
                    }
                }
                (e, _) => {
                    let kind = if matches!(e, StoreError::Transient(_)) { "gave_up" } else { "permanent" };
                    self.metrics.errors_total.with_label_values(&[stage, kind]).inc();
                    return Err(Gave::Up(e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn retrier(max_elapsed: Duration) -> Retrier {
        let policy = Backoff {
            first_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            max_attempts: None,
            max_elapsed: Some(max_elapsed),
        };
        Retrier { policy, control: Control::new(0), metrics: Metrics::new() }
    }

    fn errors(r: &Retrier, kind: &str) -> u64 {
        r.metrics.errors_total.with_label_values(&["write", kind]).get()
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_readiness_comes_back() {
        let r = retrier(Duration::from_secs(60));
        // Ready before the first attempt, so that only the retrier can make it not ready.
        r.control.set_ready();
        let (_stop, mut cancel) = watch::channel(false);
        let left = Mutex::new(2);
        let readiness = Mutex::new(Vec::new());
        let value = r
            .run("write", &mut cancel, || {
                readiness.lock().unwrap().push(r.control.readiness().is_ok());
                let mut left = left.lock().unwrap();
                let result = if *left > 0 { Err(StoreError::Transient("busy".into())) } else { Ok(7) };
                *left -= 1;
                async move { result }
            })
            .await
            .expect("the third attempt succeeds");
        assert_eq!(value, 7);
        assert_eq!(
            *readiness.lock().unwrap(),
            [true, false, false],
            "ready at the first attempt, not ready while backing off"
        );
        assert!(r.control.readiness().is_ok(), "ready again once the store answers");
        assert_eq!(errors(&r, "transient"), 2);
    }

    #[tokio::test]
    async fn a_permanent_error_gives_up_at_once() {
        let r = retrier(Duration::from_secs(60));
        let (_stop, mut cancel) = watch::channel(false);
        let result: Result<(), Gave> =
            r.run("write", &mut cancel, || async { Err(StoreError::Permanent("no table".into())) }).await;
        assert!(matches!(result, Err(Gave::Up(StoreError::Permanent(_)))), "{result:?}");
        assert_eq!((errors(&r, "permanent"), errors(&r, "transient")), (1, 0));
    }

    #[tokio::test]
    async fn transient_errors_past_the_time_budget_give_up() {
        let r = retrier(Duration::ZERO);
        let (_stop, mut cancel) = watch::channel(false);
        let result: Result<(), Gave> =
            r.run("write", &mut cancel, || async { Err(StoreError::Transient("down".into())) }).await;
        assert!(matches!(result, Err(Gave::Up(StoreError::Transient(_)))), "{result:?}");
        assert_eq!(errors(&r, "gave_up"), 1);
    }

    #[tokio::test]
    async fn a_stop_while_backing_off_abandons_the_operation() {
        let mut r = retrier(Duration::from_secs(60));
        r.policy.first_delay = Duration::from_secs(60);
        r.policy.max_delay = Duration::from_secs(60);
        let (stop, mut cancel) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            stop.send_replace(true);
            stop
        });
        let result: Result<(), Gave> = tokio::time::timeout(
            Duration::from_secs(10),
            r.run("write", &mut cancel, || async { Err(StoreError::Transient("down".into())) }),
        )
        .await
        .expect("the stop ends the back-off");
        assert!(matches!(result, Err(Gave::Cancelled)), "{result:?}");
        drop(stopper.await);
    }
}
