//! Streams across the fleet (SPEC §9): a publish takes the stream's lease
//! in the KV bucket `EDGESNAP_STREAMS` (`lease.{domain}.{app}.{stream}`),
//! and `{Sequence}` numbers come in blocks reserved there
//! (`seq.{domain}.{app}.{stream}`: the next number no node has reserved).
//!
//! Invariants:
//! - Every write is a compare-and-set on the key's revision: two nodes
//!   cannot both take a lease or both reserve one block.
//! - A lease is held while its node is alive: its node's heartbeat (every
//!   2 s in `EDGESNAP_NODES`) is the lease's renewal, so held streams cost
//!   NATS nothing while they run. A lease whose node has been silent for
//!   `SILENT_AFTER` (its last heartbeat's time, by its clock, against this
//!   node's: clocks within a few seconds, NTP) is taken over by
//!   the next publish elsewhere. A holder checks its leases after it gets
//!   NATS back (and every 30 s) and ends the local publisher of one taken.
//! - A publish that ends gives its lease up (retried until NATS takes it).
//! - A node numbers a stream's captures only inside blocks it reserved
//!   while holding the lease; the next holder's block starts past them, so
//!   a number is never used twice in a stream (gaps are allowed). A block
//!   is refilled when half used, off the capture path.
//! - Without NATS, a publish is accepted only for a stream this node held
//!   last (named in the refusal otherwise).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::{Fleet, FleetError, REQUEST_TIMEOUT, now_ms, records::subject_tokens};
use crate::index::Index;
use crate::ingest::{Ingest, StreamLeases};
use crate::stream::StreamKey;

pub const STREAMS_BUCKET: &str = "EDGESNAP_STREAMS";
/// How often the upkeep round runs (block refills, releases).
const TICK: Duration = Duration::from_secs(1);
/// How often held leases are checked while NATS stays connected.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// `{Sequence}` numbers reserved at a time.
const BLOCK: u64 = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct LeaseDoc {
    node: String,
    acquired_ms: u64,
}

struct Held {
    revision: u64,
}

pub struct Leases {
    fleet: Arc<Fleet>,
    index: Arc<Index>,
    ingest: Weak<Ingest>,
    bucket: OnceCell<kv::Store>,
    held: Mutex<HashMap<StreamKey, Held>>,
    /// Streams whose lease this node held last (a publish of one is
    /// accepted while NATS cannot be asked).
    held_last: Mutex<HashSet<StreamKey>>,
    /// Leases given up here and not yet removed from KV (with the revision
    /// this node wrote).
    releasing: Mutex<HashMap<StreamKey, u64>>,
}

fn lease_key(k: &StreamKey) -> String {
    format!("lease.{}", subject_tokens(&k.domain, &k.app, &k.stream))
}

fn seq_key(k: &StreamKey) -> String {
    format!("seq.{}", subject_tokens(&k.domain, &k.app, &k.stream))
}

fn refused_busy(k: &StreamKey, node: &str) -> String {
    format!("stream {k} is already being published by a live session (on node {node})")
}

impl Leases {
    pub fn new(fleet: Arc<Fleet>, index: Arc<Index>, ingest: &Arc<Ingest>) -> Arc<Leases> {
        Arc::new(Leases {
            fleet,
            index,
            ingest: Arc::downgrade(ingest),
            bucket: OnceCell::new(),
            held: Mutex::default(),
            held_last: Mutex::default(),
            releasing: Mutex::default(),
        })
    }

    async fn bucket(&self) -> Result<&kv::Store, FleetError> {
        let config = kv::Config {
            bucket: STREAMS_BUCKET.into(),
            description: "edgesnap: stream leases and {Sequence} blocks".into(),
            history: 1,
            ..Default::default()
        };
        self.fleet.bucket(&self.bucket, config).await
    }

    fn doc(&self) -> bytes::Bytes {
        serde_json::to_vec(&LeaseDoc { node: self.fleet.node_id().to_owned(), acquired_ms: now_ms() })
            .expect("a lease serializes")
            .into()
    }

