//! The Rust client's `Session::lock` family against a real one-node
//! cluster: a caller that stops waiting (drops the future), several handles
//! and calls of one session sharing a grant, and waits longer than one round
//! across a node restart. Nothing may leave a grant held by nobody, and
//! nothing may give back a grant a live `Lock` still stands for.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::eventually;
use common::in_process::start;
use deadbolt_client::api::*;
use deadbolt_client::{Client, SessionOptions};
use deadbolt_server::config::ServeArgs;
use deadbolt_server::server::start as start_server;
use tokio::net::TcpListener;

/// Bound on every poll for a condition.
const DEADLINE: Duration = Duration::from_secs(10);

/// Polls until nobody holds `name`; `Err` if someone still does at
/// [`DEADLINE`] (the caller's assertion says who should not).
async fn until_free(client: &Client, name: &str) -> Result<(), tokio::time::error::Elapsed> {
    tokio::time::timeout(DEADLINE, async {
        loop {
            let state = client.lock_state(name).await.expect("state");
            if state.holders.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

/// A caller that gives up on a wait (a `timeout` around `lock`) and asks
/// again at once: the abandoned call and the new one are answered by the
/// same grant, and the new `Lock` keeps it (the abandoned call must not
/// give it back under the new handle).
#[tokio::test]
async fn an_abandoned_wait_never_releases_the_next_grant_of_its_session() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("b");
    let held = a
        .try_lock("rr", LockMode::Exclusive)
        .await
        .expect("a holds");
    // b tries for 200 ms, gives up, and asks again (a retry loop).
    let first = tokio::time::timeout(
        Duration::from_millis(200),
        b.lock("rr", LockMode::Exclusive, Duration::from_secs(30)),
    )
    .await;
    assert!(first.is_err(), "b's first try times out behind a");
    let second = b.lock("rr", LockMode::Exclusive, Duration::from_secs(30));
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        held.release().await.expect("a releases");
    };
    let (lock, ()) = tokio::join!(second, release_later);
    let lock = lock.expect("b's second try is granted");
    // b holds the lock and has not let go: the lock must stay b's.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = s.client.lock_state("rr").await.expect("state");
        let holders: Vec<_> = state
            .holders
            .iter()
            .map(|h| (h.session_id, h.fencing_token))
            .collect();
        assert_eq!(
            holders,
            [(b.id(), lock.fencing_token())],
            "b's live Lock handle was released behind its back"
        );
    }
    drop(lock);
    s.stop().await;
}

/// Two tasks of one session wait for the same lock (one queue place, both
/// answered by the grant). The one that gives up never gives back the grant
/// the other task holds.
#[tokio::test]
async fn a_caller_giving_up_never_releases_another_callers_grant() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("b");
    let held = a
        .try_lock("rs", LockMode::Exclusive)
        .await
        .expect("a holds");
    let patient = b.lock("rs", LockMode::Exclusive, Duration::from_secs(30));
    let impatient = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let gave_up = tokio::time::timeout(
            Duration::from_millis(200),
            b.lock("rs", LockMode::Exclusive, Duration::from_secs(30)),
        )
        .await;
        assert!(gave_up.is_err(), "the impatient caller gives up");
    };
    let release_later = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        held.release().await.expect("a releases");
    };
    let (lock, (), ()) = tokio::join!(patient, impatient, release_later);
    let lock = lock.expect("the patient caller is granted");
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = s.client.lock_state("rs").await.expect("state");
        assert_eq!(
            state.holders.first().map(|h| h.fencing_token),
            Some(lock.fencing_token()),
            "the patient caller's live Lock was released by the other caller's give-back"
        );
    }
    drop(lock);
    s.stop().await;
}

/// A session that holds a lock and asks for it again (the API answers a
/// re-acquire in the same mode with the same token) under a timeout that
/// fires first: the grant the session held before the call stays held.
#[tokio::test]
async fn an_abandoned_reacquire_never_releases_the_lock_already_held() {
    let s = start().await;
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("b");
    let lock = b
        .try_lock("rt", LockMode::Exclusive)
        .await
        .expect("b holds");
    let again = tokio::time::timeout(
        Duration::ZERO,
        b.lock("rt", LockMode::Exclusive, Duration::from_secs(5)),
    )
    .await;
    assert!(again.is_err(), "the second call is abandoned at once");
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = s.client.lock_state("rt").await.expect("state");
        assert_eq!(
            state.holders.first().map(|h| h.fencing_token),
            Some(lock.fencing_token()),
            "the lock held before the abandoned call was released"
        );
    }
    drop(lock);
    s.stop().await;
}

