//! A session's book of its grants: which [`crate::Lock`] handles and which
//! acquire calls still own each grant, so that a grant is given back to the
//! cluster exactly when nothing of the session can use it any more, and a
//! give-back, once decided, reaches the cluster.
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
//! - an explicit release ends the grant for every handle, present or
//!   still to come from calls in flight: those read as lost at once
//!   ([`Grants::is_ended`]), and the release is sent once the calls settled;
//! - a new acquire call for a name waits while a release of that name is on
//!   its way, so that the release cannot end a grant the call is answered
//!   with;
//! - releases carry their fencing token, so a give-back of a grant that
//!   already ended is refused by the server and ends nothing else;
//! - every release runs in a task on the session's runtime (whichever
//!   thread drops a handle, whether or not its caller waits) and is asked
//!   again after transient failures while the lease lives: a grant held by
//!   nobody would otherwise stay with the session as long as it lives.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use deadbolt_api::SessionId;
use tokio::sync::{oneshot, Notify};

use crate::session::LeaseWatch;
use crate::{Client, Error};

/// One grant of the session: lock name and fencing token.
type GrantKey = (String, u64);

/// The book shared by a session, its locks and its acquire calls.
#[derive(Debug)]
pub(crate) struct Grants {
    client: Client,
    session_id: SessionId,
    lease: LeaseWatch,
    /// The session's runtime: releases run there, so that a handle dropped
    /// on a thread without one is still given back.
    runtime: tokio::runtime::Handle,
    book: Mutex<Book>,
    /// Wakes whoever waits for the book to change: acquire calls waiting
    /// for a release of their name, releases waiting for calls to settle,
    /// handles watching for their grant's end.
    changed: Notify,
}

#[derive(Debug, Default)]
struct Book {
    /// Acquire calls in flight per lock name.
    calls: BTreeMap<String, u32>,
    /// Of those, the calls whose caller stopped waiting.
    abandoned: BTreeMap<String, u32>,
    /// Live handles per grant.
    handles: BTreeMap<GrantKey, u32>,
    /// Grants without handles whose give-back waits for the name's calls.
    owed: BTreeSet<GrantKey>,
    /// Releases on their way per lock name.
    releasing: BTreeMap<String, u32>,
    /// Withdrawals of abandoned waits on their way per lock name.
    withdrawing: BTreeMap<String, u32>,
    /// Grants released by a handle's owner: every handle of them is lost.
    /// Kept while handles of them live or their release is on its way.
    ended: BTreeSet<GrantKey>,
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, u32>, key: &K) {
    let count = counts.get_mut(key).expect("decrement of a counted key");
    assert!(*count > 0, "counts are removed at zero");
    *count -= 1;
    if *count == 0 {
        counts.remove(key);
    }
}

impl Book {
    /// Forgets the ended grants of `name` that nothing can still see: no
    /// handle of them lives and no release of the name is on its way.
    fn forget_unseen_ended(&mut self, name: &str) {
        if self.releasing.contains_key(name) {
            return;
        }
        let unseen: Vec<GrantKey> = self
            .ended
            .iter()
            .filter(|key| key.0 == name && !self.handles.contains_key(*key))
            .cloned()
            .collect();
        for key in unseen {
            self.ended.remove(&key);
        }
    }
}

impl Grants {
    /// The book of `session_id`; must be called on the session's runtime.
    pub(crate) fn new(client: Client, session_id: SessionId, lease: LeaseWatch) -> Arc<Grants> {
        Arc::new(Grants {
            client,
            session_id,
            lease,
            runtime: tokio::runtime::Handle::current(),
            book: Mutex::new(Book::default()),
            changed: Notify::new(),
        })
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // Every update below leaves the book whole before it can panic.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn lease(&self) -> &LeaseWatch {
        &self.lease
    }

