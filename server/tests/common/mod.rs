//! Shared helpers of the process-level tests: real `deadbolt` processes on
//! loopback, killed when their guard drops, and polling with deadlines
//! (never sleeping to wait for a condition).

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod in_process;

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_deadbolt")
}

/// The directory of the binary, to put first on a shell's PATH.
pub fn bin_dir() -> PathBuf {
    Path::new(bin())
        .parent()
        .expect("the binary has a directory")
        .to_path_buf()
}

/// A free loopback address: bind port 0, read it, release it. Another
/// process could take it before we do; on loopback in a test that is rare
/// enough, and a start-up failure names the address.
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.local_addr().expect("local addr").to_string()
}

/// A child process killed (SIGKILL, then reaped) when dropped, so a failing
/// test leaves nothing running.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr to files in `log_dir`.
    pub fn spawn(name: &str, mut command: Command, log_dir: &Path) -> Proc {
        let stdout = log_dir.join(format!("{name}.out"));
        let stderr = log_dir.join(format!("{name}.err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.name));
    }

    /// SIGKILL and reap: a crash, as far as the cluster can tell.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Exit status if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Waits for the process to exit, at most `bound`.
    pub async fn wait_exit(&mut self, bound: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        let logs = self.logs();
        eventually(&format!("{name} exits\n{logs}"), bound, || {
            let status = self.try_wait();
            async move { status }
        })
        .await
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// Both log files, for assertion messages.
    pub fn logs(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr (tail) ---\n{}",
            self.name,
            self.output(),
            self.name,
            tail(
                &std::fs::read_to_string(&self.stderr).unwrap_or_default(),
                40
            )
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process cannot die of SIGKILL until continued on some
            // systems' tooling; SIGCONT first costs nothing.
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill9();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `check` every 20 ms until it returns Some, or panics after `bound`.
pub async fn eventually<T, F, Fut>(what: &str, bound: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {bound:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `deadbolt serve` for one node; `extra` are more flags.
pub fn serve_command(
    node_id: u64,
    data_dir: &Path,
    api: &str,
    peer: &str,
    extra: &[&str],
) -> Command {
    let mut command = Command::new(bin());
    command
        .arg("serve")
        .arg("--node-id")
        .arg(node_id.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listen-api")
        .arg(api)
        .arg("--listen-peer")
        .arg(peer)
        .args(extra)
        .env("RUST_LOG", "info")
        .env_remove("DEADBOLT_ENDPOINTS");
    command
}

/// One node's addresses and data dir, on free loopback ports.
pub struct NodeSpec {
    pub id: u64,
    pub api: String,
    pub peer: String,
    pub data_dir: PathBuf,
}

impl NodeSpec {
    pub fn new(id: u64, root: &Path) -> NodeSpec {
        NodeSpec {
            id,
            api: free_addr(),
            peer: free_addr(),
            data_dir: root.join(format!("data-{id}")),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    pub fn spawn(&self, root: &Path, extra: &[&str]) -> Proc {
        let command = serve_command(self.id, &self.data_dir, &self.api, &self.peer, extra);
        Proc::spawn(&format!("node-{}", self.id), command, root)
    }
}

/// A client of these API URLs with a call timeout that outlasts elections.
pub fn client(urls: &[String]) -> deadbolt_client::Client {
    deadbolt_client::ClientBuilder::new(urls.iter().cloned())
        .call_timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Runs a client command of the binary to completion: (exit code, stdout, stderr).
pub fn cli(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(bin())
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the CLI");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// One raw HTTP/1.1 request to `addr` (`host:port`), answered within 10 s:
/// (status, headers, JSON body or `Null`). For what the Rust client hides:
/// exact status codes, headers, replays of one idempotency key.
pub async fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, serde_json::Value) {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(deadbolt_client::HyperIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("content-type", "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(bytes::Bytes::from(body.to_owned())))
        .expect("request");
    let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
        .await
        .expect("an answer within 10 s")
        .expect("send");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}
