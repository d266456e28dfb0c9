//! The snapshot index: the one redb database (docs/storage.md).
//!
//! Tables (every key is ordered; tuples sort field by field):
//! - `app_records`: (domain, app, create_ts, id) → record   a whole app in time order, clustered
//! - `record_ids`: id → (domain, app, create_ts)    lookup by id (then `app_records`)
//! - `stream_records`: (domain, app, stream, create_ts, id) → record   a stream's time range, clustered
//!   (a page of one stream is a few adjacent pages on disk), delete by timestamp, paging ties
//! - `overlays`:  (domain, app, stream, key) → id   the one record of an overwrite object, updated in place
//! - `sequences`: (domain, app, stream) → next `{Sequence}`
//! - `intents`:   id → intent   captures reserved but not yet recorded (crash recovery)
//! - `plugin_state`: (domain, key) → value   the policy plugins' key-value state
//! - `meta`:      name → bytes  host secrets and settings
//! - `catalog`:   (kind, domain, name) → JSON   what the API made: domains, templates, notify, tokens
//! - `tombstones`: id → (domain, storage, key)  objects whose records are deleted but which are not yet removed
//! - `object_keys`: (domain, storage, key) → id   which record holds an object (recovery's suffix walk)
//! - `fleet_outbox`: n → event   in a fleet, records stored or deleted here and not yet published
//!   (written in the transaction that stores or deletes them)
//!
//! Writes go through one writer thread that commits whatever is waiting as
//! one transaction, at most one commit per 40 ms, so under load the commit
//! cost is shared by many snapshots.

mod rows;
mod writer;

pub(crate) use rows::{decode_delivery, decode_record, encode_record};
pub use rows::{decode_fleet_event, encode_fleet_event};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use tokio::sync::oneshot;

/// The records, clustered by app and time: a page of a whole app is adjacent pages.
pub(crate) const RECORDS: TableDefinition<(&str, &str, u64, u128), &[u8]> = TableDefinition::new("app_records");
/// Where a record is in `app_records`.
pub(crate) const IDS: TableDefinition<u128, (&str, &str, u64)> = TableDefinition::new("record_ids");
/// Covering: holds a copy of each record, so one stream's page reads adjacent pages.
pub(crate) const BY_STREAM: TableDefinition<(&str, &str, &str, u64, u128), &[u8]> =
    TableDefinition::new("stream_records");
pub(crate) const OVERLAYS: TableDefinition<(&str, &str, &str, &str), u128> = TableDefinition::new("overlays");
pub(crate) const SEQUENCES: TableDefinition<(&str, &str, &str), u64> = TableDefinition::new("sequences");
pub(crate) const INTENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("intents");
pub(crate) const PLUGIN_STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_state");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const CATALOG: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("catalog");
pub(crate) const TOMBSTONES: TableDefinition<u128, &[u8]> = TableDefinition::new("tombstones");
/// Callbacks to deliver: (due ms, delivery id) → delivery (JSON).
pub(crate) const OUTBOX: TableDefinition<(u64, u128), &[u8]> = TableDefinition::new("outbox");
/// Callbacks given up on, kept for inspection and replay: delivery id → delivery (JSON).
pub(crate) const OUTBOX_FAILED: TableDefinition<u128, &[u8]> = TableDefinition::new("outbox_failed");
/// The record holding each object: (domain, storage, key) → id.
pub(crate) const OBJECT_KEYS: TableDefinition<(&str, &str, &str), u128> = TableDefinition::new("object_keys");

/// In a fleet: records stored or deleted here, not yet published (n → event JSON).
pub(crate) const FLEET_OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("fleet_outbox");
/// `meta` key: the record stream's position an index node has applied (u64 BE).
pub(crate) const FLEET_POSITION: &str = "fleet-records-position";
/// `meta` key: fleet outbox rows dropped because it was full (u64 BE).
pub(crate) const FLEET_OUTBOX_DROPPED: &str = "fleet-outbox-dropped";
/// `meta` key: which domains an index node keeps (its shard, as the fleet
/// module wrote it; absent: every domain).
pub(crate) const FLEET_SHARD: &str = "fleet-index-shard";

/// A record stored or deleted on a node of a fleet, as the record stream
/// carries it (docs/fleet.md has the JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FleetEvent {
    Stored(Record),
    Deleted(Record),
}

