//! Transport tests over real TCP on 127.0.0.1 ephemeral ports.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::*;
use crate::rng::SplitMix64;
use crate::shutdown::{shutdown_channel, Shutdown};

type Msg = (u64, String);

const DEADLINE: Duration = Duration::from_secs(10);

fn config(cluster: &str, id: NodeId) -> Arc<TransportConfig> {
    let mut c = TransportConfig::new(cluster, id);
    c.backoff_min_ms = 10;
    c.backoff_max_ms = 100;
    Arc::new(c)
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1")
}

/// Polls `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn recv(rx: &mut mpsc::Receiver<(NodeId, Msg)>) -> (NodeId, Msg) {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("message within deadline")
        .expect("inbound open")
}

struct Node {
    inbound: mpsc::Receiver<(NodeId, Msg)>,
    listener: ListenerHandle,
    peers: Peers<Msg>,
    addr: String,
}

async fn node(cluster: &str, id: NodeId, shutdown: &Shutdown) -> Node {
    node_with(config(cluster, id), shutdown).await
}

async fn node_with(cfg: Arc<TransportConfig>, shutdown: &Shutdown) -> Node {
    let id = cfg.local_id;
    let listener = bind().await;
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, inbound) = mpsc::channel(1024);
    let listener = spawn_listener(listener, cfg.clone(), tx, shutdown.clone());
    let peers = Peers::new(cfg, SplitMix64::new(id), shutdown.clone());
    Node {
        inbound,
        listener,
        peers,
        addr,
    }
}