/// Callers that give up while their acquire is still on its way (sent, not
/// yet applied): every grant such a call brings is given back, none stays
/// with the session for as long as it lives.
#[tokio::test]
async fn a_caller_giving_up_mid_flight_never_leaves_a_grant_behind() {
    let s = start().await;
    let b = s
        .client
        .session(SessionOptions {
            ttl: Duration::from_secs(120),
            ..SessionOptions::default()
        })
        .await
        .expect("b");
    let mut abandoned = Vec::new();
    for i in 0..100u64 {
        let name = format!("inflight-{i}");
        let patience = Duration::from_micros(250 * (i % 16));
        match tokio::time::timeout(patience, b.try_lock(&name, LockMode::Exclusive)).await {
            Ok(lock) => lock.expect("granted").release().await.expect("released"),
            Err(_) => abandoned.push(name),
        }
    }
    assert!(!abandoned.is_empty(), "some callers gave up");
    let still_held = || async {
        s.client
            .list_locks(&ListLocksQuery {
                prefix: Some("inflight-".into()),
                limit: Some(1000),
                after: None,
            })
            .await
            .expect("list")
            .locks
            .into_iter()
            .filter(|l| !l.holders.is_empty())
            .map(|l| l.lock)
            .collect::<Vec<String>>()
    };
    let until = tokio::time::Instant::now() + DEADLINE;
    while !still_held().await.is_empty() && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let held = still_held().await;
    assert!(
        held.is_empty(),
        "{} of {} abandoned acquires left their session holding the lock: {held:?}",
        held.len(),
        abandoned.len()
    );
    s.stop().await;
}

/// A loopback TCP proxy that can be shut (new connections are
/// closed at once) and opened again, without touching connections the
/// server already has.
struct Gate {
    addr: SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Gate {
    async fn to(target: SocketAddr) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = listener.local_addr().expect("gate addr");
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let is_open = open.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                if !is_open.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Gate { addr, open }
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `lock_until_granted` (rounds that ask again while queued) across a
/// restart of the node it talks to: the rounds' calls, resent with their
/// keys after the restart, learn the grant made meanwhile at once (every
/// round's key answers with the wait's outcome), rather than when the next
/// round asks afresh (0.8 of a round later: up to 270 s with the real
/// 300 s rounds; here 20 s rounds).
#[tokio::test]
async fn rounds_learn_a_grant_made_while_their_node_restarted() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().join("node");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let (api_addr, peer_addr) = (api.local_addr().unwrap(), peer.local_addr().unwrap());
    let settings = || {
        ServeArgs {
            node_id: Some(1),
            data_dir: Some(dir.clone()),
            listen_api: Some(api_addr.to_string()),
            listen_peer: Some(peer_addr.to_string()),
            ..Default::default()
        }
        .resolve()
        .expect("valid")
    };
    let server = start_server(api, peer, settings()).await.expect("start");
    let direct = Client::new([format!("http://{api_addr}")]).expect("client");
    eventually("ready", DEADLINE, || async { direct.ready(0).await.ok() }).await;
    let gate = Gate::to(api_addr).await;
    // b's client rides out a few seconds of refused connections.
    let gated = deadbolt_client::ClientBuilder::new([format!("http://{}", gate.addr)])
        .attempts_max(1_000)
        .build()
        .expect("gated client");
    let long = SessionOptions {
        ttl: Duration::from_secs(120),
        ..SessionOptions::default()
    };
    let a = direct.session(long.clone()).await.expect("a");
    let b = gated.session(long).await.expect("b");
    let held = a.try_lock("q", LockMode::Exclusive).await.expect("a holds");

    let started = tokio::time::Instant::now();
    let b_waits = async {
        let lock = b
            .lock_in_rounds("q", LockMode::Exclusive, Duration::from_secs(20))
            .await;
        (lock, tokio::time::Instant::now())
    };
    let restart_and_release = async {
        // Rounds asked at 0 s, 16 s and 32 s; then the node restarts.
        tokio::time::sleep(Duration::from_secs(34)).await;
        server.stop().await;
        gate.set_open(false);
        let api = TcpListener::bind(api_addr).await.expect("rebind api");
        let peer = TcpListener::bind(peer_addr).await.expect("rebind peer");
        let server = start_server(api, peer, settings()).await.expect("restart");
        // a lets go while b's calls are still being resent.
        eventually("a releases", DEADLINE, || async {
            direct
                .release("q", a.id(), Some(held.fencing_token()))
                .await
                .ok()
        })
        .await;
        let state = direct.lock_state("q").await.expect("state");
        assert_eq!(state.holders.first().map(|h| h.session_id), Some(b.id()));
        let granted_at = tokio::time::Instant::now();
        gate.set_open(true);
        (server, granted_at)
    };
    let ((lock, done_at), (server, granted_at)) = tokio::join!(b_waits, restart_and_release);
    let lock = lock.expect("b is granted");
    assert_eq!(lock.session_id(), b.id());
    let late = done_at.saturating_duration_since(granted_at);
    assert!(
        late < Duration::from_secs(5),
        "b learned of its grant {late:?} after it committed (started {:?} ago): \
         the session held the lock unused meanwhile",
        started.elapsed()
    );
    drop(lock);
    drop(held);
    server.stop().await;
}

/// `Lock::release` ends the grant for every handle of it, so a second
/// handle of the same grant is left stale (documented). The session then
/// takes the lock again: a newer grant, newer token, one handle. Dropping
/// that handle gives the newer grant back (the stale handle does not keep
/// it), and the stale handle's own drop ends nothing.
#[tokio::test]
async fn a_stale_handle_never_keeps_a_newer_grant_held_by_nobody() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let first = a.try_lock("sx", LockMode::Exclusive).await.expect("first");
    let other = a
        .try_lock("sx", LockMode::Exclusive)
        .await
        .expect("same grant");
    assert_eq!(first.fencing_token(), other.fencing_token(), "one grant");
    first.release().await.expect("released (for `other` too)");
    let newer = a.try_lock("sx", LockMode::Exclusive).await.expect("newer");
    assert!(newer.fencing_token() > other.fencing_token(), "a new grant");
    drop(newer); // the only handle of the newer grant
    drop(other); // stale since the release
    eventually("the newer grant given back", DEADLINE, || async {
        let state = s.client.lock_state("sx").await.ok()?;
        state.holders.is_empty().then_some(())
    })
    .await;
    s.stop().await;
}

