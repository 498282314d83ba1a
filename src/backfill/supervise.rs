//! Waiting for the end of a run: the scanners, the writers and the checkpoint keeper
//! finish by themselves, or a stop signal or a fatal error ends them, and whatever still
//! hangs after `stop_timeout` is abandoned.

use std::pin::Pin;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle};

use super::tasks::Tasks;

/// The tasks of a running backfill.
pub(super) struct Running {
    pub scanners: Tasks,
    pub writers: Tasks,
    pub keeper: JoinHandle<anyhow::Result<()>>,
    /// Tells every scanner and writer to stop at once (a fatal error).
    pub abort: watch::Sender<bool>,
}

impl Running {
    /// Waits until every task has ended; returns the first fatal error, if any. A fatal
    /// error in any task (a store that fails for good, a checkpoint that cannot be saved)
    /// aborts the others at once. After the stop signal or a fatal error, the tasks still
    /// busy get `stop_timeout`; then they are abandoned (a store that hangs), so that the
    /// process exits within Kubernetes' grace period. An abandoned batch was never
    /// acknowledged, so the checkpoint saved afterwards does not pass it.
    pub(super) async fn wait(
        mut self,
        mut stop: watch::Receiver<bool>,
        stop_timeout: Duration,
    ) -> Option<anyhow::Error> {
        let (mut scanners_left, mut writers_left, mut keeper_left) = (true, true, true);
        let mut stop_open = true;
        let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let mut abandoned = false;
        let mut failure: Option<anyhow::Error> = None;
        while scanners_left || writers_left || keeper_left {
            let fatal = tokio::select! {
                r = self.scanners.join_next(), if scanners_left => match r {
                    None => { scanners_left = false; None }
                    Some(r) => failure_of("scanner", r, abandoned),
                },
                r = self.writers.join_next(), if writers_left => match r {
                    None => { writers_left = false; None }
                    Some(r) => failure_of("writer", r, abandoned),
                },
                r = &mut self.keeper, if keeper_left => {
                    keeper_left = false;
                    failure_of("checkpoint", r, false)
                },
                r = stop.changed(), if stop_open && deadline.is_none() => {
                    if r.is_err() {
                        stop_open = false;
                    } else if *stop.borrow() {
                        deadline = Some(Box::pin(tokio::time::sleep(stop_timeout)));
                    }
                    None
                },
                _ = async { deadline.as_mut().expect("guarded").await }, if deadline.is_some() && !abandoned => {
                    abandoned = true;
                    tracing::warn!(
                        stop_timeout_seconds = stop_timeout.as_secs_f64(),
                        "batches still in flight after migration.stopTimeout; abandoning them (they are not acknowledged, so the next run copies them again)"
                    );
                    self.scanners.abort_all();
                    self.writers.abort_all();
                    None
                },
            };
            let Some(e) = fatal else { continue };
            if failure.is_some() {
                tracing::warn!(error = %format!("{e:#}"), "another error while stopping");
                continue;
            }
            tracing::error!(error = %format!("{e:#}"), "fatal error; stopping the scanners and writers (within migration.stopTimeout)");
            failure = Some(e);
            self.abort.send_replace(true);
            deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stop_timeout)));
        }
        failure
    }
}

/// What the end of one task means for the run: nothing (it finished, or it was
/// abandoned on purpose), or a fatal error (its own, or its panic).
fn failure_of(role: &str, joined: Result<anyhow::Result<()>, JoinError>, abandoned: bool) -> Option<anyhow::Error> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) if abandoned && e.is_cancelled() => None,
        Err(e) => Some(anyhow::anyhow!("{role} task failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::task::JoinSet;

    /// The signals of one test run, made before its tasks so that tasks can watch them.
    struct Signals {
        abort: watch::Sender<bool>,
        stop_tx: watch::Sender<bool>,
        stop: watch::Receiver<bool>,
    }

    impl Signals {
        fn new() -> Self {
            let (stop_tx, stop) = watch::channel(false);
            Signals { abort: watch::channel(false).0, stop_tx, stop }
        }

        /// A task that ends only when the run aborts, then returns Ok.
        fn until_aborted(&self) -> impl Future<Output = anyhow::Result<()>> + use<> {
            let mut abort = self.abort.subscribe();
            async move {
                let _ = abort.wait_for(|a| *a).await;
                Ok(())
            }
        }

        async fn wait(
            self,
            scanners: Tasks,
            writers: Tasks,
            keeper: KeeperTask,
            stop_timeout: Duration,
        ) -> Option<anyhow::Error> {
            let Signals { abort, stop_tx: _stop_tx, stop } = self;
            Running { scanners, writers, keeper, abort }.wait(stop, stop_timeout).await
        }
    }

    type KeeperTask = JoinHandle<anyhow::Result<()>>;

    async fn ok() -> anyhow::Result<()> {
        Ok(())
    }

    async fn hang() -> anyhow::Result<()> {
        std::future::pending().await
    }

    fn tasks<F: Future<Output = anyhow::Result<()>> + Send + 'static>(futures: Vec<F>) -> Tasks {
        let mut set = JoinSet::new();
        for f in futures {
            set.spawn(f);
        }
        set
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn tasks_that_finish_end_the_run_without_error() {
        let keeper = tokio::spawn(ok());
        assert!(Signals::new().wait(tasks(vec![ok()]), tasks(vec![ok(), ok()]), keeper, LONG).await.is_none());
    }

    #[tokio::test]
    async fn the_first_fatal_error_aborts_the_others_and_is_returned() {
        let signals = Signals::new();
        let (scanners, writers) = (tasks(vec![signals.until_aborted()]), tasks(vec![signals.until_aborted()]));
        let keeper = tokio::spawn(async { anyhow::bail!("checkpoint directory read-only") });
        let error = signals.wait(scanners, writers, keeper, LONG).await.expect("fatal");
        assert_eq!(error.to_string(), "checkpoint directory read-only");
    }

    #[tokio::test]
    async fn a_panic_is_fatal_and_names_the_task() {
        let signals = Signals::new();
        let scanners = tasks(vec![signals.until_aborted()]);
        let writers = tasks(vec![async { panic!("boom") }]);
        let error = signals.wait(scanners, writers, tokio::spawn(ok()), LONG).await.expect("fatal");
        assert!(error.to_string().starts_with("writer task failed"), "{error}");
    }

    #[tokio::test]
    async fn after_a_stop_tasks_that_hang_are_abandoned_after_the_timeout() {
        let signals = Signals::new();
        let started = Instant::now();
        signals.stop_tx.send_replace(true);
        let failure = signals
            .wait(tasks(vec![hang()]), tasks(vec![hang(), hang()]), tokio::spawn(ok()), Duration::from_millis(50))
            .await;
        assert!(failure.is_none(), "abandoning is no failure: {failure:?}");
        assert!(started.elapsed() >= Duration::from_millis(50), "{:?}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_fatal_error_also_bounds_the_wait_for_tasks_that_hang() {
        let writers = tasks(vec![async { anyhow::bail!("table gone") }]);
        let error = Signals::new()
            .wait(tasks(vec![hang()]), writers, tokio::spawn(ok()), Duration::from_millis(50))
            .await
            .expect("fatal");
        assert_eq!(error.to_string(), "table gone");
    }
}