impl FleetEvent {
    pub fn record(&self) -> &Record {
        match self {
            FleetEvent::Stored(r) | FleetEvent::Deleted(r) => r,
        }
    }
}

/// The table layout this code reads and writes (`meta` key `schema`).
/// 2: `stream_records` holds a copy of each record.
/// 3: records are clustered by app and time (`app_records`), found by id through `record_ids`.
/// 4: intents carry the planned placements; `object_keys` (built from the records when opening layout 3).
pub(crate) const SCHEMA_VERSION: u32 = 4;
pub(crate) const SCHEMA_KEY: &str = "schema";

/// redb's page cache: bounded, so the index's memory does not follow the
/// database as it grows (redb's default allows 1 GiB).
const CACHE_BYTES: usize = 8 << 20;

/// An opaque, unique snapshot id: creation ms in the high bits, random low bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(pub u128);

impl RecordId {
    pub fn new(create_timestamp_ms: u64) -> Self {
        RecordId(u128::from(create_timestamp_ms) << 64 | u128::from(rand::random::<u64>()))
    }

    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok().map(RecordId)).flatten()
    }
}

impl std::fmt::Display for RecordId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// One stored JPG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: RecordId,
    pub domain: String,
    pub app: String,
    pub stream: String,
    pub create_timestamp_ms: u64,
    pub key: String,
    pub storage: String,
    pub endpoint: String,
    pub bucket: String,
    pub size: u64,
    pub width: u32,
    pub height: u32,
    pub is_overlay: bool,
    pub sequence: u64,
    /// The fleet node that stored it ("" on a node alone).
    pub node: String,
}

/// A capture whose objects may be written but whose records are not yet
/// committed: committed before the first object is written, so recovery
/// finds its objects by these planned keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    pub domain: String,
    pub app: String,
    pub stream: String,
    pub create_timestamp_ms: u64,
    pub sequence: u64,
    pub storage: String,
    /// What the policy chose, in order.
    pub placements: Vec<Planned>,
    /// The JPG's length and MD5: an object found at recovery is this
    /// capture's only if both match.
    pub size: u64,
    pub md5: [u8; 16],
    pub width: u32,
    pub height: u32,
}

/// One object a capture is to write: a sequential key may end up suffixed (docs/templates.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub key: String,
    pub overwrite: bool,
}

/// An object to remove from storage: its record is already deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tombstone {
    pub domain: String,
    pub storage: String,
    pub key: String,
}

/// One callback to deliver (docs/callbacks.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub domain: String,
    pub url: String,
    /// `live_snapshot` or `live_snapshot_deleted`.
    pub event: String,
    pub record_id: String,
    /// The JSON body, as sent every time.
    pub body: String,
    pub created_ms: u64,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// Where a delivery sits in the outbox: (due ms, delivery id).
pub type OutboxKey = (u64, u128);

/// Deliveries due now, and when the next one after them is due.
pub type OutboxDue = (Vec<(OutboxKey, Delivery)>, Option<u64>);

/// What happened to a delivery the worker tried.
#[derive(Debug, Clone)]
pub enum OutboxChange {
    Delivered(OutboxKey),
    Retry(OutboxKey, u64, Delivery),
    Failed(OutboxKey, Delivery),
}

/// Makes the callbacks telling of a stored or deleted record, inside the
/// transaction that stores or deletes it (so they are committed with it,
/// and see the record's final id).
pub type RecordEvents = Box<dyn Fn(&Record) -> Vec<Delivery> + Send>;

/// A plugin's staged state writes for its domain (`None` deletes a key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateWrites {
    pub domain: String,
    pub writes: Vec<(String, Option<Vec<u8>>)>,
}

/// A catalog entry's key: (kind, domain, name).
pub type CatalogKey = (String, String, String);

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index database: {0}")]
    Db(#[from] redb::Error),
    #[error("index database is corrupt: {0}")]
    Corrupt(String),
    #[error("index writer has stopped")]
    Stopped,
    #[error("open index at {path}: {source}")]
    Open { path: String, source: redb::Error },
    #[error(
        "index at {path} has table layout {found}, this edgesnap reads layout {SCHEMA_VERSION}; move it away (there is no migration before 1.0)"
    )]
    Schema { path: String, found: String },
}

