//! Data-driven scenario tests in the spirit of etcd-raft's interaction
//! tests: each scenario is a small script of commands against an in-process
//! cluster, with messages delivered, dropped and timed by the script.
//! (Over 1,000 lines on purpose: the script runner, then one short script
//! per Raft rule, which read best side by side.)
//!
//! Commands (one per line, `#` starts a comment; a leading `!` means the
//! command must fail):
//! - `cluster 1 2 3 [learners 4 5] [max-append-entries N] [chunk N] [no-prevote] [no-checkquorum]`
//! - `campaign N` / `tick N` (tick one node at the current time)
//! - `elapse MS` (advance the clock and tick everyone, no delivery)
//! - `run MS` (advance in 10 ms steps, ticking and delivering everything)
//! - `stabilize` (deliver until quiet) / `deliver A B` (queued A->B only)
//! - `drop A B` / `drop-all` (discard queued messages)
//! - `isolate N` / `partition 1 2 | 3 4` / `heal`
//! - `crash N` / `restart N` (rebuild from durable state)
//! - `manual-sync` / `sync N` (writes become durable only on `sync`)
//! - `propose N DATA` / `read N ID` / `transfer N TO` / `compact N`
//! - `add-learner N ID` / `promote N ID` / `remove N ID`
//! - `expect leader N` / `expect role N follower|candidate|precandidate|leader`
//! - `expect term N T` / `expect commit N C` / `expect applied N C`
//! - `expect log N 1:1 2:1 ...` (index:term after the snapshot)
//! - `expect snapshot N IDX` / `expect read N ID INDEX` / `expect read-failed N ID`
//! - `expect voters N 1 2 3` / `expect progress N ID probe|replicate|snapshot`
//! - `expect queued A B KIND` (a message of that kind is queued A->B)
//! - `expect one-leader` (exactly one live leader, followed by its term)
//! - `expect health N ID reachable|unreachable [LAG]` (leader N's view of ID)
//! - `expect quorum N VOTERS REACHABLE ok|lost` / `expect quorum N none`

use crate::raft::tests::harness::{test_config, Network};
use crate::raft::{LogIndex, NodeId, ProgressState, QuorumHealth, Role, Term};

fn num(word: Option<&str>, line: &str) -> u64 {
    word.and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("expected a number in `{line}`"))
}

/// Runs a script; panics with the failing line and a cluster dump.
fn run(script: &str) {
    let mut net: Option<Network> = None;
    for (lineno, raw) in script.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (must_fail, cmd) = match line.strip_prefix('!') {
            Some(rest) => (true, rest.trim()),
            None => (false, line),
        };
        if let Some(rest) = cmd.strip_prefix("cluster") {
            net = Some(build(rest));
            continue;
        }
        let n = net.as_mut().expect("script starts with `cluster`");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(n, cmd)));
        match (result, must_fail) {
            (Ok(Ok(())), false) | (Ok(Err(_)), true) => {}
            (Ok(Ok(())), true) => panic!(
                "line {}: `{line}` should have failed\n{}",
                lineno + 1,
                n.debug_dump()
            ),
            (Ok(Err(e)), false) => panic!(
                "line {}: `{line}` failed: {e}\n{}",
                lineno + 1,
                n.debug_dump()
            ),
            (Err(p), _) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!(
                    "line {}: `{line}` panicked: {msg}\n{}",
                    lineno + 1,
                    n.debug_dump()
                )
            }
        }
    }
}

fn build(args: &str) -> Network {
    let mut voters = Vec::new();
    let mut learners = Vec::new();
    let mut words = args.split_whitespace().peekable();
    let mut in_learners = false;
    let mut max_append_entries = None;
    let mut chunk = None;
    let mut pre_vote = true;
    let mut check_quorum = true;
    while let Some(w) = words.next() {
        match w {
            "learners" => in_learners = true,
            "max-append-entries" => max_append_entries = Some(num(words.next(), args) as usize),
            "chunk" => chunk = Some(num(words.next(), args) as usize),
            "no-prevote" => pre_vote = false,
            "no-checkquorum" => check_quorum = false,
            _ => {
                let id = num(Some(w), args);
                if in_learners {
                    learners.push(id)
                } else {
                    voters.push(id)
                }
            }
        }
    }
    Network::new(&voters, &learners, 7, |id| {
        let mut c = test_config(id);
        if let Some(m) = max_append_entries {
            c.max_append_entries = m;
        }
        if let Some(ch) = chunk {
            c.snapshot_chunk_bytes = ch;
        }
        c.pre_vote = pre_vote;
        c.check_quorum = check_quorum;
        c
    })
}

