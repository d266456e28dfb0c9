//! The local spool (docs/storage.md): a capture whose storage target is down waits
//! here, on disk, and is stored when the target answers again, in capture
//! order per target. Its index records are committed only once its objects
//! are stored. Also settles, at start, the captures that were in flight at
//! a crash.
//!
//! Invariants:
//! - A spooled capture has an intent in the index (committed before any of
//!   its objects was written) and two files, `{id}.jpg` and `{id}.json`
//!   (which placements are stored, at which keys); the JSON is replaced
//!   atomically after each object stored, so a crash never stores one twice.
//! - While a target has spooled captures, new captures for it join the end
//!   of its queue: nothing overtakes an older capture of its stream. A
//!   target's queue drains `DRAIN_BATCH` captures at a time, each of another
//!   stream (each stream's oldest, uploaded together), so a target of many
//!   streams is not drained one round trip at a time.
//! - A domain may fill `spool_domain_share` percent of `spool_max_bytes`;
//!   past that (or past the whole spool) new captures for its down targets
//!   are skipped, counted and logged. Nothing spooled is ever dropped.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use md5::Digest;
use serde::{Deserialize, Serialize};

use crate::config::Settings;
use crate::index::{Index, Intent, Record, RecordId};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::storage::{Storage, StorageError, Target};

/// Sequential keys tried at recovery (as many as a write would try).
const MAX_SUFFIX: usize = 1000;
/// Backoff between attempts at a down target.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// Spooled captures of one target stored at once (at most one per stream).
const DRAIN_BATCH: usize = 16;
/// Queued captures looked at to fill a batch.
const DRAIN_SCAN: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error(
        "spool full for domain {domain:?}: {used} of {limit} bytes used (server.spool_max_mib, server.spool_domain_share)"
    )]
    Full { domain: String, used: u64, limit: u64 },
    #[error("spool {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// One spooled capture: its intent and, per placement, the key it is stored at.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: u128,
    intent: Intent,
    stored: Vec<Option<String>>,
}

type TargetKey = (String, String);

/// A spooled capture in its target's queue: its bytes and its (app, stream).
struct Queued {
    len: u64,
    stream: (String, String),
}

#[derive(Default)]
struct Queue {
    /// Spooled captures by id (capture time first).
    entries: BTreeMap<u128, Queued>,
    /// Whether a task is draining this queue.
    draining: bool,
    /// Since when (unix ms) and why the target is down.
    down: Option<(u64, String)>,
}

impl Queue {
    /// The next captures to store together: each stream's oldest, oldest
    /// first, at most `DRAIN_BATCH`, from the first `DRAIN_SCAN` queued (a
    /// queue of few streams then costs little per batch).
    fn next_batch(&self) -> Vec<(u128, u64)> {
        let mut streams = std::collections::HashSet::new();
        self.entries
            .iter()
            .take(DRAIN_SCAN)
            .filter(|(_, e)| streams.insert(&e.stream))
            .take(DRAIN_BATCH)
            .map(|(id, e)| (*id, e.len))
            .collect()
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<TargetKey, Queue>,
    domain_bytes: HashMap<String, u64>,
    total: u64,
    peak: u64,
}

/// What `/readyz` and the streams API show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub bytes: u64,
    pub max_bytes: u64,
    pub peak_bytes: u64,
    pub entries: usize,
    pub targets_down: Vec<TargetDown>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetDown {
    pub domain: String,
    pub target: String,
    pub since_ms: u64,
    pub error: String,
    pub spooled: usize,
}

pub struct Spool {
    dir: PathBuf,
    index: Arc<Index>,
    storage: Arc<Storage>,
    notifier: Arc<Notifier>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Draining and settling tasks, and their stop: at shutdown what is
    /// spooled stays on disk for the next start.
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Spool {
    pub fn new(
        dir: PathBuf,
        index: Arc<Index>,
        storage: Arc<Storage>,
        notifier: Arc<Notifier>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Arc::new(Spool {
            dir,
            index,
            storage,
            notifier,
            settings,
            metrics,
            state: Default::default(),
            tasks: Default::default(),
            stop: Default::default(),
        }))
    }

    /// Stops draining: an upload under way finishes (or fails), and what is
    /// still spooled waits on disk for the next start.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Whether a target has spooled captures waiting (new ones join them).
    pub fn backlog(&self, domain: &str, target: &str) -> bool {
        let st = self.state.lock().unwrap();
        st.queues.get(&(domain.to_owned(), target.to_owned())).is_some_and(|q| !q.entries.is_empty())
    }

