//! The question a founder starting on an empty data dir asks the other
//! founders before it writes a fresh log: "do you hold our cluster, with
//! another incarnation of me in it?" (etcd: "member has already been
//! bootstrapped"). One hello each, all at once, each under the transport's
//! connect and handshake deadlines; unreachable founders are the normal
//! first start and answer nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::BytesMut;
use deadbolt_core::raft::NodeId;
use tokio::net::TcpStream;

use super::peer::write_batch;
use super::{encode_frame, read_frame, ConnError, TransportConfig, WireFrame};

/// What one founder answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FounderAnswer {
    /// It holds the cluster and records another incarnation for us.
    HoldsAnotherIncarnation { node_id: NodeId, recorded: u64 },
    /// It answered and does not refuse us (a first start, or a cluster
    /// that has not recorded us yet).
    Accepts { node_id: NodeId },
    /// No answer (down, not started yet, partitioned) or another refusal.
    Silent { node_id: NodeId, why: String },
}

/// Asks every founder in `founders` but ourselves; answers in id order.
pub async fn ask_founders(
    config: &TransportConfig,
    founders: &BTreeMap<NodeId, String>,
) -> Vec<FounderAnswer> {
    let asks: Vec<_> = founders
        .iter()
        .filter(|(id, _)| **id != config.local_id)
        .map(|(&node_id, addr)| {
            let config = config.clone();
            let addr = addr.clone();
            tokio::spawn(async move { ask(&config, node_id, &addr).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(asks.len());
    for ask in asks {
        if let Ok(answer) = ask.await {
            answers.push(answer);
        }
    }
    answers
}

async fn ask(config: &TransportConfig, node_id: NodeId, addr: &str) -> FounderAnswer {
    match hello_once(config, addr).await {
        Ok(WireFrame::Refused(refusal)) => match refusal.recorded_incarnation {
            Some(recorded) => FounderAnswer::HoldsAnotherIncarnation { node_id, recorded },
            None => FounderAnswer::Silent {
                node_id,
                why: refusal.reason,
            },
        },
        Ok(_) => FounderAnswer::Accepts { node_id },
        Err(error) => FounderAnswer::Silent {
            node_id,
            why: error.to_string(),
        },
    }
}

/// Dials `addr`, sends our hello and reads the first frame back.
async fn hello_once(config: &TransportConfig, addr: &str) -> Result<WireFrame<()>, ConnError> {
    let mut stream = tokio::time::timeout(
        Duration::from_millis(config.connect_timeout_ms),
        TcpStream::connect(addr),
    )
    .await
    .map_err(|_| ConnError::Timeout("connect"))??;
    let mut out = Vec::new();
    encode_frame::<()>(&WireFrame::Hello(config.hello()), &mut out)?;
    write_batch(&mut stream, &out, config.handshake_timeout_ms).await?;
    let mut buf = BytesMut::new();
    read_frame::<(), _>(
        &mut stream,
        &mut buf,
        Duration::from_millis(config.handshake_timeout_ms),
        "handshake",
    )
    .await
}
