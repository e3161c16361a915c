//! Determinism: a seed run twice must produce the same event trace. The
//! harness feeds every trace line into a [`TraceHasher`]; two runs' [`Trace`]s
//! are compared by [`check_determinism`].

use std::fmt;

use deadbolt_core::codec::Fnv1a64;

/// Ends every line inside the hash so that ("ab", "c") and ("a", "bc") differ.
/// 0xff never occurs in UTF-8.
const LINE_END_BYTE: u8 = 0xff;

/// Order-sensitive 64-bit FNV-1a over event lines. Deliberately not std's
/// `RandomState`/`DefaultHasher`, whose keys or algorithm may change: the
/// hash of a seed must be the same in every process and toolchain.
#[derive(Debug, Clone)]
pub struct TraceHasher {
    hash: Fnv1a64,
    events: u64,
    /// The lines themselves, when kept, to name the first difference.
    lines: Option<Vec<String>>,
}

impl Default for TraceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceHasher {
    /// Hashes only (constant memory).
    pub fn new() -> Self {
        Self {
            hash: Fnv1a64::new(),
            events: 0,
            lines: None,
        }
    }

    /// Also keeps every line, so that a comparison can show where two runs
    /// diverged.
    pub fn keeping_lines() -> Self {
        Self {
            lines: Some(Vec::new()),
            ..Self::new()
        }
    }

    pub fn record(&mut self, line: &str) {
        self.hash.write(line.as_bytes());
        self.hash.write(&[LINE_END_BYTE]);
        self.events += 1;
        if let Some(lines) = &mut self.lines {
            lines.push(line.to_owned());
        }
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn finish(self) -> Trace {
        Trace {
            hash: self.hash.finish(),
            events: self.events,
            lines: self.lines,
        }
    }
}

/// The summary of one run's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    pub hash: u64,
    pub events: u64,
    pub lines: Option<Vec<String>>,
}

/// Two runs of one seed differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeterminismViolation {
    pub first: (u64, u64),
    pub second: (u64, u64),
    /// Index of the first differing event and the two lines there (`None`
    /// when a run had already ended), when both runs kept their lines.
    pub first_difference: Option<(usize, Option<String>, Option<String>)>,
}

impl fmt::Display for DeterminismViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "same seed, different traces: run 1 hash {:#018x} over {} events, run 2 hash {:#018x} over {} events",
            self.first.0, self.first.1, self.second.0, self.second.1
        )?;
        if let Some((i, a, b)) = &self.first_difference {
            let show = |l: &Option<String>| l.clone().unwrap_or_else(|| "(end of trace)".into());
            write!(
                f,
                "; first difference at event #{i}:\n    run 1: {}\n    run 2: {}",
                show(a),
                show(b)
            )?;
        }
        Ok(())
    }
}

/// Compares two runs of the same seed.
pub fn check_determinism(first: &Trace, second: &Trace) -> Vec<DeterminismViolation> {
    if first.hash == second.hash && first.events == second.events {
        return vec![];
    }
    let first_difference = match (&first.lines, &second.lines) {
        (Some(a), Some(b)) => {
            let i = a
                .iter()
                .zip(b.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(a.len().min(b.len()));
            Some((i, a.get(i).cloned(), b.get(i).cloned()))
        }
        _ => None,
    };
    vec![DeterminismViolation {
        first: (first.hash, first.events),
        second: (second.hash, second.events),
        first_difference,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(lines: &[&str], keep: bool) -> Trace {
        let mut h = if keep {
            TraceHasher::keeping_lines()
        } else {
            TraceHasher::new()
        };
        for l in lines {
            h.record(l);
        }
        h.finish()
    }

    #[test]
    fn same_lines_same_hash_and_known_value() {
        let a = trace(&["n1 leader t1", "n2 applied 1"], false);
        let b = trace(&["n1 leader t1", "n2 applied 1"], true);
        assert_eq!(a.hash, b.hash);
        assert_eq!(check_determinism(&a, &b), vec![]);
        // FNV-1a of the empty input is the offset basis; of "a" + 0xff it is
        // fixed forever (a trace hash printed today must match tomorrow).
        assert_eq!(trace(&[], false).hash, Fnv1a64::OFFSET_BASIS);
        assert_eq!(trace(&["a"], false).hash, trace(&["a"], true).hash);
    }

    #[test]
    fn order_and_line_boundaries_matter() {
        assert_ne!(
            trace(&["a", "b"], false).hash,
            trace(&["b", "a"], false).hash
        );
        assert_ne!(
            trace(&["ab", "c"], false).hash,
            trace(&["a", "bc"], false).hash
        );
    }

    #[test]
    fn reports_the_first_differing_event() {
        let a = trace(&["x", "y", "z"], true);
        let b = trace(&["x", "q", "z"], true);
        let v = check_determinism(&a, &b);
        assert_eq!(v.len(), 1);
        assert_eq!(
            v[0].first_difference,
            Some((1, Some("y".into()), Some("q".into())))
        );
        assert!(v[0].to_string().contains("first difference at event #1"));
        // A run that stopped early differs at its end.
        let c = trace(&["x", "y"], true);
        let v = check_determinism(&a, &c);
        assert_eq!(v[0].first_difference, Some((2, Some("z".into()), None)));
        // Without lines, only the hashes are reported.
        let v = check_determinism(&trace(&["x"], false), &trace(&["y"], false));
        assert_eq!(v[0].first_difference, None);
        assert!(v[0].to_string().contains("different traces"));
    }
}