/// A caller that gives up on `lock_until_granted` (a `timeout` around it):
/// the rounds already sent end on their own `wait_ms` and no new round is
/// asked, so the session is not left queued (as an exclusive waiter it
/// would block other sessions' shared requests) for a grant nobody wants.
#[tokio::test]
async fn an_abandoned_lock_until_granted_stops_asking() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b, c) = (
        session().await.expect("a"),
        session().await.expect("b"),
        session().await.expect("c"),
    );
    let _held = a.try_lock("qq", LockMode::Shared).await.expect("a holds");
    let round = Duration::from_millis(1000);
    assert!(
        tokio::time::timeout(
            Duration::from_millis(300),
            b.lock_in_rounds("qq", LockMode::Exclusive, round),
        )
        .await
        .is_err(),
        "b waits behind a, then its caller gives up"
    );
    // Well past the round b's caller last saw (1 s): b's wait is over.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let state = s.client.lock_state("qq").await.expect("state");
    assert!(
        state.waiters.is_empty(),
        "an abandoned wait is still queued 4 s after a 1 s round: {:?}",
        state.waiters
    );
    c.try_lock("qq", LockMode::Shared)
        .await
        .expect("c shares with a: nobody else wants the lock");
    s.stop().await;
}

/// The last handle of a grant is dropped while another `lock` call of the
/// same session for the name is in flight (which might be answered with the
/// same grant). When that call fails instead (here: the other mode, refused
/// at once), the dropped grant is given back all the same.
#[tokio::test]
async fn a_failed_call_in_flight_never_keeps_a_dropped_grant() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let shared = a.try_lock("mm", LockMode::Shared).await.expect("a shares");
    let a = std::sync::Arc::new(a);
    let other_mode = tokio::spawn({
        let a = a.clone();
        async move { a.try_lock("mm", LockMode::Exclusive).await.map(drop) }
    });
    // Let the other call claim the name and send its request.
    tokio::task::yield_now().await;
    drop(shared); // the only handle of the grant
    assert!(
        other_mode.await.expect("joined").is_err(),
        "the session holds mm shared: exclusive is refused"
    );
    eventually("the dropped grant given back", DEADLINE, || async {
        let state = s.client.lock_state("mm").await.ok()?;
        state.holders.is_empty().then_some(())
    })
    .await;
    s.stop().await;
}

/// Two handles of one grant (the session asked twice for a lock it holds):
/// dropping one keeps the grant for the other; dropping the second gives
/// it back.
#[tokio::test]
async fn dropping_one_of_two_handles_of_a_grant_keeps_it() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let first = a.try_lock("two", LockMode::Exclusive).await.expect("first");
    let second = a
        .try_lock("two", LockMode::Exclusive)
        .await
        .expect("same grant");
    assert_eq!(first.fencing_token(), second.fencing_token());
    drop(first);
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let state = s.client.lock_state("two").await.expect("state");
        assert_eq!(
            state.holders.first().map(|h| h.fencing_token),
            Some(second.fencing_token()),
            "the grant of a live handle was given back"
        );
    }
    drop(second);
    eventually("the grant given back", DEADLINE, || async {
        let state = s.client.lock_state("two").await.ok()?;
        state.holders.is_empty().then_some(())
    })
    .await;
    s.stop().await;
}

/// One node on fixed loopback ports and a kept data dir, to stop and start
/// again (a node restart, as the client sees it: refused connections).
struct RestartableNode {
    api_addr: SocketAddr,
    peer_addr: SocketAddr,
    dir: std::path::PathBuf,
    _data: tempfile::TempDir,
}

impl RestartableNode {
    async fn start() -> (RestartableNode, deadbolt_server::server::Server) {
        let data = tempfile::tempdir().expect("temp dir");
        let dir = data.path().join("node");
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
        let node = RestartableNode {
            api_addr: api.local_addr().unwrap(),
            peer_addr: peer.local_addr().unwrap(),
            dir,
            _data: data,
        };
        let server = start_server(api, peer, node.settings())
            .await
            .expect("start");
        node.await_ready().await;
        (node, server)
    }

    fn settings(&self) -> deadbolt_server::config::ServeConfig {
        ServeArgs {
            node_id: Some(1),
            data_dir: Some(self.dir.clone()),
            listen_api: Some(self.api_addr.to_string()),
            listen_peer: Some(self.peer_addr.to_string()),
            ..Default::default()
        }
        .resolve()
        .expect("valid")
    }

