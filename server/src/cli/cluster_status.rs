//! `deadbolt cluster status`: asks the leader for its health view (following
//! the leader id and API address named by whichever node answers first, or,
//! while that address is not published yet, asking each `--endpoints` URL in
//! turn) and prints it as a table a person reads at a glance: each member's role,
//! voter, reachable, last contact and lag, then whether the quorum is up.
//!
//! Only the leader knows reachability, last contact and lag. When no leader
//! is known (or the one named does not answer), the answering node's own
//! view is printed under a line saying so, its health columns as `?`, and
//! the command still exits 0: the view is the answer. `--json` prints the
//! leader's answer, or that node's when there is none.

use std::time::Duration;

use anyhow::Context as _;
use deadbolt_client::api::{ClusterStatus, MemberStatus, NodeRole};
use deadbolt_client::{Client, ClientBuilder};

/// How long to wait for the leader named in the first answer before
/// printing that answer instead.
const LEADER_CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Whose view is printed.
#[derive(Debug)]
enum View {
    /// The leader's own answer, with health.
    Leader(ClusterStatus),
    /// Another node's answer; `why` says why it is not the leader's.
    Node { status: ClusterStatus, why: String },
}

pub(super) async fn run(client: &Client, endpoints: &[String], json: bool) -> anyhow::Result<()> {
    let first = client
        .cluster_status()
        .await
        .context("asking the cluster for its status")?;
    let view = match leader_view(first, scheme_of(endpoints)).await {
        View::Node { status, why } => match leader_among(endpoints).await {
            Some(answer) => View::Leader(answer),
            None => View::Node { status, why },
        },
        leader => leader,
    };
    let status = match &view {
        View::Leader(status) | View::Node { status, .. } => status,
    };
    if json {
        super::output::print_json(status);
    } else {
        print!("{}", render(&view));
    }
    Ok(())
}

/// The leader's answer: `first` if it is one, else the leader's own.
async fn leader_view(first: ClusterStatus, scheme: &str) -> View {
    if is_leader(&first) {
        return View::Leader(first);
    }
    let Some(url) = leader_url(&first, scheme) else {
        let why = match first.leader_id {
            Some(leader) => {
                format!("the API address of the leader, node {leader}, is not known yet")
            }
            None => "no leader known".into(),
        };
        return View::Node { status: first, why };
    };
    let leader = first.leader_id.unwrap_or_default();
    match ask(&url).await {
        Ok(answer) if is_leader(&answer) => View::Leader(answer),
        Ok(answer) => View::Node {
            why: format!(
                "node {leader} at {url} no longer leads (it names {})",
                leader_name(answer.leader_id)
            ),
            status: first,
        },
        Err(e) => View::Node {
            why: format!("the leader, node {leader} at {url}, did not answer ({e:#})"),
            status: first,
        },
    }
}

/// The answer of the first of `endpoints` that leads, if any does.
async fn leader_among(endpoints: &[String]) -> Option<ClusterStatus> {
    for url in endpoints {
        if let Ok(answer) = ask(url.trim()).await {
            if is_leader(&answer) {
                return Some(answer);
            }
        }
    }
    None
}

async fn ask(url: &str) -> anyhow::Result<ClusterStatus> {
    let client = ClientBuilder::new([url.to_owned()])
        .call_timeout(LEADER_CALL_TIMEOUT)
        .build()
        .with_context(|| format!("a client of {url}"))?;
    Ok(client.cluster_status().await?)
}

fn is_leader(status: &ClusterStatus) -> bool {
    status.leader_id == Some(status.node_id)
}

/// `scheme://api_addr` of the leader `status` names, if it names one whose
/// API address is published.
fn leader_url(status: &ClusterStatus, scheme: &str) -> Option<String> {
    let leader = status.leader_id?;
    let member = status.members.iter().find(|m| m.id == leader)?;
    (!member.api_addr.is_empty()).then(|| format!("{scheme}://{}", member.api_addr))
}

/// The scheme the user's endpoints use (`http` unless they say `https`).
fn scheme_of(endpoints: &[String]) -> &str {
    match endpoints.first().and_then(|e| e.trim().split_once("://")) {
        Some(("https", _)) => "https",
        _ => "http",
    }
}

fn leader_name(leader: Option<u64>) -> String {
    leader.map_or_else(|| "no leader".into(), |l| format!("node {l}"))
}

/// The table, lines ending in `\n`.
fn render(view: &View) -> String {
    let (status, note) = match view {
        View::Leader(status) => (status, None),
        View::Node { status, why } => (status, Some(why)),
    };
    let mut out = format!(
        "cluster {} (version {}); {}; term {}; commit index {}\n",
        status.cluster_id,
        status.version,
        status
            .leader_id
            .map_or_else(|| "no leader known".into(), |l| format!("leader node {l}")),
        status.term,
        status.commit_index
    );
    if let Some(why) = note {
        out += &format!(
            "{why}; this is node {}'s view: reachability, last contact and lag are known to the leader only\n",
            status.node_id
        );
    }
    out += &format!(
        "{:>4}  {:<9} {:<5} {:<9} {:>12} {:>6}  {}\n",
        "id", "role", "voter", "reachable", "last contact", "lag", "api"
    );
    for m in &status.members {
        out += &member_row(m);
    }
    out += &quorum_line(status, note.is_some());
    out
}

fn member_row(m: &MemberStatus) -> String {
    let reachable = match m.reachable {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "?",
    };
    let last_contact = match (m.reachable, m.last_contact_ms) {
        (_, Some(ms)) => duration(ms),
        // On the leader: not heard from since it became leader.
        (Some(_), None) => "never".into(),
        (None, None) => "?".into(),
    };
    format!(
        "{:>4}  {:<9} {:<5} {:<9} {:>12} {:>6}  {}\n",
        m.id,
        role_name(m.role),
        if m.voter { "yes" } else { "no" },
        reachable,
        last_contact,
        m.lag.map_or_else(|| "?".into(), |l| l.to_string()),
        if m.api_addr.is_empty() {
            "-"
        } else {
            &m.api_addr
        },
    )
}

