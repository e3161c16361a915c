//! The fenced resources: the KV store and the stacks, each value with the
//! newest fencing token that wrote it. Fences are checked against the lock
//! table, which the caller hands in.

use std::collections::BTreeMap;

use super::locks::Locks;
use super::Outcome;
use crate::api::limits::{
    KV_KEYS_MAX, KV_VALUE_BYTES_MAX, STACKS_MAX, STACK_ELEMENTS_MAX, STACK_ELEMENT_BYTES_MAX,
};
use crate::lock::{
    validate_name, FencingToken, KvView, KvWrite, LockError, NotFoundKind, Reply, StackDelete,
    StackPop, StackPush, StackView,
};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Resources {
    kv: BTreeMap<String, KvEntry>,
    stacks: BTreeMap<String, StackEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KvEntry {
    value: String,
    last_token: Option<FencingToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StackEntry {
    items: Vec<String>,
    last_token: Option<FencingToken>,
}

/// A key's value with its last token, as snapshots carry it.
pub(super) type KvSnap = (String, String, Option<FencingToken>);
/// A stack's elements (bottom first) with its last token.
pub(super) type StackSnap = (String, Vec<String>, Option<FencingToken>);

impl Resources {
    /// `KvPut` (`append: false`) or `KvAppend`.
    pub(super) fn kv_write(&mut self, cmd: &KvWrite, append: bool, locks: &Locks) -> Outcome {
        validate_name("key", &cmd.key)?;
        let existing = self.kv.get(&cmd.key);
        let size = match (append, existing) {
            (true, Some(e)) => e.value.len() + cmd.value.len(),
            _ => cmd.value.len(),
        };
        if size > KV_VALUE_BYTES_MAX {
            return Err(LockError::invalid(
                "value",
                format!("a value is at most {KV_VALUE_BYTES_MAX} bytes"),
            ));
        }
        let token = locks.check_fence(&cmd.fence, existing.and_then(|e| e.last_token))?;
        if existing.is_none() && self.kv.len() >= KV_KEYS_MAX {
            return Err(LockError::invalid(
                "key",
                format!("at most {KV_KEYS_MAX} keys"),
            ));
        }
        let entry = self.kv.entry(cmd.key.clone()).or_insert(KvEntry {
            value: String::new(),
            last_token: None,
        });
        if append {
            entry.value.push_str(&cmd.value);
        } else {
            entry.value = cmd.value.clone();
        }
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::KvWritten {
            size: entry.value.len() as u64,
            last_token: entry.last_token,
        })
    }

    pub(super) fn stack_push(&mut self, cmd: &StackPush, locks: &Locks) -> Outcome {
        validate_name("stack", &cmd.stack)?;
        if cmd.value.len() > STACK_ELEMENT_BYTES_MAX {
            return Err(LockError::invalid(
                "value",
                format!("a stack element is at most {STACK_ELEMENT_BYTES_MAX} bytes"),
            ));
        }
        let existing = self.stacks.get(&cmd.stack);
        let token = locks.check_fence(&cmd.fence, existing.and_then(|s| s.last_token))?;
        match existing {
            None if self.stacks.len() >= STACKS_MAX => {
                return Err(LockError::invalid(
                    "stack",
                    format!("at most {STACKS_MAX} stacks"),
                ))
            }
            Some(s) if s.items.len() >= STACK_ELEMENTS_MAX => {
                return Err(LockError::invalid(
                    "stack",
                    format!("a stack holds at most {STACK_ELEMENTS_MAX} elements"),
                ))
            }
            _ => {}
        }
        let entry = self.stacks.entry(cmd.stack.clone()).or_insert(StackEntry {
            items: Vec::new(),
            last_token: None,
        });
        entry.items.push(cmd.value.clone());
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::Pushed {
            size: entry.items.len() as u64,
        })
    }

    pub(super) fn stack_pop(&mut self, cmd: &StackPop, locks: &Locks) -> Outcome {
        validate_name("stack", &cmd.stack)?;
        let Some(existing) = self.stacks.get(&cmd.stack) else {
            return Err(no_stack());
        };
        let token = locks.check_fence(&cmd.fence, existing.last_token)?;
        let entry = self.stacks.get_mut(&cmd.stack).expect("exists");
        let Some(value) = entry.items.pop() else {
            return Err(LockError::StackEmpty);
        };
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::Popped {
            value,
            size: entry.items.len() as u64,
        })
    }

    pub(super) fn stack_delete(&mut self, cmd: &StackDelete, locks: &Locks) -> Outcome {
        validate_name("stack", &cmd.stack)?;
        let last = match self.stacks.get(&cmd.stack) {
            Some(s) => s.last_token,
            None => return Err(no_stack()),
        };
        locks.check_fence(&cmd.fence, last)?;
        self.stacks.remove(&cmd.stack);
        Ok(Reply::StackDeleted)
    }

    /// `GET /v1/kv/{key}`.
    pub(super) fn kv_get(&self, key: &str) -> Result<KvView, LockError> {
        validate_name("key", key)?;
        let e = self.kv.get(key).ok_or(LockError::NotFound {
            kind: NotFoundKind::Key,
        })?;
        Ok(KvView {
            value: e.value.clone(),
            last_token: e.last_token,
        })
    }

    /// `GET /v1/stacks/{name}`.
    pub(super) fn stack(&self, name: &str) -> Result<StackView, LockError> {
        validate_name("stack", name)?;
        let s = self.stacks.get(name).ok_or(no_stack())?;
        Ok(StackView {
            size: s.items.len() as u64,
            top: s.items.last().cloned(),
        })
    }

    pub(super) fn check(&self) -> Result<(), String> {
        for (key, e) in &self.kv {
            if validate_name("key", key).is_err() || e.value.len() > KV_VALUE_BYTES_MAX {
                return Err(format!("bad kv entry {key:?}"));
            }
        }
        for (name, s) in &self.stacks {
            if validate_name("stack", name).is_err() || s.items.len() > STACK_ELEMENTS_MAX {
                return Err(format!("bad stack {name:?}"));
            }
        }
        Ok(())
    }

    /// The keys and the stacks, by name, for a snapshot.
    pub(super) fn to_snapshot(&self) -> (Vec<KvSnap>, Vec<StackSnap>) {
        let kv = self
            .kv
            .iter()
            .map(|(k, e)| (k.clone(), e.value.clone(), e.last_token))
            .collect();
        let stacks = self
            .stacks
            .iter()
            .map(|(k, s)| (k.clone(), s.items.clone(), s.last_token))
            .collect();
        (kv, stacks)
    }

    /// Rebuilds from a snapshot (validity is left to [`Self::check`]).
    pub(super) fn restore(kv: Vec<KvSnap>, stacks: Vec<StackSnap>) -> Self {
        Resources {
            kv: kv
                .into_iter()
                .map(|(key, value, last_token)| (key, KvEntry { value, last_token }))
                .collect(),
            stacks: stacks
                .into_iter()
                .map(|(name, items, last_token)| (name, StackEntry { items, last_token }))
                .collect(),
        }
    }
}

