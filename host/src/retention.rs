//! Deletion: removing the objects of deleted records (for the API and the
//! policies alike), and deletion policies (docs/plugins.md). After each new snapshot
//! of a stream whose domain runs an uploaded plugin, the plugin is shown the
//! stream's sequential snapshots page by page from the newest, and what it
//! selects is deleted, files included, once the pass is over.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::index::{Index, IndexError, Query, Record, RecordId};
use crate::metrics::Metrics;
use crate::policy::{DeletionQuestion, Policies};
use crate::storage::{Storage, StorageError, Target};

/// Snapshots shown to a plugin in one call.
pub const PAGE: usize = 256;
/// Pages one pass may show: the cost of a pass is bounded whatever the
/// stream holds (a plugin that deletes sees older pages in later passes).
pub const PAGES_PER_PASS: usize = 64;
/// Records deleted in one index transaction.
const DELETE_BATCH: usize = 200;
/// Streams waiting for a pass; more are dropped (the next snapshot asks again).
const QUEUE: usize = 1024;
/// Objects removed at once.
const REMOVE_CONCURRENCY: usize = 32;

use crate::stream::StreamKey;

/// Removes the objects of deleted (tombstoned) records, several at once,
/// then has their tombstones cleared with the index's next commit: a
/// tombstone left behind only makes the next start try a removal again.
/// Returns how many were removed.
pub async fn remove_objects(
    index: &Index,
    removed: &[Record],
    target: impl Fn(&str, &str) -> Result<Arc<Target>, StorageError>,
) -> u64 {
    let doomed = removed.iter().map(|r| Doomed { id: r.id, domain: &r.domain, storage: &r.storage, key: &r.key });
    let (files, done) = delete_objects(doomed, target).await;
    index.clear_tombstones_later(done);
    files
}

/// Deletes records as the API does: removed from the index with their
/// deletion callbacks (and tombstones when their objects go too), then the
/// objects removed. Returns the records removed and the objects removed.
pub async fn delete_records(
    index: &Index,
    notifier: &Arc<crate::notify::Notifier>,
    storage: &Storage,
    ids: Vec<RecordId>,
    remove_files: bool,
) -> Result<(Vec<Record>, u64), crate::index::IndexError> {
    if ids.is_empty() {
        return Ok((Vec::new(), 0));
    }
    let events = notifier.events_of(crate::notify::DELETED);
    let removed = index.delete_with_events(ids, remove_files, Some(events)).await?;
    notifier.poke();
    let files = if remove_files { remove_objects(index, &removed, |d, s| storage.target(d, s)).await } else { 0 };
    Ok((removed, files))
}

/// The object of a deleted record.
pub struct Doomed<'a> {
    pub id: RecordId,
    pub domain: &'a str,
    pub storage: &'a str,
    pub key: &'a str,
}

/// Deletes objects, several at once: how many were removed, and the
/// records whose tombstones may go (removed, or their target is gone).
pub async fn delete_objects<'a>(
    doomed: impl IntoIterator<Item = Doomed<'a>>,
    target: impl Fn(&str, &str) -> Result<Arc<Target>, StorageError>,
) -> (u64, Vec<RecordId>) {
    let jobs: Vec<_> = doomed
        .into_iter()
        .map(|d| {
            let (id, key, target) = (d.id, d.key.to_owned(), target(d.domain, d.storage));
            async move {
                match target {
                    // The target is gone (its domain deleted): nothing to remove from.
                    Err(_) => (id, false, true),
                    Ok(t) => match t.delete(&key).await {
                        Ok(_) => (id, true, true),
                        Err(e) => {
                            tracing::warn!(error = %e, %key, "object not removed now; retried at next start");
                            (id, false, false)
                        }
                    },
                }
            }
        })
        .collect();
    let outcomes: Vec<(RecordId, bool, bool)> =
        futures::stream::iter(jobs).buffer_unordered(REMOVE_CONCURRENCY).collect().await;
    let files = outcomes.iter().filter(|o| o.1).count() as u64;
    (files, outcomes.iter().filter(|o| o.2).map(|o| o.0).collect())
}

