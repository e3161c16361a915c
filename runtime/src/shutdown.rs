//! The shutdown signal every actor takes. Built on [`crate::latest`] rather
//! than `tokio::sync::watch` so that waking many actors at once is
//! deterministic under madsim.

use crate::latest::{self, Publisher, Subscriber};

/// Held by whoever stops the node: `trigger()` it, or drop it.
#[derive(Debug)]
pub struct ShutdownTrigger {
    publisher: Publisher<bool>,
}

/// Held by every actor; cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown {
    subscriber: Subscriber<bool>,
}

/// A fresh shutdown pair.
pub fn shutdown_channel() -> (ShutdownTrigger, Shutdown) {
    let (publisher, subscriber) = latest::channel(false);
    (ShutdownTrigger { publisher }, Shutdown { subscriber })
}

impl ShutdownTrigger {
    /// Asks every actor holding a [`Shutdown`] to end.
    pub fn trigger(&self) {
        self.publisher.publish(true);
    }

    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            subscriber: self.publisher.subscribe(),
        }
    }
}

impl Shutdown {
    pub fn is_triggered(&self) -> bool {
        self.subscriber.get()
    }

    /// Resolves once shutdown is triggered or the trigger is dropped.
    /// Cancel-safe, for use as a `select!` branch.
    pub async fn wait(&mut self) {
        let _ = self.subscriber.wait_for(|stop| *stop).await;
    }
}

/// Free-function form of [`Shutdown::wait`].
pub async fn wait_for_shutdown(shutdown: &mut Shutdown) {
    shutdown.wait().await;
}
