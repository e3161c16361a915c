//! A one-node cluster inside the test process (`deadbolt_server::server::start`,
//! the path `deadbolt serve` takes) on ephemeral loopback ports and a
//! temporary data dir, for tests that drive the API rather than processes.

use std::net::SocketAddr;
use std::time::Duration;

use deadbolt_client::Client;
use deadbolt_server::config::ServeArgs;
use deadbolt_server::server::{start as start_server, Server};
use tokio::net::TcpListener;

/// A running one-node cluster with its API.
pub struct TestServer {
    pub addr: SocketAddr,
    pub client: Client,
    pub server: Server,
    _data: tempfile::TempDir,
}

impl TestServer {
    /// Graceful stop, as on SIGTERM.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// Starts node 1 of a one-node cluster with these extra settings and
/// returns once it leads.
pub async fn start_with(args: ServeArgs) -> TestServer {
    let data = tempfile::tempdir().expect("temp dir");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let addr = api.local_addr().expect("addr");
    let peer_addr = peer.local_addr().expect("peer addr");
    let config = ServeArgs {
        data_dir: Some(data.path().join("node")),
        listen_api: Some(addr.to_string()),
        listen_peer: Some(peer_addr.to_string()),
        ..args
    }
    .resolve()
    .expect("valid settings");
    let server = start_server(api, peer, config)
        .await
        .expect("server starts");
    let handle = server.handle();
    super::eventually("node 1 leads", Duration::from_secs(10), || async {
        handle.status().await.ok().filter(|s| s.ready).map(|_| ())
    })
    .await;
    let client = Client::new([format!("http://{addr}")]).expect("client");
    TestServer {
        addr,
        client,
        server,
        _data: data,
    }
}

pub async fn start() -> TestServer {
    start_with(ServeArgs::default()).await
}
