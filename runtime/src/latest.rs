//! A single-value broadcast that keeps only the latest value: what
//! `tokio::sync::watch` does, but deterministic under madsim.
//!
//! Why not `watch`: with several receivers waiting, tokio spreads them over
//! eight `Notify`s chosen by a thread-local rng whose seed comes from a
//! process-wide counter, so the order in which waiters wake (and so madsim's
//! schedule) differs from run to run; `MADSIM_TEST_CHECK_DETERMINISM` caught
//! it on the shutdown signal. A `Notify` wakes waiters in a fixed order.
//! (Unbiased `select!` has the same problem: every `select!` here is `biased`.)

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug)]
struct State<T> {
    value: T,
    version: u64,
    closed: bool,
}

#[derive(Debug)]
struct Shared<T> {
    state: Mutex<State<T>>,
    notify: Notify,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // The state is a plain value; a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side; dropping it closes the channel (subscribers see
/// [`Closed`] once they have seen the last value).
#[derive(Debug)]
pub struct Publisher<T> {
    shared: Arc<Shared<T>>,
}

/// A receiving side. Clones start from the clone's position.
#[derive(Debug)]
pub struct Subscriber<T> {
    shared: Arc<Shared<T>>,
    seen: u64,
}

impl<T> Clone for Subscriber<T> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            seen: self.seen,
        }
    }
}

/// The publisher is gone and every published value has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("publisher dropped")]
pub struct Closed;

/// A new channel holding `initial` (which subscribers count as seen).
pub fn channel<T: Clone>(initial: T) -> (Publisher<T>, Subscriber<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: initial,
            version: 0,
            closed: false,
        }),
        notify: Notify::new(),
    });
    (
        Publisher {
            shared: shared.clone(),
        },
        Subscriber { shared, seen: 0 },
    )
}

impl<T: Clone> Publisher<T> {
    /// Replaces the value and wakes every waiting subscriber.
    pub fn publish(&self, value: T) {
        {
            let mut state = self.shared.lock();
            state.value = value;
            state.version += 1;
        }
        self.shared.notify.notify_waiters();
    }

    /// Changes the value in place and wakes every waiting subscriber.
    pub fn update(&self, f: impl FnOnce(&mut T)) {
        {
            let mut state = self.shared.lock();
            f(&mut state.value);
            state.version += 1;
        }
        self.shared.notify.notify_waiters();
    }

    pub fn subscribe(&self) -> Subscriber<T> {
        let seen = self.shared.lock().version;
        Subscriber {
            shared: self.shared.clone(),
            seen,
        }
    }

    pub fn get(&self) -> T {
        self.shared.lock().value.clone()
    }
}

impl<T> Drop for Publisher<T> {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_waiters();
    }
}

impl<T: Clone> Subscriber<T> {
    /// The latest value (without marking it seen).
    pub fn get(&self) -> T {
        self.shared.lock().value.clone()
    }

    /// Waits for a value newer than the last one seen and returns it.
    /// Cancel-safe: usable as a `select!` branch.
    pub async fn changed(&mut self) -> Result<T, Closed> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a publish in between is not missed.
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.version != self.seen {
                    self.seen = state.version;
                    return Ok(state.value.clone());
                }
                if state.closed {
                    return Err(Closed);
                }
            }
            notified.await;
        }
    }

    /// Waits until the latest value satisfies `pred` and returns it.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&T) -> bool) -> Result<T, Closed> {
        let current = self.get();
        if pred(&current) {
            return Ok(current);
        }
        loop {
            let value = self.changed().await?;
            if pred(&value) {
                return Ok(value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn subscribers_see_latest_and_close() {
        let (tx, mut rx) = channel(0u32);
        let mut other = tx.subscribe();
        tx.publish(1);
        tx.publish(2);
        assert_eq!(rx.changed().await, Ok(2));
        let waiter = tokio::spawn(async move { other.wait_for(|v| *v == 3).await });
        tokio::task::yield_now().await;
        tx.publish(3);
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap(), Ok(3));
        drop(tx);
        assert_eq!(rx.changed().await, Ok(3));
        assert_eq!(rx.changed().await, Err(Closed));
    }
}