fn step(n: &mut Network, cmd: &str) -> Result<(), String> {
    let w: Vec<&str> = cmd.split_whitespace().collect();
    match w[0] {
        "expect" => expect(n, &w[1..], cmd),
        "propose" | "read" | "transfer" | "add-learner" | "promote" | "remove" => {
            let result = call(n, &w, cmd);
            n.process_all();
            result
        }
        _ => {
            drive(n, &w, cmd);
            Ok(())
        }
    }
}

/// A command that calls the replica and may be refused.
fn call(n: &mut Network, w: &[&str], cmd: &str) -> Result<(), String> {
    let arg = |i: usize| num(w.get(i).copied(), cmd);
    let replica = &mut n.node_mut(arg(1)).replica;
    let refused = match w[0] {
        "propose" => {
            let data = w.get(2).unwrap_or(&"x").as_bytes().to_vec();
            replica.propose(data).err().map(|e| e.to_string())
        }
        "read" => replica.read_index(arg(2)).err().map(|e| e.to_string()),
        "transfer" => replica
            .transfer_leadership(arg(2))
            .err()
            .map(|e| e.to_string()),
        "add-learner" => {
            let id = arg(2);
            let (peer_addr, api_addr) = (format!("n{id}:1"), format!("n{id}:2"));
            replica
                .add_learner(id, peer_addr, api_addr)
                .err()
                .map(|e| e.to_string())
        }
        "promote" => replica.promote(arg(2)).err().map(|e| e.to_string()),
        "remove" => replica.remove_member(arg(2)).err().map(|e| e.to_string()),
        other => unreachable!("`{other}` is not a call"),
    };
    refused.map_or(Ok(()), Err)
}

/// A command that drives time, the network, disks or crashes.
fn drive(n: &mut Network, w: &[&str], cmd: &str) {
    let arg = |i: usize| num(w.get(i).copied(), cmd);
    match w[0] {
        "campaign" => {
            n.node_mut(arg(1)).replica.campaign_now();
            n.process_all();
        }
        "tick" => {
            let now = n.now_ms;
            n.node_mut(arg(1)).replica.tick(now);
            n.process_all();
        }
        "elapse" => {
            n.now_ms += arg(1);
            n.tick_all();
        }
        "run" => {
            let end = n.now_ms + arg(1);
            while n.now_ms < end {
                n.now_ms += 10;
                n.tick_all();
                n.stabilize();
            }
        }
        "stabilize" => {
            n.stabilize();
        }
        "deliver" => {
            let (a, b) = (arg(1), arg(2));
            let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut n.queue)
                .into_iter()
                .partition(|m| m.from == a && m.to == b);
            n.queue = rest;
            for m in mine {
                n.deliver(m);
            }
        }
        "drop" => {
            let (a, b) = (arg(1), arg(2));
            n.queue.retain(|m| !(m.from == a && m.to == b));
        }
        "drop-all" => n.queue.clear(),
        "isolate" => n.isolate(arg(1)),
        "heal" => n.cut.clear(),
        "partition" => {
            let groups: Vec<Vec<NodeId>> = cmd["partition".len()..]
                .split('|')
                .map(|g| g.split_whitespace().map(|x| num(Some(x), cmd)).collect())
                .collect();
            n.partition(&groups);
        }
        "crash" => n.node_mut(arg(1)).up = false,
        "restart" => {
            n.restart(arg(1));
            n.process_all();
        }
        "manual-sync" => n.auto_sync = false,
        "sync" => {
            n.sync(arg(1));
            n.process_all();
        }
        "compact" => {
            n.take_snapshot(arg(1));
        }
        other => panic!("unknown command `{other}`"),
    }
}

fn check(ok: bool, what: String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what)
    }
}

