//! Crash recovery, at start: spooled captures go back in their queues;
//! captures that were being stored when the host stopped are settled by
//! looking for their objects.

use std::sync::Arc;

use md5::Digest;

use super::{BACKOFF_FIRST, BACKOFF_MAX, Queued, Spool};
use crate::index::{IndexError, Intent, RecordId};
use crate::storage::StorageError;

/// Sequential keys tried at recovery (as many as a write would try).
const MAX_SUFFIX: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("look for its objects: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl Spool {
    /// At start: spooled captures go back in their queues; captures that
    /// were being stored when the host stopped are settled by looking for
    /// their objects (in the background, retried while a target is down).
    pub async fn recover(self: &Arc<Self>) -> Result<(), super::SpoolError> {
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
            match self.files.read_entry(id.0).await {
                Ok(_) => match tokio::fs::metadata(self.files.jpg_path(id.0)).await {
                    Ok(m) => {
                        {
                            let mut st = self.state.lock().unwrap();
                            st.total += m.len();
                            st.peak = st.peak.max(st.total);
                            *st.domain_bytes.entry(intent.domain.clone()).or_default() += m.len();
                        }
                        let stream = (intent.app.clone(), intent.stream.clone());
                        let key = (intent.domain.clone(), intent.storage.clone());
                        self.enqueue(key, id.0, Queued { len: m.len(), stream });
                        spooled += 1;
                    }
                    Err(_) => in_flight.push((id, intent)),
                },
                Err(_) => in_flight.push((id, intent)),
            }
        }
        // Files whose capture is no longer pending (committed just before a crash).
        let dir_path = &self.files.dir;
        let mut dir = tokio::fs::read_dir(dir_path).await.map_err(|e| super::files::io(dir_path, e))?;
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
    async fn settle(&self, id: RecordId, intent: &Intent) -> Result<(), SettleError> {
        let target = match self.storage.target(&intent.domain, &intent.storage) {
            Ok(t) => t,
            Err(_) => {
                self.index.abandon(id, None).await?;
                return Ok(());
            }
        };
        let mut stored = vec![None; intent.placements.len()];
        // The capture's own bytes: same length, same MD5.
        let ours = |key: String| {
            let target = target.clone();
            async move {
                match target.head_size(&key).await? {
                    None => Ok::<_, SettleError>(None),
                    Some(size) if size != intent.size => Ok(Some(false)),
                    Some(_) => {
                        let bytes = target.get(&key).await?;
                        Ok(Some(<[u8; 16]>::from(md5::Md5::digest(&bytes)) == intent.md5))
                    }
                }
            }
        };
        for (i, p) in intent.placements.iter().enumerate() {
            if p.overwrite {
                if ours(p.key.clone()).await? == Some(true) {
                    // Not if a newer capture's record already holds the object.
                    let owner = self.index.key_owner(&intent.domain, &intent.storage, &p.key)?;
                    let newer = match owner {
                        Some(o) => {
                            self.index.get(o)?.is_some_and(|r| r.create_timestamp_ms > intent.create_timestamp_ms)
                        }
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
                let owner = self.index.key_owner(&intent.domain, &intent.storage, &candidate)?;
                if owner.is_none() && same {
                    stored[i] = Some(candidate);
                    break;
                }
            }
        }
        let records = crate::store::records_of(id, intent, &stored, &target);
        let outcome = if records.is_empty() { "nothing" } else { "recorded" };
        tracing::info!(%id, domain = %intent.domain, app = %intent.app, stream = %intent.stream,
            objects = records.len(), "settled a capture in flight at the last stop");
        self.store.commit(id, records, None).await?;
        self.metrics.recovered.get_or_create(&vec![("outcome", outcome.to_owned())]).inc();
        Ok(())
    }
}
