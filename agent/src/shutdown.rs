//! Shutdown of the service: one broadcast tells every part to stop; a completion channel
//! closes when the last part has finished (the shape of mini-redis).
//!
//! [`Coordinator`] belongs to [`crate::service::run`]. Each part (the watch loop, the worker
//! thread) gets a [`Shutdown`] to listen on and a [`Completion`] to drop when it is done;
//! [`Coordinator::finished`] resolves when every `Completion` is gone.

use tokio::sync::{broadcast, mpsc};

/// Listens for the shutdown broadcast.
#[derive(Debug)]
pub struct Shutdown {
    is_shutdown: bool,
    notify: broadcast::Receiver<()>,
}

impl Shutdown {
    /// True once the shutdown broadcast has been received.
    pub fn is_shutdown(&self) -> bool {
        self.is_shutdown
    }

    /// Waits for the shutdown broadcast (returns at once when it was already received).
    pub async fn recv(&mut self) {
        if self.is_shutdown {
            return;
        }
        // Lagged or closed both mean the coordinator is gone or has fired: stop either way.
        let _ = self.notify.recv().await;
        self.is_shutdown = true;
    }
}

/// Held by a part of the service while it runs; dropping it reports that part finished.
#[derive(Debug, Clone)]
pub struct Completion {
    _done: mpsc::Sender<()>,
}

/// Starts the shutdown and waits for every part to finish.
#[derive(Debug)]
pub struct Coordinator {
    notify: broadcast::Sender<()>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

impl Default for Coordinator {
    fn default() -> Self {
        Self::new()
    }
}

impl Coordinator {
    /// A coordinator with no parts yet.
    pub fn new() -> Self {
        let (notify, _) = broadcast::channel(1);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            notify,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    /// A listener and a completion token for one more part.
    pub fn part(&self) -> (Shutdown, Completion) {
        let shutdown = Shutdown {
            is_shutdown: false,
            notify: self.notify.subscribe(),
        };
        // `done_tx` is only taken by `finished`, which consumes self.
        let done = self.done_tx.clone().unwrap_or_else(|| mpsc::channel(1).0);
        (shutdown, Completion { _done: done })
    }

    /// Tells every part to stop.
    pub fn trigger(&self) {
        // No receivers left means every part has already stopped.
        let _ = self.notify.send(());
    }

    /// Waits until every part has dropped its [`Completion`].
    pub async fn finished(mut self) {
        self.done_tx = None;
        // recv returns None once every sender is dropped.
        while self.done_rx.recv().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn finished_waits_for_every_part() {
        let coordinator = Coordinator::new();
        let (mut a, done_a) = coordinator.part();
        let (mut b, done_b) = coordinator.part();
        let slow = tokio::spawn(async move {
            b.recv().await;
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(done_b);
        });
        let fast = tokio::spawn(async move {
            a.recv().await;
            assert!(a.is_shutdown());
            drop(done_a);
        });
        let start = tokio::time::Instant::now();
        coordinator.trigger();
        coordinator.finished().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
        for task in [slow, fast] {
            task.await.unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn recv_after_shutdown_returns_at_once() {
        let coordinator = Coordinator::new();
        let (mut s, _done) = coordinator.part();
        coordinator.trigger();
        s.recv().await;
        s.recv().await;
        assert!(s.is_shutdown());
    }
}