fn expect(n: &Network, w: &[&str], cmd: &str) -> Result<(), String> {
    let arg = |i: usize| num(w.get(i).copied(), cmd);
    match w[0] {
        "leader" => expect_leader(n, arg(1)),
        "role" => {
            let want = match w[2] {
                "follower" => Role::Follower,
                "candidate" => Role::Candidate,
                "precandidate" => Role::PreCandidate,
                "leader" => Role::Leader,
                other => panic!("unknown role {other}"),
            };
            let got = n.node(arg(1)).replica.role();
            check(got == want, format!("role is {got:?}"))
        }
        "term" => {
            let got: Term = n.node(arg(1)).replica.term();
            check(got == arg(2), format!("term is {got}"))
        }
        "commit" => {
            let got = n.node(arg(1)).replica.commit_index();
            check(got == arg(2), format!("commit is {got}"))
        }
        "applied" => {
            let got = n.node(arg(1)).applied_index;
            check(got == arg(2), format!("applied is {got}"))
        }
        "snapshot" => {
            let got = n.node(arg(1)).replica.status().snapshot_index;
            check(got == arg(2), format!("snapshot index is {got}"))
        }
        "log" => {
            let want: Vec<(LogIndex, Term)> = w[2..]
                .iter()
                .map(|p| {
                    let (i, t) = p.split_once(':').expect("index:term");
                    (num(Some(i), cmd), num(Some(t), cmd))
                })
                .collect();
            let got = n.log_summary(arg(1));
            check(got == want, format!("log is {got:?}"))
        }
        "read" => {
            let (id, req, index) = (arg(1), arg(2), arg(3));
            let got = &n.node(id).read_states;
            check(
                got.iter().any(|r| r.request_id == req && r.index == index),
                format!("read states are {got:?}"),
            )
        }
        "read-failed" => {
            let got = &n.node(arg(1)).failed_reads;
            check(got.contains(&arg(2)), format!("failed reads are {got:?}"))
        }
        "voters" => {
            let got: Vec<NodeId> = n.node(arg(1)).replica.membership().voters().collect();
            let want: Vec<NodeId> = w[2..].iter().map(|x| num(Some(x), cmd)).collect();
            check(got == want, format!("voters are {got:?}"))
        }
        "progress" => expect_progress(n, arg(1), arg(2), w[3]),
        "one-leader" => expect_one_leader(n),
        "health" => expect_health(n, arg(1), arg(2), w[3], w.get(4).copied(), cmd),
        "quorum" => {
            let got = n.node(arg(1)).replica.health(n.now_ms).map(|h| h.quorum);
            let want = (w[2] != "none").then(|| QuorumHealth {
                voters: arg(2) as usize,
                reachable_voters: arg(3) as usize,
                ok: w[4] == "ok",
            });
            check(got == want, format!("quorum is {got:?}"))
        }
        "queued" => {
            let (a, b) = (arg(1), arg(2));
            let got: Vec<&str> = n
                .queue
                .iter()
                .filter(|m| m.from == a && m.to == b)
                .map(|m| m.msg.kind())
                .collect();
            check(got.contains(&w[3]), format!("queued {a}->{b}: {got:?}"))
        }
        other => panic!("unknown expectation `{other}`"),
    }
}

/// `expect health N ID reachable|unreachable [LAG]` on leader N.
fn expect_health(
    n: &Network,
    id: NodeId,
    member: NodeId,
    reachable: &str,
    lag: Option<&str>,
    cmd: &str,
) -> Result<(), String> {
    let health = n
        .node(id)
        .replica
        .health(n.now_ms)
        .ok_or_else(|| format!("node {id} has no health view (not leader)"))?;
    let got = health
        .members
        .get(&member)
        .ok_or_else(|| format!("node {member} is not in the view"))?;
    check(
        got.reachable == (reachable == "reachable"),
        format!("node {member}: {got:?}"),
    )?;
    match lag {
        Some(lag) => check(
            got.lag == num(Some(lag), cmd),
            format!("node {member}: {got:?}"),
        ),
        None => Ok(()),
    }
}

/// `id` leads, and every live node in its term follows it.
fn expect_leader(n: &Network, id: NodeId) -> Result<(), String> {
    let r = &n.node(id).replica;
    check(
        r.role() == Role::Leader,
        format!("node {id} is {:?}, not leader", r.role()),
    )?;
    for (other, node) in &n.nodes {
        if node.up && node.replica.term() == r.term() && *other != id {
            check(
                node.replica.leader() == Some(id),
                format!("node {other} follows {:?}", node.replica.leader()),
            )?;
        }
    }
    Ok(())
}

/// Exactly one live leader, followed by every live node of its term.
fn expect_one_leader(n: &Network) -> Result<(), String> {
    let leaders = n.leaders();
    check(leaders.len() == 1, format!("leaders: {leaders:?}"))?;
    let term = n.node(leaders[0]).replica.term();
    for (id, node) in &n.nodes {
        let ok =
            !node.up || node.replica.term() < term || node.replica.leader() == Some(leaders[0]);
        check(ok, format!("node {id} does not follow {}", leaders[0]))?;
    }
    Ok(())
}