    /// Notes that a write to a target failed.
    pub fn target_failed(&self, domain: &str, target: &str, error: &str) {
        let mut st = self.state.lock().unwrap();
        let q = st.queues.entry((domain.to_owned(), target.to_owned())).or_default();
        if q.down.is_none() {
            tracing::warn!(%domain, %target, %error, "storage target is down; captures go to the local spool");
            q.down = Some((crate::unix_ms(), error.to_owned()));
        }
        self.metrics
            .target_up
            .get_or_create(&vec![("domain", domain.to_owned()), ("target", target.to_owned())])
            .set(0);
    }

    fn target_answered(&self, domain: &str, target: &str) {
        let mut st = self.state.lock().unwrap();
        if let Some(q) = st.queues.get_mut(&(domain.to_owned(), target.to_owned()))
            && q.down.take().is_some()
        {
            tracing::info!(%domain, %target, "storage target answers again");
        }
        self.metrics
            .target_up
            .get_or_create(&vec![("domain", domain.to_owned()), ("target", target.to_owned())])
            .set(1);
    }

    /// Spools a capture whose objects are not (all) stored: `stored` says
    /// which placements are. Refused when the domain's share is full.
    pub async fn add(
        self: &Arc<Self>,
        id: RecordId,
        intent: Intent,
        jpg: Bytes,
        stored: Vec<Option<String>>,
    ) -> Result<(), SpoolError> {
        let len = jpg.len() as u64;
        let domain = intent.domain.clone();
        let key = (intent.domain.clone(), intent.storage.clone());
        let stream = (intent.app.clone(), intent.stream.clone());
        {
            let server = &self.settings.get().server;
            let mut st = self.state.lock().unwrap();
            let used = st.domain_bytes.get(&domain).copied().unwrap_or(0);
            let share = server.spool_max_bytes * u64::from(server.spool_domain_share) / 100;
            if used + len > share || st.total + len > server.spool_max_bytes {
                let (used, limit) = if used + len > share { (used, share) } else { (st.total, server.spool_max_bytes) };
                return Err(SpoolError::Full { domain, used, limit });
            }
            // Counted before the files are written: two adds cannot both take the last room.
            st.total += len;
            st.peak = st.peak.max(st.total);
            *st.domain_bytes.entry(domain.clone()).or_default() += len;
        }
        let entry = Entry { id: id.0, intent, stored };
        let written = async {
            write_atomic(&self.jpg_path(id.0), jpg).await?;
            self.write_entry(&entry).await
        }
        .await;
        if let Err(e) = written {
            self.release(&domain, len);
            return Err(e);
        }
        self.metrics.snapshots_spooled.get_or_create(&vec![("domain", domain.clone())]).inc();
        self.enqueue(key, id.0, Queued { len, stream });
        Ok(())
    }

    /// Puts a spooled capture in its target's queue and makes sure the queue drains.
    fn enqueue(self: &Arc<Self>, key: TargetKey, id: u128, queued: Queued) {
        let start = {
            let mut st = self.state.lock().unwrap();
            let q = st.queues.entry(key.clone()).or_default();
            q.entries.insert(id, queued);
            !std::mem::replace(&mut q.draining, true)
        };
        self.publish(&key.0);
        if start {
            self.tasks.spawn(self.clone().drain(key));
        }
    }

    fn release(&self, domain: &str, len: u64) {
        let mut st = self.state.lock().unwrap();
        st.total -= len;
        *st.domain_bytes.entry(domain.to_owned()).or_default() -= len;
    }

    /// Sets the spool gauges of a domain.
    fn publish(&self, domain: &str) {
        let st = self.state.lock().unwrap();
        let entries: usize = st.queues.iter().filter(|((d, _), _)| d == domain).map(|(_, q)| q.entries.len()).sum();
        let labels = vec![("domain", domain.to_owned())];
        self.metrics.spool_entries.get_or_create(&labels).set(entries as i64);
        self.metrics.spool_bytes.get_or_create(&labels).set(st.domain_bytes.get(domain).copied().unwrap_or(0) as i64);
        self.metrics.spool_peak_bytes.set(st.peak as i64);
    }

