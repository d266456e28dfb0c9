//! Object storage targets (SPEC §1, §2): local directories and S3-compatible
//! buckets through object_store. Overwrite objects replace atomically;
//! sequential objects never replace: a taken key becomes `NAME-1.jpg`,
//! `NAME-2.jpg`, ... (first free).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::{Config, StorageTarget};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage target {target:?} of domain {domain:?} is not configured")]
    NoTarget { domain: String, target: String },
    #[error("object key {key:?} is invalid: {why}")]
    BadKey { key: String, why: String },
    #[error("storage target {target}: {op} {key}: {source}")]
    Backend { target: String, op: &'static str, key: String, source: Box<object_store::Error> },
    #[error("storage target {target}: no free name for {key} after {tries} tries")]
    NoFreeName { target: String, key: String, tries: u32 },
    #[error("set up storage target {target}: {why}")]
    Setup { target: String, why: String },
}

/// One configured target.
pub struct Target {
    name: String,
    store: Arc<dyn ObjectStore>,
    /// What records show as endpoint and bucket.
    pub endpoint: String,
    pub bucket: String,
    /// Whether the backend stores a Content-Type (local files do not).
    content_type: bool,
}

/// All targets, by (domain, target name). Domains made through the API add
/// targets while the host runs, so the map is swapped as a whole.
#[derive(Default)]
pub struct Storage {
    targets: std::sync::RwLock<Arc<Targets>>,
}

type Targets = HashMap<(String, String), (StorageTarget, Arc<Target>)>;

/// Suffixed names tried for a taken sequential key.
const MAX_SUFFIX: u32 = 1000;

/// Checks a key a plugin or template produced (SPEC §6): relative, no `..`,
/// no control characters, at most 1024 bytes.
pub fn check_key(key: &str) -> Result<ObjectPath, StorageError> {
    let bad = |why: &str| StorageError::BadKey { key: key.chars().take(200).collect(), why: why.into() };
    if key.is_empty() || key.len() > 1024 {
        return Err(bad("must be 1-1024 bytes"));
    }
    if key.starts_with('/') || key.contains('\\') {
        return Err(bad("must be a relative path"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad("must not contain empty, '.' or '..' segments"));
    }
    ObjectPath::parse(key).map_err(|e| bad(&e.to_string()))
}

impl Storage {
    pub fn from_config(config: &Config) -> Result<Storage, StorageError> {
        let storage = Storage::default();
        storage.sync(config)?;
        Ok(storage)
    }

    /// Builds the targets `config` names that are new or changed, without
    /// putting them in force: setup errors (a missing credential variable)
    /// surface before a change is accepted.
    pub fn prepare(&self, config: &Config) -> Result<Prepared, StorageError> {
        let current = self.targets.read().unwrap().clone();
        let mut next = HashMap::new();
        for (domain, d) in &config.domains {
            for (name, t) in &d.storage {
                let key = (domain.clone(), name.clone());
                let built = match current.get(&key) {
                    Some((old, target)) if old == t => target.clone(),
                    _ => Arc::new(build(&format!("{domain}/{name}"), t)?),
                };
                next.insert(key, (t.clone(), built));
            }
        }
        Ok(Prepared(Arc::new(next)))
    }

    /// Puts prepared targets in force; writes already under way finish on the old ones.
    pub fn commit(&self, prepared: Prepared) {
        *self.targets.write().unwrap() = prepared.0;
    }

    /// Prepares and commits.
    pub fn sync(&self, config: &Config) -> Result<(), StorageError> {
        let p = self.prepare(config)?;
        self.commit(p);
        Ok(())
    }

    pub fn target(&self, domain: &str, name: &str) -> Result<Arc<Target>, StorageError> {
        self.targets
            .read()
            .unwrap()
            .get(&(domain.to_owned(), name.to_owned()))
            .map(|(_, t)| t.clone())
            .ok_or_else(|| StorageError::NoTarget { domain: domain.into(), target: name.into() })
    }
}

/// Targets built for a config, not yet in force.
pub struct Prepared(Arc<Targets>);

fn build(full: &str, t: &StorageTarget) -> Result<Target, StorageError> {
    let setup = |why: String| StorageError::Setup { target: full.to_owned(), why };
    match t {
        StorageTarget::Local { path } => {
            std::fs::create_dir_all(path).map_err(|e| setup(format!("create {}: {e}", path.display())))?;
            let abs = std::fs::canonicalize(path).map_err(|e| setup(format!("{}: {e}", path.display())))?;
            let store = LocalFileSystem::new_with_prefix(&abs).map_err(|e| setup(e.to_string()))?;
            Ok(Target {
                name: full.to_owned(),
                store: Arc::new(store),
                endpoint: format!("file://{}", abs.display()),
                bucket: String::new(),
                content_type: false,
            })
        }
        StorageTarget::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id_env,
            secret_access_key_env,
            virtual_hosted_style,
        } => {
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(region)
                .with_virtual_hosted_style_request(*virtual_hosted_style);
            if let Some(ep) = endpoint {
                b = b.with_endpoint(ep).with_allow_http(ep.starts_with("http://"));
            }
            for (var, is_key) in [(access_key_id_env, true), (secret_access_key_env, false)] {
                if let Some(var) = var {
                    let v = std::env::var(var).map_err(|_| setup(format!("environment variable {var} is not set")))?;
                    b = if is_key { b.with_access_key_id(v) } else { b.with_secret_access_key(v) };
                }
            }
            let s3 = b.build().map_err(|e| setup(e.to_string()))?;
            let store: Arc<dyn ObjectStore> =
                if prefix.is_empty() { Arc::new(s3) } else { Arc::new(PrefixStore::new(s3, prefix.as_str())) };
            Ok(Target {
                name: full.to_owned(),
                store,
                endpoint: endpoint.clone().unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com")),
                bucket: bucket.clone(),
                content_type: true,
            })
        }
    }
}

