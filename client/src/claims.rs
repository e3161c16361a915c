//! Which of a session's locks this process still uses: per lock name, the
//! live [`crate::Lock`] handles and the `lock` calls in flight. A session's
//! grants of one lock are one grant (asking again returns the same token),
//! so a grant is given back only when its last user leaves, and a new
//! `lock` call for that name waits until such a give-back is done (else it
//! could be handed the very grant being released).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The claims of one session (cheap to clone: shared).
#[derive(Debug, Clone, Default)]
pub(crate) struct Claims {
    by_name: Arc<Mutex<BTreeMap<String, Claim>>>,
    given_back: Arc<Notify>,
}

#[derive(Debug, Default)]
struct Claim {
    users: usize,
    giving_back: bool,
}

impl Claims {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, Claim>> {
        // A poisoned map is still a valid map.
        self.by_name.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more user of `name`, once no give-back of it is in flight.
    pub(crate) async fn claim(&self, name: &str) -> ClaimGuard {
        loop {
            // Created before the check, so a give-back ending in between
            // still wakes it.
            let given_back = self.given_back.notified();
            {
                let mut map = self.map();
                let claim = map.entry(name.to_owned()).or_default();
                if !claim.giving_back {
                    claim.users += 1;
                    return ClaimGuard {
                        claims: self.clone(),
                        name: name.to_owned(),
                        counted: true,
                    };
                }
            }
            given_back.await;
        }
    }

    fn leave(&self, name: &str, give_back: bool) -> bool {
        let mut map = self.map();
        let claim = map.get_mut(name).expect("a counted user has a claim");
        assert!(claim.users > 0, "claim of {name:?} under-counted");
        claim.users -= 1;
        let last = claim.users == 0;
        if last && give_back {
            claim.giving_back = true;
        } else if last && !claim.giving_back {
            map.remove(name);
        }
        last && give_back
    }

    fn given_back(&self, name: &str) {
        let mut map = self.map();
        if let Some(claim) = map.get_mut(name) {
            claim.giving_back = false;
            if claim.users == 0 {
                map.remove(name);
            }
        }
        drop(map);
        self.given_back.notify_waiters();
    }
}

/// One user of a lock name; dropping it just ends the use.
#[derive(Debug)]
pub(crate) struct ClaimGuard {
    claims: Claims,
    name: String,
    counted: bool,
}

impl ClaimGuard {
    /// Ends this use. If it was the last, the grant is nobody's any more:
    /// returns the give-back to run (new claims of the name wait for it).
    pub(crate) fn leave_giving_back(mut self) -> Option<GiveBack> {
        self.counted = false;
        self.claims.leave(&self.name, true).then(|| GiveBack {
            claims: self.claims.clone(),
            name: self.name.clone(),
        })
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if self.counted {
            self.claims.leave(&self.name, false);
        }
    }
}

/// A release in flight for a grant its last user left; dropping it (after
/// the release) lets waiting claims of the name go on.
#[derive(Debug)]
pub(crate) struct GiveBack {
    claims: Claims,
    name: String,
}

impl Drop for GiveBack {
    fn drop(&mut self) {
        self.claims.given_back(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_last_user_gives_back_and_new_claims_wait_for_it() {
        let claims = Claims::default();
        let a = claims.claim("L").await;
        let b = claims.claim("L").await;
        assert!(a.leave_giving_back().is_none(), "b still uses L");
        let give_back = b.leave_giving_back().expect("the last user");
        // A new claim waits while the give-back is in flight.
        let waiting = tokio::spawn({
            let claims = claims.clone();
            async move { claims.claim("L").await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(give_back);
        let c = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("claimed");
        drop(c);
        assert!(claims.map().is_empty(), "nothing left behind");
    }
}