    pub(crate) fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// Runs `task` on the session's runtime, whichever thread or runtime
    /// asks (a runtime that is shut down drops it unrun).
    pub(crate) fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        drop(self.runtime.spawn(task));
    }

    /// A withdrawal of the session's wait for `name`, if every acquire call
    /// in flight for it was abandoned by its caller (nobody of the session
    /// wants the wait any more); new calls for the name wait until the
    /// returned guard drops.
    pub(crate) fn begin_withdraw(self: &Arc<Self>, name: &str) -> Option<Withdrawing> {
        let mut book = self.book();
        if book.calls.get(name) != book.abandoned.get(name) {
            return None;
        }
        *book.withdrawing.entry(name.to_owned()).or_default() += 1;
        Some(Withdrawing {
            grants: self.clone(),
            name: name.to_owned(),
        })
    }

    /// Waits until `ready` holds for the book, then runs `then` on it, both
    /// under one lock. Cancel-safe: nothing changes until it returns.
    async fn when<T>(&self, ready: impl Fn(&Book) -> bool, then: impl FnOnce(&mut Book) -> T) -> T {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a change in between is not missed.
            notified.as_mut().enable();
            {
                let mut book = self.book();
                if ready(&book) {
                    return then(&mut book);
                }
            }
            notified.await;
        }
    }

    /// Registers an acquire call for `name`, once no release of that name
    /// (which could end the grant the call is answered with) and no
    /// withdrawal (which could end the call's wait) is on its way.
    pub(crate) async fn begin_acquire(self: &Arc<Self>, name: &str) -> Acquiring {
        self.when(
            |book| !book.releasing.contains_key(name) && !book.withdrawing.contains_key(name),
            |book| *book.calls.entry(name.to_owned()).or_default() += 1,
        )
        .await;
        Acquiring {
            grants: self.clone(),
            name: name.to_owned(),
            abandoned: false,
            settled: false,
        }
    }

    /// Whether the grant was released through one of its handles.
    pub(crate) fn is_ended(&self, name: &str, token: u64) -> bool {
        self.book().ended.contains(&(name.to_owned(), token))
    }

    /// Resolves once the grant was released through one of its handles.
    pub(crate) async fn ended(&self, name: &str, token: u64) {
        let key = (name.to_owned(), token);
        self.when(|book| book.ended.contains(&key), |_| ()).await;
    }

    /// A handle of `(name, token)` was dropped without releasing.
    pub(crate) fn handle_dropped(self: &Arc<Self>, name: &str, token: u64) {
        let key = (name.to_owned(), token);
        let give_back = {
            let mut book = self.book();
            decrement(&mut book.handles, &key);
            if book.handles.contains_key(&key) {
                None
            } else if book.ended.contains(&key) {
                // Its owner released it already.
                book.forget_unseen_ended(name);
                None
            } else if book.calls.contains_key(name) {
                book.owed.insert(key);
                None
            } else {
                Some(self.releasing(&mut book, key))
            }
        };
        if let Some(releasing) = give_back {
            self.spawn_release(releasing, None);
        }
    }

    /// A handle's owner releases `(name, token)`: the grant ends for every
    /// handle of it now, and the release is sent once the name's calls in
    /// flight settled. The receiver gets the first attempt's outcome; a
    /// transient failure is asked again in the background while the lease
    /// lives, whether or not anybody still waits.
    pub(crate) fn release(
        self: &Arc<Self>,
        name: &str,
        token: u64,
    ) -> oneshot::Receiver<Result<(), Error>> {
        let key = (name.to_owned(), token);
        let releasing = {
            let mut book = self.book();
            decrement(&mut book.handles, &key);
            book.owed.remove(&key);
            book.ended.insert(key.clone());
            self.releasing(&mut book, key)
        };
        self.changed.notify_waiters();
        let (tx, rx) = oneshot::channel();
        self.spawn_release(releasing, Some(tx));
        rx
    }

    /// Counts a release of `key` as on its way until the guard drops.
    fn releasing(self: &Arc<Self>, book: &mut Book, key: GrantKey) -> Releasing {
        *book.releasing.entry(key.0.clone()).or_default() += 1;
        Releasing {
            grants: self.clone(),
            key,
        }
    }

    /// Sends the release of `releasing` in a task on the session's runtime.
    /// A runtime that is shut down drops the task unrun, and with it the
    /// guard: the count comes back either way.
    fn spawn_release(
        &self,
        releasing: Releasing,
        owner: Option<oneshot::Sender<Result<(), Error>>>,
    ) {
        self.spawn(release_task(releasing, owner));
    }

    #[cfg(test)]
    fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let book = self.book();
        (
            book.calls.len(),
            book.handles.len(),
            book.owed.len(),
            book.releasing.len(),
            book.ended.len(),
        )
    }
}

