//! The spool's files: `{id}.jpg` (the capture's bytes) and `{id}.json` (an
//! [`Entry`]: the capture and which placements are stored, at which keys).
//! The entry format is the spool's own; it is converted to and from the
//! index's `Intent` here, so either can change without the other.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::SpoolError;
use crate::index::{Intent, Planned};

/// One spooled capture as written to `{id}.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) id: u128,
    pub(super) intent: Capture,
    /// Per placement, the key it is stored at (empty: given up).
    pub(super) stored: Vec<Option<String>>,
}

/// The capture a spool entry is for (the same fields as an intent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Capture {
    domain: String,
    app: String,
    stream: String,
    create_timestamp_ms: u64,
    sequence: u64,
    storage: String,
    placements: Vec<Placement>,
    size: u64,
    md5: [u8; 16],
    width: u32,
    height: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Placement {
    key: String,
    overwrite: bool,
}

impl From<&Intent> for Capture {
    fn from(i: &Intent) -> Capture {
        Capture {
            domain: i.domain.clone(),
            app: i.app.clone(),
            stream: i.stream.clone(),
            create_timestamp_ms: i.create_timestamp_ms,
            sequence: i.sequence,
            storage: i.storage.clone(),
            placements: i.placements.iter().map(|p| Placement { key: p.key.clone(), overwrite: p.overwrite }).collect(),
            size: i.size,
            md5: i.md5,
            width: i.width,
            height: i.height,
        }
    }
}

impl From<Capture> for Intent {
    fn from(c: Capture) -> Intent {
        Intent {
            domain: c.domain,
            app: c.app,
            stream: c.stream,
            create_timestamp_ms: c.create_timestamp_ms,
            sequence: c.sequence,
            storage: c.storage,
            placements: c.placements.into_iter().map(|p| Planned { key: p.key, overwrite: p.overwrite }).collect(),
            size: c.size,
            md5: c.md5,
            width: c.width,
            height: c.height,
        }
    }
}

/// The spool directory's files.
pub(super) struct Files {
    pub(super) dir: PathBuf,
}

impl Files {
    pub(super) fn jpg_path(&self, id: u128) -> PathBuf {
        self.dir.join(format!("{:032x}.jpg", id))
    }

    fn entry_path(&self, id: u128) -> PathBuf {
        self.dir.join(format!("{:032x}.json", id))
    }

    pub(super) async fn write_jpg(&self, id: u128, jpg: Bytes) -> Result<(), SpoolError> {
        write_atomic(&self.jpg_path(id), jpg).await
    }

    pub(super) async fn read_jpg(&self, id: u128) -> Result<Bytes, SpoolError> {
        let path = self.jpg_path(id);
        tokio::fs::read(&path).await.map(Bytes::from).map_err(|e| io(&path, e))
    }

    /// Replaces an entry atomically.
    pub(super) async fn write_entry(&self, entry: &Entry) -> Result<(), SpoolError> {
        let json = serde_json::to_vec(entry).expect("encode spool entry");
        write_atomic(&self.entry_path(entry.id), Bytes::from(json)).await
    }

    pub(super) async fn read_entry(&self, id: u128) -> Result<Entry, SpoolError> {
        let path = self.entry_path(id);
        let bytes = tokio::fs::read(&path).await.map_err(|e| io(&path, e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| io(&path, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))
    }

    pub(super) async fn remove(&self, id: u128) {
        let _ = tokio::fs::remove_file(self.entry_path(id)).await;
        let _ = tokio::fs::remove_file(self.jpg_path(id)).await;
    }
}

/// Saves a spooled capture's entry after each object the store step stores.
pub(super) struct Saver<'a> {
    pub(super) files: &'a Files,
    pub(super) id: u128,
    pub(super) capture: Capture,
}

impl crate::store::Checkpoint for Saver<'_> {
    async fn saved(&mut self, progress: &[Option<String>]) -> Result<(), crate::store::BoxError> {
        let entry = Entry { id: self.id, intent: self.capture.clone(), stored: progress.to_vec() };
        Ok(self.files.write_entry(&entry).await?)
    }
}

/// Writes a file whole or not at all: a temporary file, synced, renamed.
async fn write_atomic(path: &Path, data: Bytes) -> Result<(), SpoolError> {
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

pub(super) fn io(path: &Path, source: std::io::Error) -> SpoolError {
    SpoolError::Io { path: path.display().to_string(), source }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries written by earlier versions (which wrote the index's intent) still read.
    #[test]
    fn an_entry_of_an_earlier_version_reads() {
        let old = r#"{"id":5,"intent":{"domain":"d","app":"live","stream":"s","create_timestamp_ms":7,"sequence":3,
            "storage":"main","placements":[{"key":"a.jpg","overwrite":true}],"size":10,
            "md5":[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15],"width":64,"height":48},"stored":[null]}"#;
        let entry: Entry = serde_json::from_str(old).unwrap();
        let intent = Intent::from(entry.intent.clone());
        assert_eq!((intent.domain.as_str(), intent.sequence, intent.md5[15]), ("d", 3, 15));
        assert_eq!(intent.placements, vec![Planned { key: "a.jpg".into(), overwrite: true }]);
        let again = serde_json::to_value(Capture::from(&intent)).unwrap();
        assert_eq!(again, serde_json::from_str::<serde_json::Value>(old).unwrap()["intent"]);
    }
}
