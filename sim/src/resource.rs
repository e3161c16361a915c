//! The simulated downstream resource that fencing tokens protect: it remembers
//! the largest token it accepted per resource and refuses older ones,
//! recording every accepted write for the fencing checker.
//!
//! This is what a well-behaved storage system outside deadbolt does; the
//! simulation lets paused or partitioned clients keep writing to it after
//! their lease is gone, and [`crate::check::lock_safety::check_fencing`]
//! verifies that nothing stale or invented got through.

use std::collections::BTreeMap;

use crate::history::{ClientId, FencingToken, SimTimeNs};

/// One write the resource accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedWrite {
    pub at_ns: SimTimeNs,
    pub resource: String,
    /// The lock whose tokens guard this resource.
    pub lock: String,
    pub token: FencingToken,
    pub client: ClientId,
}

/// The answer to a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    Accepted,
    /// The token was older than `largest_token`, which the resource had
    /// already accepted.
    Rejected {
        largest_token: FencingToken,
    },
}

/// A set of named resources, each fenced by the largest token it has seen.
#[derive(Debug, Clone, Default)]
pub struct FencedResource {
    largest_token: BTreeMap<String, FencingToken>,
    accepted: Vec<AcceptedWrite>,
    rejected_count: u64,
}

impl FencedResource {
    pub fn new() -> Self {
        Self::default()
    }

    /// A write to `resource` carrying `token` of `lock`. Equal tokens are
    /// accepted: one holder writes many times with the same token.
    pub fn write(
        &mut self,
        at_ns: SimTimeNs,
        resource: &str,
        lock: &str,
        token: FencingToken,
        client: ClientId,
    ) -> WriteOutcome {
        if let Some(&largest_token) = self.largest_token.get(resource) {
            if token < largest_token {
                self.rejected_count += 1;
                return WriteOutcome::Rejected { largest_token };
            }
        }
        self.largest_token.insert(resource.to_owned(), token);
        self.accepted.push(AcceptedWrite {
            at_ns,
            resource: resource.to_owned(),
            lock: lock.to_owned(),
            token,
            client,
        });
        WriteOutcome::Accepted
    }

    /// Every accepted write, in the order accepted.
    pub fn accepted(&self) -> &[AcceptedWrite] {
        &self.accepted
    }

    /// How many writes were refused as stale (a sign the fencing path was
    /// exercised at all).
    pub fn rejected_count(&self) -> u64 {
        self.rejected_count
    }

    pub fn largest_token(&self, resource: &str) -> Option<FencingToken> {
        self.largest_token.get(resource).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_older_tokens_and_records_accepts() {
        let mut r = FencedResource::new();
        assert_eq!(r.write(1, "db", "L", 5, 1), WriteOutcome::Accepted);
        assert_eq!(r.write(2, "db", "L", 5, 1), WriteOutcome::Accepted);
        assert_eq!(r.write(3, "db", "L", 9, 2), WriteOutcome::Accepted);
        // The paused first holder wakes up and writes with its old token.
        assert_eq!(
            r.write(4, "db", "L", 5, 1),
            WriteOutcome::Rejected { largest_token: 9 }
        );
        // Resources are independent.
        assert_eq!(r.write(5, "other", "L", 5, 1), WriteOutcome::Accepted);
        assert_eq!(r.accepted().len(), 4);
        assert_eq!(r.rejected_count(), 1);
        assert_eq!(r.largest_token("db"), Some(9));
    }
}