pub(crate) fn db<E: Into<redb::Error>>(e: E) -> IndexError {
    IndexError::Db(e.into())
}

/// A page query over one stream or a whole app.
#[derive(Debug, Clone)]
pub struct Query {
    pub domain: String,
    pub app: String,
    pub stream: Option<String>,
    /// Inclusive bounds, unix ms.
    pub start_ms: u64,
    pub end_ms: u64,
    pub limit: usize,
    pub descending: bool,
    /// Resume at this (create_ts, id), inclusive, in the scan direction.
    pub cursor: Option<(u64, RecordId)>,
}

/// One page and where the next starts.
#[derive(Debug)]
pub struct Page {
    pub records: Vec<Record>,
    pub next: Option<(u64, RecordId)>,
}

pub struct Index {
    db: Arc<Database>,
    writer: writer::Handle,
    /// The next `{Sequence}` of each stream that allocated one since start;
    /// others start from `sequences`.
    sequences: std::sync::Mutex<HashMap<crate::stream::StreamKey, u64>>,
    /// In a fleet, the node id stamped on committed records.
    fleet: writer::FleetNode,
    /// In a fleet, where each stream's reserved block of `{Sequence}` ends.
    blocks: std::sync::Mutex<HashMap<crate::stream::StreamKey, u64>>,
}