fn no_stack() -> LockError {
    LockError::NotFound {
        kind: NotFoundKind::Stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &str) -> KvWrite {
        KvWrite {
            key: key.into(),
            value: value.into(),
            fence: None,
        }
    }

    #[test]
    fn put_replaces_append_extends_and_the_size_limit_counts_both() {
        let (mut res, locks) = (Resources::default(), Locks::default());
        res.kv_write(&kv("k", "ab"), false, &locks).unwrap();
        assert_eq!(
            res.kv_write(&kv("k", "c"), true, &locks),
            Ok(Reply::KvWritten {
                size: 3,
                last_token: None
            })
        );
        res.kv_write(&kv("k", "x"), false, &locks).unwrap();
        assert_eq!(res.kv_get("k").map(|v| v.value), Ok("x".to_owned()));
        let big = "v".repeat(KV_VALUE_BYTES_MAX);
        assert!(res.kv_write(&kv("k", &big), true, &locks).is_err());
        assert!(res.kv_write(&kv("k", &big), false, &locks).is_ok());
        assert!(res.kv_write(&kv("bad key", "v"), false, &locks).is_err());
        res.check().unwrap();
    }

    #[test]
    fn stacks_push_pop_delete_and_round_trip_a_snapshot() {
        let (mut res, locks) = (Resources::default(), Locks::default());
        let push = |value: &str| StackPush {
            stack: "s".into(),
            value: value.into(),
            fence: None,
        };
        res.stack_push(&push("a"), &locks).unwrap();
        res.stack_push(&push("b"), &locks).unwrap();
        res.kv_write(&kv("k", "v"), false, &locks).unwrap();
        let (kv_snap, stacks_snap) = res.to_snapshot();
        assert_eq!(Resources::restore(kv_snap, stacks_snap), res);
        let pop = StackPop {
            stack: "s".into(),
            fence: None,
        };
        assert_eq!(
            res.stack_pop(&pop, &locks),
            Ok(Reply::Popped {
                value: "b".into(),
                size: 1
            })
        );
        res.stack_pop(&pop, &locks).unwrap();
        assert_eq!(res.stack_pop(&pop, &locks), Err(LockError::StackEmpty));
        let delete = StackDelete {
            stack: "s".into(),
            fence: None,
        };
        assert_eq!(res.stack_delete(&delete, &locks), Ok(Reply::StackDeleted));
        assert_eq!(res.stack("s"), Err(no_stack()));
        assert_eq!(res.stack_delete(&delete, &locks), Err(no_stack()));
    }
}
