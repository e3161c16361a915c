//! The peer's side of `scripts/compare-etcd.sh`: lock/unlock cycles against
//! an etcd cluster through its documented JSON gateway, shaped like
//! `deadbolt bench --client generic` (worker i talks to endpoint i mod n,
//! one lease per worker, every cycle a lock then an unlock), so the two can
//! be set side by side as ratios. Prints one JSON object per level.
//!
//! `cargo run --release -p deadbolt-server --example etcd_bench --
//!  --endpoints http://127.0.0.1:2379,... --workload uncontended -c 1,64 --duration 10`
//!
//! etcd's lock service (`/v3/lock/lock`, `/v3/lock/unlock`) holds a lock by a
//! key attached to a lease, like a deadbolt session; waiting for a contended
//! lock blocks the call, like `wait_ms`. Leases get a TTL longer than the run
//! instead of keepalives (one keepalive per worker every few seconds is noise
//! beside thousands of cycles per second).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use deadbolt_client::HyperIo;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use serde_json::{json, Value};

struct Args {
    endpoints: Vec<String>,
    contended: bool,
    concurrency: Vec<usize>,
    duration: Duration,
    warmup: Duration,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        endpoints: vec!["127.0.0.1:2379".into()],
        contended: false,
        concurrency: vec![1, 16, 64],
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--endpoints" => {
                args.endpoints = value
                    .split(',')
                    .map(|e| e.trim().trim_start_matches("http://").to_owned())
                    .collect();
            }
            "--workload" => {
                args.contended = match value.as_str() {
                    "uncontended" => false,
                    "contended" => true,
                    other => bail!("unknown workload {other:?}"),
                }
            }
            "-c" | "--concurrency" => {
                args.concurrency = value
                    .split(',')
                    .map(|c| c.parse().context("concurrency"))
                    .collect::<anyhow::Result<_>>()?;
            }
            "--duration" => args.duration = Duration::from_secs(value.parse()?),
            "--warmup" => args.warmup = Duration::from_secs(value.parse()?),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

/// Standard base64 (etcd's JSON gateway encodes bytes fields so).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One keep-alive HTTP/1.1 connection to one etcd member.
struct Conn {
    authority: String,
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    async fn open(authority: &str) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("connecting to {authority}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(HyperIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(Conn {
            authority: authority.to_owned(),
            sender,
        })
    }

    async fn post(&mut self, path: &str, body: Value) -> anyhow::Result<Value> {
        let request = Request::post(path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))?;
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

#[derive(Default)]
struct WorkerStats {
    latencies_us: Vec<u64>,
    errors: u64,
}

async fn worker(
    authority: String,
    lock_name: String,
    lease_ttl_s: u64,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<WorkerStats> {
    let mut conn = Conn::open(&authority).await?;
    let lease = conn
        .post("/v3/lease/grant", json!({ "TTL": lease_ttl_s }))
        .await?;
    let lease_id = lease["ID"].clone();
    let name = base64(lock_name.as_bytes());
    let mut stats = WorkerStats::default();
    while Instant::now() < until {
        let started = Instant::now();
        let locked = conn
            .post("/v3/lock/lock", json!({ "name": name, "lease": lease_id }))
            .await;
        let key = match locked {
            Ok(answer) => answer["key"].clone(),
            Err(_) => {
                stats.errors += 1;
                continue;
            }
        };
        match conn.post("/v3/lock/unlock", json!({ "key": key })).await {
            Ok(_) if started >= measure_from => stats
                .latencies_us
                .push(started.elapsed().as_micros().try_into().unwrap_or(u64::MAX)),
            Ok(_) => {}
            Err(_) => stats.errors += 1,
        }
    }
    let _ = conn
        .post("/v3/lease/revoke", json!({ "ID": lease_id }))
        .await;
    Ok(stats)
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let lease_ttl_s = (args.warmup + args.duration).as_secs() + 60;
    for &concurrency in &args.concurrency {
        let measure_from = Instant::now() + args.warmup;
        let until = measure_from + args.duration;
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let authority = args.endpoints[i % args.endpoints.len()].clone();
                let name = if args.contended {
                    format!("bench/{run}/contended")
                } else {
                    format!("bench/{run}/w{i}")
                };
                tokio::spawn(worker(authority, name, lease_ttl_s, measure_from, until))
            })
            .collect();
        let mut latencies = Vec::new();
        let mut errors = 0;
        for task in tasks {
            let stats = task.await??;
            latencies.extend(stats.latencies_us);
            errors += stats.errors;
        }
        latencies.sort_unstable();
        let report = json!({
            "client": "etcd",
            "workload": if args.contended { "contended" } else { "uncontended" },
            "concurrency": concurrency,
            "cycles": latencies.len(),
            "cycles_per_second": latencies.len() as f64 / args.duration.as_secs_f64(),
            "p50_ms": percentile_ms(&latencies, 0.50),
            "p99_ms": percentile_ms(&latencies, 0.99),
            "errors": errors,
        });
        println!("{report}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_the_standard_alphabet_and_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"bench/1/w0"), "YmVuY2gvMS93MA==");
    }
}