impl Index {
    pub fn open(path: &Path) -> Result<Index, IndexError> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| IndexError::Open { path: path.display().to_string(), source: e.into() })?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            // Create every table so readers never meet a missing one.
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(BY_STREAM).map_err(db_err)?;
            txn.open_table(IDS).map_err(db_err)?;
            txn.open_table(OVERLAYS).map_err(db_err)?;
            txn.open_table(SEQUENCES).map_err(db_err)?;
            txn.open_table(INTENTS).map_err(db_err)?;
            txn.open_table(PLUGIN_STATE).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
            txn.open_table(CATALOG).map_err(db_err)?;
            txn.open_table(TOMBSTONES).map_err(db_err)?;
            txn.open_table(OUTBOX).map_err(db_err)?;
            txn.open_table(OUTBOX_FAILED).map_err(db_err)?;
            txn.open_table(OBJECT_KEYS).map_err(db_err)?;
            // The table layout's version: an index of another layout is refused, not misread.
            // Layout 1 had no marker; its table `records` gives it away.
            let legacy = txn.list_tables().map_err(db_err)?.any(|t| t.name() == "records");
            let mut meta = txn.open_table(META).map_err(db_err)?;
            let found = meta.get(SCHEMA_KEY).map_err(db_err)?.map(|v| v.value().to_vec());
            let bad = |found: String| IndexError::Schema { path: path.display().to_string(), found };
            match found {
                Some(v) if v == SCHEMA_VERSION.to_be_bytes() => {}
                Some(v) if v == 3u32.to_be_bytes() => {
                    drop(meta);
                    migrate_from_3(&txn)?;
                    let mut meta = txn.open_table(META).map_err(db_err)?;
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice()).map_err(db_err)?;
                }
                Some(v) => {
                    let n = <[u8; 4]>::try_from(v.as_slice())
                        .map_or_else(|_| format!("{v:?}"), |b| u32::from_be_bytes(b).to_string());
                    return Err(bad(n));
                }
                None if legacy => return Err(bad("1".into())),
                None => drop(meta.insert(SCHEMA_KEY, SCHEMA_VERSION.to_be_bytes().as_slice()).map_err(db_err)?),
            }
        }
        txn.commit().map_err(db_err)?;
        let db = Arc::new(db);
        let fleet = writer::FleetNode::default();
        let writer = writer::start(db.clone(), fleet.clone());
        Ok(Index { db, writer, sequences: Default::default(), fleet, blocks: Default::default() })
    }

    /// Makes this index a fleet node's: every record it commits carries
    /// `node`, and each stored or deleted record is put in the fleet outbox
    /// in the same transaction. Set once, before the first commit.
    pub fn join_fleet(&self, node: &str) {
        let _ = self.fleet.set(node.to_owned());
    }

    /// The oldest rows of the fleet outbox, in order: (n, event JSON).
    pub fn fleet_outbox(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = match txn.open_table(FLEET_OUTBOX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(db_err(e)),
        };
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)?.take(limit) {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// How many rows wait in the fleet outbox.
    pub fn fleet_outbox_depth(&self) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        match txn.open_table(FLEET_OUTBOX) {
            Ok(t) => t.len().map_err(db_err),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(db_err(e)),
        }
    }

    /// Fleet outbox rows dropped, in all, because it was full.
    pub fn fleet_outbox_dropped(&self) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        let v = t.get(FLEET_OUTBOX_DROPPED).map_err(db_err)?;
        Ok(v.and_then(|v| v.value().try_into().ok()).map_or(0, u64::from_be_bytes))
    }

    /// Removes the fleet outbox's rows up to `upto` (published).
    pub async fn fleet_published(&self, upto: u64) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Published { upto, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Applies other nodes' records and keeps the record stream's position
    /// they bring this index to, in one commit.
    pub async fn replicate(&self, events: Vec<FleetEvent>, position: u64) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Replicate { events, position, shard: None, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Keeps which domains this index node keeps (`shard`, opaque here) and
    /// the record stream position it goes on from, in one commit.
    pub async fn keep_fleet_shard(&self, shard: Vec<u8>, position: u64) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Replicate { events: Vec::new(), position, shard: Some(shard), reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// What [`Index::keep_fleet_shard`] kept last (None: never).
    pub fn fleet_shard(&self) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(FLEET_SHARD).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// The record stream's position this index has applied (0: none).
    pub fn fleet_position(&self) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        let v = t.get(FLEET_POSITION).map_err(db_err)?;
        Ok(v.and_then(|v| v.value().try_into().ok()).map_or(0, u64::from_be_bytes))
    }

    /// Allocates the next `{Sequence}` of a stream. It becomes durable with
    /// the intent that uses it ([`Index::reserve`]); one allocated but never
    /// reserved stored nothing, so reusing it after a crash is harmless.
    pub fn next_sequence(&self, key: crate::stream::StreamKey) -> Result<u64, IndexError> {
        let mut seqs = self.sequences.lock().unwrap();
        let next = match seqs.get(&key) {
            Some(n) => *n,
            None => self.stored_next_sequence(&key)?,
        };
        if self.blocks.lock().unwrap().get(&key).is_some_and(|end| next >= *end) {
            tracing::warn!(
                domain = %key.domain, app = %key.app, stream = %key.stream, sequence = next,
                "{{Sequence}} past the block this node reserved in the fleet (NATS unreachable for long): it may repeat on another node"
            );
        }
        seqs.insert(key, next + 1);
        Ok(next)
    }

    fn stored_next_sequence(&self, key: &crate::stream::StreamKey) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(SEQUENCES).map_err(db_err)?;
        Ok(t.get((key.domain.as_str(), key.app.as_str(), key.stream.as_str()))
            .map_err(db_err)?
            .map_or(0, |v| v.value()))
    }

    /// The `{Sequence}` a stream would take next here.
    pub fn peek_sequence(&self, key: &crate::stream::StreamKey) -> Result<u64, IndexError> {
        match self.sequences.lock().unwrap().get(key) {
            Some(n) => Ok(*n),
            None => self.stored_next_sequence(key),
        }
    }

    /// In a fleet: this node may number a stream's captures from `start`
    /// up to (not with) `end`, a block reserved fleet-wide; the stream's
    /// next `{Sequence}` is raised to `start` if below it.
    pub fn sequence_block(&self, key: crate::stream::StreamKey, start: u64, end: u64) -> Result<(), IndexError> {
        let current = self.peek_sequence(&key)?;
        self.sequences.lock().unwrap().insert(key.clone(), current.max(start));
        self.blocks.lock().unwrap().insert(key, end);
        Ok(())
    }

    /// How many numbers are left in a stream's reserved block (None: no block).
    pub fn sequence_room(&self, key: &crate::stream::StreamKey) -> Result<Option<u64>, IndexError> {
        let Some(end) = self.blocks.lock().unwrap().get(key).copied() else { return Ok(None) };
        Ok(Some(end.saturating_sub(self.peek_sequence(key)?)))
    }

    /// Records a capture's intent (its sequence and planned placements) in
    /// one commit, before any of its objects is written.
    pub async fn reserve(&self, id: RecordId, intent: Intent) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Reserve { id, intent, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// The record holding the object at `key` of a domain's target.
    pub fn key_owner(&self, domain: &str, storage: &str, key: &str) -> Result<Option<RecordId>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(OBJECT_KEYS).map_err(db_err)?;
        Ok(t.get((domain, storage, key)).map_err(db_err)?.map(|v| RecordId(v.value())))
    }

    /// Commits the records of a capture and clears its intent. An overwrite
    /// record replaces the stream's previous record of the same key, keeping
    /// its id. Returns the records as stored.
    pub async fn commit(&self, intent: RecordId, records: Vec<Record>) -> Result<Vec<Record>, IndexError> {
        self.commit_capture(intent, records, None, None).await
    }

    /// [`Index::commit`], with the state writes of the plugin that named the
    /// capture and each stored record's `events` (callbacks into the outbox)
    /// in the same transaction.
    pub async fn commit_capture(
        &self,
        intent: RecordId,
        records: Vec<Record>,
        state: Option<StateWrites>,
        events: Option<RecordEvents>,
    ) -> Result<Vec<Record>, IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Commit { intent, records, state, events, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Clears an intent whose capture stored nothing; with `state`, the
    /// writes of the plugin that chose to skip it, in the same transaction.
    pub async fn abandon(&self, intent: RecordId, state: Option<StateWrites>) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Abandon { intent, state, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Commits a plugin's staged state writes (`None` deletes).
    pub async fn commit_plugin_state(
        &self,
        domain: String,
        writes: Vec<(String, Option<Vec<u8>>)>,
    ) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::State { domain, writes, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Writes catalog entries (`None` deletes) in one commit; with
    /// `clear_domain`, first removes every entry of that domain.
    pub async fn write_catalog(
        &self,
        clear_domain: Option<String>,
        writes: Vec<(CatalogKey, Option<Vec<u8>>)>,
    ) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Catalog { clear_domain, writes, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Every catalog entry, in key order.
    pub fn catalog(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CATALOG).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let (kind, domain, name) = k.value();
            out.push(((kind.to_owned(), domain.to_owned(), name.to_owned()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Deletes records (and their secondary keys) in one commit. With
    /// `tombstone`, each removed record's object is queued for removal in
    /// the same commit. Returns the records that existed.
    pub async fn delete(&self, ids: Vec<RecordId>, tombstone: bool) -> Result<Vec<Record>, IndexError> {
        self.delete_with_events(ids, tombstone, None).await
    }

    /// [`Index::delete`], putting each deleted record's `events` in the
    /// outbox in the same transaction.
    pub async fn delete_with_events(
        &self,
        ids: Vec<RecordId>,
        tombstone: bool,
        events: Option<RecordEvents>,
    ) -> Result<Vec<Record>, IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Delete { ids, tombstone, events, reply })?;
        let removed = rx.await.map_err(|_| IndexError::Stopped)??;
        for r in &removed {
            tracing::debug!(
                domain = %r.domain, app = %r.app, stream = %r.stream, id = %r.id, key = %r.key,
                file_removed_too = tombstone, "snapshot deleted"
            );
        }
        Ok(removed)
    }

    /// Applies what the delivery worker did, in one commit.
    pub async fn outbox_apply(&self, changes: Vec<OutboxChange>) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Outbox { changes, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Puts a domain's failed deliveries (all, or those named) back in the
    /// outbox, due now, with their attempts reset. Returns how many.
    pub async fn outbox_replay(&self, domain: String, ids: Option<Vec<u128>>) -> Result<usize, IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::Replay { domain, ids, now_ms: crate::unix_ms(), reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Deliveries due by `now_ms`, soonest first, and when the next one after them is due.
    pub fn outbox_due(&self, now_ms: u64, limit: usize) -> Result<OutboxDue, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(OUTBOX).map_err(db_err)?;
        let mut due = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value();
            if key.0 > now_ms || due.len() == limit {
                return Ok((due, Some(key.0)));
            }
            due.push((key, decode_delivery(v.value())?));
        }
        Ok((due, None))
    }

    /// Deliveries waiting per domain.
    pub fn outbox_pending(&self) -> Result<HashMap<String, usize>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(OUTBOX).map_err(db_err)?;
        let mut out = HashMap::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            *out.entry(decode_delivery(v.value())?.domain).or_default() += 1;
        }
        Ok(out)
    }

    /// A domain's failed deliveries, oldest first.
    pub fn outbox_failed(&self, domain: &str) -> Result<Vec<(u128, Delivery)>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(OUTBOX_FAILED).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let d = decode_delivery(v.value())?;
            if d.domain == domain {
                out.push((k.value(), d));
            }
        }
        Ok(out)
    }

    /// Clears tombstones whose objects are gone.
    pub async fn clear_tombstones(&self, ids: Vec<RecordId>) -> Result<(), IndexError> {
        let (reply, rx) = oneshot::channel();
        self.writer.send(writer::Op::ClearTombstones { ids, reply })?;
        rx.await.map_err(|_| IndexError::Stopped)?
    }

    /// Clears tombstones with the next commit of any kind, without waiting.
    /// Until then (or if the host stops first) they stay, and the next start
    /// removes their objects again, which finds nothing.
    pub fn clear_tombstones_later(&self, ids: Vec<RecordId>) {
        self.writer.later.lock().unwrap().extend(ids);
    }

    /// Objects still to remove (a crash came between record and object).
    pub fn tombstones(&self) -> Result<Vec<(RecordId, Tombstone)>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(TOMBSTONES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let ts = rows::decode_tombstone(v.value())?;
            out.push((RecordId(k.value()), ts));
        }
        Ok(out)
    }

    /// For each create_timestamp, every record of the stream with it (a
    /// sequential record, and the overwrite record while it shows that
    /// capture). One read transaction.
    pub fn records_at(
        &self,
        domain: &str,
        app: &str,
        stream: &str,
        stamps: &[u64],
    ) -> Result<Vec<Vec<Record>>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let by_stream = txn.open_table(BY_STREAM).map_err(db_err)?;
        let mut out = Vec::with_capacity(stamps.len());
        for &ts in stamps {
            let mut found = Vec::new();
            let range = (domain, app, stream, ts, 0u128)..=(domain, app, stream, ts, u128::MAX);
            for item in by_stream.range(range).map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                found.push(decode_record(k.value().4, v.value())?);
            }
            out.push(found);
        }
        Ok(out)
    }

    /// Reads the pages a delete of these records will change, from several
    /// threads at once: on a cold index the delete's single writer would
    /// otherwise fetch them one random read at a time.
    pub fn prefetch_for_delete(&self, records: &[Record]) {
        const THREADS: usize = 8;
        if records.len() < 2 * THREADS {
            return;
        }
        let chunk = records.len().div_ceil(THREADS);
        std::thread::scope(|scope| {
            for part in records.chunks(chunk) {
                scope.spawn(move || -> Result<(), IndexError> {
                    let txn = self.db.begin_read().map_err(db_err)?;
                    let recs = txn.open_table(RECORDS).map_err(db_err)?;
                    let ids = txn.open_table(IDS).map_err(db_err)?;
                    for r in part {
                        ids.get(r.id.0).map_err(db_err)?;
                        recs.get((r.domain.as_str(), r.app.as_str(), r.create_timestamp_ms, r.id.0)).map_err(db_err)?;
                    }
                    Ok(())
                });
            }
        });
    }

    /// Records by id (None where there is none). One read transaction.
    pub fn get_many(&self, ids: &[RecordId]) -> Result<Vec<Option<Record>>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let (locs, recs) = (txn.open_table(IDS).map_err(db_err)?, txn.open_table(RECORDS).map_err(db_err)?);
        ids.iter().map(|id| lookup(&locs, &recs, *id)).collect()
    }

    /// Up to `limit` record ids of a domain, oldest first (for deleting a domain).
    pub fn domain_record_ids(&self, domain: &str, limit: usize) -> Result<Vec<RecordId>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let recs = txn.open_table(RECORDS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in recs.range((domain, "", 0u64, 0u128)..).map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            let k = k.value();
            if k.0 != domain || out.len() >= limit {
                break;
            }
            out.push(RecordId(k.3));
        }
        Ok(out)
    }

    /// Every domain with a record here, in name order (one seek per domain).
    pub fn record_domains(&self) -> Result<Vec<String>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let recs = txn.open_table(RECORDS).map_err(db_err)?;
        let mut out: Vec<String> = Vec::new();
        loop {
            // The least name after the last one found is that name and a NUL.
            let from = out.last().map(|d| format!("{d}\0")).unwrap_or_default();
            let first = recs.range((from.as_str(), "", 0u64, 0u128)..).map_err(db_err)?.next();
            match first {
                Some(item) => out.push(item.map_err(db_err)?.0.value().0.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// A page of a domain's records in (app, time, id) order, after `after`.
    pub fn domain_records(
        &self,
        domain: &str,
        after: Option<&Record>,
        limit: usize,
    ) -> Result<Vec<Record>, IndexError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(db_err)?;
        let recs = txn.open_table(RECORDS).map_err(db_err)?;
        let start = match after {
            Some(r) => Bound::Excluded((domain, r.app.as_str(), r.create_timestamp_ms, r.id.0)),
            None => Bound::Included((domain, "", 0u64, 0u128)),
        };
        let mut out = Vec::new();
        for item in recs.range::<(&str, &str, u64, u128)>((start, Bound::Unbounded)).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let key = k.value();
            if key.0 != domain || out.len() >= limit {
                break;
            }
            out.push(decode_record(key.3, v.value())?);
        }
        Ok(out)
    }

    pub fn plugin_state(&self, domain: &str, key: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PLUGIN_STATE).map_err(db_err)?;
        Ok(t.get((domain, key)).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// The bytes (keys and values) of a domain's plugin state.
    pub fn plugin_state_usage(&self, domain: &str) -> Result<u64, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(PLUGIN_STATE).map_err(db_err)?;
        let mut bytes = 0u64;
        for entry in t.range((domain, "")..).map_err(db_err)? {
            let (k, v) = entry.map_err(db_err)?;
            let (d, key) = k.value();
            if d != domain {
                break;
            }
            bytes += (key.len() + v.value().len()) as u64;
        }
        Ok(bytes)
    }

    pub fn get(&self, id: RecordId) -> Result<Option<Record>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let (locs, recs) = (txn.open_table(IDS).map_err(db_err)?, txn.open_table(RECORDS).map_err(db_err)?);
        lookup(&locs, &recs, id)
    }

    /// The newest record of a stream (its overwrite record counts).
    pub fn latest(&self, domain: &str, app: &str, stream: &str) -> Result<Option<Record>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let by_stream = txn.open_table(BY_STREAM).map_err(db_err)?;
        let last = by_stream
            .range((domain, app, stream, 0u64, 0u128)..=(domain, app, stream, u64::MAX, u128::MAX))
            .map_err(db_err)?
            .next_back()
            .transpose()
            .map_err(db_err)?;
        let Some((k, v)) = last else { return Ok(None) };
        decode_record(k.value().4, v.value()).map(Some)
    }

    /// Streams of an app that ever took a `{Sequence}`, starting with `prefix`.
    pub fn stream_names(&self, domain: &str, app: &str, prefix: &str, limit: usize) -> Result<Vec<String>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(SEQUENCES).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.range((domain, app, prefix)..).map_err(db_err)? {
            let (k, _) = item.map_err(db_err)?;
            let (d, a, s) = k.value();
            if d != domain || a != app || !s.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push(s.to_owned());
        }
        Ok(out)
    }

    pub fn query(&self, q: &Query) -> Result<Page, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let (mut lo, mut hi) = ((q.start_ms, 0u128), (q.end_ms, u128::MAX));
        if let Some((ts, id)) = q.cursor {
            if q.descending { hi = hi.min((ts, id.0)) } else { lo = lo.max((ts, id.0)) }
        }
        if lo > hi {
            return Ok(Page { records: Vec::new(), next: None });
        }
        let mut out: Vec<Record> = Vec::with_capacity(q.limit + 1);
        match &q.stream {
            Some(stream) => {
                // The stream's table holds the records: one range read.
                let t = txn.open_table(BY_STREAM).map_err(db_err)?;
                let (d, a, s) = (q.domain.as_str(), q.app.as_str(), stream.as_str());
                let range = t.range((d, a, s, lo.0, lo.1)..=(d, a, s, hi.0, hi.1)).map_err(db_err)?;
                let rows: Box<dyn Iterator<Item = _>> =
                    if q.descending { Box::new(range.rev()) } else { Box::new(range) };
                for item in rows.take(q.limit + 1) {
                    let (k, v) = item.map_err(db_err)?;
                    out.push(decode_record(k.value().4, v.value())?);
                }
            }
            None => {
                // A whole app: its records are clustered by time.
                let t = txn.open_table(RECORDS).map_err(db_err)?;
                let (d, a) = (q.domain.as_str(), q.app.as_str());
                let range = t.range((d, a, lo.0, lo.1)..=(d, a, hi.0, hi.1)).map_err(db_err)?;
                let rows: Box<dyn Iterator<Item = _>> =
                    if q.descending { Box::new(range.rev()) } else { Box::new(range) };
                for item in rows.take(q.limit + 1) {
                    let (k, v) = item.map_err(db_err)?;
                    out.push(decode_record(k.value().3, v.value())?);
                }
            }
        }
        let next = (out.len() > q.limit).then(|| {
            let r = out.pop().expect("more than limit");
            (r.create_timestamp_ms, r.id)
        });
        Ok(Page { records: out, next })
    }

    /// A host secret an earlier version kept in the database (the host
    /// keeps its secrets in files now: `datadir`).
    pub fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(META).map_err(db_err)?;
        Ok(t.get(name).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Removes a host secret from the database (it has moved to a file).
    pub fn forget_secret(&self, name: &str) -> Result<(), IndexError> {
        if self.secret(name)?.is_none() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?.remove(name).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    #[cfg(test)]
    pub(crate) fn put_secret_for_test(&self, name: &str, value: &[u8]) {
        let txn = self.db.begin_write().unwrap();
        txn.open_table(META).unwrap().insert(name, value).unwrap();
        txn.commit().unwrap();
    }

    /// Intents left by a crash: captures that may have objects but no records.
    pub fn pending_intents(&self) -> Result<Vec<(RecordId, Intent)>, IndexError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(INTENTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let intent = rows::decode_intent(v.value())?;
            out.push((RecordId(k.value()), intent));
        }
        Ok(out)
    }

    /// Stops the writer after the queued writes are committed.
    pub fn close(self) {
        self.writer.close();
    }
}

