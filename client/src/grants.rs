//! A session's book of its grants: which [`crate::Lock`] handles and which
//! acquire calls still own each grant, so that a grant is given back to the
//! cluster exactly when nothing of the session can use it any more.
//!
//! The server answers a session that asks again for a lock it holds (same
//! mode) with the same grant, and a session queued twice for a lock is
//! answered by one grant on both calls; a release ends the grant for all of
//! them. So the unit of ownership is the grant (name and fencing token),
//! shared by every handle and every in-flight call of the session for that
//! name:
//! - the last handle of a grant gives it back, unless an acquire call for
//!   the name is in flight (it may be answered with that same grant): then
//!   the give-back is owed, and paid when the last such call settles
//!   without taking the grant over;
//! - a new acquire call for a name waits while a give-back of that name is
//!   on its way, so that the release cannot end a grant the call is
//!   answered with;
//! - releases carry their fencing token, so a give-back of a grant that
//!   already ended is refused by the server and ends nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use deadbolt_api::SessionId;
use tokio::sync::Notify;

use crate::Client;

/// One grant of the session: lock name and fencing token.
type GrantKey = (String, u64);

/// The book shared by a session, its locks and its acquire calls.
#[derive(Debug)]
pub(crate) struct Grants {
    client: Client,
    session_id: SessionId,
    book: Mutex<Book>,
    /// Wakes acquire calls waiting for a give-back of their name to end.
    given_back: Notify,
}

#[derive(Debug, Default)]
struct Book {
    /// Acquire calls in flight per lock name.
    calls: BTreeMap<String, u32>,
    /// Live handles per grant.
    handles: BTreeMap<GrantKey, u32>,
    /// Grants without handles whose give-back waits for the name's calls.
    owed: BTreeSet<GrantKey>,
    /// Releases on their way per lock name.
    releasing: BTreeMap<String, u32>,
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, u32>, key: &K) {
    let count = counts.get_mut(key).expect("decrement of a counted key");
    assert!(*count > 0, "counts are removed at zero");
    *count -= 1;
    if *count == 0 {
        counts.remove(key);
    }
}

impl Grants {
    pub(crate) fn new(client: Client, session_id: SessionId) -> Arc<Grants> {
        Arc::new(Grants {
            client,
            session_id,
            book: Mutex::new(Book::default()),
            given_back: Notify::new(),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update below leaves the book whole before it can panic.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an acquire call for `name`, once no release of that name
    /// is on its way. Cancel-safe: nothing is registered until it returns.
    pub(crate) async fn begin_acquire(self: &Arc<Self>, name: &str) -> Acquiring {
        loop {
            let notified = self.given_back.notified();
            tokio::pin!(notified);
            // Register before checking, so a give-back ending in between
            // is not missed.
            notified.as_mut().enable();
            {
                let mut book = self.book();
                if !book.releasing.contains_key(name) {
                    *book.calls.entry(name.to_owned()).or_default() += 1;
                    return Acquiring {
                        grants: self.clone(),
                        name: name.to_owned(),
                        settled: false,
                    };
                }
            }
            notified.await;
        }
    }

    /// A handle of `(name, token)` was dropped without releasing.
    pub(crate) fn handle_dropped(self: &Arc<Self>, name: &str, token: u64) {
        let key = (name.to_owned(), token);
        let give_back = {
            let mut book = self.book();
            decrement(&mut book.handles, &key);
            if book.handles.contains_key(&key) {
                false
            } else if book.calls.contains_key(name) {
                book.owed.insert(key.clone());
                false
            } else {
                *book.releasing.entry(key.0.clone()).or_default() += 1;
                true
            }
        };
        if give_back {
            self.spawn_release(key);
        }
    }

    /// A handle of `(name, token)` is being released by its owner: the
    /// grant ends for every handle of it, so no acquire call may start for
    /// the name until the release has settled (the returned guard is
    /// dropped, whether the release finished or was abandoned).
    pub(crate) fn releasing(self: &Arc<Self>, name: &str, token: u64) -> Releasing {
        let key = (name.to_owned(), token);
        let mut book = self.book();
        decrement(&mut book.handles, &key);
        book.owed.remove(&key);
        *book.releasing.entry(key.0.clone()).or_default() += 1;
        Releasing {
            grants: self.clone(),
            name: key.0,
        }
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// A release of `name` settled (whatever its outcome).
    fn released(&self, name: &str) {
        decrement(&mut self.book().releasing, &name.to_owned());
        self.given_back.notify_waiters();
    }

    /// Gives back grants whose releases were already counted in
    /// `releasing`; without a runtime to run them the counts are undone
    /// (the session's lease then ends the grants).
    fn spawn_release(self: &Arc<Self>, (name, token): GrantKey) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.released(&name);
            return;
        };
        let grants = self.clone();
        drop(runtime.spawn(async move {
            let outcome = grants
                .client
                .release(&name, grants.session_id, Some(token))
                .await;
            if let Err(error) = outcome {
                tracing::debug!(lock = %name, token, %error, "giving back a dropped grant failed");
            }
            grants.released(&name);
        }));
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize, usize) {
        let book = self.book();
        (
            book.calls.len(),
            book.handles.len(),
            book.owed.len(),
            book.releasing.len(),
        )
    }
}

/// A release by a handle's owner on its way; dropping it lets acquire calls
/// for the name start again.
#[derive(Debug)]
pub(crate) struct Releasing {
    grants: Arc<Grants>,
    name: String,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        self.grants.released(&self.name);
    }
}

/// An acquire call of the session for one name, from its start until its
/// outcome is known. Dropping it unsettled (the task running the call was
/// aborted) counts as an outcome without a grant.
#[derive(Debug)]
pub(crate) struct Acquiring {
    grants: Arc<Grants>,
    name: String,
    settled: bool,
}

impl Acquiring {
    /// The call was answered with the grant `token`: one more handle of it
    /// (the caller builds the handle at once).
    pub(crate) fn granted(mut self, token: u64) -> Arc<Grants> {
        self.settle(Some(token));
        self.grants.clone()
    }

