//! The record stream (SPEC §9): every record an edge stores or deletes goes
//! from its fleet outbox (rows the index writer adds in the transaction
//! that stores or deletes it) to the JetStream stream `EDGESNAP_RECORDS`;
//! nodes with role `index` consume it into their own index.
//!
//! Invariants:
//! - Nothing is lost while NATS is down: a row leaves the outbox only after
//!   JetStream acknowledged it. Rows are published in outbox order (so in
//!   commit order, per stream too), a batch at a time, with backoff.
//! - A replay is harmless: the message id is the record's id with its
//!   create time and operation, so JetStream drops a copy within its
//!   duplicate window, and an index applies a record by id (a copy
//!   replaces itself).
//! - An index node commits the stream position it has applied in the same
//!   transaction as the records (`Index::replicate`): after a crash,
//!   messages up to that position are acknowledged and skipped, the rest
//!   applied, so nothing is lost or applied twice.
//! - An index node with an assignment consumes only its domains' subjects
//!   (see `shards` for how a change of assignment is applied).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, stream};
use futures::StreamExt;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::shards::{self, Shard};
use super::{Fleet, FleetError, REQUEST_TIMEOUT, nats};
use crate::index::{FleetEvent, Index, decode_fleet_event};

/// The stream of every node's stored and deleted records.
pub const RECORDS_STREAM: &str = "EDGESNAP_RECORDS";
const SUBJECTS: &str = "edgesnap.records";
/// How long the stream keeps a record event: an index node away longer
/// than this misses what was published meanwhile.
const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// Outbox rows published per round.
const BATCH: usize = 256;

/// A name as one subject token: letters, digits, `-` and `_` kept, any
/// other byte `=` and two hex digits (`example.com` → `example=2ecom`):
/// valid in a subject and in a KV key (leases use the same tokens).
fn token(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("={b:02x}"));
        }
    }
    out
}

/// The subject of a record's events: `edgesnap.records.{domain}.{app}.{stream}`
/// (an index node may take a subset of domains by filtering on it).
pub fn subject(domain: &str, app: &str, stream: &str) -> String {
    format!("{SUBJECTS}.{}", subject_tokens(domain, app, stream))
}

/// A stream's names as three tokens: `{domain}.{app}.{stream}`.
pub(super) fn subject_tokens(domain: &str, app: &str, stream: &str) -> String {
    format!("{}.{}.{}", token(domain), token(app), token(stream))
}

fn message_id(e: &FleetEvent) -> String {
    match e {
        FleetEvent::Stored(r) => format!("{}.{}.stored", r.id, r.create_timestamp_ms),
        FleetEvent::Deleted(r) => format!("{}.deleted", r.id),
    }
}

pub struct Records {
    fleet: Arc<Fleet>,
    index: Arc<Index>,
    stream: OnceCell<stream::Stream>,
    /// Events published but not yet applied by this index node (its
    /// consumer's pending count at the last fetch).
    lag: AtomicU64,
    /// The domains this index node keeps (as its index has them).
    shard: Mutex<Shard>,
}

impl Records {
    pub fn new(fleet: Arc<Fleet>, index: Arc<Index>) -> Arc<Records> {
        let shard = index.fleet_shard().ok().flatten().and_then(|b| shards::decode(&b)).unwrap_or(None);
        Arc::new(Records { fleet, index, stream: OnceCell::new(), lag: AtomicU64::new(0), shard: Mutex::new(shard) })
    }

    /// The domains this index node keeps now (None: every domain).
    pub fn shard(&self) -> Shard {
        self.shard.lock().unwrap().clone()
    }

    async fn stream(&self) -> Result<&stream::Stream, FleetError> {
        let js = self.fleet.jetstream()?;
        self.stream
            .get_or_try_init(|| async {
                let clustered = self.fleet.client.server_info().cluster.is_some();
                let config = |num_replicas| stream::Config {
                    name: RECORDS_STREAM.into(),
                    description: Some("edgesnap: every node's stored and deleted records".into()),
                    subjects: vec![format!("{SUBJECTS}.>")],
                    max_age: KEEP,
                    duplicate_window: Duration::from_secs(120),
                    num_replicas,
                    ..Default::default()
                };
                match js.get_or_create_stream(config(if clustered { 3 } else { 1 })).await {
                    Ok(s) => Ok(s),
                    Err(e) if clustered => {
                        tracing::warn!(error = %e, "fleet: the cluster cannot keep 3 copies of {RECORDS_STREAM}; keeping one");
                        js.get_or_create_stream(config(1)).await.map_err(|e| nats("create the record stream", e))
                    }
                    Err(e) => Err(nats("create the record stream", e)),
                }
            })
            .await
    }