/// Layout 3 → 4: converts pending intents (no placements: recovery logs
/// and drops them, as layout 3 did) and builds `object_keys` from the records.
fn migrate_from_3(txn: &redb::WriteTransaction) -> Result<(), IndexError> {
    let mut intents = txn.open_table(INTENTS).map_err(db_err)?;
    let mut converted = Vec::new();
    for item in intents.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let old = rows::decode_intent_v3(v.value())?;
        let new = Intent {
            domain: old.domain,
            app: old.app,
            stream: old.stream,
            create_timestamp_ms: old.create_timestamp_ms,
            sequence: old.sequence,
            storage: old.storage,
            placements: Vec::new(),
            size: 0,
            md5: [0; 16],
            width: 0,
            height: 0,
        };
        converted.push((k.value(), rows::encode_intent(&new)));
    }
    for (k, v) in converted {
        intents.insert(k, v.as_slice()).map_err(db_err)?;
    }
    let recs = txn.open_table(RECORDS).map_err(db_err)?;
    let mut keys = txn.open_table(OBJECT_KEYS).map_err(db_err)?;
    for item in recs.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let r = decode_record(k.value().3, v.value())?;
        keys.insert((r.domain.as_str(), r.storage.as_str(), r.key.as_str()), r.id.0).map_err(db_err)?;
    }
    Ok(())
}

/// A record by id: its place in `record_ids`, then its row.
fn lookup(
    locs: &impl ReadableTable<u128, (&'static str, &'static str, u64)>,
    recs: &impl ReadableTable<(&'static str, &'static str, u64, u128), &'static [u8]>,
    id: RecordId,
) -> Result<Option<Record>, IndexError> {
    let Some(loc) = locs.get(id.0).map_err(db_err)? else { return Ok(None) };
    let (d, a, ts) = loc.value();
    let row = recs
        .get((d, a, ts, id.0))
        .map_err(db_err)?
        .ok_or_else(|| IndexError::Corrupt(format!("record_ids names missing record {:032x}", id.0)))?;
    decode_record(id.0, row.value()).map(Some)
}

fn db_err<E: Into<redb::Error>>(e: E) -> IndexError {
    db(e)
}
