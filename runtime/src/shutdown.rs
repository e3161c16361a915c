//! The shutdown signal every actor takes: a `watch::Receiver<bool>` that
//! turns true (or whose sender is dropped) when the node stops.

use tokio::sync::watch;

/// Resolves once shutdown is requested or the sender is gone. Cancel-safe,
/// so actors can use it as a `select!` branch in their loop.
pub async fn wait_for_shutdown(shutdown: &mut watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// A fresh shutdown pair: send `true` to stop every actor holding a receiver.
pub fn shutdown_channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}