    async fn restart(&self) -> deadbolt_server::server::Server {
        let api = TcpListener::bind(self.api_addr).await.expect("rebind api");
        let peer = TcpListener::bind(self.peer_addr)
            .await
            .expect("rebind peer");
        let server = start_server(api, peer, self.settings())
            .await
            .expect("restart");
        self.await_ready().await;
        server
    }

    async fn await_ready(&self) {
        let direct = self.client();
        eventually("ready", DEADLINE, || async { direct.ready(0).await.ok() }).await;
    }

    fn client(&self) -> Client {
        Client::new([format!("http://{}", self.api_addr)]).expect("client")
    }
}

/// The last handle of a grant is dropped while the node is restarting
/// (a few seconds of refused connections, well inside the session's TTL):
/// the give-back outlasts its call's attempts and is asked again while the
/// lease lives, so the grant is not held by nobody for the session's life.
#[tokio::test]
async fn a_give_back_during_a_node_restart_is_not_lost() {
    let (node, server) = RestartableNode::start().await;
    let client = node.client();
    let a = client
        .session(SessionOptions {
            ttl: Duration::from_secs(60),
            ..SessionOptions::default()
        })
        .await
        .expect("a");
    let lock = a
        .try_lock("gb", LockMode::Exclusive)
        .await
        .expect("a holds");
    server.stop().await;
    drop(lock); // the only handle: its give-back starts now
    tokio::time::sleep(Duration::from_secs(6)).await; // a node restart
    let server = node.restart().await;
    assert!(!a.is_lost(), "the session outlived the restart");
    let result = until_free(&client, "gb").await;
    let state = client.lock_state("gb").await.expect("state");
    assert!(
        result.is_ok(),
        "the dropped grant is still held by the live session {} with no handle: {:?}",
        a.id(),
        state.holders
    );
    drop(a);
    server.stop().await;
}

/// `Lock::release` given up by its caller (a `timeout` around it) while the
/// cluster does not answer: the release still reaches the cluster once it
/// is back.
#[tokio::test]
async fn a_cancelled_release_never_leaves_the_grant_held_by_nobody() {
    let (node, server) = RestartableNode::start().await;
    let client = node.client();
    let a = client
        .session(SessionOptions {
            ttl: Duration::from_secs(60),
            ..SessionOptions::default()
        })
        .await
        .expect("a");
    let lock = a
        .try_lock("cr", LockMode::Exclusive)
        .await
        .expect("a holds");
    server.stop().await;
    let gave_up = tokio::time::timeout(Duration::from_millis(500), lock.release()).await;
    assert!(
        gave_up.is_err(),
        "the release is still retrying when its caller gives up"
    );
    let server = node.restart().await;
    assert!(!a.is_lost(), "the session outlived the restart");
    let result = until_free(&client, "cr").await;
    let state = client.lock_state("cr").await.expect("state");
    assert!(
        result.is_ok(),
        "the grant of a cancelled release is still held by the live session with no handle: {:?}",
        state.holders
    );
    drop(a);
    server.stop().await;
}

/// A `Lock` dropped on a thread without a tokio runtime (a worker thread,
/// a sync callback) is given back on the session's runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_dropped_off_the_runtime_is_given_back() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let lock = a
        .try_lock("off", LockMode::Exclusive)
        .await
        .expect("a holds");
    std::thread::spawn(move || drop(lock))
        .join()
        .expect("dropped");
    let result = until_free(&s.client, "off").await;
    assert!(
        result.is_ok(),
        "a grant dropped off the runtime is held by the live session with no handle"
    );
    drop(a);
    s.stop().await;
}

/// A caller gives up on a long `lock` wait (a `timeout` around it): the
/// call hangs up and the cluster withdraws the wait ("a wait ends when
/// wait_ms passes or the client disconnects") rather than keeping the
/// session queued for the whole `wait` as an exclusive waiter nobody wants
/// (which would block other sessions' shared requests meanwhile).
#[tokio::test]
async fn an_abandoned_exclusive_wait_does_not_block_readers_for_its_whole_wait() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b, c) = (
        session().await.expect("a"),
        session().await.expect("b"),
        session().await.expect("c"),
    );
    let _held = a.try_lock("aw", LockMode::Shared).await.expect("a shares");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        b.lock("aw", LockMode::Exclusive, Duration::from_secs(20)),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "b waits behind a, then its caller gives up"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = s.client.lock_state("aw").await.expect("state");
    assert!(
        state.waiters.is_empty(),
        "b's abandoned exclusive wait is still queued 2 s after its caller gave up: {:?}",
        state.waiters
    );
    c.try_lock("aw", LockMode::Shared)
        .await
        .expect("c shares with a: nobody else wants the lock");
    s.stop().await;
}

