//! The index's single writer: batches queued operations into one commit.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, ReadableTableMetadata, WriteTransaction};
use tokio::sync::oneshot;

use super::{
    BY_STREAM, CATALOG, CatalogKey, Delivery, FLEET_OUTBOX, FLEET_OUTBOX_DROPPED, FLEET_POSITION, FLEET_SHARD,
    FleetEvent, IDS, INTENTS, IndexError, Intent, META, OBJECT_KEYS, OUTBOX, OUTBOX_FAILED, OVERLAYS, OutboxChange,
    PLUGIN_STATE, RECORDS, Record, RecordEvents, RecordId, SEQUENCES, StateWrites, TOMBSTONES, Tombstone, db,
    decode_record, encode_fleet_event, encode_record,
};

/// Operations per commit at most.
const MAX_BATCH: usize = 256;

/// Commits are at least this far apart: under load, what arrives meanwhile
/// shares one fsync; after a quiet spell, an operation commits at once.
const LINGER: Duration = Duration::from_millis(40);

pub(super) enum Op {
    /// Records other nodes of a fleet stored or deleted (the index role),
    /// with the record stream's position they bring this index to.
    Replicate {
        events: Vec<FleetEvent>,
        position: u64,
        /// Which domains the index node keeps from now on, when it changes.
        shard: Option<Vec<u8>>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    /// Removes the fleet outbox's rows up to (and with) this one: published.
    Published {
        upto: u64,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    Reserve {
        id: RecordId,
        intent: Intent,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    Commit {
        intent: RecordId,
        records: Vec<Record>,
        state: Option<StateWrites>,
        events: Option<RecordEvents>,
        reply: oneshot::Sender<Result<Vec<Record>, IndexError>>,
    },
    Abandon {
        intent: RecordId,
        state: Option<StateWrites>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    State {
        domain: String,
        writes: Vec<(String, Option<Vec<u8>>)>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    Catalog {
        clear_domain: Option<String>,
        writes: Vec<(CatalogKey, Option<Vec<u8>>)>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    Delete {
        ids: Vec<RecordId>,
        tombstone: bool,
        events: Option<RecordEvents>,
        reply: oneshot::Sender<Result<Vec<Record>, IndexError>>,
    },
    Outbox {
        changes: Vec<OutboxChange>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    Replay {
        domain: String,
        ids: Option<Vec<u128>>,
        now_ms: u64,
        reply: oneshot::Sender<Result<usize, IndexError>>,
    },
    ClearTombstones {
        ids: Vec<RecordId>,
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
    /// Unit tests only: writes a plugin state row, then fails.
    #[cfg(test)]
    WriteThenFail {
        reply: oneshot::Sender<Result<(), IndexError>>,
    },
}

pub(super) struct Handle {
    tx: Option<mpsc::Sender<Op>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Tombstones to clear with the next commit, whatever it is: nothing
    /// waits for them, so they cost no commit of their own.
    pub(super) later: Arc<std::sync::Mutex<Vec<RecordId>>>,
}

impl Handle {
    pub(super) fn send(&self, op: Op) -> Result<(), IndexError> {
        self.tx.as_ref().ok_or(IndexError::Stopped)?.send(op).map_err(|_| IndexError::Stopped)
    }

    pub(super) fn close(mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer's view of the fleet: which node it stamps on the records it
/// commits (and then puts each stored or deleted record in the fleet
/// outbox, in the same transaction). Unset on a node alone.
pub(super) type FleetNode = Arc<std::sync::OnceLock<String>>;

pub(super) fn start(db: Arc<Database>, fleet: FleetNode) -> Handle {
    let (tx, rx) = mpsc::channel::<Op>();
    let later: Arc<std::sync::Mutex<Vec<RecordId>>> = Arc::default();
    let pending = later.clone();
    let thread = std::thread::Builder::new()
        .name("index-writer".into())
        .spawn(move || {
            let mut last_commit = Instant::now() - LINGER;
            while let Ok(first) = rx.recv() {
                let mut batch = vec![first];
                let deadline = last_commit + LINGER;
                while batch.len() < MAX_BATCH {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let next = if left.is_zero() { rx.try_recv().ok() } else { rx.recv_timeout(left).ok() };
                    match next {
                        Some(op) => batch.push(op),
                        None => break,
                    }
                }
                let clears = std::mem::take(&mut *pending.lock().unwrap());
                run_batch(&db, batch, &clears, fleet.get().map(String::as_str));
                last_commit = Instant::now();
            }
            let clears = std::mem::take(&mut *pending.lock().unwrap());
            if !clears.is_empty() {
                run_batch(&db, Vec::new(), &clears, None);
            }
        })
        .expect("spawn index writer thread");
    Handle { tx: Some(tx), thread: Some(thread), later }
}

/// What an applied operation answers, before its commit.
enum Outcome {
    Count(usize),
    Records(Vec<Record>),
    Unit,
}

/// Applies a batch as one transaction. Each operation applies fully or not
/// at all: when one fails, the transaction is dropped (redb keeps nothing of
/// it), that operation gets its error, and the rest run again in a fresh
/// one. (redb savepoints cannot do this: it refuses them once a transaction
/// has written.) Failures are rare, so the replay costs nothing in practice.
fn run_batch(db: &Database, mut ops: Vec<Op>, clears: &[RecordId], fleet: Option<&str>) {
    loop {
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                for op in ops {
                    reply(op, Err(IndexError::Corrupt(format!("begin write: {e}"))));
                }
                return;
            }
        };
        if !clears.is_empty()
            && let Err(e) = clear_tombstones(&txn, clears)
        {
            // Left for the next start, which removes their (already gone) objects again.
            tracing::warn!(error = %e, "tombstones not cleared");
        }
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut failed = None;
        for (i, op) in ops.iter().enumerate() {
            match apply(&txn, op, fleet) {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    failed = Some((i, e));
                    break;
                }
            }
        }
        if let Some((i, e)) = failed {
            // Nothing of this attempt is kept; an abort that fails leaves the same.
            let _ = txn.abort();
            reply(ops.remove(i), Err(e));
            continue;
        }
        let committed = txn.commit().map_err(|e| e.to_string());
        for (op, outcome) in ops.into_iter().zip(outcomes) {
            reply(op, committed.as_ref().map(|()| outcome).map_err(|e| commit_failed(e)));
        }
        return;
    }
}

fn apply(txn: &WriteTransaction, op: &Op, fleet: Option<&str>) -> Result<Outcome, IndexError> {
    Ok(match op {
        Op::Replicate { events, position, shard, .. } => {
            replicate(txn, events, *position)?;
            if let Some(shard) = shard {
                txn.open_table(META).map_err(db)?.insert(FLEET_SHARD, shard.as_slice()).map_err(db)?;
            }
            Outcome::Unit
        }
        Op::Published { upto, .. } => published(txn, *upto).map(|()| Outcome::Unit)?,
        Op::Reserve { id, intent, .. } => reserve(txn, *id, intent).map(|()| Outcome::Unit)?,
        Op::Commit { intent, records, state: st, events, .. } => {
            let r = commit(txn, *intent, records, fleet)?;
            if fleet.is_some() {
                to_fleet(txn, r.iter().cloned().map(FleetEvent::Stored))?;
            }
            with_state(txn, st.as_ref())?;
            with_events(txn, &r, events.as_ref())?;
            Outcome::Records(r)
        }
        Op::Abandon { intent, state: st, .. } => {
            abandon(txn, *intent)?;
            with_state(txn, st.as_ref())?;
            Outcome::Unit
        }
        Op::State { domain, writes, .. } => state(txn, domain, writes).map(|()| Outcome::Unit)?,
        Op::Catalog { clear_domain, writes, .. } => {
            catalog(txn, clear_domain.as_deref(), writes).map(|()| Outcome::Unit)?
        }
        Op::Delete { ids, tombstone, events, .. } => {
            let r = delete(txn, ids, *tombstone)?;
            if fleet.is_some() {
                to_fleet(txn, r.iter().cloned().map(FleetEvent::Deleted))?;
            }
            with_events(txn, &r, events.as_ref())?;
            Outcome::Records(r)
        }
        Op::Outbox { changes, .. } => outbox_apply(txn, changes).map(|()| Outcome::Unit)?,
        Op::Replay { domain, ids, now_ms, .. } => Outcome::Count(replay(txn, domain, ids.as_deref(), *now_ms)?),
        Op::ClearTombstones { ids, .. } => clear_tombstones(txn, ids).map(|()| Outcome::Unit)?,
        #[cfg(test)]
        Op::WriteThenFail { .. } => {
            state(txn, "d", &[("half".into(), Some(vec![1]))])?;
            return Err(IndexError::Corrupt("failed on purpose".into()));
        }
    })
}

/// Answers an operation with its outcome (or why it has none).
fn reply(op: Op, result: Result<Outcome, IndexError>) {
    let records = |r: Result<Outcome, IndexError>| {
        r.map(|o| match o {
            Outcome::Records(r) => r,
            _ => Vec::new(),
        })
    };
    let count = |r: Result<Outcome, IndexError>| {
        r.map(|o| match o {
            Outcome::Count(n) => n,
            _ => 0,
        })
    };
    match op {
        Op::Commit { reply, .. } | Op::Delete { reply, .. } => drop(reply.send(records(result))),
        Op::Replay { reply, .. } => drop(reply.send(count(result))),
        Op::Abandon { reply, .. }
        | Op::Replicate { reply, .. }
        | Op::Published { reply, .. }
        | Op::Reserve { reply, .. }
        | Op::Outbox { reply, .. }
        | Op::State { reply, .. }
        | Op::Catalog { reply, .. }
        | Op::ClearTombstones { reply, .. } => drop(reply.send(result.map(|_| ()))),
        #[cfg(test)]
        Op::WriteThenFail { reply } => drop(reply.send(result.map(|_| ()))),
    }
}

fn commit_failed(e: &str) -> IndexError {
    IndexError::Corrupt(format!("commit failed: {e}"))
}

/// Puts the callbacks telling of `records` in the outbox.
fn with_events(txn: &WriteTransaction, records: &[Record], events: Option<&RecordEvents>) -> Result<(), IndexError> {
    match events {
        Some(events) => enqueue(txn, &records.iter().flat_map(events).collect::<Vec<_>>()),
        None => Ok(()),
    }
}

/// Puts deliveries in the outbox, due now.
fn enqueue(txn: &WriteTransaction, outbox: &[Delivery]) -> Result<(), IndexError> {
    if outbox.is_empty() {
        return Ok(());
    }
    let mut t = txn.open_table(OUTBOX).map_err(db)?;
    for d in outbox {
        let key = (d.created_ms, rand::random::<u128>());
        t.insert(key, super::rows::encode_delivery(d).as_slice()).map_err(db)?;
    }
    Ok(())
}

fn outbox_apply(txn: &WriteTransaction, changes: &[OutboxChange]) -> Result<(), IndexError> {
    let mut t = txn.open_table(OUTBOX).map_err(db)?;
    let mut failed = txn.open_table(OUTBOX_FAILED).map_err(db)?;
    for c in changes {
        match c {
            OutboxChange::Delivered(key) => drop(t.remove(*key).map_err(db)?),
            OutboxChange::Retry(key, due, d) => {
                t.remove(*key).map_err(db)?;
                t.insert((*due, key.1), super::rows::encode_delivery(d).as_slice()).map_err(db)?;
            }
            OutboxChange::Failed(key, d) => {
                t.remove(*key).map_err(db)?;
                failed.insert(key.1, super::rows::encode_delivery(d).as_slice()).map_err(db)?;
            }
        }
    }
    Ok(())
}

fn replay(txn: &WriteTransaction, domain: &str, ids: Option<&[u128]>, now_ms: u64) -> Result<usize, IndexError> {
    let mut t = txn.open_table(OUTBOX).map_err(db)?;
    let mut failed = txn.open_table(OUTBOX_FAILED).map_err(db)?;
    let mut chosen = Vec::new();
    for item in failed.iter().map_err(db)? {
        let (k, v) = item.map_err(db)?;
        let d = super::decode_delivery(v.value())?;
        if d.domain == domain && ids.is_none_or(|ids| ids.contains(&k.value())) {
            chosen.push((k.value(), d));
        }
    }
    for (id, mut d) in chosen.iter().cloned() {
        failed.remove(id).map_err(db)?;
        (d.attempts, d.created_ms) = (0, now_ms);
        t.insert((now_ms, id), super::rows::encode_delivery(&d).as_slice()).map_err(db)?;
    }
    Ok(chosen.len())
}

/// A plugin's state writes riding with a capture's commit (or abandon).
fn with_state(txn: &WriteTransaction, st: Option<&StateWrites>) -> Result<(), IndexError> {
    match st {
        Some(st) if !st.writes.is_empty() => state(txn, &st.domain, &st.writes),
        _ => Ok(()),
    }
}

/// Records an intent and makes its `{Sequence}` durable: the stream's
/// next sequence is at least one past it.
fn reserve(txn: &WriteTransaction, id: RecordId, intent: &Intent) -> Result<(), IndexError> {
    let mut seqs = txn.open_table(SEQUENCES).map_err(db)?;
    let key = (intent.domain.as_str(), intent.app.as_str(), intent.stream.as_str());
    let next = seqs.get(key).map_err(db)?.map_or(0, |v| v.value());
    if intent.sequence >= next {
        seqs.insert(key, intent.sequence + 1).map_err(db)?;
    }
    let mut intents = txn.open_table(INTENTS).map_err(db)?;
    intents.insert(id.0, super::rows::encode_intent(intent).as_slice()).map_err(db)?;
    Ok(())
}

/// Removes a record by id from every table that holds it; returns it.
fn remove_record(
    recs: &mut redb::Table<(&'static str, &'static str, u64, u128), &'static [u8]>,
    ids: &mut redb::Table<u128, (&'static str, &'static str, u64)>,
    by_stream: &mut redb::Table<(&'static str, &'static str, &'static str, u64, u128), &'static [u8]>,
    id: u128,
) -> Result<Option<Record>, IndexError> {
    let loc = ids.remove(id).map_err(db)?.map(|v| {
        let (d, a, ts) = v.value();
        (d.to_owned(), a.to_owned(), ts)
    });
    let Some((d, a, ts)) = loc else { return Ok(None) };
    let row = recs.remove((d.as_str(), a.as_str(), ts, id)).map_err(db)?.map(|v| decode_record(id, v.value()));
    let Some(r) = row.transpose()? else {
        return Err(IndexError::Corrupt(format!("record_ids names missing record {id:032x}")));
    };
    by_stream.remove((r.domain.as_str(), r.app.as_str(), r.stream.as_str(), r.create_timestamp_ms, id)).map_err(db)?;
    Ok(Some(r))
}

fn commit(
    txn: &WriteTransaction,
    intent: RecordId,
    records: &[Record],
    fleet: Option<&str>,
) -> Result<Vec<Record>, IndexError> {
    let mut recs = txn.open_table(RECORDS).map_err(db)?;
    let mut ids = txn.open_table(IDS).map_err(db)?;
    let mut by_stream = txn.open_table(BY_STREAM).map_err(db)?;
    let mut overlays = txn.open_table(OVERLAYS).map_err(db)?;
    let mut keys = txn.open_table(OBJECT_KEYS).map_err(db)?;
    let mut stored = Vec::with_capacity(records.len());
    for r in records {
        let mut r = r.clone();
        if let Some(node) = fleet {
            node.clone_into(&mut r.node);
        }
        if r.is_overlay {
            let okey = (r.domain.as_str(), r.app.as_str(), r.stream.as_str(), r.key.as_str());
            let old_id = overlays.get(okey).map_err(db)?.map(|v| v.value());
            if let Some(old_id) = old_id {
                remove_record(&mut recs, &mut ids, &mut by_stream, old_id)?;
                r.id = RecordId(old_id);
            }
            overlays.insert(okey, r.id.0).map_err(db)?;
        }
        let row = encode_record(&r);
        let (d, a, ts) = (r.domain.as_str(), r.app.as_str(), r.create_timestamp_ms);
        recs.insert((d, a, ts, r.id.0), row.as_slice()).map_err(db)?;
        ids.insert(r.id.0, (d, a, ts)).map_err(db)?;
        by_stream.insert((d, a, r.stream.as_str(), ts, r.id.0), row.as_slice()).map_err(db)?;
        keys.insert((d, r.storage.as_str(), r.key.as_str()), r.id.0).map_err(db)?;
        stored.push(r);
    }
    txn.open_table(INTENTS).map_err(db)?.remove(intent.0).map_err(db)?;
    Ok(stored)
}

fn abandon(txn: &WriteTransaction, intent: RecordId) -> Result<(), IndexError> {
    txn.open_table(INTENTS).map_err(db)?.remove(intent.0).map_err(db)?;
    Ok(())
}

fn state(txn: &WriteTransaction, domain: &str, writes: &[(String, Option<Vec<u8>>)]) -> Result<(), IndexError> {
    let mut t = txn.open_table(PLUGIN_STATE).map_err(db)?;
    for (k, v) in writes {
        match v {
            Some(v) => drop(t.insert((domain, k.as_str()), v.as_slice()).map_err(db)?),
            None => drop(t.remove((domain, k.as_str())).map_err(db)?),
        }
    }
    Ok(())
}

fn catalog(
    txn: &WriteTransaction,
    clear_domain: Option<&str>,
    writes: &[(CatalogKey, Option<Vec<u8>>)],
) -> Result<(), IndexError> {
    let mut t = txn.open_table(CATALOG).map_err(db)?;
    if let Some(domain) = clear_domain {
        let mut doomed: Vec<(String, String)> = Vec::new();
        for item in t.iter().map_err(db)? {
            let (k, _) = item.map_err(db)?;
            let (kind, d, name) = k.value();
            if d == domain {
                doomed.push((kind.to_owned(), name.to_owned()));
            }
        }
        for (kind, name) in doomed {
            t.remove((kind.as_str(), domain, name.as_str())).map_err(db)?;
        }
    }
    for ((kind, domain, name), v) in writes {
        let k = (kind.as_str(), domain.as_str(), name.as_str());
        match v {
            Some(v) => drop(t.insert(k, v.as_slice()).map_err(db)?),
            None => drop(t.remove(k).map_err(db)?),
        }
    }
    Ok(())
}

fn delete(txn: &WriteTransaction, ids: &[RecordId], tombstone: bool) -> Result<Vec<Record>, IndexError> {
    let mut recs = txn.open_table(RECORDS).map_err(db)?;
    let mut locs = txn.open_table(IDS).map_err(db)?;
    let mut by_stream = txn.open_table(BY_STREAM).map_err(db)?;
    let mut overlays = txn.open_table(OVERLAYS).map_err(db)?;
    let mut tombs = txn.open_table(TOMBSTONES).map_err(db)?;
    let mut keys = txn.open_table(OBJECT_KEYS).map_err(db)?;
    let mut removed = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(r) = remove_record(&mut recs, &mut locs, &mut by_stream, id.0)? else {
            continue;
        };
        if r.is_overlay {
            let okey = (r.domain.as_str(), r.app.as_str(), r.stream.as_str(), r.key.as_str());
            let current = overlays.get(okey).map_err(db)?.map(|v| v.value());
            if current == Some(id.0) {
                overlays.remove(okey).map_err(db)?;
            }
        }
        let kkey = (r.domain.as_str(), r.storage.as_str(), r.key.as_str());
        if keys.get(kkey).map_err(db)?.map(|v| v.value()) == Some(id.0) {
            keys.remove(kkey).map_err(db)?;
        }
        if tombstone {
            let t = Tombstone { domain: r.domain.clone(), storage: r.storage.clone(), key: r.key.clone() };
            tombs.insert(id.0, super::rows::encode_tombstone(&t).as_slice()).map_err(db)?;
        }
        removed.push(r);
    }
    Ok(removed)
}

/// The fleet outbox keeps at most this many rows (about 400 MB; 2.8 hours
/// of 500 streams at 5 s): past it, the oldest are dropped and counted.
/// The edge keeps its records either way; the fleet's index misses them.
pub(super) const FLEET_OUTBOX_MAX: u64 = 1_000_000;

/// Puts records stored or deleted here in the fleet outbox, after its last row.
fn to_fleet(txn: &WriteTransaction, events: impl Iterator<Item = FleetEvent>) -> Result<(), IndexError> {
    let mut t = txn.open_table(FLEET_OUTBOX).map_err(db)?;
    let first = t.last().map_err(db)?.map_or(0, |(k, _)| k.value() + 1);
    for (n, e) in (first..).zip(events) {
        t.insert(n, encode_fleet_event(&e).as_slice()).map_err(db)?;
    }
    drop(t);
    cap_fleet_outbox(txn, FLEET_OUTBOX_MAX)
}

/// Drops the oldest outbox rows past `max`, counting them (`meta`).
pub(super) fn cap_fleet_outbox(txn: &WriteTransaction, max: u64) -> Result<(), IndexError> {
    let mut t = txn.open_table(FLEET_OUTBOX).map_err(db)?;
    let over = t.len().map_err(db)?.saturating_sub(max);
    if over == 0 {
        return Ok(());
    }
    for _ in 0..over {
        t.pop_first().map_err(db)?;
    }
    let mut meta = txn.open_table(META).map_err(db)?;
    let before = meta
        .get(FLEET_OUTBOX_DROPPED)
        .map_err(db)?
        .and_then(|v| v.value().try_into().ok())
        .map_or(0, u64::from_be_bytes);
    meta.insert(FLEET_OUTBOX_DROPPED, (before + over).to_be_bytes().as_slice()).map_err(db)?;
    tracing::warn!(
        dropped = over,
        "fleet outbox full ({max} records not published): the oldest were dropped; the fleet's index misses them"
    );
    Ok(())
}

fn published(txn: &WriteTransaction, upto: u64) -> Result<(), IndexError> {
    let mut t = txn.open_table(FLEET_OUTBOX).map_err(db)?;
    t.retain_in(..=upto, |_, _| false).map_err(db)?;
    Ok(())
}

/// Applies other nodes' records: a stored one replaces any record of its
/// id (an overwrite object's record is updated in place), a deleted one is
/// removed; then the position is kept, in the same transaction, so a
/// crash neither loses nor applies twice.
fn replicate(txn: &WriteTransaction, events: &[FleetEvent], position: u64) -> Result<(), IndexError> {
    {
        let mut recs = txn.open_table(RECORDS).map_err(db)?;
        let mut ids = txn.open_table(IDS).map_err(db)?;
        let mut by_stream = txn.open_table(BY_STREAM).map_err(db)?;
        let mut overlays = txn.open_table(OVERLAYS).map_err(db)?;
        for e in events {
            match e {
                FleetEvent::Stored(r) => {
                    remove_record(&mut recs, &mut ids, &mut by_stream, r.id.0)?;
                    let row = encode_record(r);
                    let (d, a, ts) = (r.domain.as_str(), r.app.as_str(), r.create_timestamp_ms);
                    recs.insert((d, a, ts, r.id.0), row.as_slice()).map_err(db)?;
                    ids.insert(r.id.0, (d, a, ts)).map_err(db)?;
                    by_stream.insert((d, a, r.stream.as_str(), ts, r.id.0), row.as_slice()).map_err(db)?;
                    if r.is_overlay {
                        overlays.insert((d, a, r.stream.as_str(), r.key.as_str()), r.id.0).map_err(db)?;
                    }
                }
                FleetEvent::Deleted(r) => {
                    if remove_record(&mut recs, &mut ids, &mut by_stream, r.id.0)?.is_some() && r.is_overlay {
                        let okey = (r.domain.as_str(), r.app.as_str(), r.stream.as_str(), r.key.as_str());
                        if overlays.get(okey).map_err(db)?.map(|v| v.value()) == Some(r.id.0) {
                            overlays.remove(okey).map_err(db)?;
                        }
                    }
                }
            }
        }
    }
    let mut meta = txn.open_table(META).map_err(db)?;
    meta.insert(FLEET_POSITION, position.to_be_bytes().as_slice()).map_err(db)?;
    Ok(())
}

fn clear_tombstones(txn: &WriteTransaction, ids: &[RecordId]) -> Result<(), IndexError> {
    let mut t = txn.open_table(TOMBSTONES).map_err(db)?;
    for id in ids {
        t.remove(id.0).map_err(db)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::*;

    fn record(id: RecordId, ts: u64, key: &str, overlay: bool) -> Record {
        Record {
            id,
            domain: "d".into(),
            app: "live".into(),
            stream: "cam1".into(),
            create_timestamp_ms: ts,
            key: key.into(),
            storage: "local".into(),
            endpoint: "file:///x".into(),
            bucket: String::new(),
            size: 10,
            width: 64,
            height: 48,
            is_overlay: overlay,
            sequence: 0,
            node: String::new(),
        }
    }

    fn intent(ts: u64) -> Intent {
        Intent {
            domain: "d".into(),
            app: "live".into(),
            stream: "cam1".into(),
            create_timestamp_ms: ts,
            sequence: 0,
            storage: "local".into(),
            placements: vec![Planned { key: "live/cam1.jpg".into(), overwrite: true }],
            size: 10,
            md5: [0; 16],
            width: 64,
            height: 48,
        }
    }

    #[test]
    fn a_failed_operation_leaves_nothing_and_the_rest_of_its_batch_commits() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let (a, mut a_rx) = oneshot::channel();
        let (x, mut x_rx) = oneshot::channel();
        let (b, mut b_rx) = oneshot::channel();
        let ops = vec![
            super::Op::Reserve { id: RecordId::new(1000), intent: intent(1000), reply: a },
            super::Op::WriteThenFail { reply: x },
            super::Op::Reserve { id: RecordId::new(2000), intent: intent(2000), reply: b },
        ];
        super::run_batch(&index.db, ops, &[], None);
        assert!(a_rx.try_recv().unwrap().is_ok());
        assert!(matches!(x_rx.try_recv().unwrap(), Err(IndexError::Corrupt(m)) if m == "failed on purpose"));
        assert!(b_rx.try_recv().unwrap().is_ok());
        // The two reservations are committed; nothing of the failed operation is.
        assert_eq!(index.pending_intents().unwrap().len(), 2);
        assert_eq!(index.plugin_state("d", "half").unwrap(), None);
    }

    /// An edge's commits and deletes reach its fleet outbox with its node
    /// id, in order; another index replicates them (an overwrite record
    /// updated in place), keeps its position, and a replay changes nothing.
    #[tokio::test]
    async fn an_index_lists_its_domains_and_keeps_a_shard_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let domains = ["b", "a.com.b", "a.com", "a", "a.com"];
        let events = domains
            .iter()
            .enumerate()
            .map(|(n, d)| {
                let ts = 1000 + n as u64;
                FleetEvent::Stored(Record { domain: (*d).into(), ..record(RecordId::new(ts), ts, "k.jpg", false) })
            })
            .collect();
        index.replicate(events, 7).await.unwrap();
        assert_eq!(index.record_domains().unwrap(), ["a", "a.com", "a.com.b", "b"]);
        assert_eq!(index.fleet_shard().unwrap(), None);
        index.keep_fleet_shard(b"[\"a\"]".to_vec(), 0).await.unwrap();
        assert_eq!(index.fleet_shard().unwrap().as_deref(), Some(&b"[\"a\"]"[..]));
        assert_eq!(index.fleet_position().unwrap(), 0, "kept with the shard");
        assert_eq!(index.record_domains().unwrap().len(), 4, "a shard alone drops nothing");
    }

    #[tokio::test]
    async fn a_fleet_outbox_replicates_into_another_index() {
        let dir = tempfile::tempdir().unwrap();
        let edge = Index::open(&dir.path().join("edge.redb")).unwrap();
        let fleet = Index::open(&dir.path().join("fleet.redb")).unwrap();
        edge.join_fleet("edge-a");
        let (mut seq_ids, mut overlay_id) = (Vec::new(), None);
        for ts in [1000u64, 2000] {
            let id = RecordId::new(ts);
            edge.reserve(id, intent(ts)).await.unwrap();
            let stored = edge
                .commit(
                    id,
                    vec![
                        record(RecordId::new(ts), ts, "live/cam1.jpg", true),
                        record(id, ts, &format!("{ts}.jpg"), false),
                    ],
                )
                .await
                .unwrap();
            assert!(stored.iter().all(|r| r.node == "edge-a"), "stamped with the node");
            overlay_id = Some(stored[0].id);
            seq_ids.push(id);
        }
        edge.delete(vec![seq_ids[0]], false).await.unwrap();
        let rows = edge.fleet_outbox(100).unwrap();
        let events: Vec<FleetEvent> = rows.iter().map(|(_, b)| decode_fleet_event(b).unwrap()).collect();
        let kinds: Vec<(&str, bool)> = events
            .iter()
            .map(|e| match e {
                FleetEvent::Stored(r) => ("stored", r.is_overlay),
                FleetEvent::Deleted(r) => ("deleted", r.is_overlay),
            })
            .collect();
        assert_eq!(
            kinds,
            [("stored", true), ("stored", false), ("stored", true), ("stored", false), ("deleted", false)]
        );
        assert_eq!(edge.fleet_outbox_depth().unwrap(), 5);

        let last = rows.last().unwrap().0;
        fleet.replicate(events.clone(), 42).await.unwrap();
        fleet.replicate(events, 42).await.unwrap();
        assert_eq!(fleet.fleet_position().unwrap(), 42);
        assert!(fleet.get(seq_ids[0]).unwrap().is_none(), "deleted");
        let kept = fleet.get(seq_ids[1]).unwrap().unwrap();
        assert_eq!((kept.node.as_str(), kept.create_timestamp_ms), ("edge-a", 2000));
        let overlay = fleet.get(overlay_id.unwrap()).unwrap().unwrap();
        assert_eq!(overlay.create_timestamp_ms, 2000, "the overwrite record updated in place");
        assert_eq!(fleet.fleet_outbox_depth().unwrap(), 0, "replicated records are not published again");
        edge.fleet_published(last).await.unwrap();
        assert_eq!(edge.fleet_outbox_depth().unwrap(), 0);
    }

    /// A fleet block raises a stream's next `{Sequence}` to its start (never
    /// lowers it) and counts what is left of it.
    #[test]
    fn sequence_blocks_raise_and_count_down() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let key = crate::stream::StreamKey::new("d", "live", "cam1");
        assert_eq!(index.next_sequence(key.clone()).unwrap(), 0);
        assert_eq!(index.sequence_room(&key).unwrap(), None, "no block on a node alone");
        index.sequence_block(key.clone(), 1000, 2000).unwrap();
        assert_eq!(index.sequence_room(&key).unwrap(), Some(1000));
        assert_eq!(index.next_sequence(key.clone()).unwrap(), 1000);
        assert_eq!(index.next_sequence(key.clone()).unwrap(), 1001);
        assert_eq!(index.sequence_room(&key).unwrap(), Some(998));
        // Extending the block keeps the numbering where it is.
        index.sequence_block(key.clone(), 1002, 3000).unwrap();
        assert_eq!(index.next_sequence(key.clone()).unwrap(), 1002);
        // A block below the numbers used does not lower them.
        index.sequence_block(key.clone(), 5, 3000).unwrap();
        assert_eq!(index.peek_sequence(&key).unwrap(), 1003);
    }

    /// A full fleet outbox drops its oldest rows and counts them.
    #[tokio::test]
    async fn a_full_fleet_outbox_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index.join_fleet("edge-a");
        for ts in [1000u64, 2000, 3000] {
            let id = RecordId::new(ts);
            index.reserve(id, intent(ts)).await.unwrap();
            index.commit(id, vec![record(id, ts, &format!("{ts}.jpg"), false)]).await.unwrap();
        }
        let txn = index.db.begin_write().unwrap();
        super::cap_fleet_outbox(&txn, 2).unwrap();
        txn.commit().unwrap();
        let left: Vec<u64> = index
            .fleet_outbox(10)
            .unwrap()
            .iter()
            .map(|(_, b)| decode_fleet_event(b).unwrap().record().create_timestamp_ms)
            .collect();
        assert_eq!(left, [2000, 3000], "the oldest went");
        assert_eq!(index.fleet_outbox_dropped().unwrap(), 1);
    }

    /// A record row written before records carried their node still reads.
    #[test]
    fn rows_from_before_the_fleet_read_with_no_node() {
        let r = record(RecordId::new(5), 5, "k.jpg", false);
        let full = encode_record(&r);
        // The old form is the new one without the node's string (its length byte, 0).
        let old = &full[..full.len() - 1];
        assert_eq!(decode_record(r.id.0, old).unwrap(), r);
        assert_eq!(decode_record(r.id.0, &full).unwrap(), r);
    }

    #[tokio::test]
    async fn sequences_overlays_and_paging() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let mut overlay_ids = Vec::new();
        // Five captures; three share one millisecond.
        for (i, ts) in [1000u64, 2000, 2000, 2000, 3000].into_iter().enumerate() {
            let id = RecordId::new(ts);
            let seq = index.next_sequence(crate::stream::StreamKey::new("d", "live", "cam1")).unwrap();
            assert_eq!(seq, i as u64);
            index.reserve(id, Intent { sequence: seq, ..intent(ts) }).await.unwrap();
            assert_eq!(index.pending_intents().unwrap().len(), 1);
            let stored = index
                .commit(
                    id,
                    vec![
                        record(RecordId::new(ts), ts, "live/cam1.jpg", true),
                        record(id, ts, &format!("live/cam1/{i}.jpg"), false),
                    ],
                )
                .await
                .unwrap();
            overlay_ids.push(stored[0].id);
            assert!(index.pending_intents().unwrap().is_empty());
        }
        // The overwrite record keeps its id and shows the latest capture.
        assert!(overlay_ids.windows(2).all(|w| w[0] == w[1]));
        let latest = index.latest("d", "live", "cam1").unwrap().unwrap();
        assert_eq!(latest.create_timestamp_ms, 3000);
        // Each object names its record; the overwrite object the one that stays.
        assert_eq!(index.key_owner("d", "local", "live/cam1.jpg").unwrap(), Some(overlay_ids[0]));

        // Page through 6 records two at a time: no gaps, no repeats, ties included.
        let mut q = Query {
            domain: "d".into(),
            app: "live".into(),
            stream: Some("cam1".into()),
            start_ms: 0,
            end_ms: 10_000,
            limit: 2,
            descending: false,
            cursor: None,
        };
        let mut seen = Vec::new();
        loop {
            let page = index.query(&q).unwrap();
            seen.extend(page.records.iter().map(|r| r.key.clone()));
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 6, "{seen:?}");
        let unique: std::collections::BTreeSet<_> = seen.iter().collect();
        assert_eq!(unique.len(), 6);
        // The whole app, newest first.
        let page =
            index.query(&Query { stream: None, descending: true, limit: 10, cursor: None, ..q.clone() }).unwrap();
        let ts: Vec<u64> = page.records.iter().map(|r| r.create_timestamp_ms).collect();
        assert_eq!(ts, vec![3000, 3000, 2000, 2000, 2000, 1000]);
        let seq4 = index.key_owner("d", "local", "live/cam1/4.jpg").unwrap().expect("recorded");
        index.delete(vec![seq4], false).await.unwrap();
        assert_eq!(index.key_owner("d", "local", "live/cam1/4.jpg").unwrap(), None);
        index.close();
        // A restart continues each stream's sequence from the last reserved one.
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        assert_eq!(index.next_sequence(crate::stream::StreamKey::new("d", "live", "cam1")).unwrap(), 5);
        assert_eq!(index.next_sequence(crate::stream::StreamKey::new("d", "live", "other")).unwrap(), 0);
        index.close();
    }

    #[test]
    fn a_layout_3_index_is_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        Index::open(&path).unwrap().close();
        {
            // Layout 3: one record, one intent of the old shape, no `object_keys`.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(OBJECT_KEYS).unwrap();
            txn.open_table(META).unwrap().insert(SCHEMA_KEY, 3u32.to_be_bytes().as_slice()).unwrap();
            let r = record(RecordId(7), 1000, "live/cam1/0.jpg", false);
            txn.open_table(RECORDS).unwrap().insert(("d", "live", 1000, 7u128), encode_record(&r).as_slice()).unwrap();
            #[derive(serde::Serialize)]
            struct Old<'a>(&'a str, &'a str, &'a str, u64, u64, &'a str);
            let old = postcard::to_stdvec(&Old("d", "live", "cam1", 2000, 1, "local")).unwrap();
            txn.open_table(INTENTS).unwrap().insert(9u128, old.as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let index = Index::open(&path).unwrap();
        assert_eq!(index.key_owner("d", "local", "live/cam1/0.jpg").unwrap(), Some(RecordId(7)));
        let pending = index.pending_intents().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].1.sequence, pending[0].1.placements.len()), (1, 0));
        index.close();
    }

    #[test]
    fn an_index_of_the_first_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        {
            // Layout 1: a `records` table keyed by id, and no marker.
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let t: redb::TableDefinition<u128, &[u8]> = redb::TableDefinition::new("records");
            txn.open_table(t).unwrap().insert(1u128, b"x".as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let e = Index::open(&path).err().expect("refused");
        assert!(e.to_string().contains("layout 1"), "{e}");
    }

    #[test]
    fn an_index_of_another_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.redb");
        Index::open(&path).unwrap().close();
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(SCHEMA_KEY, 1u32.to_be_bytes().as_slice()).unwrap();
            txn.commit().unwrap();
        }
        let e = Index::open(&path).err().expect("refused");
        assert!(e.to_string().contains("move it away"), "{e}");
    }
}