impl Target {
    fn backend(&self, op: &'static str, key: &str, source: object_store::Error) -> StorageError {
        StorageError::Backend { target: self.name.clone(), op, key: key.to_owned(), source: Box::new(source) }
    }

    /// Replaces the object at `key` atomically.
    pub async fn put_overwrite(&self, key: &str, jpg: Bytes) -> Result<(), StorageError> {
        let path = check_key(key)?;
        let opts = PutOptions { mode: PutMode::Overwrite, ..self.options() };
        self.store.put_opts(&path, PutPayload::from_bytes(jpg), opts).await.map_err(|e| self.backend("put", key, e))?;
        Ok(())
    }

    /// Stores a new object at `key`, or at the first free `NAME-N.ext`;
    /// returns the key used. Never replaces an existing object.
    pub async fn put_sequential(&self, key: &str, jpg: Bytes) -> Result<String, StorageError> {
        check_key(key)?;
        let (stem, ext) = match key.rfind('.') {
            Some(dot) if !key[dot..].contains('/') => key.split_at(dot),
            _ => (key, ""),
        };
        for n in 0..=MAX_SUFFIX {
            let candidate = if n == 0 { key.to_owned() } else { format!("{stem}-{n}{ext}") };
            let path = check_key(&candidate)?;
            let opts = PutOptions { mode: PutMode::Create, ..self.options() };
            match self.store.put_opts(&path, PutPayload::from_bytes(jpg.clone()), opts).await {
                Ok(_) => return Ok(candidate),
                Err(object_store::Error::AlreadyExists { .. }) => continue,
                Err(e) => return Err(self.backend("create", &candidate, e)),
            }
        }
        Err(StorageError::NoFreeName { target: self.name.clone(), key: key.to_owned(), tries: MAX_SUFFIX })
    }

    fn options(&self) -> PutOptions {
        let mut attributes = object_store::Attributes::new();
        if self.content_type {
            attributes.insert(object_store::Attribute::ContentType, "image/jpeg".into());
        }
        PutOptions { attributes, ..Default::default() }
    }

    /// Removes the object at `key`; false if there was none.
    pub async fn delete(&self, key: &str) -> Result<bool, StorageError> {
        let path = check_key(key)?;
        match self.store.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend("delete", key, e)),
        }
    }

    /// Whether an object is there (a HEAD).
    pub async fn exists(&self, key: &str) -> Result<bool, StorageError> {
        let path = check_key(key)?;
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.backend("head", key, e)),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Bytes, StorageError> {
        let path = check_key(key)?;
        let r = self.store.get(&path).await.map_err(|e| self.backend("get", key, e))?;
        r.bytes().await.map_err(|e| self.backend("read", key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for ok in ["live/cam1.jpg", "a/b/c/1.jpg", "x.jpg"] {
            assert!(check_key(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/abs.jpg", "a/../b.jpg", "a//b.jpg", "a/./b.jpg", "a\nb.jpg", "a\\b.jpg", &"a".repeat(1025)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn sequential_never_replaces_and_overwrite_does() {
        let dir = tempfile::tempdir().unwrap();
        let t = build("d/local", &StorageTarget::Local { path: dir.path().to_owned() }).unwrap();
        let k1 = t.put_sequential("live/cam1/100.jpg", Bytes::from_static(b"one")).await.unwrap();
        let k2 = t.put_sequential("live/cam1/100.jpg", Bytes::from_static(b"two")).await.unwrap();
        let k3 = t.put_sequential("live/cam1/100.jpg", Bytes::from_static(b"three")).await.unwrap();
        assert_eq!(
            (k1.as_str(), k2.as_str(), k3.as_str()),
            ("live/cam1/100.jpg", "live/cam1/100-1.jpg", "live/cam1/100-2.jpg")
        );
        assert_eq!(&t.get(&k1).await.unwrap()[..], b"one");
        assert_eq!(&t.get(&k3).await.unwrap()[..], b"three");
        t.put_overwrite("live/cam1.jpg", Bytes::from_static(b"a")).await.unwrap();
        t.put_overwrite("live/cam1.jpg", Bytes::from_static(b"b")).await.unwrap();
        assert_eq!(&t.get("live/cam1.jpg").await.unwrap()[..], b"b");
    }
}