/// Two tasks of one session: one is in `lock` for a name the session holds
/// (request on its way), the other releases its handle of that grant. The
/// call may be answered with the grant the release then ends; its `Lock`
/// must then read as lost, never as held while the lock is free.
#[tokio::test]
async fn a_release_never_ends_the_grant_an_in_flight_call_returns() {
    let s = start().await;
    let a = std::sync::Arc::new(
        s.client
            .session(SessionOptions::default())
            .await
            .expect("a"),
    );
    let mut dead = None;
    for i in 0..20 {
        let name = format!("rip-{i}");
        let held = a
            .try_lock(&name, LockMode::Exclusive)
            .await
            .expect("a holds");
        let call = tokio::spawn({
            let (a, name) = (a.clone(), name.clone());
            async move { a.try_lock(&name, LockMode::Exclusive).await }
        });
        // Let the call register in the book and send its request.
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        let token = held.fencing_token();
        held.release().await.expect("released");
        let Ok(lock) = call.await.expect("joined") else {
            continue;
        };
        let state = s.client.lock_state(&name).await.expect("state");
        if lock.fencing_token() == token && state.holders.is_empty() && !lock.is_lost() {
            dead = Some((name, lock.fencing_token()));
            break;
        }
    }
    assert!(
        dead.is_none(),
        "lock returned a Lock of a grant its session's release had ended: {dead:?}"
    );
    s.stop().await;
}

/// A caller that gives up before its acquire reached the cluster (polled
/// once, then dropped: a `select!` whose other branch is ready): the request
/// still reaches the cluster, and its wait is withdrawn, so the session is
/// not left queued for the whole `wait` for a lock nobody wants.
#[tokio::test]
async fn a_call_abandoned_before_it_was_sent_is_not_queued_afterwards() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b, c) = (
        session().await.expect("a"),
        session().await.expect("b"),
        session().await.expect("c"),
    );
    let _held = a.try_lock("ab0", LockMode::Shared).await.expect("a shares");
    // Polled once (the call is spawned), then dropped.
    let gave_up = {
        let call = b.lock("ab0", LockMode::Exclusive, Duration::from_secs(20));
        tokio::pin!(call);
        tokio::select! {
            biased;
            done = &mut call => Some(done),
            () = std::future::ready(()) => None,
        }
    };
    assert!(gave_up.is_none(), "b's caller gives up at once");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = s.client.lock_state("ab0").await.expect("state");
    assert!(
        state.waiters.is_empty(),
        "b's abandoned exclusive wait is queued 2 s after its caller gave up: {:?}",
        state.waiters
    );
    c.try_lock("ab0", LockMode::Shared)
        .await
        .expect("c shares with a: nobody else wants the lock");
    s.stop().await;
}

/// An abandoned wait of a client without idempotency keys is withdrawn too
/// (and not queued again for the whole `wait` with nobody listening).
#[tokio::test]
async fn an_unkeyed_abandoned_wait_is_not_queued_again() {
    let s = start().await;
    let unkeyed = deadbolt_client::ClientBuilder::new([format!("http://{}", s.addr)])
        .idempotency_keys(false)
        .build()
        .expect("client");
    let (a, c) = (
        s.client
            .session(SessionOptions::default())
            .await
            .expect("a"),
        s.client
            .session(SessionOptions::default())
            .await
            .expect("c"),
    );
    let b = unkeyed.session(SessionOptions::default()).await.expect("b");
    let _held = a.try_lock("ab1", LockMode::Shared).await.expect("a shares");
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        b.lock("ab1", LockMode::Exclusive, Duration::from_secs(20)),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "b waits behind a, then its caller gives up"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let state = s.client.lock_state("ab1").await.expect("state");
    assert!(
        state.waiters.is_empty(),
        "b's abandoned (unkeyed) exclusive wait is queued 2 s after its caller gave up: {:?}",
        state.waiters
    );
    c.try_lock("ab1", LockMode::Shared)
        .await
        .expect("c shares with a: nobody else wants the lock");
    s.stop().await;
}

/// A session used from a second, short-lived runtime (a sync wrapper's
/// `block_on`): the caller gives up, the holder lets go, and that runtime
/// is dropped. The acquire runs on the session's runtime, so whatever it
/// came to (withdrawn, or a grant) nothing stays with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_task_dropped_with_its_runtime_leaves_no_grant_behind() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = std::sync::Arc::new(
        s.client
            .session(SessionOptions::default())
            .await
            .expect("b"),
    );
    let held = a
        .try_lock("rt2", LockMode::Exclusive)
        .await
        .expect("a holds");
    let other = tokio::task::spawn_blocking({
        let b = b.clone();
        move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let gave_up = rt.block_on(tokio::time::timeout(
                Duration::from_millis(300),
                b.lock("rt2", LockMode::Exclusive, Duration::from_secs(20)),
            ));
            assert!(
                gave_up.is_err(),
                "b waits behind a, then its caller gives up"
            );
            rt
        }
    })
    .await
    .expect("joined");
    // The abandoned call's wait is withdrawn, or (if the grant came first)
    // the grant is given back; either way the other runtime's end changes
    // nothing.
    held.release().await.expect("a releases");
    tokio::task::spawn_blocking(move || drop(other))
        .await
        .expect("the other runtime shut down");
    let result = until_free(&s.client, "rt2").await;
    assert!(
        result.is_ok(),
        "b's live session holds a grant no Lock or call of it knows of"
    );
    s.stop().await;
}

