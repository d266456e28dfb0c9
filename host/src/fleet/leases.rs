//! Streams across the fleet (SPEC §9): a publish takes the stream's lease
//! in the KV bucket `EDGESNAP_STREAMS` (`lease.{domain}.{app}.{stream}`),
//! and `{Sequence}` numbers come in blocks reserved there
//! (`seq.{domain}.{app}.{stream}`: the next number no node has reserved).
//!
//! Invariants:
//! - Every write is a compare-and-set on the key's revision: two nodes
//!   cannot both take a lease or both reserve one block.
//! - A lease is held while its node renews it (every 2 s); one not renewed
//!   for [`SILENT_AFTER`] (by the KV server's time of the last write
//!   against this node's clock: clocks within a few seconds, NTP) is taken
//!   over by the next publish elsewhere. A holder that finds its lease
//!   taken ends its local publisher.
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

use super::{Fleet, FleetError, REQUEST_TIMEOUT, SILENT_AFTER, now_ms, records::subject_tokens};
use crate::index::Index;
use crate::ingest::{Ingest, StreamLeases};
use crate::stream::StreamKey;

pub const STREAMS_BUCKET: &str = "EDGESNAP_STREAMS";
const RENEW: Duration = Duration::from_secs(2);
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
                    let written_ms = (e.created.unix_timestamp_nanos() / 1_000_000).max(0) as u64;
                    let silent = now_ms().saturating_sub(written_ms) > SILENT_AFTER.as_millis() as u64;
                    if holder != self.fleet.node_id() && !silent {
                        return Err(Ok(refused_busy(key, &holder)));
                    }
                    if holder != self.fleet.node_id() {
                        tracing::info!(stream = %key, from = %holder, "fleet: the stream's lease was silent; taken over");
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

    /// Renews every held lease until `stop`; ends the local publisher of a
    /// stream whose lease another node took; refills half-used blocks.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(RENEW);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, self.renew_all())
                .await
                .unwrap_or_else(|_| Err(self.fleet.not_connected()))
            {
                tracing::debug!(error = %e, "fleet: renewing stream leases failed; retried");
            }
        }
    }

    async fn renew_all(&self) -> Result<(), FleetError> {
        let held: Vec<(StreamKey, u64)> =
            self.held.lock().unwrap().iter().map(|(k, h)| (k.clone(), h.revision)).collect();
        if held.is_empty() {
            return Ok(());
        }
        let kv = self.bucket().await?;
        for (key, revision) in held {
            match kv.update(lease_key(&key), self.doc(), revision).await {
                Ok(r) => {
                    if let Some(h) = self.held.lock().unwrap().get_mut(&key) {
                        h.revision = r;
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    let holder = kv
                        .get(lease_key(&key))
                        .await
                        .ok()
                        .flatten()
                        .and_then(|v| serde_json::from_slice::<LeaseDoc>(&v).ok())
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
                Err(e) => return Err(super::nats("renew a stream lease", e)),
            }
            if self.index.sequence_room(&key).ok().flatten().is_some_and(|room| room < BLOCK / 2) {
                self.reserve(&key, false).await?;
            }
        }
        Ok(())
    }
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
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        let (kv, lk) = (self.bucket.get().cloned(), lease_key(&key));
        handle.spawn(async move {
            if let Some(kv) = kv {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, kv.delete_expect_revision(lk, Some(held.revision))).await;
            }
        });
    }
}
