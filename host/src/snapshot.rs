//! The snapshot path after decoding: reserve a `{Sequence}` (with an intent),
//! ask the policy for placements, store the JPG, commit the records. A record
//! is committed only after its object is stored.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::task::TaskTracker;

use crate::index::{Index, Intent, Record, RecordId, StateWrites};
use crate::media::{Decoded, Jpeg};
use crate::metrics::Metrics;
use crate::policy::{CaptureFacts, Placement, Policies};
use crate::storage::Storage;

/// Snapshots being stored at once.
const IN_FLIGHT: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("policy task: {0}")]
    Join(String),
}

pub struct SnapshotPath {
    pub index: Arc<Index>,
    pub storage: Arc<Storage>,
    pub policies: Arc<Policies>,
    pub retention: Arc<crate::retention::Retention>,
    pub notifier: Arc<crate::notify::Notifier>,
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
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let path = self.clone();
            tracker.spawn(async move {
                let mut newest_overwrite = job.info.order.lock().await;
                let (domain, app, stream) = (job.info.domain.clone(), job.info.app.clone(), job.info.stream.clone());
                let (width, height) = (jpeg.width, jpeg.height);
                let result = path.store(&job, jpeg, &mut newest_overwrite).await;
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
                    Err(e) => tracing::error!(%domain, %app, %stream, error = %e, "snapshot not stored"),
                }
                for w in job.waiters.drain(..) {
                    let _ = w.send(result.as_ref().map(Clone::clone).map_err(ToString::to_string));
                }
                drop(permit);
            });
        }
    }

    async fn store(
        &self,
        job: &crate::capture::CaptureJob,
        jpeg: Jpeg,
        newest_overwrite: &mut u64,
    ) -> Result<Vec<Record>, SnapshotError> {
        let info = &job.info;
        let template = job.template.clone();
        let target =
            self.storage.target(&info.domain, &template.storage).inspect_err(|_| self.metrics.failed("store"))?;
        let id = RecordId::new(job.create_timestamp_ms);
        let intent = Intent {
            domain: info.domain.clone(),
            app: info.app.clone(),
            stream: info.stream.clone(),
            create_timestamp_ms: job.create_timestamp_ms,
            sequence: 0,
            storage: template.storage.clone(),
        };
        let t = Instant::now();
        let sequence = self.index.reserve(id, intent).await.inspect_err(|_| self.metrics.failed("index"))?;

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
                // Nothing was stored: the capture is not in flight any more.
                self.metrics.failed("policy");
                let _ = self.index.abandon(id, None).await;
                return Err(e);
            }
        };
        let t_policy = t.elapsed();
        self.metrics.stage("policy", t_policy.as_secs_f64());

        let mut records = Vec::with_capacity(placements.len());
        let t = Instant::now();
        for p in placements {
            if p.overwrite {
                if job.create_timestamp_ms < *newest_overwrite {
                    tracing::debug!(key = %p.key, "a newer capture already replaced this overwrite object");
                    continue;
                }
                *newest_overwrite = job.create_timestamp_ms;
            }
            let key = if p.overwrite {
                target.put_overwrite(&p.key, jpeg.bytes.clone()).await.map(|()| p.key)
            } else {
                target.put_sequential(&p.key, jpeg.bytes.clone()).await
            };
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    self.metrics.failed("store");
                    // What was stored so far still gets its records.
                    // Nothing stored: the plugin's state writes are dropped with it.
                    if records.is_empty() {
                        let _ = self.index.abandon(id, None).await;
                        return Err(e.into());
                    }
                    tracing::error!(domain = %info.domain, error = %e, "one placement of a snapshot was not stored");
                    break;
                }
            };
            records.push(Record {
                id: if records.is_empty() { id } else { RecordId::new(job.create_timestamp_ms) },
                domain: info.domain.clone(),
                app: info.app.clone(),
                stream: info.stream.clone(),
                create_timestamp_ms: job.create_timestamp_ms,
                key,
                storage: template.storage.clone(),
                endpoint: target.endpoint.clone(),
                bucket: target.bucket.clone(),
                size: jpeg.bytes.len() as u64,
                width: jpeg.width,
                height: jpeg.height,
                is_overlay: p.overwrite,
                sequence,
            });
        }
        self.metrics.stage("store", t.elapsed().as_secs_f64());
        if records.is_empty() {
            // The policy chose to skip this capture; its state says so.
            self.index.abandon(id, state).await?;
            return Ok(records);
        }
        let t = Instant::now();
        let events = self.notifier.events_of(crate::notify::SNAPSHOT);
        let stored = self
            .index
            .commit_capture(id, records, state, Some(events))
            .await
            .inspect_err(|_| self.metrics.failed("index"))?;
        self.notifier.poke();
        self.metrics.stage("index", t.elapsed().as_secs_f64());
        Ok(stored)
    }
}