/// A caller's retry loop of short tries (`timeout` around a long `lock`, as
/// in the first test of this file), then it stops asking: nothing of it is
/// left queued (which would block other sessions' shared requests).
#[tokio::test]
async fn a_retry_loop_of_abandoned_waits_leaves_nothing_queued() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b, c) = (
        session().await.expect("a"),
        session().await.expect("b"),
        session().await.expect("c"),
    );
    let _held = a.try_lock("rl", LockMode::Shared).await.expect("a shares");
    for _ in 0..4 {
        let gave_up = tokio::time::timeout(
            Duration::from_millis(300),
            b.lock("rl", LockMode::Exclusive, Duration::from_secs(20)),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "b waits behind a, then its caller gives up"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let state = s.client.lock_state("rl").await.expect("state");
    assert!(
        state.waiters.is_empty(),
        "b's abandoned exclusive waits are queued 3 s after its caller stopped asking: {:?}",
        state.waiters
    );
    c.try_lock("rl", LockMode::Shared)
        .await
        .expect("c shares with a: nobody else wants the lock");
    s.stop().await;
}

/// A `Session` dropped off the runtime (a worker thread or sync callback)
/// is still deleted, on its own runtime, rather than keeping its locks for
/// the whole TTL (here 60 s; up to an hour).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_dropped_off_the_runtime_frees_its_locks() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions {
            ttl: Duration::from_secs(60),
            ..SessionOptions::default()
        })
        .await
        .expect("a");
    let lock = a
        .try_lock("soff", LockMode::Exclusive)
        .await
        .expect("a holds");
    std::thread::spawn(move || drop(a)).join().expect("dropped");
    let result = until_free(&s.client, "soff").await;
    assert!(lock.is_lost(), "the session is gone");
    assert!(
        result.is_ok(),
        "a dropped session's lock is held 10 s later"
    );
    s.stop().await;
}

/// `waiting::in_rounds` keeps a bounded number of calls waiting however
/// many rounds pass: each round's call ends at its own deadline (the
/// request timeout plus its wait; answered "still queued", not an unknown
/// outcome asked again forever), so at most (timeout + round) / (0.8 round)
/// overlap, about two with the real 300 s rounds and nine with these 1 s
/// ones, and the count stops growing.
#[tokio::test]
async fn waiting_in_rounds_keeps_a_bounded_number_of_requests_waiting() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b) = (session().await.expect("a"), session().await.expect("b"));
    let _held = a.try_lock("acc", LockMode::Shared).await.expect("a shares");
    let round = Duration::from_millis(1000);
    let waited = tokio::time::timeout(
        Duration::from_secs(16),
        b.lock_in_rounds("acc", LockMode::Exclusive, round),
    );
    let waiting = || async {
        let metrics = s.client.metrics(0).await.expect("metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("deadbolt_lock_waiters "))
            .expect("gauge")
            .trim()
            .parse::<f64>()
            .expect("number")
    };
    let counts = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let early = waiting().await;
        tokio::time::sleep(Duration::from_secs(7)).await;
        (early, waiting().await)
    };
    let (waited, (early, late)) = tokio::join!(waited, counts);
    assert!(waited.is_err(), "a holds the lock throughout");
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT);
    let bound = ((timeout + round).as_secs_f64() / (0.8 * round.as_secs_f64())).ceil() + 1.0;
    assert!(
        late <= bound && late <= early + 1.0,
        "b's one lock_in_rounds has {early} then {late} requests waiting at the node (bound {bound})"
    );
    s.stop().await;
}

/// `waiting_in_rounds_keeps_a_bounded_number_of_requests_waiting` with a
/// client without idempotency keys: a round whose own deadline passes while
/// the session is still queued gets a plain 504 (no key to look at), which
/// is not resent (that would ask again and wait another round, for ever).
#[tokio::test]
async fn unkeyed_waiting_in_rounds_keeps_a_bounded_number_of_requests_waiting() {
    let s = start().await;
    let unkeyed = deadbolt_client::ClientBuilder::new([format!("http://{}", s.addr)])
        .idempotency_keys(false)
        .build()
        .expect("client");
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = unkeyed.session(SessionOptions::default()).await.expect("b");
    let _held = a
        .try_lock("uacc", LockMode::Shared)
        .await
        .expect("a shares");
    let round = Duration::from_millis(1000);
    let waited = tokio::time::timeout(
        Duration::from_secs(24),
        b.lock_in_rounds("uacc", LockMode::Exclusive, round),
    );
    let waiting = || async {
        let metrics = s.client.metrics(0).await.expect("metrics");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("deadbolt_lock_waiters "))
            .expect("gauge")
            .trim()
            .parse::<f64>()
            .expect("number")
    };
    let counts = async {
        tokio::time::sleep(Duration::from_secs(8)).await;
        let early = waiting().await;
        tokio::time::sleep(Duration::from_secs(15)).await;
        (early, waiting().await)
    };
    let (waited, (early, late)) = tokio::join!(waited, counts);
    assert!(waited.is_err(), "a holds the lock throughout");
    let timeout = Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT);
    let bound = ((timeout + round).as_secs_f64() / (0.8 * round.as_secs_f64())).ceil() + 1.0;
    assert!(
        late <= bound && late <= early + 1.0,
        "b's one (unkeyed) lock_in_rounds has {early} then {late} requests waiting at the node (bound {bound})"
    );
    s.stop().await;
}