/// Removes, at start, the objects whose records were deleted before a
/// crash or while their target was down.
pub async fn remove_tombstoned(index: &Index, storage: &Storage) -> Result<(), crate::index::IndexError> {
    let tombstones = index.tombstones()?;
    if tombstones.is_empty() {
        return Ok(());
    }
    let doomed =
        tombstones.iter().map(|(id, t)| Doomed { id: *id, domain: &t.domain, storage: &t.storage, key: &t.key });
    let (removed, done) = delete_objects(doomed, |d, s| storage.target(d, s)).await;
    tracing::info!(removed, pending = tombstones.len() - done.len(), "removed objects of deleted records");
    index.clear_tombstones(done).await
}

/// Reconciles every domain each `server.reconcile_every` (read anew each
/// round; `off` checks again in a minute) until `stop`.
pub async fn reconcile_schedule(
    index: Arc<Index>,
    storage: Arc<Storage>,
    notifier: Arc<crate::notify::Notifier>,
    settings: Arc<crate::config::Settings>,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let every = settings.get().server.reconcile_every;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every.unwrap_or(std::time::Duration::from_secs(60))) => {}
        }
        if every.is_none() || settings.get().server.reconcile_every != every {
            continue;
        }
        let domains: Vec<String> = settings.get().domains.keys().cloned().collect();
        for domain in domains {
            match reconcile(&index, &storage, &notifier, &domain).await {
                Ok(r) => tracing::info!(%domain, checked = r.checked, removed = r.removed, "scheduled reconcile"),
                Err(e) => tracing::warn!(%domain, error = %e, "scheduled reconcile failed"),
            }
        }
    }
}

/// Records looked at per reconcile page.
const RECONCILE_PAGE: usize = 500;

/// What a reconcile pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    pub checked: u64,
    pub removed: u64,
}

/// Finds a domain's records whose objects were removed outside edgesnap
/// (bucket lifecycle rules, an operator) and drops them, each with a
/// `live_snapshot_deleted` event. An object that cannot be checked (the
/// target is down) keeps its record.
pub async fn reconcile(
    index: &Index,
    storage: &Storage,
    notifier: &Arc<crate::notify::Notifier>,
    domain: &str,
) -> Result<Reconciled, RetentionError> {
    let mut out = Reconciled::default();
    let mut after: Option<Record> = None;
    loop {
        let page = index.domain_records(domain, after.as_ref(), RECONCILE_PAGE)?;
        let Some(last) = page.last().cloned() else { break };
        out.checked += page.len() as u64;
        let checks: Vec<_> = page
            .iter()
            .map(|r| {
                let (id, key, target) = (r.id, r.key.clone(), storage.target(&r.domain, &r.storage));
                async move {
                    let there = match target {
                        Ok(t) => t.exists(&key).await,
                        Err(e) => Err(e),
                    };
                    match there {
                        Ok(there) => (id, there),
                        Err(e) => {
                            tracing::warn!(%key, error = %e, "reconcile: object not checked; its record is kept");
                            (id, true)
                        }
                    }
                }
            })
            .collect();
        let checked: Vec<(RecordId, bool)> =
            futures::stream::iter(checks).buffer_unordered(REMOVE_CONCURRENCY).collect().await;
        let gone: Vec<RecordId> = checked.into_iter().filter(|c| !c.1).map(|c| c.0).collect();
        if !gone.is_empty() {
            let events = notifier.events_of(crate::notify::DELETED);
            let removed = index.delete_with_events(gone, false, Some(events)).await?;
            notifier.poke();
            for r in &removed {
                tracing::warn!(domain = %r.domain, key = %r.key, "reconcile: the object is gone; its record is dropped");
            }
            out.removed += removed.len() as u64;
        }
        after = Some(last);
    }
    Ok(out)
}

