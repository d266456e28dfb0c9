//! The snapshot path after decoding: take a `{Sequence}`, ask the policy for
//! placements, record the intent, store the JPG (or spool it while the
//! target is down), commit the records. A record is committed only after
//! its object is stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use md5::Digest;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::index::{Index, Intent, Planned, Record, RecordId, StateWrites};
use crate::media::{Decoded, Image};
use crate::metrics::Metrics;
use crate::policy::{CaptureFacts, Placement, Policies};
use crate::storage::Storage;
use crate::store::{Origin, Store, StoreError};

/// Snapshots being stored at once.
const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("policy task: {0}")]
    Join(String),
    #[error("storage target {target} is down: the snapshot is spooled and stored when it answers again")]
    Spooled { target: String },
    #[error("storage target {target} is down and the snapshot was skipped: {why}")]
    Skipped { target: String, why: String },
}

pub struct SnapshotPath {
    pub index: Arc<Index>,
    pub storage: Arc<Storage>,
    pub policies: Arc<Policies>,
    pub retention: Arc<crate::retention::Retention>,
    pub store: Arc<Store>,
    pub spool: Arc<crate::spool::Spool>,
    pub storyboards: Arc<crate::storyboard::Storyboards>,
    pub metrics: Arc<Metrics>,
}

impl SnapshotPath {
    /// Stores every decoded snapshot until the decoders hang up.
    pub async fn run(self: Arc<Self>, mut decoded: mpsc::Receiver<Decoded>, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(d) = decoded.recv().await {
            let mut job = d.job;
            let jpeg = match d.result {
                Ok(jpeg) => jpeg,
                Err(e) => {
                    job.fail_waiters(&format!("the keyframe could not be decoded: {e}"));
                    continue;
                }
            };
            // A JPEG of the stream's picture: kept for frame requests. A job
            // made for frame requests (always JPEG) ends here, stored nowhere.
            let frame_only = !job.frames.is_empty();
            if job.template.format == crate::config::ImageFormat::Jpg {
                let frame = crate::capture::Frame {
                    jpeg: jpeg.bytes.clone(),
                    width: jpeg.width,
                    height: jpeg.height,
                    decoded_ms: crate::unix_ms(),
                };
                for w in job.frames.drain(..) {
                    let _ = w.send(Ok(frame.clone()));
                }
                *job.info.last_frame.lock().unwrap() = Some(frame);
            }
            if frame_only {
                continue;
            }
            if job.template.skip_blank && jpeg.facts.is_blank() {
                self.metrics.snapshots_blank.inc();
                job.info.refused_blank(job.on_grid.then_some(job.media_ts_ms));
                tracing::debug!(
                    domain = %job.info.domain, app = %job.info.app, stream = %job.info.stream, media_ts = job.media_ts_ms,
                    mean_luma = jpeg.facts.mean_luma, "blank keyframe refused (skip_blank): taking the next one"
                );
                job.fail_waiters("the keyframe was blank (black or one flat colour) and the template skips blank ones");
                continue;
            }
            // Numbered here, in the order captures leave the decoders: the
            // tasks below may take the stream's lock in another order.
            let key = crate::stream::StreamKey::new(&job.info.domain, &job.info.app, &job.info.stream);
            let sequence = match self.index.next_sequence(key) {
                Ok(s) => s,
                Err(e) => {
                    self.metrics.failed("index");
                    job.fail_waiters(&format!("no sequence number: {e}"));
                    continue;
                }
            };
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let path = self.clone();
            tracker.spawn(async move {
                let mut newest_overwrite = job.info.order.lock().await;
                let (domain, app, stream) = (job.info.domain.clone(), job.info.app.clone(), job.info.stream.clone());
                let (width, height) = (jpeg.width, jpeg.height);
                let picture = (job.template.storyboard_s > 0).then(|| jpeg.bytes.clone());
                let result = path.store(&job, jpeg, sequence, &mut newest_overwrite).await;
                // A stored capture goes on its storyboard, still in the stream's order.
                if let (Some(picture), Ok(records)) = (picture, &result)
                    && !records.is_empty()
                {
                    path.storyboard(&job, picture).await;
                }
                drop(newest_overwrite);
                match &result {
                    Ok(records) => {
                        path.metrics.snapshots_stored.inc();
                        path.metrics.lateness(&domain, job.received.elapsed().as_secs_f64());
                        if !records.is_empty() {
                            path.retention.after_snapshot(&domain, &app, &stream);
                            let stats = &job.info.stats;
                            stats.stored.fetch_add(1, Ordering::Relaxed);
                            stats.last_snapshot_ms.fetch_max(job.create_timestamp_ms, Ordering::Relaxed);
                            stats.width.store(width, Ordering::Relaxed);
                            stats.height.store(height, Ordering::Relaxed);
                        }
                        for r in records {
                            tracing::debug!(%domain, %app, %stream, key = %r.key, size = r.size, "snapshot stored");
                        }
                    }
                    Err(SnapshotError::Spooled { .. }) => {}
                    Err(e @ SnapshotError::Skipped { .. }) => tracing::warn!(%domain, %app, %stream, error = %e),
                    Err(e) => tracing::error!(%domain, %app, %stream, error = %e, "snapshot not stored"),
                }
                for w in job.waiters.drain(..) {
                    let _ = w.send(result.as_ref().map(Clone::clone).map_err(ToString::to_string));
                }
                drop(permit);
            });
        }
    }