/// A loopback HTTP/1.1 proxy (a load balancer in front of the node) that
/// forwards every request and its answer, except that while `bad_path` is
/// set, a request whose path contains it is answered `502 Bad Gateway` (an
/// HTML body, as nginx sends when the upstream connection fails or breaks),
/// after forwarding it to the node or without (the client cannot tell).
struct BadGateway {
    addr: SocketAddr,
    bad_path: std::sync::Arc<std::sync::Mutex<Option<(String, bool)>>>,
    /// Requests whose path contains this are held this long before they
    /// are forwarded (a slow network path).
    slow_path: std::sync::Arc<std::sync::Mutex<Option<(String, Duration)>>>,
    /// What to do with the next requests whose path contains the string.
    script: std::sync::Arc<std::sync::Mutex<(String, std::collections::VecDeque<Step>)>>,
}

/// One scripted answer of [`BadGateway`].
#[derive(Clone, Copy, Debug)]
enum Step {
    /// Forward the request, then close the client's connection unanswered.
    ForwardAndHangUp,
    /// Answer 503 `unavailable` (no leader) without forwarding.
    Refuse,
}

/// Reads one HTTP/1.1 message (headers and a Content-Length body).
async fn read_message(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().expect("length"))
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(buf);
            }
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

impl BadGateway {
    async fn to(target: SocketAddr) -> BadGateway {
        use tokio::io::AsyncWriteExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let bad_path = std::sync::Arc::new(std::sync::Mutex::new(None::<(String, bool)>));
        let bad = bad_path.clone();
        let slow_path = std::sync::Arc::new(std::sync::Mutex::new(None::<(String, Duration)>));
        let slow = slow_path.clone();
        let script = std::sync::Arc::new(std::sync::Mutex::new((
            String::new(),
            std::collections::VecDeque::new(),
        )));
        let scripted = script.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let (bad, slow, scripted) = (bad.clone(), slow.clone(), scripted.clone());
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    while let Some(request) = read_message(&mut inbound).await {
                        let line = String::from_utf8_lossy(&request[..request.len().min(200)])
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let broken = bad
                            .lock()
                            .unwrap()
                            .clone()
                            .filter(|(p, _)| line.contains(p.as_str()));
                        let forward = broken.as_ref().is_none_or(|(_, forward)| *forward);
                        let step = {
                            let mut script = scripted.lock().unwrap();
                            if !script.0.is_empty() && line.contains(script.0.as_str()) {
                                script.1.pop_front()
                            } else {
                                None
                            }
                        };
                        match step {
                            Some(Step::ForwardAndHangUp) => {
                                let _ = outbound.write_all(&request).await;
                                let _ = read_message(&mut outbound).await;
                                return;
                            }
                            Some(Step::Refuse) => {
                                let body =
                                    r#"{"error":{"code":"unavailable","message":"no leader"}}"#;
                                let reply = format!(
                                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                                     retry-after: 1\r\ncontent-length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if inbound.write_all(reply.as_bytes()).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            None => {}
                        }
                        let mut answer = Vec::new();
                        let delay = slow
                            .lock()
                            .unwrap()
                            .clone()
                            .filter(|(p, _)| line.contains(p.as_str()))
                            .map(|(_, d)| d);
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        if forward {
                            if outbound.write_all(&request).await.is_err() {
                                return;
                            }
                            let Some(got) = read_message(&mut outbound).await else {
                                return;
                            };
                            answer = got;
                        }
                        if broken.is_some() {
                            let body = "<html>502 Bad Gateway</html>";
                            let reply = format!(
                                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\n\
                                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                            let _ = inbound.write_all(reply.as_bytes()).await;
                            return;
                        }
                        if inbound.write_all(&answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        BadGateway {
            addr,
            bad_path,
            slow_path,
            script,
        }
    }

    /// Answers requests whose path contains `path` with a 502, after
    /// forwarding them (`forward`) or not.
    fn script(&self, path: &str, steps: &[Step]) {
        *self.script.lock().unwrap() = (path.to_owned(), steps.iter().copied().collect());
    }

    fn slow_down(&self, path: &str, delay: Duration) {
        *self.slow_path.lock().unwrap() = Some((path.to_owned(), delay));
    }

    fn break_path(&self, path: Option<&str>, forward: bool) {
        *self.bad_path.lock().unwrap() = path.map(|p| (p.to_owned(), forward));
    }
}

/// An acquire forwarded to the node whose answer a proxy replaces with a
/// 502 (no error envelope): an unknown outcome (the node may have granted
/// it), asked on until known, never a failure that leaves the grant with
/// the live session, known to no `Lock` or call.
#[tokio::test]
async fn an_acquire_answered_502_by_a_proxy_leaves_no_grant_behind() {
    let s = start().await;
    let proxy = BadGateway::to(s.addr).await;
    let proxied = deadbolt_client::ClientBuilder::new([format!("http://{}", proxy.addr)])
        .build()
        .expect("client");
    let b = proxied.session(SessionOptions::default()).await.expect("b");
    proxy.break_path(Some("/acquire"), true);
    // The proxy answers 502 for 2 s; the call asks on (an unknown outcome)
    // and then learns what came of it.
    let mend = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.break_path(None, false);
    };
    let (outcome, ()) = tokio::join!(b.try_lock("pg", LockMode::Exclusive), mend);
    let outcome = outcome.map(drop);
    let result = until_free(&s.client, "pg").await;
    assert!(
        result.is_ok(),
        "b's live session holds pg ({outcome:?} to its caller) with no Lock or call of it"
    );
    drop(b);
    s.stop().await;
}

/// `Lock::release` answered with a 502 by a proxy that never forwarded it
/// (nginx: upstream connect failed): an unknown outcome, so the release is
/// asked again rather than the grant left with the live session, known to
/// no `Lock` (the handle is consumed). The same holds for a dropped
/// handle's give-back.
#[tokio::test]
async fn a_release_answered_502_by_a_proxy_is_asked_again() {
    let s = start().await;
    let proxy = BadGateway::to(s.addr).await;
    let proxied = deadbolt_client::ClientBuilder::new([format!("http://{}", proxy.addr)])
        .build()
        .expect("client");
    let b = proxied.session(SessionOptions::default()).await.expect("b");
    let lock = b
        .try_lock("pr", LockMode::Exclusive)
        .await
        .expect("b holds");
    proxy.break_path(Some("/release"), false);
    let outcome = lock.release().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.break_path(None, false);
    assert!(outcome.is_err(), "the caller saw the 502: {outcome:?}");
    let result = until_free(&s.client, "pr").await;
    assert!(
        result.is_ok(),
        "b's live session holds pr after Lock::release ({outcome:?}) and nothing asks again"
    );
    drop(b);
    s.stop().await;
}

/// An abandoned wait's withdrawal that reaches the node late (held 3 s on
/// the way, longer than the client's whole call: outcome unknown): new
/// calls for the name wait until the withdrawal's outcome is known, so a
/// late withdrawal never ends the next live caller's wait.
#[tokio::test]
async fn a_late_withdrawal_never_ends_a_live_callers_wait() {
    let s = start().await;
    let proxy = BadGateway::to(s.addr).await;
    let proxied = deadbolt_client::ClientBuilder::new([format!("http://{}", proxy.addr)])
        .call_timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = proxied.session(SessionOptions::default()).await.expect("b");
    let held = a
        .try_lock("lw", LockMode::Exclusive)
        .await
        .expect("a holds");
    proxy.slow_down("/withdraw", Duration::from_secs(3));
    // The path heals after a while: until the withdrawal's outcome is
    // known, the session's next call for the lock waits for it.
    let heal = async {
        tokio::time::sleep(Duration::from_secs(4)).await;
        proxy.slow_down("/withdraw", Duration::ZERO);
    };
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        b.lock("lw", LockMode::Exclusive, Duration::from_secs(20)),
    )
    .await;
    assert!(
        gave_up.is_err(),
        "b waits behind a, then its caller gives up"
    );
    // Let the abandoned call's task see its caller go and send the
    // withdrawal (nobody else of b waits for lw).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let second = async {
        let outcome = b
            .lock("lw", LockMode::Exclusive, Duration::from_secs(20))
            .await;
        (outcome, started.elapsed())
    };
    let release_later = async {
        tokio::time::sleep(Duration::from_secs(6)).await;
        held.release().await.expect("a releases");
    };
    let ((second, ended_after), (), ()) = tokio::join!(second, release_later, heal);
    assert!(
        second.is_ok(),
        "b's live 20 s wait ended after {ended_after:?} ({second:?}), though a let go at 6 s"
    );
    drop(b);
    s.stop().await;
}

/// An acquire whose first attempt reached the node (applied, granted) but
/// whose answer was lost (the connection broke), and whose resends with the
/// same key were refused with 503 (a leader election) until the attempts
/// ran out: the call's outcome is still unknown (a 503 says nothing about
/// the first copy), so it is asked on, never taken as "not applied" with
/// the grant left to the live session, known to no `Lock` or call.
#[tokio::test]
async fn an_unknown_attempt_then_503s_leaves_no_grant_behind() {
    let s = start().await;
    let proxy = BadGateway::to(s.addr).await;
    let proxied = deadbolt_client::ClientBuilder::new([format!("http://{}", proxy.addr)])
        .attempts_max(2)
        .build()
        .expect("client");
    let b = proxied.session(SessionOptions::default()).await.expect("b");
    proxy.script(
        "/acquire",
        &[
            Step::ForwardAndHangUp,
            Step::Refuse,
            Step::Refuse,
            Step::Refuse,
        ],
    );
    // The call asks on past the 503s (an earlier copy's outcome is
    // unknown) and learns its grant, or fails; either way nothing stays.
    let outcome = b.try_lock("u5", LockMode::Exclusive).await.map(drop);
    proxy.script("", &[]);
    let result = until_free(&s.client, "u5").await;
    assert!(
        result.is_ok(),
        "b's live session holds u5 ({outcome:?} to its caller) with no Lock or call of it"
    );
    drop(b);
    s.stop().await;
}