fn quorum_line(status: &ClusterStatus, not_leader: bool) -> String {
    let Some(q) = status.quorum else {
        return if not_leader {
            "quorum: unknown (no leader answered; without a leader nothing commits)\n".into()
        } else {
            "quorum: unknown (the leader did not report it)\n".into()
        };
    };
    let needed = q.voters / 2 + 1;
    if q.ok {
        format!(
            "quorum: ok ({} of {} voters reachable, {needed} needed)\n",
            q.reachable_voters, q.voters
        )
    } else {
        format!(
            "quorum: LOST ({} of {} voters reachable, {needed} needed): the cluster cannot commit\n",
            q.reachable_voters, q.voters
        )
    }
}

fn role_name(role: NodeRole) -> &'static str {
    match role {
        NodeRole::Leader => "leader",
        NodeRole::Follower => "follower",
        NodeRole::Candidate => "candidate",
        NodeRole::Learner => "learner",
    }
}

/// `850 ms`, `4.2 s`, `3 min`.
fn duration(ms: u64) -> String {
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.1} s", ms as f64 / 1_000.0),
        _ => format!("{} min", ms / 60_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_client::api::QuorumStatus;

    fn member(id: u64, role: NodeRole, health: Option<(bool, Option<u64>, u64)>) -> MemberStatus {
        MemberStatus {
            id,
            peer_addr: format!("127.0.0.1:{}", 7001 + id * 10),
            api_addr: format!("127.0.0.1:{}", 7000 + id * 10),
            role,
            voter: true,
            match_index: None,
            incarnation: None,
            reachable: health.map(|h| h.0),
            last_contact_ms: health.and_then(|h| h.1),
            lag: health.map(|h| h.2),
        }
    }

    /// Node 1 leads; node 3 has been silent for 4.2 s and is 17 behind.
    fn leader_status(reachable_voters: u64) -> ClusterStatus {
        ClusterStatus {
            cluster_id: "dbc-1".into(),
            version: "0.1.0".into(),
            node_id: 1,
            leader_id: Some(1),
            term: 2,
            commit_index: 40,
            members: vec![
                member(1, NodeRole::Leader, Some((true, Some(0), 0))),
                member(2, NodeRole::Follower, Some((true, Some(12), 0))),
                member(3, NodeRole::Follower, Some((false, Some(4_200), 17))),
            ],
            quorum: Some(QuorumStatus {
                voters: 3,
                reachable_voters,
                ok: reachable_voters >= 2,
            }),
        }
    }

    fn follower_status(leader_id: Option<u64>) -> ClusterStatus {
        let mut status = leader_status(2);
        status.node_id = 2;
        status.leader_id = leader_id;
        status.quorum = None;
        for m in &mut status.members {
            (m.reachable, m.last_contact_ms, m.lag) = (None, None, None);
        }
        status
    }

    #[test]
    fn the_leaders_table_shows_who_is_down_and_the_quorum() {
        let text = render(&View::Leader(leader_status(2)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "cluster dbc-1 (version 0.1.0); leader node 1; term 2; commit index 40"
        );
        assert!(lines[1].contains("reachable") && lines[1].contains("last contact"));
        let row3: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            row3,
            [
                "3",
                "follower",
                "yes",
                "NO",
                "4.2",
                "s",
                "17",
                "127.0.0.1:7030"
            ]
        );
        assert_eq!(lines[5], "quorum: ok (2 of 3 voters reachable, 2 needed)");
        let lost = render(&View::Leader(leader_status(1)));
        assert!(
            lost.ends_with(
                "quorum: LOST (1 of 3 voters reachable, 2 needed): the cluster cannot commit\n"
            ),
            "{lost}"
        );
    }

    #[test]
    fn without_a_leader_the_node_says_whose_view_it_is() {
        let view = View::Node {
            status: follower_status(None),
            why: "no leader known".into(),
        };
        let text = render(&view);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("; no leader known;"), "{text}");
        assert!(
            lines[1].starts_with("no leader known; this is node 2's view"),
            "{text}"
        );
        let row2: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(row2[3..6], ["?", "?", "?"]);
        assert!(lines[6].starts_with("quorum: unknown"), "{text}");
    }

    #[test]
    fn the_leader_is_found_from_its_published_api_address() {
        let status = follower_status(Some(1));
        assert_eq!(
            leader_url(&status, "http").as_deref(),
            Some("http://127.0.0.1:7010")
        );
        assert_eq!(leader_url(&follower_status(None), "http"), None);
        let mut unpublished = follower_status(Some(1));
        unpublished.members[0].api_addr.clear();
        assert_eq!(leader_url(&unpublished, "http"), None);
        assert!(is_leader(&leader_status(2)));
        assert!(!is_leader(&status));
    }

    #[test]
    fn the_scheme_follows_the_endpoints() {
        assert_eq!(scheme_of(&["https://h:1".into()]), "https");
        assert_eq!(scheme_of(&[" http://h:1".into()]), "http");
        assert_eq!(scheme_of(&[]), "http");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(999), "999 ms");
        assert_eq!(duration(4_250), "4.2 s");
        assert_eq!(duration(180_000), "3 min");
    }

    #[test]
    fn never_heard_from_reads_never_on_the_leader() {
        let row = member_row(&member(4, NodeRole::Learner, Some((false, None, 40))));
        let words: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(words[1..5], ["learner", "yes", "NO", "never"]);
    }
}