    /// Stores a target's spooled captures oldest first (per stream), a
    /// batch at a time, retried with backoff until the target answers;
    /// commits each one's records once stored.
    async fn drain(self: Arc<Self>, key: TargetKey) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            if self.stop.is_cancelled() {
                self.state.lock().unwrap().queues.get_mut(&key).expect("queue").draining = false;
                return;
            }
            let batch = {
                let mut st = self.state.lock().unwrap();
                let q = st.queues.get_mut(&key).expect("a draining queue exists");
                if q.entries.is_empty() {
                    q.draining = false;
                    return;
                }
                q.next_batch()
            };
            let results = futures::future::join_all(batch.iter().map(|(id, _)| self.upload(*id))).await;
            let mut failed = None;
            for ((id, len), result) in batch.into_iter().zip(results) {
                match result {
                    Ok(()) => {
                        self.state.lock().unwrap().queues.get_mut(&key).expect("queue").entries.remove(&id);
                        self.release(&key.0, len);
                    }
                    Err(e) => failed = Some(e),
                }
            }
            self.publish(&key.0);
            match failed {
                None => {
                    backoff = BACKOFF_FIRST;
                    self.target_answered(&key.0, &key.1);
                }
                Some(e) => {
                    self.target_failed(&key.0, &key.1, &e);
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Stores what is left of one spooled capture, commits its records and
    /// removes its files.
    async fn upload(&self, id: u128) -> Result<(), String> {
        let mut entry = self.read_entry(id).await.map_err(|e| e.to_string())?;
        let jpg = tokio::fs::read(self.jpg_path(id))
            .await
            .map_err(|e| format!("read spooled {}: {e}", self.jpg_path(id).display()))?;
        let target = match self.storage.target(&entry.intent.domain, &entry.intent.storage) {
            Ok(t) => t,
            Err(e) => {
                // The domain or target is gone: nothing can store this capture any more.
                tracing::error!(id = %RecordId(id), error = %e, "spooled capture dropped: its target is no longer configured");
                let _ = self.index.abandon(RecordId(id), None).await;
                self.remove_files(id).await;
                return Ok(());
            }
        };
        let jpg = Bytes::from(jpg);
        for i in 0..entry.intent.placements.len() {
            if entry.stored[i].is_some() {
                continue;
            }
            let p = &entry.intent.placements[i];
            let key = if p.overwrite {
                target.put_overwrite(&p.key, jpg.clone()).await.map(|()| p.key.clone())
            } else {
                target.put_sequential(&p.key, jpg.clone()).await
            };
            match key {
                Ok(k) => {
                    entry.stored[i] = Some(k);
                    self.write_entry(&entry).await.map_err(|e| e.to_string())?;
                }
                Err(e @ StorageError::Backend { .. }) => return Err(e.to_string()),
                // A key the target refuses stays refused: the placement is given up.
                Err(e) => {
                    tracing::error!(id = %RecordId(id), error = %e, "one placement of a spooled capture cannot be stored");
                    entry.stored[i] = Some(String::new());
                }
            }
        }
        crate::failpoint!("spool-after-upload");
        let records = records_of(RecordId(id), &entry.intent, &entry.stored, &target);
        self.finish(RecordId(id), records).await.map_err(|e| format!("commit spooled capture: {e}"))?;
        self.metrics.snapshots_stored.inc();
        self.remove_files(id).await;
        Ok(())
    }

    /// At start: spooled captures go back in their queues; captures that
    /// were being stored when the host stopped are settled by looking for
    /// their objects (in the background, retried while a target is down).
    pub async fn recover(self: &Arc<Self>) -> Result<(), crate::index::IndexError> {
        let pending = self.index.pending_intents()?;
        let mut in_flight = Vec::new();
        let mut spooled = 0;
        for (id, intent) in pending {
            if intent.placements.is_empty() {
                // Layout-3 intents carry no placements: nothing to look for.
                tracing::warn!(%id, "a capture in flight before the upgrade has no record");
                self.index.abandon(id, None).await?;
                continue;
            }
            match self.read_entry(id.0).await {
                Ok(entry) => match tokio::fs::metadata(self.jpg_path(id.0)).await {
                    Ok(m) => {
                        {
                            let mut st = self.state.lock().unwrap();
                            st.total += m.len();
                            st.peak = st.peak.max(st.total);
                            *st.domain_bytes.entry(entry.intent.domain.clone()).or_default() += m.len();
                        }
                        let stream = (entry.intent.app.clone(), entry.intent.stream.clone());
                        let key = (entry.intent.domain.clone(), entry.intent.storage.clone());
                        self.enqueue(key, id.0, Queued { len: m.len(), stream });
                        spooled += 1;
                    }
                    Err(_) => in_flight.push((id, intent)),
                },
                Err(_) => in_flight.push((id, intent)),
            }
        }
        // Files whose capture is no longer pending (committed just before a crash).
        let mut dir =
            tokio::fs::read_dir(&self.dir).await.map_err(|e| crate::index::IndexError::Corrupt(e.to_string()))?;
        let mut stale = 0;
        while let Ok(Some(f)) = dir.next_entry().await {
            let name = f.file_name().to_string_lossy().into_owned();
            let id = name.split('.').next().and_then(RecordId::parse);
            let queued = id.is_some_and(|id| {
                let st = self.state.lock().unwrap();
                st.queues.values().any(|q| q.entries.contains_key(&id.0))
            });
            if !queued {
                let _ = tokio::fs::remove_file(f.path()).await;
                stale += 1;
            }
        }
        if spooled + in_flight.len() + stale > 0 {
            tracing::info!(
                spooled,
                in_flight = in_flight.len(),
                stale_files = stale,
                "recovering captures of the last run"
            );
        }
        if !in_flight.is_empty() {
            let spool = self.clone();
            self.tasks.spawn(async move {
                let mut backoff = BACKOFF_FIRST;
                while !in_flight.is_empty() && !spool.stop.is_cancelled() {
                    let mut left = Vec::new();
                    for (id, intent) in in_flight {
                        if let Err(e) = spool.settle(id, &intent).await {
                            tracing::warn!(%id, error = %e, "a capture in flight at the last stop is not settled yet");
                            left.push((id, intent));
                        }
                    }
                    in_flight = left;
                    if !in_flight.is_empty() {
                        spool.pause(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            });
        }
        Ok(())
    }

    /// Settles one capture that was being stored when the host stopped: an
    /// object at a planned key (or, for a sequential one, a suffixed key no
    /// record holds) with the capture's length and MD5 is its object and
    /// gets its record (an overwrite object only if no newer capture's
    /// record holds it); without any, the intent is dropped.
    async fn settle(&self, id: RecordId, intent: &Intent) -> Result<(), String> {
        let target = match self.storage.target(&intent.domain, &intent.storage) {
            Ok(t) => t,
            Err(_) => {
                self.index.abandon(id, None).await.map_err(|e| e.to_string())?;
                return Ok(());
            }
        };
        let mut stored = vec![None; intent.placements.len()];
        // The capture's own bytes: same length, same MD5.
        let ours = |key: String| {
            let target = target.clone();
            async move {
                match target.head_size(&key).await.map_err(|e| e.to_string())? {
                    None => Ok::<_, String>(None),
                    Some(size) if size != intent.size => Ok(Some(false)),
                    Some(_) => {
                        let bytes = target.get(&key).await.map_err(|e| e.to_string())?;
                        Ok(Some(<[u8; 16]>::from(md5::Md5::digest(&bytes)) == intent.md5))
                    }
                }
            }
        };
        for (i, p) in intent.placements.iter().enumerate() {
            if p.overwrite {
                if ours(p.key.clone()).await? == Some(true) {
                    // Not if a newer capture's record already holds the object.
                    let owner =
                        self.index.key_owner(&intent.domain, &intent.storage, &p.key).map_err(|e| e.to_string())?;
                    let newer = match owner {
                        Some(o) => self
                            .index
                            .get(o)
                            .map_err(|e| e.to_string())?
                            .is_some_and(|r| r.create_timestamp_ms > intent.create_timestamp_ms),
                        None => false,
                    };
                    if !newer {
                        stored[i] = Some(p.key.clone());
                    }
                }
                continue;
            }
            for candidate in crate::storage::candidates(&p.key).take(MAX_SUFFIX + 1) {
                let Some(same) = ours(candidate.clone()).await? else { break };
                let owner =
                    self.index.key_owner(&intent.domain, &intent.storage, &candidate).map_err(|e| e.to_string())?;
                if owner.is_none() && same {
                    stored[i] = Some(candidate);
                    break;
                }
            }
        }
        let records = records_of(id, intent, &stored, &target);
        let outcome = if records.is_empty() { "nothing" } else { "recorded" };
        tracing::info!(%id, domain = %intent.domain, app = %intent.app, stream = %intent.stream,
            objects = records.len(), "settled a capture in flight at the last stop");
        self.finish(id, records).await.map_err(|e| e.to_string())?;
        self.metrics.recovered.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
        Ok(())
    }

    /// Commits a capture's records with their callbacks, or drops its
    /// intent when nothing of it was stored.
    async fn finish(&self, id: RecordId, records: Vec<Record>) -> Result<(), crate::index::IndexError> {
        if records.is_empty() {
            return self.index.abandon(id, None).await;
        }
        let events = self.notifier.events_of(crate::notify::SNAPSHOT);
        self.index.commit_capture(id, records, None, Some(events)).await?;
        self.notifier.poke();
        Ok(())
    }

    /// Sleeps, unless the host is stopping.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(d) => {}
        }
    }

    pub fn status(&self) -> Status {
        let st = self.state.lock().unwrap();
        let mut targets_down: Vec<TargetDown> = st
            .queues
            .iter()
            .filter_map(|((d, t), q)| {
                q.down.as_ref().map(|(since, e)| TargetDown {
                    domain: d.clone(),
                    target: t.clone(),
                    since_ms: *since,
                    error: e.clone(),
                    spooled: q.entries.len(),
                })
            })
            .collect();
        targets_down.sort_by(|a, b| (&a.domain, &a.target).cmp(&(&b.domain, &b.target)));
        Status {
            bytes: st.total,
            max_bytes: self.settings.get().server.spool_max_bytes,
            peak_bytes: st.peak,
            entries: st.queues.values().map(|q| q.entries.len()).sum(),
            targets_down,
        }
    }

    /// Spooled captures of one domain.
    pub fn domain_entries(&self, domain: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.queues.iter().filter(|((d, _), _)| d == domain).map(|(_, q)| q.entries.len()).sum()
    }

    fn jpg_path(&self, id: u128) -> PathBuf {
        self.dir.join(format!("{:032x}.jpg", id))
    }

    fn entry_path(&self, id: u128) -> PathBuf {
        self.dir.join(format!("{:032x}.json", id))
    }

    async fn write_entry(&self, entry: &Entry) -> Result<(), SpoolError> {
        let json = serde_json::to_vec(entry).expect("encode spool entry");
        write_atomic(&self.entry_path(entry.id), Bytes::from(json)).await
    }

    async fn read_entry(&self, id: u128) -> Result<Entry, SpoolError> {
        let path = self.entry_path(id);
        let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))
    }

    async fn remove_files(&self, id: u128) {
        let _ = tokio::fs::remove_file(self.entry_path(id)).await;
        let _ = tokio::fs::remove_file(self.jpg_path(id)).await;
    }
}

/// The records of a capture's stored placements: the first takes the
/// intent's id, others fresh ids of the same time. An empty key marks a
/// placement given up.
pub fn records_of(id: RecordId, intent: &Intent, stored: &[Option<String>], target: &Target) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::with_capacity(stored.len());
    for (p, key) in intent.placements.iter().zip(stored) {
        let Some(key) = key.as_ref().filter(|k| !k.is_empty()) else { continue };
        records.push(Record {
            id: if records.is_empty() { id } else { RecordId::new(intent.create_timestamp_ms) },
            domain: intent.domain.clone(),
            app: intent.app.clone(),
            stream: intent.stream.clone(),
            create_timestamp_ms: intent.create_timestamp_ms,
            key: key.clone(),
            storage: intent.storage.clone(),
            endpoint: target.endpoint.clone(),
            bucket: target.bucket.clone(),
            size: intent.size,
            width: intent.width,
            height: intent.height,
            is_overlay: p.overwrite,
            sequence: intent.sequence,
        });
    }
    records
}

/// Writes a file whole or not at all: a temporary file, synced, renamed.
async fn write_atomic(path: &std::path::Path, data: Bytes) -> Result<(), SpoolError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
        f.write_all(&data).and_then(|()| f.sync_data()).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))
    })
    .await
    .expect("spool write task")
}