#[tokio::test]
async fn two_endpoints_exchange_messages() {
    let (stop, shutdown) = shutdown_channel();
    let mut a = node("c", 1, &shutdown).await;
    let mut b = node("c", 2, &shutdown).await;
    a.peers.set_peer(2, &b.addr);
    b.peers.set_peer(1, &a.addr);
    for i in 0..200 {
        assert!(a.peers.send(2, (i, format!("a{i}"))));
        assert!(b.peers.send(1, (i, format!("b{i}"))));
    }
    for i in 0..200 {
        assert_eq!(recv(&mut b.inbound).await, (1, (i, format!("a{i}"))));
        assert_eq!(recv(&mut a.inbound).await, (2, (i, format!("b{i}"))));
    }
    let stats = a.peers.stats()[&2].clone();
    assert_eq!(stats.messages_sent, 200);
    assert!(stats.writes <= 200, "{stats:?}");
    assert_eq!(b.listener.stats().messages_delivered, 200);
    assert!(!a.peers.send(3, (0, String::new())), "unknown peer");
    stop.trigger();
    tokio::time::timeout(DEADLINE, a.listener.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn mismatched_cluster_or_version_is_refused() {
    let (_stop, shutdown) = shutdown_channel();
    let mut server = node("prod", 1, &shutdown).await;
    let mut stranger = node("staging", 2, &shutdown).await;
    stranger.peers.set_peer(1, &server.addr);
    stranger.peers.send(1, (1, "hi".into()));
    eventually("the handshake refusal", || {
        server.listener.stats().refused_handshake >= 1
    })
    .await;
    eventually("the dialler to see it", || {
        stranger.peers.stats()[&1].connect_failures >= 1
    })
    .await;
    assert!(server.inbound.try_recv().is_err(), "nothing delivered");

    // A wrong protocol version, spoken by hand.
    let mut raw = TcpStream::connect(&server.addr).await.unwrap();
    let mut out = Vec::new();
    let hello = Hello {
        cluster_id: "prod".into(),
        node_id: 9,
        protocol_version: PROTOCOL_VERSION + 1,
        incarnation: 0,
    };
    encode_frame::<Msg>(&WireFrame::Hello(hello), &mut out).unwrap();
    encode_frame::<Msg>(&WireFrame::Message((5, "x".into())), &mut out).unwrap();
    raw.write_all(&out).await.unwrap();
    raw.flush().await.unwrap();
    eventually("the version refusal", || {
        server.listener.stats().refused_handshake >= 2
    })
    .await;
    assert!(server.inbound.try_recv().is_err(), "nothing delivered");
}

/// A config of cluster "c" whose membership records `recorded`.
fn config_recording(
    id: NodeId,
    incarnation: u64,
    recorded: &[(NodeId, u64)],
) -> Arc<TransportConfig> {
    let mut c = (*config("c", id)).clone();
    c.incarnation = incarnation;
    c.incarnations = IncarnationBook::new();
    let member = deadbolt_core::raft::Member {
        voter: true,
        peer_addr: String::new(),
        api_addr: String::new(),
    };
    c.incarnations
        .set_recorded(&deadbolt_core::raft::Membership {
            members: [1, 2].into_iter().map(|id| (id, member.clone())).collect(),
            incarnations: recorded.iter().copied().collect(),
        });
    Arc::new(c)
}

/// Node 1 records incarnation 7 for node 2; node 2 comes back as
/// incarnation 8 (a wiped disk). Neither direction carries a message, and a
/// founder's question learns that node 1 holds another incarnation of it.
#[tokio::test]
async fn another_incarnation_of_a_recorded_peer_is_refused_both_ways() {
    let (_stop, shutdown) = shutdown_channel();
    let mut one = node_with(config_recording(1, 11, &[(2, 7)]), &shutdown).await;
    let wiped = config_recording(2, 8, &[]);
    let mut two = node_with(wiped.clone(), &shutdown).await;
    two.peers.set_peer(1, &one.addr);
    one.peers.set_peer(2, &two.addr);
    for i in 0..5 {
        two.peers.send(1, (i, "vote for me".into()));
        one.peers.send(2, (i, "append".into()));
    }
    eventually("both directions refused", || {
        one.listener.stats().refused_handshake >= 1
            && one.peers.stats()[&2].connect_failures >= 1
            && two.peers.stats()[&1].connect_failures >= 1
    })
    .await;
    assert!(one.inbound.try_recv().is_err(), "nothing of node 2 counts");
    assert!(two.inbound.try_recv().is_err(), "nothing reaches node 2");

    let founders = [(1, one.addr.clone()), (2, two.addr.clone())].into();
    assert_eq!(
        ask_founders(&wiped, &founders).await,
        vec![FounderAnswer::HoldsAnotherIncarnation {
            node_id: 1,
            recorded: 7
        }]
    );
    // The data dir node 1 knows is welcome.
    let same = config_recording(2, 7, &[]);
    assert_eq!(
        ask_founders(&same, &founders).await,
        vec![FounderAnswer::Accepts { node_id: 1 }]
    );
}

#[tokio::test]
async fn garbage_truncated_and_oversized_frames_close_only_that_connection() {
    let (_stop, shutdown) = shutdown_channel();
    let mut server = node("c", 1, &shutdown).await;
    let garbage: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        u32::MAX.to_be_bytes().to_vec(),
        vec![0, 0, 0, 2, 1, 1],
        {
            let mut v = vec![0, 0, 0, 40, FRAME_VERSION];
            v.extend([0xAB; 40]);
            v
        },
    ];
    for bytes in &garbage {
        let mut raw = TcpStream::connect(&server.addr).await.unwrap();
        raw.write_all(bytes).await.unwrap();
        // Under madsim nothing is sent before a flush.
        raw.flush().await.unwrap();
        // The server closes the connection: reading ends (EOF or reset) in time.
        let mut sink = Vec::new();
        let read = tokio::time::timeout(DEADLINE, raw.read_to_end(&mut sink)).await;
        assert!(read.is_ok(), "server kept a garbage connection open");
    }
    // A truncated frame followed by EOF.
    let mut raw = TcpStream::connect(&server.addr).await.unwrap();
    raw.write_all(&[0, 0, 1, 0, FRAME_VERSION, 1, 2])
        .await
        .unwrap();
    drop(raw);
    eventually("bad frames counted", || {
        server.listener.stats().bad_frames >= 3
    })
    .await;

    // The listener still serves well-behaved peers.
    let client = node("c", 2, &shutdown).await;
    let mut peers = client.peers;
    peers.set_peer(1, &server.addr);
    peers.send(1, (42, "ok".into()));
    assert_eq!(recv(&mut server.inbound).await, (2, (42, "ok".into())));
}

#[tokio::test]
async fn peer_reconnects_after_listener_restart() {
    let (_stop, shutdown) = shutdown_channel();
    let (server_stop, server_shutdown) = shutdown_channel();
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let (tx, mut inbound) = mpsc::channel(1024);
    let handle = spawn_listener::<Msg>(listener, config("c", 1), tx.clone(), server_shutdown);
    let mut peers = Peers::<Msg>::new(config("c", 2), SplitMix64::new(5), shutdown.clone());
    peers.set_peer(1, &addr.to_string());
    peers.send(1, (1, "before".into()));
    assert_eq!(recv(&mut inbound).await, (2, (1, "before".into())));

    // Stop the listener and its connections, then listen again on the same port.
    server_stop.trigger();
    tokio::time::timeout(DEADLINE, handle.task)
        .await
        .unwrap()
        .unwrap();
    let (_server_stop, server_shutdown) = shutdown_channel();
    let listener = TcpListener::bind(addr).await.expect("rebind the same port");
    let _handle = spawn_listener::<Msg>(listener, config("c", 1), tx, server_shutdown);

    // Keep sending until one arrives: messages sent into the dead connection
    // or during backoff are lost, as Raft expects.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut i = 100;
    loop {
        peers.send(1, (i, "after".into()));
        if let Ok(Some((from, (n, text)))) =
            tokio::time::timeout(Duration::from_millis(50), inbound.recv()).await
        {
            assert_eq!((from, text.as_str()), (2, "after"));
            assert!(n >= 100);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no reconnect");
        i += 1;
    }
    let stats = peers.stats()[&1].clone();
    assert!(stats.connects >= 2, "{stats:?}");
}

#[tokio::test]
async fn injected_link_faults_drop_duplicate_and_reorder() {
    let (_stop, shutdown) = shutdown_channel();
    let mut b = node("c", 2, &shutdown).await;
    let a = node("c", 1, &shutdown).await;
    let mut peers = a.peers;
    peers.set_peer(2, &b.addr);
    // Connect first, so faults apply to a live link.
    peers.send(2, (0, "warmup".into()));
    assert_eq!(recv(&mut b.inbound).await.1 .0, 0);

    peers.set_faults(
        2,
        LinkFaults {
            duplicate_per_million: 1_000_000,
            ..Default::default()
        },
    );
    peers.send(2, (1, "dup".into()));
    assert_eq!(recv(&mut b.inbound).await.1 .0, 1);
    assert_eq!(recv(&mut b.inbound).await.1 .0, 1);

    peers.set_faults(
        2,
        LinkFaults {
            drop_per_million: 1_000_000,
            ..Default::default()
        },
    );
    for i in 2..12 {
        peers.send(2, (i, "lost".into()));
    }
    eventually("drops counted", || peers.stats()[&2].fault_dropped == 10).await;

    peers.set_faults(
        2,
        LinkFaults {
            reorder_per_million: 500_000,
            ..Default::default()
        },
    );
    let mut sent = Vec::new();
    for i in 100..300 {
        peers.send(2, (i, "r".into()));
        sent.push(i);
        // One message per write, so held frames really overtake.
        tokio::task::yield_now().await;
    }
    peers.set_faults(2, LinkFaults::default());
    peers.send(2, (999, "flush".into()));
    // A frame held back at the end may arrive after the flush message.
    let mut got = Vec::new();
    while got.len() < sent.len() + 1 {
        got.push(recv(&mut b.inbound).await.1 .0);
    }
    got.retain(|n| *n != 999);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, sent, "reordering must not lose or invent messages");
    assert_ne!(got, sent, "some messages were reordered");
    assert!(peers.stats()[&2].fault_reordered > 0);
}

#[tokio::test]
async fn full_queue_drops_and_counts() {
    let (_stop, shutdown) = shutdown_channel();
    let mut cfg = TransportConfig::new("c", 1);
    cfg.peer_queue_messages_max = 4;
    // Nobody listens on this address: the actor never drains its queue
    // while connecting, so the queue fills.
    let unused = bind().await;
    let addr = unused.local_addr().unwrap().to_string();
    drop(unused);
    let (handle, _task) = spawn_peer::<Msg>(Arc::new(cfg), 2, addr, SplitMix64::new(1), shutdown);
    let accepted = (0..100)
        .filter(|i| handle.send((*i, String::new())))
        .count();
    assert!(accepted < 100);
    let stats = handle.stats();
    assert_eq!(stats.dropped_queue_full, 100 - accepted as u64);
}

/// Under the simulator: a partition stalls an open connection (madsim delays
/// data on a clogged link instead of failing it); deadlines must notice, and
/// the peer must reconnect once the partition heals.
#[cfg(madsim)]
#[tokio::test]
async fn delivery_resumes_after_a_partition_heals() {
    use madsim::net::NetSim;
    use madsim::runtime::Handle;

    let handle = Handle::current();
    let server = handle
        .create_node()
        .name("n1")
        .ip("10.0.0.1".parse().unwrap())
        .build();
    let client = handle
        .create_node()
        .name("n2")
        .ip("10.0.0.2".parse().unwrap())
        .build();
    let (tx, mut inbound) = mpsc::channel::<(NodeId, Msg)>(1024);
    let (_stop, shutdown) = shutdown_channel();
    let server_shutdown = shutdown.clone();
    let (bound_tx, mut bound_rx) = mpsc::channel::<ListenerHandle>(1);
    // Detached: the listener runs on node n1 for the whole test.
    let _server_task = server.spawn(async move {
        let listener = TcpListener::bind("10.0.0.1:7000").await.unwrap();
        let listening = spawn_listener(listener, config("c", 1), tx, server_shutdown);
        bound_tx.send(listening).await.ok();
    });
    let _listening = bound_rx.recv().await.unwrap();
    let (sent_tx, mut sent_rx) = mpsc::channel::<Peers<Msg>>(1);
    client
        .spawn(async move {
            let mut peers = Peers::new(config("c", 2), SplitMix64::new(2), shutdown);
            peers.set_peer(1, "10.0.0.1:7000");
            sent_tx.send(peers).await.ok();
        })
        .await
        .ok();
    let peers = sent_rx.recv().await.unwrap();
    let mut i = 0;
    let send_until_delivered = |peers: &Peers<Msg>, i: &mut u64| {
        *i += 1;
        peers.send(1, (*i, "x".into()));
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        send_until_delivered(&peers, &mut i);
        if tokio::time::timeout(Duration::from_millis(100), inbound.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no first delivery");
    }
    let net = NetSim::current();
    net.clog_link(client.id(), server.id());
    net.clog_link(server.id(), client.id());
    tokio::time::sleep(Duration::from_secs(30)).await;
    net.unclog_link(client.id(), server.id());
    net.unclog_link(server.id(), client.id());
    // Drain whatever the partition delayed, then require fresh deliveries.
    while tokio::time::timeout(Duration::from_millis(10), inbound.recv())
        .await
        .is_ok()
    {}
    let marker = i + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        send_until_delivered(&peers, &mut i);
        if let Ok(Some((2, (n, _)))) =
            tokio::time::timeout(Duration::from_millis(100), inbound.recv()).await
        {
            if n >= marker {
                break;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no delivery after healing"
        );
    }
}

fn membership_of(ids: &[NodeId]) -> deadbolt_core::raft::Membership {
    let member = deadbolt_core::raft::Member {
        voter: true,
        peer_addr: String::new(),
        api_addr: String::new(),
    };
    deadbolt_core::raft::Membership {
        members: ids.iter().map(|&id| (id, member.clone())).collect(),
        incarnations: Default::default(),
    }
}

/// Two foundings of tag "t": while one side knows no nonce they talk; once
/// both committed different nonces, the open connection is cut and no
/// handshake succeeds again (issue 14).
#[tokio::test]
async fn another_founding_is_refused_once_its_nonce_differs() {
    let (_stop, shutdown) = shutdown_channel();
    let one_cfg = config("t", 1);
    let two_cfg = config("t", 2);
    let mut one = node_with(one_cfg.clone(), &shutdown).await;
    let mut two = node_with(two_cfg.clone(), &shutdown).await;
    two.peers.set_peer(1, &one.addr);
    two_cfg
        .cluster
        .set_committed(&membership_of(&[1, 2]).with_founding_nonce(2), 3);
    two.peers
        .send(1, (1, "provisional peer: compatible".into()));
    assert_eq!(recv(&mut one.inbound).await.0, 2);
    one_cfg
        .cluster
        .set_committed(&membership_of(&[1, 2]).with_founding_nonce(1), 3);
    for i in 0..5 {
        two.peers.send(1, (i, "another founding".into()));
    }
    eventually("the refusal", || {
        two.peers.stats()[&1].connect_failures >= 1
    })
    .await;
    assert!(
        one.inbound.try_recv().is_err(),
        "nothing of the other founding counts"
    );
    assert_eq!(
        one_cfg.cluster.id().to_string(),
        "t.0000000000000001",
        "the nonce completes the id"
    );
}

/// A dialler missing from the listener's committed membership hears so,
/// with the listener's commit index and cluster id.
#[tokio::test]
async fn a_removed_dialler_is_told_with_the_listeners_commit_index() {
    let (_stop, shutdown) = shutdown_channel();
    let one_cfg = config("t", 1);
    let two_cfg = config("t", 2);
    let mut one = node_with(one_cfg.clone(), &shutdown).await;
    let mut two = node_with(two_cfg.clone(), &shutdown).await;
    one_cfg
        .cluster
        .set_committed(&membership_of(&[1, 3]).with_founding_nonce(5), 42);
    two.peers.set_peer(1, &one.addr);
    two.peers.send(1, (1, "vote for me".into()));
    eventually("the removal notice", || {
        two_cfg.cluster.removal_notice().is_some()
    })
    .await;
    let notice = two_cfg.cluster.removal_notice().expect("noticed");
    assert_eq!((notice.from, notice.commit_index), (1, 42));
    assert_eq!(notice.cluster_id.nonce(), Some(5));
    assert!(one.inbound.try_recv().is_err(), "nothing delivered");
}