    /// Publishes the outbox until `stop` (then once more, briefly, for what
    /// the last commits added).
    pub async fn publish(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        let mut failing = false;
        loop {
            let idle = match self.publish_some().await {
                Ok(n) => {
                    if failing {
                        tracing::info!("fleet: records reach NATS again");
                        failing = false;
                    }
                    backoff = Duration::from_millis(200);
                    n < BATCH
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "fleet: publishing records failed; they wait in the outbox");
                        failing = true;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    true
                }
            };
            if !idle {
                continue;
            }
            let wait = if failing { backoff } else { Duration::from_millis(100) };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.publish_some()).await;
    }

    /// Publishes one batch of the outbox; returns how many rows it took.
    async fn publish_some(&self) -> Result<usize, FleetError> {
        let rows = self.index.fleet_outbox(BATCH).map_err(|e| nats("read the fleet outbox", e))?;
        if rows.is_empty() {
            return Ok(0);
        }
        let js = self.fleet.jetstream()?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.stream()).await.map_err(|_| self.fleet.not_connected())??;
        let mut acks = Vec::with_capacity(rows.len());
        for (n, bytes) in &rows {
            let event = match decode_fleet_event(bytes) {
                Ok(e) => e,
                Err(e) => {
                    // Written by this build's writer: not expected; never blocks the outbox.
                    tracing::error!(row = n, error = %e, "fleet: an outbox row does not read; dropped");
                    acks.push((*n, None));
                    continue;
                }
            };
            let r = event.record();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", message_id(&event).as_str());
            let ack = js
                .publish_with_headers(subject(&r.domain, &r.app, &r.stream), headers, bytes.clone().into())
                .await
                .map_err(|e| nats("publish a record", e))?;
            acks.push((*n, Some(ack)));
        }
        // Rows leave the outbox up to the last one acknowledged in order.
        let mut done = None;
        let mut failed = None;
        for (n, ack) in acks {
            if let Some(ack) = ack {
                match tokio::time::timeout(REQUEST_TIMEOUT, ack).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        failed = Some(nats("publish a record", e));
                        break;
                    }
                    Err(_) => {
                        failed = Some(self.fleet.not_connected());
                        break;
                    }
                }
            }
            done = Some(n);
        }
        if let Some(upto) = done {
            self.index.fleet_published(upto).await.map_err(|e| nats("clear the fleet outbox", e))?;
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rows.len()),
        }
    }

    /// Events published but not applied by this index node yet.
    pub fn lag(&self) -> u64 {
        self.lag.load(Ordering::Relaxed)
    }

    /// Consumes the record stream into this node's index until `stop`
    /// (the index role), reconnecting after failures.
    pub async fn index(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.consume(&stop).await {
                Ok(true) => return,
                Ok(false) => continue, // another assignment: applied at the top
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "fleet: not consuming the record stream; retrying");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.fleet.connected() {
                failing = false;
            }
        }
    }

    /// Indexes the stream until `stop` (true) or until this node's
    /// assignment changes (false).
    async fn consume(&self, stop: &CancellationToken) -> Result<bool, FleetError> {
        let stream =
            tokio::time::timeout(REQUEST_TIMEOUT, self.stream()).await.map_err(|_| self.fleet.not_connected())??;
        let wanted = self.fleet.assignment(self.fleet.node_id()).await?;
        let applied = self.shard();
        if wanted != applied {
            self.reshard(&applied, &wanted).await?;
        }
        let (name, mut consumer) = self.consumer(stream, &wanted).await?;
        let mut checked = Instant::now();
        tracing::info!(consumer = %name, "fleet: indexing the record stream");
        loop {
            if stop.is_cancelled() {
                return Ok(true);
            }
            if checked.elapsed() >= Duration::from_secs(1) {
                checked = Instant::now();
                if self.fleet.assignment(self.fleet.node_id()).await? != wanted {
                    return Ok(false);
                }
            }
            let batch = consumer
                .fetch()
                .max_messages(1000)
                .expires(Duration::from_millis(500))
                .messages()
                .await
                .map_err(|e| nats("fetch records", e))?;
            let messages: Vec<_> = tokio::select! {
                _ = stop.cancelled() => return Ok(true),
                m = batch.collect::<Vec<_>>() => m,
            };
            let position = self.index.fleet_position().map_err(|e| nats("read the index position", e))?;
            let mut events = Vec::with_capacity(messages.len());
            let mut last = None;
            for m in messages {
                let m = m.map_err(|source| FleetError::Nats { what: "fetch records", source })?;
                let seq = m
                    .info()
                    .map_err(|source| FleetError::Nats { what: "read a record's position", source })?
                    .stream_sequence;
                if seq > position {
                    match decode_fleet_event(&m.payload) {
                        Ok(e) => events.push(e),
                        Err(e) => {
                            tracing::error!(seq, subject = %m.subject, error = %e, "fleet: a record event does not read; skipped")
                        }
                    }
                }
                last = Some((seq.max(position), m));
            }
            if let Some((seq, m)) = last {
                if !events.is_empty() || seq > position {
                    self.index.replicate(events, seq).await.map_err(|e| nats("index records", e))?;
                }
                m.ack().await.map_err(|source| FleetError::Nats { what: "acknowledge records", source })?;
            }
            if let Ok(info) = consumer.info().await {
                self.lag.store(info.num_pending + info.num_ack_pending as u64, Ordering::Relaxed);
            }
        }
    }
}