    /// Adds a stored capture to its stream's storyboard; a failure is
    /// logged and counted, the capture stands.
    async fn storyboard(&self, job: &crate::capture::CaptureJob, picture: bytes::Bytes) {
        let info = &job.info;
        let snapshot = crate::storyboard::Snapshot {
            domain: &info.domain,
            app: &info.app,
            stream: &info.stream,
            storage: &job.template.storage,
            create_ms: job.create_timestamp_ms,
            period_s: job.template.storyboard_s,
            interval_s: job.template.time_interval_s,
            picture,
        };
        let t = Instant::now();
        if let Err(e) = self.storyboards.add(snapshot).await {
            self.metrics.failed("storyboard");
            tracing::warn!(domain = %info.domain, app = %info.app, stream = %info.stream, error = %e, "storyboard not updated");
        }
        self.metrics.stage("storyboard", t.elapsed().as_secs_f64());
    }

    async fn store(
        &self,
        job: &crate::capture::CaptureJob,
        jpeg: Image,
        sequence: u64,
        newest_overwrite: &mut u64,
    ) -> Result<Vec<Record>, SnapshotError> {
        let info = &job.info;
        let template = job.template.clone();
        let target =
            self.storage.target(&info.domain, &template.storage).inspect_err(|_| self.metrics.failed("store"))?;
        let id = RecordId::new(job.create_timestamp_ms);
        let t = Instant::now();

        let policies = self.policies.clone();
        let (domain, app, stream) = (info.domain.clone(), info.app.clone(), info.stream.clone());
        let (width, height, create, frame) = (jpeg.width, jpeg.height, job.create_timestamp_ms, jpeg.facts);
        let tpl = template.clone();
        let named = tokio::task::spawn_blocking(move || {
            let facts = CaptureFacts {
                domain: &domain,
                app: &app,
                stream: &stream,
                create_timestamp_ms: create,
                sequence,
                width,
                height,
                frame,
            };
            policies.name(&facts, &tpl)
        })
        .await
        .map_err(|e| SnapshotError::Join(e.to_string()))
        .and_then(|r| r.map_err(SnapshotError::from));
        let (placements, state): (Vec<Placement>, _) = match named {
            Ok(n) => (n.placements, Some(StateWrites { domain: info.domain.clone(), writes: n.state })),
            Err(e) => {
                self.metrics.failed("policy");
                return Err(e);
            }
        };
        self.metrics.stage("policy", t.elapsed().as_secs_f64());

        let mut planned = Vec::with_capacity(placements.len());
        for p in placements {
            if p.overwrite {
                if job.create_timestamp_ms < *newest_overwrite {
                    tracing::debug!(key = %p.key, "a newer capture already replaced this overwrite object");
                    continue;
                }
                *newest_overwrite = job.create_timestamp_ms;
            }
            planned.push(Planned { key: p.key, overwrite: p.overwrite });
        }
        if planned.is_empty() {
            // The policy chose to skip this capture; its state says so.
            self.index.abandon(id, state).await?;
            return Ok(Vec::new());
        }
        let intent = Intent {
            domain: info.domain.clone(),
            app: info.app.clone(),
            stream: info.stream.clone(),
            create_timestamp_ms: job.create_timestamp_ms,
            sequence,
            storage: template.storage.clone(),
            placements: planned,
            size: jpeg.bytes.len() as u64,
            md5: md5::Md5::digest(&jpeg.bytes).into(),
            width: jpeg.width,
            height: jpeg.height,
        };
        // The intent is durable before any object is written: recovery finds them by it.
        self.index.reserve(id, intent.clone()).await.inspect_err(|_| self.metrics.failed("index"))?;
        crate::failpoint!("capture-after-reserve");

        let mut progress: Vec<Option<String>> = vec![None; intent.placements.len()];
        let jpg = &jpeg.bytes;
        let (error, state) = if self.spool.backlog(&info.domain, &template.storage) {
            // Older captures of this target wait in the spool: this one joins them.
            (None, state)
        } else {
            match self.store.store(Origin::Live, id, &intent, jpg, &target, &mut progress, state, ()).await {
                Ok(records) => return Ok(records),
                Err(StoreError::Down { source, state }) => (Some(source), state),
                Err(StoreError::Refused(e)) => {
                    self.metrics.failed("store");
                    return Err(e.into());
                }
                Err(e) => {
                    self.metrics.failed("index");
                    return Err(e.into());
                }
            }
        };
        if let Some(e) = &error {
            self.spool.target_failed(&info.domain, &template.storage, &e.to_string());
        }
        let target_name = format!("{}/{}", info.domain, template.storage);
        let nothing_stored = progress.iter().all(Option::is_none);
        match self.spool.add(id, &intent, jpg.clone(), progress.clone()).await {
            Ok(()) => {
                // The plugin's decision stands; the records follow once stored.
                if let Some(st) = state.filter(|s| !s.writes.is_empty()) {
                    self.index.commit_plugin_state(st.domain, st.writes).await?;
                }
                Err(SnapshotError::Spooled { target: target_name })
            }
            Err(full) if nothing_stored => {
                self.metrics.snapshots_skipped.get_or_create(&vec![("domain", info.domain.clone())]).inc();
                info.stats.skipped.fetch_add(1, Ordering::Relaxed);
                let _ = self.index.abandon(id, state).await;
                Err(SnapshotError::Skipped { target: target_name, why: full.to_string() })
            }
            Err(full) => {
                tracing::error!(domain = %info.domain, error = %full, "part of a snapshot was stored; the rest is skipped");
                let records = crate::store::records_of(id, &intent, &progress, &target);
                Ok(self.store.commit(id, records, state).await.inspect_err(|_| self.metrics.failed("index"))?)
            }
        }
    }
}
