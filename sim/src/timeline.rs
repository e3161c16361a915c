//! The human-readable timeline of one run: what every node was (role, term,
//! down, paused, cut off, clock offset) and what the faults and clients did,
//! in simulated time, rendered as text with one column per node.
//!
//! The harness records into it during a replay (recording is cheap, so
//! sweeps record too and render only when a seed fails).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::history::{ClientId, NodeId, SimTimeNs, Term};

/// A node's Raft role as the timeline shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleMark {
    Leader,
    Follower,
    Candidate,
    Learner,
    /// Not known yet (just started).
    Unknown,
}

impl RoleMark {
    fn letter(self) -> char {
        match self {
            RoleMark::Leader => 'L',
            RoleMark::Follower => 'F',
            RoleMark::Candidate => 'C',
            RoleMark::Learner => 'l',
            RoleMark::Unknown => '?',
        }
    }
}

/// Something that happened, as the timeline records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimelineEvent {
    /// A node's role or term as observed.
    Role {
        node: NodeId,
        role: RoleMark,
        term: Term,
    },
    /// The node's process stopped (crash, kill before restart).
    Down {
        node: NodeId,
        why: String,
    },
    /// The node's process started again.
    Up {
        node: NodeId,
    },
    Paused {
        node: NodeId,
    },
    Resumed {
        node: NodeId,
    },
    /// The node's clock now reads `offset_ms` away from true time.
    Clock {
        node: NodeId,
        offset_ms: i64,
        drift_ppm: i64,
        what: String,
    },
    /// The set of cut directed links changed (`cut` is the whole new set).
    Network {
        what: String,
        cut: BTreeSet<(NodeId, NodeId)>,
    },
    /// Any other fault or harness action (weather, frame faults, phase).
    Harness {
        what: String,
    },
    /// A client operation: invoked, answered, or given up on.
    Client {
        client: ClientId,
        what: String,
    },
}

#[derive(Debug, Clone)]
struct NodeCell {
    role: RoleMark,
    term: Term,
    down: bool,
    paused: bool,
    offset_ms: i64,
}

/// The recorded timeline of one run.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    nodes: u64,
    events: Vec<(SimTimeNs, TimelineEvent)>,
}

/// Width of one node column (without the separator).
const CELL_WIDTH: usize = 14;

impl Timeline {
    pub fn new(nodes: u64) -> Self {
        Timeline {
            nodes,
            events: Vec::new(),
        }
    }

    pub fn record(&mut self, at_ns: SimTimeNs, event: TimelineEvent) {
        self.events.push((at_ns, event));
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The whole run as text: a legend, a header, then one row per event.
    /// Each row shows every node's state after the event; the node the event
    /// is about is marked with `*`.
    pub fn render(&self) -> String {
        let mut cells: BTreeMap<NodeId, NodeCell> = (1..=self.nodes)
            .map(|n| {
                (
                    n,
                    NodeCell {
                        role: RoleMark::Unknown,
                        term: 0,
                        down: false,
                        paused: false,
                        offset_ms: 0,
                    },
                )
            })
            .collect();
        let mut cut: BTreeSet<(NodeId, NodeId)> = BTreeSet::new();
        let mut out = String::new();
        self.render_header(&mut out);
        for (at_ns, event) in &self.events {
            let (about, text) = apply_event(event, &mut cells, &mut cut);
            let _ = write!(out, "{:>12} ", fmt_ms(*at_ns));
            for (n, c) in &cells {
                let cell = render_cell(*n, c, about == Some(*n), &cut);
                let _ = write!(out, "|{:<width$}", cell, width = CELL_WIDTH + 1);
            }
            let _ = writeln!(out, "| {text}");
        }
        out
    }

    /// The legend and the column header.
    fn render_header(&self, out: &mut String) {
        out.push_str(
            "legend: L leader, F follower, C candidate, ? unknown; tN term; DOWN crashed/stopped; \
             PAUSE stalled; x<ids> cannot send to those nodes; +/-ms clock offset; * = row is about this node\n",
        );
        let _ = write!(out, "{:>12} ", "time ms");
        for n in 1..=self.nodes {
            let _ = write!(out, "| {:<CELL_WIDTH$}", format!("n{n}"));
        }
        out.push_str("| event\n");
        let _ = write!(out, "{:->12}-", "");
        for _ in 1..=self.nodes {
            let _ = write!(out, "+-{:-<CELL_WIDTH$}", "");
        }
        out.push_str("+------\n");
    }
}

/// Applies `event` to the nodes' cells and the cut links; returns the node
/// the event is about (if one) and the event's text.
fn apply_event(
    event: &TimelineEvent,
    cells: &mut BTreeMap<NodeId, NodeCell>,
    cut: &mut BTreeSet<(NodeId, NodeId)>,
) -> (Option<NodeId>, String) {
    let mut about: Option<NodeId> = None;
    let text = match event {
        TimelineEvent::Role { node, role, term } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.role = *role;
                c.term = *term;
            }
            format!("n{node} is {role:?} in term {term}")
        }
        TimelineEvent::Down { node, why } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.down = true;
                c.paused = false;
                c.role = RoleMark::Unknown;
            }
            format!("n{node} down: {why}")
        }
        TimelineEvent::Up { node } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.down = false;
            }
            format!("n{node} started")
        }
        TimelineEvent::Paused { node } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.paused = true;
            }
            format!("n{node} paused")
        }
        TimelineEvent::Resumed { node } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.paused = false;
            }
            format!("n{node} resumed")
        }
        TimelineEvent::Clock {
            node,
            offset_ms,
            what,
            ..
        } => {
            about = Some(*node);
            if let Some(c) = cells.get_mut(node) {
                c.offset_ms = *offset_ms;
            }
            what.clone()
        }
        TimelineEvent::Network { what, cut: now } => {
            *cut = now.clone();
            format!("net: {what}")
        }
        TimelineEvent::Harness { what } => what.clone(),
        TimelineEvent::Client { client, what } => format!("c{client} {what}"),
    };
    (about, text)
}