    /// The call ended without a grant.
    pub(crate) fn failed(mut self) {
        self.settle(None);
    }

    fn settle(&mut self, granted: Option<u64>) {
        assert!(!self.settled, "an acquire call settles once");
        self.settled = true;
        let owed: Vec<GrantKey> = {
            let mut book = self.grants.book();
            decrement(&mut book.calls, &self.name);
            if let Some(token) = granted {
                let key = (self.name.clone(), token);
                book.owed.remove(&key);
                *book.handles.entry(key).or_default() += 1;
            }
            if book.calls.contains_key(&self.name) {
                Vec::new()
            } else {
                let name = &self.name;
                let owed: Vec<GrantKey> = book
                    .owed
                    .iter()
                    .filter(|(owed_name, _)| owed_name == name)
                    .cloned()
                    .collect();
                for key in &owed {
                    book.owed.remove(key);
                    *book.releasing.entry(key.0.clone()).or_default() += 1;
                }
                owed
            }
        };
        for key in owed {
            self.grants.spawn_release(key);
        }
    }
}

impl Drop for Acquiring {
    fn drop(&mut self) {
        if !self.settled {
            self.settle(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants() -> Arc<Grants> {
        // Never contacted: these tests run without a runtime, where
        // give-backs are skipped (and counted back at once).
        Grants::new(Client::new(["http://127.0.0.1:9"]).unwrap(), SessionId(7))
    }

    fn begin(grants: &Arc<Grants>, name: &str) -> Acquiring {
        block_on(grants.begin_acquire(name))
    }

    /// The book's waits never block in these tests: without a runtime no
    /// give-back is ever in flight.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        runtime.block_on(future)
    }

    #[test]
    fn the_last_handle_of_a_grant_gives_it_back_and_the_book_empties() {
        let g = grants();
        let call = begin(&g, "a");
        call.granted(10);
        let second = begin(&g, "a");
        second.granted(10);
        assert_eq!(g.counts(), (0, 1, 0, 0));
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (0, 1, 0, 0), "one handle left");
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn a_grant_dropped_while_a_call_is_in_flight_is_owed_until_the_call_settles() {
        let g = grants();
        begin(&g, "a").granted(10);
        let call = begin(&g, "a");
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (1, 0, 1, 0), "owed, not given back");
        call.failed();
        assert_eq!(g.counts(), (0, 0, 0, 0), "paid when the call settles");
    }

    #[test]
    fn a_call_answered_with_the_owed_grant_takes_it_over() {
        let g = grants();
        begin(&g, "a").granted(10);
        let call = begin(&g, "a");
        g.handle_dropped("a", 10);
        call.granted(10);
        assert_eq!(g.counts(), (0, 1, 0, 0), "the new handle owns it");
    }

    #[test]
    fn an_abandoned_call_settles_as_failed() {
        let g = grants();
        begin(&g, "a").granted(10);
        let call = begin(&g, "a");
        g.handle_dropped("a", 10);
        drop(call);
        assert_eq!(g.counts(), (0, 0, 0, 0));
    }

    #[test]
    fn a_release_ends_only_its_own_count() {
        let g = grants();
        begin(&g, "a").granted(10);
        begin(&g, "a").granted(10);
        let releasing = g.releasing("a", 10);
        assert_eq!(g.counts(), (0, 1, 0, 1));
        drop(releasing);
        begin(&g, "a").granted(20);
        g.handle_dropped("a", 20);
        assert_eq!(g.counts(), (0, 1, 0, 0), "the stale handle of 10 is left");
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (0, 0, 0, 0));
    }
}