/// Sends one release once no acquire call for its name is in flight; the
/// first outcome goes to `owner`, then a transient failure (refused before
/// proposing, or unknown) is asked again while the lease lives.
async fn release_task(releasing: Releasing, owner: Option<oneshot::Sender<Result<(), Error>>>) {
    let grants = releasing.grants.clone();
    let (name, token) = releasing.key.clone();
    grants
        .when(|book| !book.calls.contains_key(&name), |_| ())
        .await;
    let client = grants.client.clone();
    let call = match client.release_call(&name, grants.session_id, token) {
        Ok(call) => call,
        Err(error) => {
            if let Some(owner) = owner {
                let _ = owner.send(Err(error));
            }
            return;
        }
    };
    let first = client.release_once(&call).await;
    let transient = matches!(&first, Err(error) if is_transient(error));
    match owner {
        Some(owner) => {
            let _ = owner.send(first);
        }
        None => {
            if let Err(error) = &first {
                tracing::debug!(lock = %name, token, %error, "giving back a dropped grant failed");
            }
        }
    }
    if transient {
        let lease = grants.lease.clone();
        let outcome = client.release_until_known(&call, || !lease.is_lost()).await;
        if let Err(error) = outcome {
            tracing::debug!(lock = %name, token, %error, "releasing a grant failed for good");
        }
    }
    drop(releasing);
}

/// Failures after which the release may still be needed: it was refused
/// before it was proposed, or its outcome is unknown.
fn is_transient(error: &Error) -> bool {
    error.outcome_unknown() || matches!(error, Error::Unavailable { .. })
}

/// A release on its way; dropping it (the release settled, or its task was
/// dropped) lets acquire calls for the name start again.
#[derive(Debug)]
struct Releasing {
    grants: Arc<Grants>,
    key: GrantKey,
}

impl Drop for Releasing {
    fn drop(&mut self) {
        {
            let mut book = self.grants.book();
            decrement(&mut book.releasing, &self.key.0);
            book.forget_unseen_ended(&self.key.0);
        }
        self.grants.changed.notify_waiters();
    }
}

/// A withdrawal on its way; dropping it lets acquire calls for the name
/// start again.
#[derive(Debug)]
pub(crate) struct Withdrawing {
    grants: Arc<Grants>,
    name: String,
}

impl Drop for Withdrawing {
    fn drop(&mut self) {
        decrement(&mut self.grants.book().withdrawing, &self.name);
        self.grants.changed.notify_waiters();
    }
}

/// An acquire call of the session for one name, from its start until its
/// outcome is known. Dropping it unsettled (the task running the call was
/// aborted) counts as an outcome without a grant.
#[derive(Debug)]
pub(crate) struct Acquiring {
    grants: Arc<Grants>,
    name: String,
    abandoned: bool,
    settled: bool,
}

impl Acquiring {
    pub(crate) fn is_abandoned(&self) -> bool {
        self.abandoned
    }