/// Node `node`'s column in one row (`*` first when the row is about it).
fn render_cell(
    node: NodeId,
    c: &NodeCell,
    about: bool,
    cut: &BTreeSet<(NodeId, NodeId)>,
) -> String {
    let mut cell = String::new();
    cell.push(if about { '*' } else { ' ' });
    if c.down {
        cell.push_str("DOWN");
    } else {
        let _ = write!(cell, "{}t{}", c.role.letter(), c.term);
        if c.paused {
            cell.push_str(" PAUSE");
        }
    }
    let unreachable: Vec<String> = cut
        .iter()
        .filter(|(src, _)| *src == node)
        .map(|(_, dst)| dst.to_string())
        .collect();
    if !unreachable.is_empty() {
        let _ = write!(cell, " x{}", unreachable.join(""));
    }
    if c.offset_ms != 0 {
        let _ = write!(cell, " {:+}", c.offset_ms);
    }
    cell
}

/// Simulated nanoseconds as milliseconds with one decimal.
fn fmt_ms(at_ns: SimTimeNs) -> String {
    format!("{}.{}", at_ns / 1_000_000, (at_ns % 1_000_000) / 100_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_column_per_node_with_state() {
        let mut t = Timeline::new(3);
        t.record(
            1_000_000,
            TimelineEvent::Role {
                node: 1,
                role: RoleMark::Leader,
                term: 2,
            },
        );
        t.record(
            2_500_000,
            TimelineEvent::Network {
                what: "partition {n1} | {n2,n3}".into(),
                cut: [(1, 2), (1, 3), (2, 1), (3, 1)].into_iter().collect(),
            },
        );
        t.record(
            3_000_000,
            TimelineEvent::Down {
                node: 3,
                why: "crash".into(),
            },
        );
        t.record(
            3_100_000,
            TimelineEvent::Client {
                client: 7,
                what: "acquire(L) -> granted token 9".into(),
            },
        );
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].contains("| n1") && lines[1].contains("| n3"),
            "{text}"
        );
        assert!(lines[3].contains("*Lt2"), "{text}");
        assert!(lines[4].contains("Lt2 x23"), "{text}");
        assert!(lines[5].contains("*DOWN"), "{text}");
        assert!(lines[6].contains("c7 acquire(L)"), "{text}");
        assert!(lines[6].starts_with("         3.1"), "{text}");
        // Every row has the same column layout: the event column starts at
        // the same place as in the header.
        let event_col = lines[1].find("| event").unwrap();
        assert!(lines[3..]
            .iter()
            .all(|l| &l[event_col..event_col + 2] == "| "));
    }
}
