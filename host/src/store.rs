//! The store step: put a capture's planned placements to its target, in
//! order, and commit the records of what was stored (with their callbacks).
//! The live path (`snapshot`) and the spool's drain both call [`Store::store`];
//! crash recovery commits what it finds with [`Store::commit`].
//!
//! Invariants:
//! - A record is committed only after its object is stored, and only here.
//! - `progress` holds, per placement, the key it was stored at (an empty
//!   key: given up, the target refuses it). A placement with a key is never
//!   written again, so a caller that keeps `progress` across attempts (the
//!   spool, on disk after each object) never stores one twice.
//! - A target that does not answer (`StorageError::Backend`) stops the step
//!   with nothing committed: the caller keeps the capture (spools it, or
//!   leaves it spooled). A key the target refuses gives that placement up
//!   and the step goes on with the others.
//! - Sequential placements are written first; an overwrite placement of a
//!   capture that has a stored sequential object is a copy of it on the
//!   target (a hard link on a local directory: no second file, no second
//!   write of the bytes), and a put only if the copy fails.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::index::{Index, IndexError, Intent, Record, RecordId, StateWrites};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::storage::{StorageError, Target};

/// Who is storing: selects the crash point and whether the stage times count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A capture fresh from the decoders.
    Live,
    /// A capture the spool held while its target was down.
    Spool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The target did not answer: nothing is committed, `progress` says
    /// what was stored, and the plugin's state writes come back.
    #[error("{source}")]
    Down { source: StorageError, state: Option<StateWrites> },
    /// Every placement was refused by the target: nothing is stored and
    /// the intent is dropped (with the plugin's state writes).
    #[error(transparent)]
    Refused(StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The caller could not save its progress after an object was stored.
    #[error("save progress: {0}")]
    Progress(#[source] BoxError),
}

/// Where a caller keeps `progress` after each object stored (the spool: on
/// disk); `()` keeps it only in memory.
pub trait Checkpoint: Send {
    fn saved(&mut self, progress: &[Option<String>]) -> impl Future<Output = Result<(), BoxError>> + Send;
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Checkpoint for () {
    async fn saved(&mut self, _: &[Option<String>]) -> Result<(), BoxError> {
        Ok(())
    }
}

pub struct Store {
    index: Arc<Index>,
    notifier: Arc<Notifier>,
    metrics: Arc<Metrics>,
}

impl Store {
    pub fn new(index: Arc<Index>, notifier: Arc<Notifier>, metrics: Arc<Metrics>) -> Arc<Store> {
        Arc::new(Store { index, notifier, metrics })
    }

    /// Stores the placements of `intent` that `progress` does not hold yet,
    /// calling `saved` after each object, then commits the records of all
    /// stored ones (with `state`, the plugin's writes) and returns them.
    #[allow(clippy::too_many_arguments)]
    pub async fn store(
        &self,
        origin: Origin,
        id: RecordId,
        intent: &Intent,
        jpg: &Bytes,
        target: &Target,
        progress: &mut [Option<String>],
        state: Option<StateWrites>,
        mut saved: impl Checkpoint,
    ) -> Result<Vec<Record>, StoreError> {
        let t = Instant::now();
        let mut refused = None;
        // Sequential placements first, so an overwrite one can be a copy.
        let order = (0..intent.placements.len()).filter(|&i| !intent.placements[i].overwrite);
        let order: Vec<usize> =
            order.chain((0..intent.placements.len()).filter(|&i| intent.placements[i].overwrite)).collect();
        for i in order {
            if progress[i].is_some() {
                continue;
            }
            let p = &intent.placements[i];
            let key = if p.overwrite {
                self.put_overwrite(target, intent, progress, &p.key, jpg).await.map(|()| p.key.clone())
            } else {
                target.put_sequential(&p.key, jpg.clone()).await
            };
            match key {
                Ok(k) => {
                    progress[i] = Some(k);
                    saved.saved(progress).await.map_err(StoreError::Progress)?;
                }
                Err(source @ StorageError::Backend { .. }) => return Err(StoreError::Down { source, state }),
                Err(e) => {
                    tracing::error!(%id, domain = %intent.domain, key = %p.key, error = %e,
                        "one placement of a snapshot cannot be stored");
                    progress[i] = Some(String::new());
                    refused = Some(e);
                }
            }
        }
        match origin {
            Origin::Live => {
                crate::failpoint!("capture-after-put");
                self.metrics.stage("store", t.elapsed().as_secs_f64());
            }
            Origin::Spool => {
                crate::failpoint!("spool-after-upload");
            }
        }
        let records = records_of(id, intent, progress, target);
        if records.is_empty()
            && let Some(e) = refused
        {
            self.index.abandon(id, None).await?;
            return Err(StoreError::Refused(e));
        }
        let t = Instant::now();
        let records = self.commit(id, records, state).await?;
        if origin == Origin::Live {
            crate::failpoint!("capture-after-commit");
            self.metrics.stage("index", t.elapsed().as_secs_f64());
        }
        Ok(records)
    }

    /// Replaces an overwrite object: a copy of this capture's stored
    /// sequential object when it has one (falling back to a put when the
    /// copy fails), else a put.
    async fn put_overwrite(
        &self,
        target: &Target,
        intent: &Intent,
        progress: &[Option<String>],
        key: &str,
        jpg: &Bytes,
    ) -> Result<(), StorageError> {
        let stored_sequential = intent
            .placements
            .iter()
            .zip(progress)
            .find_map(|(p, k)| k.as_deref().filter(|k| !p.overwrite && !k.is_empty()));
        if let Some(from) = stored_sequential {
            match target.copy_overwrite(from, key).await {
                Ok(()) => return Ok(()),
                Err(e) => tracing::debug!(%key, %from, error = %e, "copy not made; the overwrite object is written"),
            }
        }
        target.put_overwrite(key, jpg.clone()).await
    }

    /// Commits a capture's records with their callbacks, or drops its
    /// intent (and `state`) when nothing of it was stored.
    pub async fn commit(
        &self,
        id: RecordId,
        records: Vec<Record>,
        state: Option<StateWrites>,
    ) -> Result<Vec<Record>, IndexError> {
        if records.is_empty() {
            self.index.abandon(id, None).await?;
            return Ok(records);
        }
        let events = self.notifier.events_of(crate::notify::SNAPSHOT);
        let stored = self.index.commit_capture(id, records, state, Some(events)).await?;
        self.notifier.poke();
        Ok(stored)
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
            node: String::new(),
        });
    }
    records
}
