//! The local spool (docs/storage.md): a capture whose storage target is down waits
//! here, on disk, and is stored when the target answers again, in capture
//! order per target. Its index records are committed only once its objects
//! are stored. This module is the queue (quotas, the drain tasks); the
//! files are `files`; settling, at start, the captures that were in flight
//! at a crash is `recovery`.
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

mod files;
mod recovery;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::config::Settings;
use crate::index::{Index, Intent, RecordId};
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::store::{Origin, Store, StoreError};
use files::{Entry, Files, io};
pub use recovery::SettleError;
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
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
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
    files: Files,
    index: Arc<Index>,
    storage: Arc<Storage>,
    store: Arc<Store>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    /// Draining and settling tasks, and their stop: at shutdown what is
    /// spooled stays on disk for the next start.
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

impl Spool {
    /// `tasks`, `stop`: the drain and recovery tasks' tracker and their
    /// stop (at shutdown an upload under way finishes, and what is spooled
    /// stays on disk).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        dir: PathBuf,
        tasks: tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
        index: Arc<Index>,
        storage: Arc<Storage>,
        store: Arc<Store>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Spool>, SpoolError> {
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        Ok(Arc::new(Spool {
            files: Files { dir },
            index,
            storage,
            store,
            settings,
            metrics,
            state: Default::default(),
            tasks,
            stop,
        }))
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
        intent: &Intent,
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
        let entry = Entry { id: id.0, intent: intent.into(), stored };
        let written = async {
            self.files.write_jpg(id.0, jpg).await?;
            self.files.write_entry(&entry).await
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
                    self.target_failed(&key.0, &key.1, &e.to_string());
                    self.pause(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Stores what is left of one spooled capture, commits its records and
    /// removes its files.
    async fn upload(&self, id: u128) -> Result<(), StoreError> {
        let entry = self.files.read_entry(id).await.map_err(|e| StoreError::Progress(Box::new(e)))?;
        let jpg = self.files.read_jpg(id).await.map_err(|e| StoreError::Progress(Box::new(e)))?;
        let (mut progress, capture) = (entry.stored, entry.intent);
        let intent = Intent::from(capture.clone());
        let rid = RecordId(id);
        let target = match self.storage.target(&intent.domain, &intent.storage) {
            Ok(t) => t,
            Err(e) => {
                // The domain or target is gone: nothing can store this capture any more.
                tracing::error!(id = %rid, error = %e, "spooled capture dropped: its target is no longer configured");
                let _ = self.index.abandon(rid, None).await;
                self.files.remove(id).await;
                return Ok(());
            }
        };
        let save = files::Saver { files: &self.files, id, capture };
        match self.store.store(Origin::Spool, rid, &intent, &jpg, &target, &mut progress, None, save).await {
            // Every placement refused: nothing will ever store it.
            Ok(_) | Err(StoreError::Refused(_)) => {}
            Err(e) => return Err(e),
        }
        self.metrics.snapshots_stored.inc();
        self.files.remove(id).await;
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