/// Leader `id` feeds `peer` in the state named `state`.
fn expect_progress(n: &Network, id: NodeId, peer: NodeId, state: &str) -> Result<(), String> {
    let want = match state {
        "probe" => ProgressState::Probe,
        "replicate" => ProgressState::Replicate,
        "snapshot" => ProgressState::Snapshot,
        other => panic!("unknown progress state {other}"),
    };
    let status = n.node(id).replica.status();
    let got = status.progress.get(&peer).map(|p| p.state);
    check(got == Some(want), format!("progress is {got:?}"))
}

#[test]
fn basic_election() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        expect leader 1
        expect term 1 1
        expect log 2 1:0 2:1          # the new leader's no-op
        expect commit 3 2
        expect applied 2 2
        ! propose 2 x             # followers refuse proposals
        propose 1 a
        propose 1 b
        stabilize
        expect commit 2 4
        expect log 3 1:0 2:1 3:1 4:1
        run 5000                  # a healthy cluster never re-elects
        expect leader 1
        expect term 3 1
    ");
}

#[test]
fn split_vote_then_recovery() {
    run("
        cluster 1 2 3 no-prevote
        campaign 1
        campaign 2
        deliver 1 3               # 3 votes for 1 first
        deliver 2 3               # and refuses 2 in the same term
        drop 1 2
        drop 2 1
        stabilize
        expect leader 1
        expect role 2 follower
    ");
    run("
        cluster 1 2 3 4 no-prevote
        campaign 1
        campaign 2
        deliver 1 3
        deliver 2 4
        drop-all                  # 2 votes each: nobody wins term 1
        stabilize
        expect role 1 candidate
        expect role 2 candidate
        run 1000                  # randomized timeouts break the tie
        expect one-leader
    ");
    // After the tie is broken exactly one leader exists.
    let mut net = Network::new(&[1, 2, 3, 4], &[], 3, test_config);
    net.node_mut(1).replica.campaign_now();
    net.node_mut(2).replica.campaign_now();
    net.process_all();
    net.queue.clear();
    for _ in 0..100 {
        net.now_ms += 10;
        net.tick_all();
        net.stabilize();
    }
    assert_eq!(net.leaders().len(), 1, "{}", net.debug_dump());
}

#[test]
fn prevote_blocks_a_partitioned_node() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        expect leader 1
        isolate 3
        run 2000                  # 3 keeps pre-voting and never wins one
        expect term 3 1           # ... so its term never moves
        expect role 3 precandidate
        heal
        run 200
        expect leader 1           # rejoining did not disrupt the leader
        expect term 1 1
        expect role 3 follower
    ");
}

#[test]
fn leader_stickiness_lease_without_prevote() {
    // Without pre-vote the partitioned node bumps its term, but followers
    // that hear from the leader ignore its vote requests (check-quorum
    // lease); the old leader learns the term from its responses and the
    // cluster settles on a leader with a complete log.
    run("
        cluster 1 2 3 no-prevote
        campaign 1
        stabilize
        propose 1 a
        stabilize
        isolate 3
        run 1000
        expect role 1 leader
        expect role 3 candidate
        heal
        campaign 3                # term ~10 vote request reaches 2...
        deliver 3 2
        expect term 2 1           # ...which ignores it: it hears from leader 1
        expect role 2 follower
        drop-all
        run 1000                  # 1 learns 3's term from a response, steps down
        expect one-leader
        expect commit 3 4         # a new term's no-op on top of a
        expect applied 3 4
    ");
}

#[test]
fn check_quorum_step_down() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        expect leader 1
        isolate 1
        run 250                   # two check-quorum rounds without contact
        expect role 1 follower
        ! propose 1 x
        run 500
        heal
        run 200
        expect role 1 follower
    ");
    // The rest of the cluster elected someone else meanwhile.
    let mut net = Network::new(&[1, 2, 3], &[], 7, test_config);
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    net.isolate(1);
    for _ in 0..60 {
        net.now_ms += 10;
        net.tick_all();
        net.stabilize();
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{}", net.debug_dump());
    assert_ne!(leaders[0], 1);
}

#[test]
fn leader_completeness_after_partition_heals() {
    let mut net = Network::new(&[1, 2, 3, 4, 5], &[], 11, test_config);
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    net.node_mut(1).replica.propose(b"a".to_vec()).unwrap();
    net.stabilize();
    net.partition(&[vec![1, 2], vec![3, 4, 5]]);
    net.node_mut(1).replica.propose(b"lost".to_vec()).unwrap();
    net.stabilize();
    assert_eq!(net.node(1).replica.commit_index(), 3);
    for _ in 0..100 {
        net.now_ms += 10;
        net.tick_all();
        net.stabilize();
    }
    let leader = *net
        .leaders()
        .iter()
        .find(|l| **l >= 3)
        .expect("majority side elected a leader");
    net.node_mut(leader)
        .replica
        .propose(b"kept".to_vec())
        .unwrap();
    net.stabilize();
    net.cut.clear();
    for _ in 0..50 {
        net.now_ms += 10;
        net.tick_all();
        net.stabilize();
    }
    let applied: Vec<Vec<u8>> = net.node(1).applied.iter().map(|a| a.1.clone()).collect();
    assert_eq!(
        applied,
        vec![b"a".to_vec(), b"kept".to_vec()],
        "{}",
        net.debug_dump()
    );
    for id in net.ids() {
        assert_eq!(net.node(id).applied, net.node(leader).applied);
    }
}

#[test]
fn figure_8_old_term_entries_commit_only_through_a_current_term_entry() {
    // Figure 8 of the Raft paper, shifted by one index (every leader's
    // no-op takes a slot). One entry per append so each step is visible.
    run("
        cluster 1 2 3 4 5 max-append-entries 1 no-prevote no-checkquorum
        campaign 1
        stabilize                   # term 1: everyone holds 1:1
        crash 1
        restart 1
        campaign 1
        stabilize
        expect leader 1
        expect log 3 1:0 2:1 3:2        # term 2, no-op committed
        # (a) S1 (term 2) appends index 3 and replicates it to nobody.
        propose 1 a
        drop-all
        expect log 1 1:0 2:1 3:2 4:2
        # (b) S1 crashes; S5 wins term 3 with S3 and S4, appends 3:3 locally.
        crash 1
        campaign 5
        deliver 5 3
        deliver 5 4
        deliver 3 5
        deliver 4 5
        expect role 5 leader
        drop-all
        expect log 5 1:0 2:1 3:2 4:3
        crash 5
        # (c) S1 restarts and wins term 4 with S2 and S3 (S3 voted in term 3,
        # so it takes two rounds), then copies 3:2 to S2 and S3.
        restart 1
        campaign 1
        deliver 1 2
        deliver 1 3
        deliver 2 1
        deliver 3 1
        drop-all
        campaign 1
        deliver 1 2
        deliver 1 3
        deliver 2 1
        deliver 3 1
        expect role 1 leader
        expect term 1 4
        drop 1 4
        drop 1 5
        deliver 1 2                 # probe after 3: rejected, backs up
        deliver 1 3
        deliver 2 1
        deliver 3 1
        deliver 1 2                 # 3:2
        deliver 1 3
        deliver 2 1
        deliver 3 1
        drop-all                    # S1's own no-op 4:4 reaches nobody
        expect log 2 1:0 2:1 3:2 4:2
        expect log 3 1:0 2:1 3:2 4:2
        # 3:2 sits on a majority (S1, S2, S3) but is not of term 4: it must
        # not be committed...
        expect commit 1 3
        expect applied 1 3
        # (d) ...because S5 can still win (its last term 3 beats 2) and
        # overwrite it everywhere.
        crash 1
        restart 5
        campaign 5                  # term 4: S2, S3 already voted for S1
        stabilize
        campaign 5                  # term 5: S2, S3, S4 vote for S5
        stabilize
        expect role 5 leader
        expect log 2 1:0 2:1 3:2 4:3 5:5
        expect log 3 1:0 2:1 3:2 4:3 5:5
        expect commit 5 5
    ");
}

#[test]
fn stale_and_reordered_appends_never_drop_matching_entries() {
    let mut net = Network::new(&[1, 2, 3], &[], 5, test_config);
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    // Two pipelined appends to node 2: [3:1] then [4:1].
    net.node_mut(1).replica.propose(b"a".to_vec()).unwrap();
    net.process_all();
    net.node_mut(1).replica.propose(b"b".to_vec()).unwrap();
    net.process_all();
    let to2: Vec<_> = net
        .queue
        .iter()
        .filter(|m| m.to == 2 && m.msg.kind() == "AppendEntries")
        .cloned()
        .collect();
    assert_eq!(to2.len(), 2, "pipelined appends: {to2:?}");
    net.queue.retain(|m| m.to != 2);
    // Reordered: the second arrives first (a gap: refused), then both, then
    // the first again (stale duplicate).
    net.deliver(to2[1].clone());
    assert_eq!(net.log_summary(2), vec![(1, 0), (2, 1)]);
    net.deliver(to2[0].clone());
    net.deliver(to2[1].clone());
    assert_eq!(net.log_summary(2), vec![(1, 0), (2, 1), (3, 1), (4, 1)]);
    net.deliver(to2[0].clone());
    assert_eq!(
        net.log_summary(2),
        vec![(1, 0), (2, 1), (3, 1), (4, 1)],
        "a stale append truncated matching entries"
    );
    net.stabilize();
    assert_eq!(net.node(2).replica.commit_index(), 4);
    assert_eq!(net.node(2).applied_index, 4);
    // Messages from an old term are refused and answered with the new term;
    // the old leader's unreplicated entry is overwritten.
    run("
        cluster 1 2 3 no-checkquorum
        campaign 1
        stabilize
        propose 1 a
        isolate 1
        drop-all
        campaign 2
        stabilize
        expect leader 2
        heal
        elapse 20                 # old leader 1 heartbeats with term 1
        expect queued 1 3 Heartbeat
        stabilize
        expect role 1 follower
        expect term 1 2
        expect log 1 1:0 2:1 3:2
        expect log 3 1:0 2:1 3:2
    ");
}

#[test]
fn far_behind_follower_catches_up_by_chunked_snapshot() {
    run("
        cluster 1 2 3 chunk 16
        campaign 1
        stabilize
        isolate 3
        propose 1 aaaaaaaaaa
        propose 1 bbbbbbbbbb
        propose 1 cccccccccc
        propose 1 dddddddddd
        stabilize
        expect commit 1 6
        compact 1
        expect snapshot 1 6
        propose 1 e
        stabilize
        heal
        run 100
        expect snapshot 3 6
        expect commit 3 7
        expect applied 3 7
        expect progress 1 3 replicate
        restart 3                # installed snapshot is durable
        expect snapshot 3 6
        run 100
        expect applied 3 7
    ");
}

#[test]
fn restarted_leader_without_snapshot_bytes_asks_for_one() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        isolate 3
        propose 1 a
        propose 1 b
        stabilize
        compact 1
        compact 2
        crash 1
        restart 1
        run 600                   # 1 or 2 leads again; 3 is isolated
        heal
        run 300
        expect applied 3 5        # a, b and the new leader's no-op
    ");
}

#[test]
fn leadership_transfer() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        isolate 3
        propose 1 a
        stabilize
        heal
        transfer 1 3              # 3 is behind: caught up first, then TimeoutNow
        ! propose 1 x             # proposals wait while transferring
        stabilize
        expect leader 3
        expect term 3 2
        expect commit 3 4
        ! transfer 1 2            # 1 is no longer leader
        ! transfer 3 9            # not a voter
    ");
}

#[test]
fn add_learner_promote_and_remove_voter() {
    run("
        cluster 1 2 3 learners 4
        campaign 1
        stabilize
        propose 1 a
        stabilize
        add-learner 1 4
        ! promote 1 4             # the learner change is not committed yet
        stabilize
        expect voters 4 1 2 3     # 4 received the log as a learner
        expect applied 4 4
        promote 1 4
        stabilize
        expect voters 1 1 2 3 4
        expect voters 4 1 2 3 4
        crash 2
        crash 3                   # with 4 voters, quorum is 3: nothing commits
        propose 1 b
        stabilize
        expect commit 1 5
        restart 3
        run 200
        expect commit 1 6
        remove 1 2
        stabilize
        expect voters 1 1 3 4
        propose 1 c
        stabilize
        expect commit 4 8
    ");
}

#[test]
fn a_learner_that_never_answered_is_never_promoted() {
    // Issue 14: a learner counted as caught up while the log was short, so
    // adding a node that never started made it a voter at once.
    run("
        cluster 1 learners 2
        campaign 1
        stabilize
        isolate 2                 # never answers (a typo, never started)
        add-learner 1 2
        stabilize
        ! promote 1 2             # acknowledged nothing
        propose 1 a
        stabilize
        expect commit 1 4         # the one voter still commits alone
        ! promote 1 2
        heal
        run 300                   # it answers and catches up
        promote 1 2
        stabilize
        expect voters 1 1 2
    ");
}

#[test]
fn the_leader_sees_who_answers_and_how_far_behind() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        expect health 1 1 reachable 0
        expect health 1 2 reachable 0
        expect quorum 1 3 3 ok
        expect quorum 2 none      # only the leader has a view
        crash 3
        propose 1 a
        run 600                   # 3 has not answered for an election timeout
        expect leader 1
        expect health 1 2 reachable 0
        expect health 1 3 unreachable 1
        expect quorum 1 3 2 ok
        crash 2
        elapse 200                # within the window: 2 still counts
        expect health 1 2 reachable
        elapse 400                # check-quorum: 1 steps down, and has no view
        expect quorum 1 none
    ");
    run("
        cluster 1 2 3 no-checkquorum
        campaign 1
        stabilize
        crash 2
        crash 3
        elapse 400
        expect leader 1
        expect health 1 2 unreachable 0
        expect quorum 1 3 1 lost
    ");
}

#[test]
fn removals_that_would_lose_the_quorum_are_refused() {
    run("
        cluster 1
        campaign 1
        stabilize
        ! remove 1 1              # the last voter
        ! remove 1 7              # not a member
    ");
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        crash 3
        run 600                   # 3 has not answered for an election timeout
        expect leader 1
        ! remove 1 2              # would leave 1 and 3: one reachable of quorum 2
        remove 1 3                # leaves 1 and 2, both reachable
        stabilize
        expect voters 1 1 2
        propose 1 a
        stabilize
        expect commit 2 4
    ");
}

#[test]
fn membership_changes_are_one_at_a_time() {
    run("
        cluster 1 2 3 learners 4 5
        campaign 1
        deliver 1 2               # pre-vote, then vote, with node 2 only
        deliver 2 1
        deliver 1 2
        deliver 2 1
        expect role 1 leader
        ! add-learner 1 4         # the leader's no-op is not committed yet
        stabilize
        add-learner 1 4
        ! add-learner 1 5         # previous change not committed
        ! remove 1 2
        stabilize
        add-learner 1 5
        stabilize
        promote 1 4
        stabilize
        expect voters 5 1 2 3 4
        ! remove 1 9
    ");
    // Two voters at once is refused outright.
    let mut net = Network::new(&[1, 2, 3], &[], 1, test_config);
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    let mut next = net.node(1).replica.membership().clone();
    next.members.remove(&2);
    next.members.remove(&3);
    assert_eq!(
        net.node_mut(1).replica.propose_membership(next),
        Err(crate::raft::MembershipError::MoreThanOneVoterChanged)
    );
}

#[test]
fn removing_the_leader() {
    run("
        cluster 1 2 3
        campaign 1
        stabilize
        remove 1 1
        stabilize
        expect role 1 follower    # stepped down after committing its removal
        run 500
        expect voters 2 2 3
        propose 2 a               # it handed over to 2 (most caught up, lowest id)
        stabilize
        expect commit 3 5
    ");
}

#[test]
fn read_index_on_leader_and_follower() {
    run("
        cluster 1 2 3
        campaign 1
        deliver 1 2
        deliver 2 1
        deliver 1 2
        deliver 2 1
        expect role 1 leader
        read 1 7                  # waits for the no-op to commit (Raft 6.4)
        stabilize
        expect read 1 7 2
        propose 1 a
        stabilize
        read 1 8
        stabilize
        expect read 1 8 3
        isolate 1
        read 1 9                  # heartbeats lost: not confirmed
        stabilize
        heal
        read 2 10                 # forwarded by a follower
        stabilize
        expect read 2 10 3
        expect read 1 9 3         # the later round confirms the earlier read
        isolate 1
        read 1 11
        run 250                   # check-quorum: leadership lost, read fails
        expect read-failed 1 11
        ! read 1 12               # no leader known
    ");
}

#[test]
fn single_node_cluster_commits_after_persist() {
    run("
        cluster 1
        manual-sync
        campaign 1
        expect role 1 candidate   # its own vote is not durable yet
        sync 1
        expect role 1 leader
        expect commit 1 1         # own no-op not yet durable
        sync 1
        expect commit 1 2
        propose 1 a
        expect commit 1 2
        sync 1
        expect commit 1 3
        expect applied 1 3
        read 1 3
        expect read 1 3 3
    ");
}

#[test]
fn votes_and_acks_wait_for_durability() {
    run("
        cluster 1 2 3
        manual-sync
        campaign 1
        stabilize
        expect role 1 candidate   # pre-vote won; vote requests wait for its term
        sync 1
        stabilize
        expect role 1 candidate   # grants wait for the voters' hard state
        sync 2
        stabilize
        expect role 1 leader
        sync 1
        stabilize
        expect commit 1 1         # 2 holds the no-op but its ack waits for sync
        sync 2
        stabilize
        expect commit 1 2
    ");
}

#[test]
fn appends_are_batched_pipelined_and_bounded() {
    let mut net = Network::new(&[1, 2, 3], &[], 9, |id| {
        let mut c = test_config(id);
        c.max_append_entries = 3;
        c.max_inflight_appends = 2;
        c.max_append_bytes = 100;
        c
    });
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    // Ten proposals before the caller drains: batched into appends of at
    // most 3 entries, at most 2 in flight per follower.
    for i in 0..10 {
        net.node_mut(1)
            .replica
            .propose(format!("cmd{i}").into_bytes())
            .unwrap();
    }
    // One proposal far larger than the byte limit still goes out (alone).
    net.node_mut(1).replica.propose(vec![7; 500]).unwrap();
    net.process_all();
    for to in [2, 3] {
        let appends: Vec<usize> = net
            .queue
            .iter()
            .filter_map(|m| match &m.msg {
                crate::raft::Message::AppendEntries(a) if m.to == to => Some(a.entries.len()),
                _ => None,
            })
            .collect();
        assert_eq!(appends, vec![3, 3], "to {to}: two full batches in flight");
    }
    assert_eq!(
        net.node(1).replica.status().progress[&2].state,
        ProgressState::Replicate
    );
    net.stabilize();
    let status = net.node(1).replica.status();
    assert_eq!(status.commit_index, 13);
    assert!(status.progress.values().all(|p| p.match_index == 13));
    // Limits are refused at the API with typed errors.
    let r = &mut net.node_mut(1).replica;
    assert!(matches!(
        r.propose(vec![0; crate::raft::PROPOSAL_BYTES_MAX + 1]),
        Err(crate::raft::ProposalRefused::TooLarge { .. })
    ));
    assert!(matches!(
        r.propose_batch(Vec::new()),
        Err(crate::raft::ProposalRefused::BadBatchSize { .. })
    ));
}

#[test]
fn fast_backtracking_skips_a_whole_conflicting_term() {
    let mut net = Network::new(&[1, 2, 3], &[], 13, |id| {
        let mut c = test_config(id);
        c.max_append_entries = 8;
        c.check_quorum = false; // Let 2 win at once while 1 still leads.
        c
    });
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    // 40 entries of term 1 that only the old leader holds.
    net.isolate(1);
    for i in 0..40 {
        let _ = net.node_mut(1).replica.propose(vec![i]);
        net.process_all();
    }
    net.queue.clear();
    net.node_mut(2).replica.campaign_now();
    net.stabilize();
    assert_eq!(net.leaders(), vec![2, 1]); // newest term first
    for i in 0..30 {
        net.node_mut(2).replica.propose(vec![100 + i]).unwrap();
        net.stabilize();
    }
    // A third leader starts probing 1 at the end of its long log.
    net.node_mut(3).replica.campaign_now();
    net.stabilize();
    assert_eq!(net.leaders(), vec![3, 1]);
    net.cut.clear();
    // Count the rejections node 1 sends while being repaired.
    let mut rejections = 0;
    for _ in 0..20 {
        net.now_ms += 10;
        net.tick_all();
        while !net.queue.is_empty() {
            for m in std::mem::take(&mut net.queue) {
                if let crate::raft::Message::AppendEntriesResponse(r) = &m.msg {
                    if m.from == 1 && !r.success {
                        rejections += 1;
                    }
                }
                net.deliver(m);
            }
            net.process_all();
        }
    }
    assert_eq!(
        net.node(1).applied,
        net.node(2).applied,
        "{}",
        net.debug_dump()
    );
    assert_eq!(net.node(1).replica.role(), crate::raft::Role::Follower);
    // Backing up one entry at a time would take ~30 rejections; the term
    // hints skip all of term 2 at once.
    assert!(rejections <= 2, "{rejections} rejections");
}

/// A follower that learns a commit index with nothing to write keeps the
/// old one in storage until its next write; asked to
/// (`persist_commit_index`, which the runtime does once the founding
/// nonce commits), its next Ready stores it on its own.
#[test]
fn a_commit_index_asked_for_is_stored_without_another_write() {
    let mut net = Network::new(&[1, 2, 3], &[], 3, test_config);
    net.node_mut(1).replica.campaign_now();
    net.stabilize();
    net.node_mut(1).replica.propose(b"a".to_vec()).unwrap();
    net.stabilize();
    net.tick_all();
    net.stabilize();
    let commit = net.node(2).replica.commit_index();
    let stored = net.node(2).durable.hard_state.commit_index;
    assert!(stored < commit, "stored {stored}, commit {commit}");
    assert!(!net.node(2).replica.has_ready());
    net.node_mut(2).replica.persist_commit_index();
    assert!(net.node(2).replica.has_ready());
    net.process(2);
    assert_eq!(net.node(2).durable.hard_state.commit_index, commit);
    assert!(!net.node(2).replica.has_ready(), "asked once");
}
