//! One shutdown signal for every part of the process (the controllers, the leader elector, the
//! HTTP endpoints), so SIGTERM stops them all in order.

use tokio::sync::watch;
use tracing::{error, info};

/// Resolves [`Shutdown::requested`] for every clone.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn fire(&self) {
        self.0.send_replace(true);
    }
}

/// A shutdown request that many tasks can wait for.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown fired by hand (tests, embedding).
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Shutdown(rx))
    }

    /// A shutdown fired by SIGTERM or SIGINT. A second signal exits at once (code 1), without
    /// waiting for running reconciles or releasing the Lease.
    pub fn on_signals() -> std::io::Result<Shutdown> {
        #[cfg(unix)]
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let (trigger, shutdown) = Shutdown::new();
        tokio::spawn(async move {
            let signal = async {
                #[cfg(unix)]
                tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = tokio::signal::ctrl_c() => "SIGINT",
                }
                #[cfg(not(unix))]
                {
                    let _ = tokio::signal::ctrl_c().await;
                    "Ctrl+C"
                }
            };
            let first = signal.await;
            info!(
                signal = first,
                "shutting down: finishing running reconciles"
            );
            trigger.fire();
            #[cfg(unix)]
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
            error!("second signal: exiting at once");
            std::process::exit(1);
        });
        Ok(shutdown)
    }

    /// Whether shutdown was requested.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown is requested (never, if its trigger is dropped unfired).
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        loop {
            if *rx.borrow_and_update() {
                return;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn every_clone_sees_the_trigger() {
        let (trigger, shutdown) = Shutdown::new();
        let other = shutdown.clone();
        assert!(!shutdown.is_requested());
        let waiting = tokio::spawn(async move { other.requested().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        trigger.fire();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("resolved")
            .expect("joined");
        assert!(shutdown.is_requested());
        // Already fired: resolves at once.
        tokio::time::timeout(Duration::from_millis(100), shutdown.requested())
            .await
            .expect("resolved");
    }

    #[tokio::test]
    async fn a_dropped_trigger_is_not_a_shutdown() {
        let (trigger, shutdown) = Shutdown::new();
        drop(trigger);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), shutdown.requested())
                .await
                .is_err()
        );
    }
}