    /// The caller stopped waiting for the call's outcome.
    pub(crate) fn abandon(&mut self) {
        if !self.abandoned {
            self.abandoned = true;
            let mut book = self.grants.book();
            *book.abandoned.entry(self.name.clone()).or_default() += 1;
        }
    }

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
        let grants = &self.grants;
        let owed: Vec<Releasing> = {
            let mut book = grants.book();
            decrement(&mut book.calls, &self.name);
            if self.abandoned {
                decrement(&mut book.abandoned, &self.name);
            }
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
                owed.into_iter()
                    .map(|key| {
                        book.owed.remove(&key);
                        grants.releasing(&mut book, key)
                    })
                    .collect()
            }
        };
        grants.changed.notify_waiters();
        for releasing in owed {
            grants.spawn_release(releasing, None);
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
    use std::time::Duration;

    use super::*;
    use crate::session::{lease_channel, LeaseState};

    /// A book on its own runtime, for a session nobody serves (releases
    /// fail at once: nothing listens on the port).
    fn grants(runtime: &tokio::runtime::Runtime) -> Arc<Grants> {
        let _entered = runtime.enter();
        let client = crate::ClientBuilder::new(["http://127.0.0.1:9"])
            .attempts_max(1)
            .build()
            .unwrap();
        // A lease already lost: failed releases are not asked again.
        let (_publisher, lease) = lease_channel(LeaseState::Lost(crate::LostReason::Closed));
        Grants::new(client, SessionId(7), lease)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Runs the runtime until the book has no release on its way.
    fn settle_releases(runtime: &tokio::runtime::Runtime, g: &Arc<Grants>) {
        runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                g.when(|book| book.releasing.is_empty(), |_| ()),
            )
            .await
            .expect("releases settle")
        });
    }

    fn begin(runtime: &tokio::runtime::Runtime, g: &Arc<Grants>, name: &str) -> Acquiring {
        runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), g.begin_acquire(name))
                .await
                .expect("an acquire call starts")
        })
    }

    #[test]
    fn the_last_handle_of_a_grant_gives_it_back_and_the_book_empties() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        begin(&rt, &g, "a").granted(10);
        assert_eq!(g.counts(), (0, 1, 0, 0, 0));
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (0, 1, 0, 0, 0), "one handle left");
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (0, 0, 0, 1, 0), "given back");
        settle_releases(&rt, &g);
        assert_eq!(g.counts(), (0, 0, 0, 0, 0));
    }

    #[test]
    fn a_grant_dropped_while_a_call_is_in_flight_is_owed_until_the_call_settles() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        let call = begin(&rt, &g, "a");
        g.handle_dropped("a", 10);
        assert_eq!(g.counts(), (1, 0, 1, 0, 0), "owed, not given back");
        call.failed();
        assert_eq!(g.counts(), (0, 0, 0, 1, 0), "paid when the call settles");
        settle_releases(&rt, &g);
    }

    #[test]
    fn a_call_answered_with_the_owed_grant_takes_it_over() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        let call = begin(&rt, &g, "a");
        g.handle_dropped("a", 10);
        call.granted(10);
        assert_eq!(g.counts(), (0, 1, 0, 0, 0), "the new handle owns it");
    }

    #[test]
    fn an_abandoned_call_settles_as_failed() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        let call = begin(&rt, &g, "a");
        g.handle_dropped("a", 10);
        drop(call);
        assert_eq!(g.counts(), (0, 0, 0, 1, 0));
        settle_releases(&rt, &g);
    }

    #[test]
    fn a_release_ends_the_grant_for_every_handle_and_calls_in_flight() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        begin(&rt, &g, "a").granted(10);
        let call = begin(&rt, &g, "a");
        let outcome = g.release("a", 10);
        assert!(g.is_ended("a", 10), "the other handle reads as lost");
        assert_eq!(
            g.counts(),
            (1, 1, 0, 1, 1),
            "the release waits for the call"
        );
        call.granted(10);
        assert!(g.is_ended("a", 10), "a handle from a call in flight too");
        let sent = rt.block_on(outcome).expect("the owner hears");
        assert!(sent.is_err(), "nothing serves this session");
        settle_releases(&rt, &g);
        g.handle_dropped("a", 10);
        g.handle_dropped("a", 10);
        assert_eq!(
            g.counts(),
            (0, 0, 0, 0, 0),
            "no give-back of an ended grant"
        );
        begin(&rt, &g, "a").granted(20);
        assert!(!g.is_ended("a", 20), "a newer grant is not ended");
    }

    #[test]
    fn a_new_call_waits_for_a_release_of_its_name() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        g.handle_dropped("a", 10);
        let waited = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), g.begin_acquire("a")).await
        });
        let call = waited.expect("starts once the release settled");
        assert_eq!(g.counts(), (1, 0, 0, 0, 0));
        call.failed();
    }

    #[test]
    fn a_withdrawal_only_once_every_caller_left_and_new_calls_wait_for_it() {
        let rt = runtime();
        let g = grants(&rt);
        let mut first = begin(&rt, &g, "a");
        let mut second = begin(&rt, &g, "a");
        first.abandon();
        assert!(
            g.begin_withdraw("a").is_none(),
            "the second caller still waits"
        );
        second.abandon();
        second.abandon();
        let withdrawing = g.begin_withdraw("a").expect("nobody waits");
        let blocked = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(50), g.begin_acquire("a")).await
        });
        assert!(blocked.is_err(), "a new call waits for the withdrawal");
        drop(withdrawing);
        first.failed();
        second.failed();
        assert!(g.book().abandoned.is_empty() && g.book().withdrawing.is_empty());
        begin(&rt, &g, "a").failed();
    }

    #[test]
    fn an_ended_grant_is_forgotten_once_nothing_sees_it() {
        let rt = runtime();
        let g = grants(&rt);
        begin(&rt, &g, "a").granted(10);
        begin(&rt, &g, "a").granted(10);
        drop(g.release("a", 10));
        settle_releases(&rt, &g);
        begin(&rt, &g, "a").granted(20);
        drop(g.release("a", 20));
        // The stale handle of 10 goes while the release of 20 is on its way.
        g.handle_dropped("a", 10);
        settle_releases(&rt, &g);
        assert_eq!(g.counts(), (0, 0, 0, 0, 0), "10 and 20 forgotten");
    }

    #[test]
    fn a_give_back_whose_runtime_shut_down_never_blocks_the_name() {
        let short_lived = runtime();
        let g = grants(&short_lived);
        begin(&short_lived, &g, "a").granted(10);
        // The give-back is queued on the session's runtime, which then
        // shuts down before running it.
        g.handle_dropped("a", 10);
        drop(short_lived);
        assert_eq!(
            g.counts(),
            (0, 0, 0, 0, 0),
            "the unrun release is not counted"
        );
        let rt = runtime();
        begin(&rt, &g, "a").failed();
    }
}