    async fn take(&self, key: &StreamKey) -> Result<(), Result<String, FleetError>> {
        let kv = self.bucket().await.map_err(Err)?;
        let lk = lease_key(key);
        let cas = |e: kv::UpdateError| match e.kind() {
            kv::UpdateErrorKind::WrongLastRevision => None,
            _ => Some(super::nats("take a stream lease", e)),
        };
        for _ in 0..5 {
            let entry = kv.entry(&lk).await.map_err(|e| Err(super::nats("read a stream lease", e)))?;
            let attempt = match entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    let doc: Option<LeaseDoc> = serde_json::from_slice(&e.value).ok();
                    let holder = doc.map(|d| d.node).unwrap_or_default();
                    if holder != self.fleet.node_id() {
                        if self.fleet.alive(&holder).await.map_err(Err)? {
                            return Err(Ok(refused_busy(key, &holder)));
                        }
                        tracing::info!(stream = %key, from = %holder, "fleet: the stream's holder is silent; its lease is taken over");
                    }
                    kv.update(&lk, self.doc(), e.revision).await
                }
                Some(e) => kv.update(&lk, self.doc(), e.revision).await,
                None => kv.create(&lk, self.doc()).await.map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision),
                    _ => kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e),
                }),
            };
            match attempt {
                Ok(revision) => {
                    self.reserve(key, true).await.map_err(Err)?;
                    self.held.lock().unwrap().insert(key.clone(), Held { revision });
                    self.held_last.lock().unwrap().insert(key.clone());
                    return Ok(());
                }
                Err(e) => {
                    if let Some(e) = cas(e) {
                        return Err(Err(e));
                    }
                }
            }
        }
        Err(Ok(format!("stream {key}: its lease changed hands too often to take; try again")))
    }

    /// Reserves the stream's next block of `{Sequence}` numbers, from past
    /// what any node reserved and what this node used. `first`: a new
    /// publish (the block starts now); otherwise it extends the block in use.
    async fn reserve(&self, key: &StreamKey, first: bool) -> Result<(), FleetError> {
        let kv = self.bucket().await?;
        let sk = seq_key(key);
        for _ in 0..5 {
            let entry = kv.entry(&sk).await.map_err(|e| super::nats("read a sequence block", e))?;
            let (reserved, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => {
                    (std::str::from_utf8(&e.value).ok().and_then(|v| v.parse().ok()).unwrap_or(0), Some(e.revision))
                }
                Some(e) => (0, Some(e.revision)),
                None => (0, None),
            };
            let local = self.index.peek_sequence(key).map_err(|e| super::nats("read a stream's sequence", e))?;
            if !first {
                let room = self.index.sequence_room(key).ok().flatten().unwrap_or(0);
                if reserved != local + room {
                    tracing::warn!(stream = %key, "fleet: another node reserved {{Sequence}} numbers of this stream; the block is not extended");
                    return Ok(());
                }
            }
            let start = if first { reserved.max(local) } else { reserved };
            let end = start + BLOCK;
            let value: bytes::Bytes = end.to_string().into_bytes().into();
            let written = match revision {
                Some(r) => kv.update(&sk, value, r).await.map(|_| ()),
                None => kv.create(&sk, value).await.map(|_| ()).map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision),
                    _ => kv::UpdateError::with_source(kv::UpdateErrorKind::Other, e),
                }),
            };
            match written {
                Ok(()) => {
                    let start = if first { start } else { local };
                    return self
                        .index
                        .sequence_block(key.clone(), start, end)
                        .map_err(|e| super::nats("keep a sequence block", e));
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(super::nats("reserve a sequence block", e)),
            }
        }
        Err(super::nats("reserve a sequence block", std::io::Error::other("the block changed hands too often")))
    }

    /// Until `stop`: refills half-used `{Sequence}` blocks, retries the
    /// releases NATS did not take, and after a loss of NATS (and every 30 s)
    /// checks that each held lease is still this node's, ending the local
    /// publisher of one another node took meanwhile.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut was_connected, mut last_check) = (true, tokio::time::Instant::now());
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let connected = self.fleet.connected();
            let check = connected && (!was_connected || last_check.elapsed() >= CHECK_EVERY);
            was_connected = connected;
            if !connected {
                continue;
            }
            let round = async {
                // Made as soon as NATS answers (not at the first publish), so
                // it gets its three copies while the cluster is whole.
                self.bucket().await?;
                self.retry_releases().await?;
                self.refill().await?;
                if check {
                    self.check_held().await?;
                }
                Ok::<_, FleetError>(())
            };
            match tokio::time::timeout(REQUEST_TIMEOUT * 4, round).await {
                Ok(Ok(())) if check => last_check = tokio::time::Instant::now(),
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "fleet: stream lease upkeep failed; retried"),
                Err(_) => tracing::debug!("fleet: stream lease upkeep timed out; retried"),
            }
        }
    }

    /// Extends the block of each held stream that has used half of it.
    async fn refill(&self) -> Result<(), FleetError> {
        let held: Vec<StreamKey> = self.held.lock().unwrap().keys().cloned().collect();
        for key in held {
            if self.index.sequence_room(&key).ok().flatten().is_some_and(|room| room < BLOCK / 2) {
                self.reserve(&key, false).await?;
            }
        }
        Ok(())
    }

    /// Ends the local publisher of each held stream whose lease is no
    /// longer this node's (taken while this node's heartbeat was silent).
    async fn check_held(&self) -> Result<(), FleetError> {
        let kv = self.bucket().await?;
        let held: Vec<StreamKey> = self.held.lock().unwrap().keys().cloned().collect();
        for key in held {
            let entry = kv.entry(lease_key(&key)).await.map_err(|e| super::nats("read a stream lease", e))?;
            let holder = entry
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| serde_json::from_slice::<LeaseDoc>(&e.value).ok())
                .map(|d| d.node);
            if holder.as_deref() != Some(self.fleet.node_id()) {
                self.held.lock().unwrap().remove(&key);
                self.held_last.lock().unwrap().remove(&key);
                if let Some(ingest) = self.ingest.upgrade() {
                    ingest.end_stream(&key, "its fleet lease was taken by another node");
                }
                tracing::warn!(stream = %key, holder = ?holder, "fleet: another node took this stream's lease; its publisher here is ended");
            }
        }
        Ok(())
    }

    /// Gives up the leases whose release did not reach NATS.
    async fn retry_releases(&self) -> Result<(), FleetError> {
        let pending: Vec<(StreamKey, u64)> = self.releasing.lock().unwrap().drain().collect();
        if pending.is_empty() {
            return Ok(());
        }
        let kv = self.bucket().await?;
        for (key, revision) in pending {
            match kv.delete_expect_revision(lease_key(&key), Some(revision)).await {
                Ok(()) => {}
                // Taken (or given up) since: nothing left to release.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => {
                    self.releasing.lock().unwrap().insert(key, revision);
                    return Err(super::nats("release a stream lease", e));
                }
            }
        }
        Ok(())
    }
}