fn io(path: &std::path::Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(streams: &[&str]) -> Queue {
        let mut q = Queue::default();
        for (i, s) in streams.iter().enumerate() {
            q.entries.insert(i as u128, Queued { len: 100 + i as u64, stream: ("live".into(), s.to_string()) });
        }
        q
    }

    #[test]
    fn a_batch_takes_each_streams_oldest_capture() {
        let q = queue(&["a", "a", "b", "a", "c", "b"]);
        assert_eq!(q.next_batch(), vec![(0, 100), (2, 102), (4, 104)]);
        // One stream: one capture at a time, so its order holds.
        assert_eq!(queue(&["a"; 5]).next_batch(), vec![(0, 100)]);
        assert!(Queue::default().next_batch().is_empty());
    }

    #[test]
    fn a_batch_is_bounded_in_size_and_in_what_it_walks() {
        let many: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let q = queue(&many.iter().map(String::as_str).collect::<Vec<_>>());
        let batch = q.next_batch();
        assert_eq!(batch.len(), DRAIN_BATCH);
        assert_eq!(batch.last().unwrap().0, DRAIN_BATCH as u128 - 1, "the oldest streams first");
        // A second stream queued behind a long run of one is found by a later batch.
        let mut streams = vec!["a"; DRAIN_SCAN];
        streams.push("b");
        assert_eq!(queue(&streams).next_batch(), vec![(0, 100)]);
    }
}