/// Runs deletion passes, one stream at a time.
pub struct Retention {
    index: Arc<Index>,
    storage: Arc<Storage>,
    policies: Arc<Policies>,
    notifier: Arc<crate::notify::Notifier>,
    metrics: Arc<Metrics>,
    tx: mpsc::Sender<StreamKey>,
    /// Streams queued for a pass (a stream is queued once).
    pending: Mutex<HashSet<StreamKey>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("deletion pass task: {0}")]
    Join(String),
}

impl Retention {
    pub fn new(
        index: Arc<Index>,
        storage: Arc<Storage>,
        policies: Arc<Policies>,
        notifier: Arc<crate::notify::Notifier>,
        metrics: Arc<Metrics>,
    ) -> (Arc<Retention>, mpsc::Receiver<StreamKey>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Arc::new(Retention { index, storage, policies, notifier, metrics, tx, pending: Mutex::default() }), rx)
    }

    /// Asks for a pass over a stream that has a new snapshot, if its domain
    /// runs an uploaded plugin. Never waits.
    pub fn after_snapshot(&self, domain: &str, app: &str, stream: &str) {
        if !self.policies.has_plugin(domain) {
            return;
        }
        let key = StreamKey::new(domain, app, stream);
        if !self.pending.lock().unwrap().insert(key.clone()) {
            return;
        }
        if self.tx.try_send(key.clone()).is_err() {
            self.pending.lock().unwrap().remove(&key);
            tracing::debug!(%domain, %app, %stream, "deletion passes are behind; this stream is asked again later");
        }
    }

    /// Runs passes until `stop`; a pass under way is finished first.
    pub async fn run(self: Arc<Self>, mut rx: mpsc::Receiver<StreamKey>, stop: tokio_util::sync::CancellationToken) {
        loop {
            let key = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                key = rx.recv() => match key { Some(k) => k, None => return },
            };
            // A snapshot arriving during the pass queues the next one.
            self.pending.lock().unwrap().remove(&key);
            match self.clone().pass(key.clone()).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(domain = %key.domain, app = %key.app, stream = %key.stream, deleted = n, "deleted by the domain's plugin")
                }
                Err(e) => {
                    tracing::error!(domain = %key.domain, app = %key.app, stream = %key.stream, error = %e, "deletion pass failed")
                }
            }
        }
    }

    /// One pass over a stream: ask, then delete what was selected. Returns
    /// how many snapshots were deleted.
    pub async fn pass(self: Arc<Self>, key: StreamKey) -> Result<usize, RetentionError> {
        let this = self.clone();
        let domain = key.domain.clone();
        let selected = tokio::task::spawn_blocking(move || this.select(&key, crate::unix_ms()))
            .await
            .map_err(|e| RetentionError::Join(e.to_string()))??;
        let mut deleted = 0;
        for batch in selected.chunks(DELETE_BATCH) {
            let events = self.notifier.events_of(crate::notify::DELETED);
            let removed = self.index.delete_with_events(batch.to_vec(), true, Some(events)).await?;
            self.notifier.poke();
            remove_objects(&self.index, &removed, |d, s| self.storage.target(d, s)).await;
            deleted += removed.len();
        }
        self.metrics.policy_deleted(&domain, deleted as u64);
        Ok(deleted)
    }

    /// Shows the stream's sequential snapshots to the plugin, newest first,
    /// until it says done, they end, or the page budget is spent. Any failed
    /// call selects nothing for the whole pass.
    fn select(&self, key: &StreamKey, now_ms: u64) -> Result<Vec<RecordId>, RetentionError> {
        let StreamKey { domain, app, stream } = key;
        let mut query = Query {
            domain: domain.clone(),
            app: app.clone(),
            stream: Some(stream.clone()),
            start_ms: 0,
            end_ms: u64::MAX,
            limit: PAGE,
            descending: true,
            cursor: None,
        };
        let (mut offset, mut newer, mut selected) = (0u64, None::<Record>, Vec::new());
        for _ in 0..PAGES_PER_PASS {
            let page = self.index.query(&query)?;
            let items: Vec<Record> = page.records.into_iter().filter(|r| !r.is_overlay).collect();
            if !items.is_empty() {
                let q = DeletionQuestion { domain, app, stream, offset, items: &items, newer: newer.as_ref(), now_ms };
                let answer = match self.policies.select_deletions(&q) {
                    // The plugin was deactivated meanwhile, or failed.
                    None | Some(Err(_)) => return Ok(Vec::new()),
                    Some(Ok(answer)) => answer,
                };
                selected.extend(answer.ids);
                if answer.done {
                    break;
                }
                offset += items.len() as u64;
                newer = items.into_iter().last();
            }
            match page.next {
                Some(cursor) => query.cursor = Some(cursor),
                None => break,
            }
        }
        Ok(selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::index::Intent;
    use crate::policy::Limits;

    fn record(id: RecordId, stream: &str, ts: u64, overlay: bool) -> Record {
        Record {
            id,
            domain: "d.example".into(),
            app: "live".into(),
            stream: stream.into(),
            create_timestamp_ms: ts,
            key: if overlay { format!("live/{stream}.jpg") } else { format!("live/{stream}/{ts}.jpg") },
            storage: "local".into(),
            endpoint: String::new(),
            bucket: String::new(),
            size: 10,
            width: 64,
            height: 48,
            is_overlay: overlay,
            sequence: 0,
            node: String::new(),
        }
    }

    /// Commits `n` captures of a stream, 5 s apart, all at once (the index
    /// writer batches them); the last one also replaces the stream's
    /// overwrite record.
    async fn captures(index: &Index, stream: &str, n: u64) {
        futures::future::join_all((0..n).map(|i| async move {
            let ts = 1_764_057_600_000 + i * 5000;
            let id = RecordId::new(ts);
            let intent = Intent {
                domain: "d.example".into(),
                app: "live".into(),
                stream: stream.into(),
                create_timestamp_ms: ts,
                sequence: i,
                storage: "local".into(),
                placements: Vec::new(),
                size: 10,
                md5: [0; 16],
                width: 64,
                height: 48,
            };
            index.reserve(id, intent).await.unwrap();
            let mut records = vec![record(id, stream, ts, false)];
            if i == n - 1 {
                records.push(record(RecordId::new(ts), stream, ts, true));
            }
            index.commit(id, records).await.unwrap();
        }))
        .await;
    }

    fn plugin_wasm(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"))).unwrap()
    }

    fn stream_records(index: &Index, stream: &str) -> Vec<Record> {
        let q = Query {
            domain: "d.example".into(),
            app: "live".into(),
            stream: Some(stream.into()),
            start_ms: 0,
            end_ms: u64::MAX,
            limit: 10_000,
            descending: false,
            cursor: None,
        };
        index.query(&q).unwrap().records
    }

    /// Domain d.example with a local target under `dir`/objects.
    fn local_config(dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            "version = 1\n[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             data_dir = \"{d}/data\"\noperator_token = \"0123456789abcdef\"\n\
             [domains.\"d.example\".storage.local]\ntype = \"local\"\npath = \"{d}/objects\"\n",
            d = dir.display()
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn objects_are_deleted_and_a_gone_target_counts_as_done() {
        let dir = tempfile::tempdir().unwrap();
        let config = local_config(dir.path());
        let storage = Storage::from_config(&config).unwrap();
        std::fs::create_dir_all(dir.path().join("objects/live")).unwrap();
        std::fs::write(dir.path().join("objects/live/a.jpg"), b"jpg").unwrap();
        let (a, b) = (RecordId::new(1), RecordId::new(2));
        let doomed = [
            Doomed { id: a, domain: "d.example", storage: "local", key: "live/a.jpg" },
            Doomed { id: b, domain: "gone.example", storage: "local", key: "live/b.jpg" },
        ];
        let (files, mut done) = delete_objects(doomed, |d, t| storage.target(d, t)).await;
        done.sort();
        assert_eq!((files, done), (1, vec![a, b]));
        assert!(!dir.path().join("objects/live/a.jpg").exists());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_page_through_a_stream_and_a_failure_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let config = local_config(dir.path());
        let storage = Arc::new(Storage::from_config(&config).unwrap());
        let index = Arc::new(Index::open(&dir.path().join("index.redb")).unwrap());
        let metrics = Arc::new(Metrics::new());
        let policies = Arc::new(Policies::new(index.clone(), Limits::default(), metrics.clone(), None).unwrap());
        let settings = crate::config::Settings::new(config);
        let urls =
            Arc::new(crate::urls::UrlSigner::new(settings.clone(), b"key".to_vec(), "127.0.0.1:8080".parse().unwrap()));
        let notifier = crate::notify::Notifier::new(index.clone(), settings, urls, metrics.clone()).unwrap();
        let (retention, _rx) = Retention::new(index.clone(), storage, policies.clone(), notifier, metrics.clone());
        captures(&index, "cam1", 600).await;
        captures(&index, "faildel", 300).await;
        captures(&index, "notmine", 20).await;
        let key = |s: &str| StreamKey::new("d.example", "live", s);

        // The default policy is not asked and keeps everything.
        assert_eq!(retention.clone().pass(key("cam1")).await.unwrap(), 0);
        assert_eq!(stream_records(&index, "cam1").len(), 601);

        // Keep the last 10: three pages (255 sequential + the overwrite
        // record, 256, 89), 590 deleted, the newest 10 and the overwrite record kept.
        let keep = Arc::new(policies.load("keep", &plugin_wasm("keep_last")).unwrap());
        policies.activate("d.example", Some(keep));
        assert_eq!(retention.clone().pass(key("cam1")).await.unwrap(), 590);
        let left = stream_records(&index, "cam1");
        let sequential: Vec<u64> = left.iter().filter(|r| !r.is_overlay).map(|r| r.create_timestamp_ms).collect();
        let newest: Vec<u64> = (590..600).map(|i| 1_764_057_600_000 + i * 5000).collect();
        assert_eq!(sequential, newest);
        assert_eq!(left.iter().filter(|r| r.is_overlay).count(), 1);
        let runs = policies.runs("d.example");
        let pages: Vec<(u64, usize)> =
            runs.iter().rev().filter_map(|r| r.deletion.as_ref()).map(|d| (d.offset, d.items)).collect();
        assert_eq!(pages, vec![(0, 255), (255, 256), (511, 89)]);
        assert!(metrics.render_text().contains(r#"edgesnap_policy_deletions_total{domain="d.example"} 590"#));
        // Again: one page, nothing more to delete.
        assert_eq!(retention.clone().pass(key("cam1")).await.unwrap(), 0);

        // A plugin that selects everything and then traps deletes nothing;
        // one naming an id not on its page neither.
        let hostile = Arc::new(policies.load("hostile", &plugin_wasm("hostile")).unwrap());
        policies.activate("d.example", Some(hostile));
        assert_eq!(retention.clone().pass(key("faildel")).await.unwrap(), 0);
        assert_eq!(stream_records(&index, "faildel").len(), 301);
        assert_eq!(policies.runs("d.example")[0].outcome, "trap");
        assert_eq!(retention.clone().pass(key("notmine")).await.unwrap(), 0);
        assert_eq!(stream_records(&index, "notmine").len(), 21);
        let run = &policies.runs("d.example")[0];
        assert_eq!(run.outcome, "bad_output");
        assert!(run.error.as_deref().unwrap().contains("is not one of the page's snapshots"), "{run:?}");
    }
}