/// The leases of a node without the `edge` role: it takes no publishes.
pub struct NotAnEdge(pub String);

impl StreamLeases for NotAnEdge {
    fn acquire(&self, key: StreamKey) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let why = format!("stream {key}: node {} has no \"edge\" role in the fleet; publish to an edge", self.0);
        Box::pin(async move { Err(why) })
    }

    fn release(&self, _key: StreamKey) {}
}

impl StreamLeases for Leases {
    fn acquire(&self, key: StreamKey) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let held_last = self.held_last.lock().unwrap().contains(&key);
            let unchecked = |why: String| {
                if held_last {
                    tracing::warn!(stream = %key, "fleet: the stream's lease cannot be checked ({why}); this node held it last, so the publish goes on");
                    Ok(())
                } else {
                    Err(format!(
                        "stream {key}: its fleet lease cannot be checked ({why}) and this node did not hold it last; refused"
                    ))
                }
            };
            if !self.fleet.connected() {
                return unchecked("NATS is unreachable".into());
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, self.take(&key)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Ok(refusal))) => Err(refusal),
                Ok(Err(Err(e))) => unchecked(e.to_string()),
                Err(_) => unchecked("NATS did not answer in time".into()),
            }
        })
    }

    fn release(&self, key: StreamKey) {
        let Some(held) = self.held.lock().unwrap().remove(&key) else { return };
        // Given up at the next round of `run` (at most a second away), and
        // retried there until NATS takes it.
        self.releasing.lock().unwrap().insert(key, held.revision);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What JetStream accepts as a KV key: `[-/_=.a-zA-Z0-9]+`, no `.` at either end.
    fn valid_kv_key(key: &str) -> bool {
        !key.is_empty()
            && !key.starts_with('.')
            && !key.ends_with('.')
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn lease_and_sequence_keys_are_valid_kv_keys_for_any_names() {
        for (d, a, s) in [("example.com", "live", "cam 1"), ("a-b.example", "app~x", "*>=.")] {
            let k = StreamKey::new(d, a, s);
            assert!(valid_kv_key(&lease_key(&k)), "{}", lease_key(&k));
            assert!(valid_kv_key(&seq_key(&k)), "{}", seq_key(&k));
        }
    }
}