impl Records {
    /// This node's durable consumer, its subject filter made from `shard`.
    /// One with another filter is made again, going on after the position
    /// this index has applied.
    async fn consumer(
        &self,
        stream: &stream::Stream,
        shard: &Shard,
    ) -> Result<(String, consumer::PullConsumer), FleetError> {
        let name = format!("index-{}", self.fleet.node_id());
        let mut filter: Vec<String> = shard.iter().flatten().map(|d| format!("{SUBJECTS}.{}.>", token(d))).collect();
        filter.sort_unstable();
        let position = self.index.fleet_position().map_err(|e| nats("read the index position", e))?;
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("edgesnap index node {}", self.fleet.node_id())),
            ack_policy: consumer::AckPolicy::All,
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: position + 1 },
            filter_subjects: filter.clone(),
            max_ack_pending: 20_000,
            ..Default::default()
        };
        let made = stream
            .get_or_create_consumer::<consumer::pull::Config>(&name, config.clone())
            .await
            .map_err(|e| nats("make the index consumer", e))?;
        let have = &made.cached_info().config;
        let mut had: Vec<&str> = have.filter_subjects.iter().map(String::as_str).collect();
        if !have.filter_subject.is_empty() {
            had.push(&have.filter_subject);
        }
        had.sort_unstable();
        if had == filter.iter().map(String::as_str).collect::<Vec<_>>() {
            return Ok((name, made));
        }
        stream.delete_consumer(&name).await.map_err(|e| nats("remove the old index consumer", e))?;
        let made = stream.create_consumer(config).await.map_err(|e| nats("make the index consumer", e))?;
        tracing::info!(consumer = %name, filter = ?filter, from = position + 1, "fleet: index consumer made for this node's domains");
        Ok((name, made))
    }

    /// Applies another assignment (see `shards` for the order of steps).
    async fn reshard(&self, from: &Shard, to: &Shard) -> Result<(), FleetError> {
        let index = |e| nats("change the domains this index keeps", e);
        let dropped: Vec<String> = match (from, to) {
            (_, None) => Vec::new(),
            (Some(from), Some(to)) => from.difference(to).cloned().collect(),
            (None, Some(to)) => {
                self.index.record_domains().map_err(index)?.into_iter().filter(|d| !to.contains(d)).collect()
            }
        };
        let position = self.index.fleet_position().map_err(index)?;
        for domain in &dropped {
            self.drop_domain(domain, position).await?;
        }
        let added = match (from, to) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(from), Some(to)) => !to.is_subset(from),
        };
        let position = if added { 0 } else { position };
        self.index.keep_fleet_shard(shards::encode(to), position).await.map_err(index)?;
        *self.shard.lock().unwrap() = to.clone();
        self.fleet.beat_now.notify_one();
        tracing::info!(domains = ?to, dropped = ?dropped, reread = added, "fleet: this index node keeps other domains now");
        Ok(())
    }

    /// Drops a domain's records other nodes stored from this index (an
    /// edge keeps its own), a page at a time.
    async fn drop_domain(&self, domain: &str, position: u64) -> Result<(), FleetError> {
        let index = |e| nats("drop a domain from this index", e);
        let own = self.fleet.config.edge.then(|| self.fleet.node_id());
        let mut after = None;
        loop {
            let page = self.index.domain_records(domain, after.as_ref(), 1000).map_err(index)?;
            let Some(last) = page.last().cloned() else { return Ok(()) };
            let theirs = page
                .into_iter()
                .filter(|r| own.is_none_or(|own| !(r.node.is_empty() || r.node == own)))
                .map(FleetEvent::Deleted)
                .collect();
            self.index.replicate(theirs, position).await.map_err(index)?;
            after = Some(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_keep_one_token_per_name() {
        assert_eq!(subject("example.com", "live", "cam 1"), "edgesnap.records.example=2ecom.live.cam=201");
        assert_eq!(subject("localhost", "a_b-c", "*>="), "edgesnap.records.localhost.a_b-c.=2a=3e=3d");
    }
}
