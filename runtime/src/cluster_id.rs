//! Cluster ids: which founding a node's data dir belongs to.
//!
//! A cluster id is a tag plus, once the cluster has one, its founding
//! nonce: `<tag>.<nonce as 16 hex digits>`. The tag is what the embedder
//! configures (the server derives it from the founder list, so founders
//! agree on it without talking); the nonce is drawn by the cluster's first
//! leader and recorded in the replicated membership
//! (`Membership::founding_nonce`), so every founding gets another one even
//! when its flags are identical. Before the nonce is committed a node knows
//! only the tag (a provisional id).
//!
//! Two ids are *compatible* when their tags match and their nonces do not
//! differ: a node without a committed nonce has committed nothing of any
//! founding beyond the founding entry (the first leader records the nonce
//! before anything else changes the membership), so it can still become
//! part of either; two different nonces are two foundings, never one.
//! That holds only if a node never forgets that its nonce committed: a
//! commit-only change is stored with the next write, and a founding that
//! wrote nothing after its nonce left data dirs whose stored commit index
//! was below it, which came back claiming the bare tag and were taken in
//! by another founding of that tag (simulation seeds 567 and 474). So the
//! Raft actor has the commit index stored as soon as its committed
//! membership gains the nonce (`Replica::persist_commit_index`); a node
//! that loses power within that write still comes back without it.

use std::fmt;

/// Separates the tag from the nonce in the text form.
const NONCE_SEPARATOR: char = '.';
/// Hex digits of the nonce in the text form.
const NONCE_HEX_DIGITS: usize = 16;

/// A parsed cluster id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId {
    tag: String,
    nonce: Option<u64>,
}

impl ClusterId {
    /// Reads the text form; text without a well-formed nonce suffix is a
    /// provisional id whose tag is the whole text.
    pub fn parse(text: &str) -> ClusterId {
        if let Some((tag, hex)) = text.rsplit_once(NONCE_SEPARATOR) {
            let well_formed = hex.len() == NONCE_HEX_DIGITS
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if well_formed && !tag.is_empty() {
                if let Ok(nonce) = u64::from_str_radix(hex, 16) {
                    return ClusterId {
                        tag: tag.to_owned(),
                        nonce: Some(nonce),
                    };
                }
            }
        }
        ClusterId {
            tag: text.to_owned(),
            nonce: None,
        }
    }

    /// This id's tag with `nonce` (a committed founding nonce).
    pub fn founded(&self, nonce: u64) -> ClusterId {
        ClusterId {
            tag: self.tag.clone(),
            nonce: Some(nonce),
        }
    }

    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// The founding nonce, once known.
    pub fn nonce(&self) -> Option<u64> {
        self.nonce
    }

    /// Whether a node of `self` may talk Raft with, join or be joined by a
    /// node of `other` (see the module docs).
    pub fn compatible(&self, other: &ClusterId) -> bool {
        self.tag == other.tag
            && match (self.nonce, other.nonce) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// [`ClusterId::compatible`] on text forms.
    pub fn compatible_text(a: &str, b: &str) -> bool {
        ClusterId::parse(a).compatible(&ClusterId::parse(b))
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nonce {
            Some(nonce) => write!(f, "{}{NONCE_SEPARATOR}{nonce:016x}", self.tag),
            None => f.write_str(&self.tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        let provisional = ClusterId::parse("dbc-00ff00ff00ff00ff");
        assert_eq!(provisional.nonce(), None);
        assert_eq!(provisional.tag(), "dbc-00ff00ff00ff00ff");
        let founded = provisional.founded(0x1234);
        assert_eq!(founded.to_string(), "dbc-00ff00ff00ff00ff.0000000000001234");
        assert_eq!(ClusterId::parse(&founded.to_string()), founded);
        // Not a nonce: too short, upper case, or nothing before it.
        for text in [
            "a.1234",
            "a.000000000000123G",
            "a.00000000000012AB",
            ".0000000000001234",
        ] {
            let id = ClusterId::parse(text);
            assert_eq!((id.tag(), id.nonce()), (text, None), "{text}");
        }
    }

    #[test]
    fn foundings_are_compatible_only_with_themselves() {
        let tag = ClusterId::parse("dbc-1");
        let (a, b) = (tag.founded(1), tag.founded(2));
        assert!(a.compatible(&a));
        assert!(!a.compatible(&b) && !b.compatible(&a));
        // Provisional: either founding may still be the one.
        assert!(tag.compatible(&a) && b.compatible(&tag));
        assert!(!ClusterId::parse("dbc-2").compatible(&tag));
        assert!(!ClusterId::parse("dbc-2").compatible(&a));
        assert!(ClusterId::compatible_text("x", "x.0000000000000009"));
    }
}
