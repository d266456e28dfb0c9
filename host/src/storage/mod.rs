//! Object storage targets (docs/storage.md, docs/templates.md): local directories and S3-compatible
//! buckets through object_store. Overwrite objects replace atomically;
//! sequential objects never replace: a taken key becomes `NAME-1.jpg`,
//! `NAME-2.jpg`, ... (first free).
//!
//! Sequential writes use conditional create (`If-None-Match: *` on S3). A
//! target is probed once, before its first sequential write: a backend that
//! accepts a second create of the same key lacks it, is logged as such, and
//! gets the fallback of docs/storage.md: HEAD each candidate key, write the first
//! free one (a writer outside edgesnap racing for that key could be replaced).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::config::{Config, StorageTarget};

mod keys;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage target {target:?} of domain {domain:?} is not configured")]
    NoTarget { domain: String, target: String },
    #[error("object key {key:?} is invalid: {why}")]
    BadKey { key: String, why: String },
    #[error("storage target {target}: {op} {key}: {source}")]
    Backend { target: String, op: &'static str, key: String, source: Box<object_store::Error> },
    #[error("storage target {target}: no object {key}")]
    NotFound { target: String, key: String },
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
    /// Conditional create: unknown until probed, then supported or not.
    conditional: tokio::sync::OnceCell<bool>,
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

/// Checks a key a plugin or template produced (docs/plugins.md): relative, no `..`,
/// no control characters, at most 1024 bytes.
pub fn check_key(key: &str) -> Result<ObjectPath, StorageError> {
    keys::check(key).map_err(|keys::BadKey { key, why }| StorageError::BadKey { key, why })
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

    /// Probes every target for conditional create in the background, so the
    /// log says at start which ones lack it (a target that does not answer
    /// is probed before its first sequential write instead).
    /// The probes are `tasks`, and give up at `stop`.
    pub fn probe_all(&self, tasks: &tokio_util::task::TaskTracker, stop: tokio_util::sync::CancellationToken) {
        for (_, target) in self.targets.read().unwrap().values() {
            let (target, stop) = (target.clone(), stop.clone());
            tasks.spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    probed = target.ensure_probed() => if let Err(e) = probed {
                        tracing::warn!(target = %target.name, error = %e, "storage target not probed yet");
                    },
                }
            });
        }
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
                // A local directory creates with O_EXCL: nothing to probe.
                conditional: tokio::sync::OnceCell::new_with(Some(true)),
            })
        }
        StorageTarget::S3 {
            endpoint,
            bucket,
            region,
            prefix,
            access_key_id_env,
            secret_access_key_env,
            credentials_file,
            virtual_hosted_style,
        } => {
            // object_store's own retries are kept short: while a target is
            // down, captures go to the spool instead of waiting minutes.
            let retry = object_store::RetryConfig {
                max_retries: 2,
                retry_timeout: std::time::Duration::from_secs(5),
                ..Default::default()
            };
            let client = object_store::ClientOptions::new()
                .with_connect_timeout(std::time::Duration::from_secs(2))
                .with_timeout(std::time::Duration::from_secs(10));
            let mut b = AmazonS3Builder::new()
                .with_retry(retry)
                .with_client_options(client)
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
            if let Some(file) = credentials_file {
                let c = read_credentials(file).map_err(|e| setup(e.to_string()))?;
                b = b.with_access_key_id(c.key_id).with_secret_access_key(c.secret);
                if let Some(t) = c.token {
                    b = b.with_token(t);
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
                conditional: tokio::sync::OnceCell::new(),
            })
        }
    }
}

/// The keys a sequential write of `key` tries, in order: `key`, then
/// `NAME-1.ext`, `NAME-2.ext`, ...
pub fn candidates(key: &str) -> impl Iterator<Item = String> + '_ {
    let (stem, ext) = match key.rfind('.') {
        Some(dot) if !key[dot..].contains('/') => key.split_at(dot),
        _ => (key, ""),
    };
    (0..).map(move |n| if n == 0 { key.to_owned() } else { format!("{stem}-{n}{ext}") })
}

/// Why a `credentials_file` cannot be used.
#[derive(Debug, thiserror::Error)]
enum CredentialsError {
    #[error("read credentials_file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("credentials_file {0}: a line is neither [profile] nor key = value")]
    Syntax(String),
    #[error("credentials_file {0}: no [default] profile")]
    NoDefault(String),
    #[error("credentials_file {0}: needs aws_access_key_id and aws_secret_access_key")]
    Incomplete(String),
}

struct Credentials {
    key_id: String,
    secret: String,
    token: Option<String>,
}

/// Reads an AWS-style credentials file: `key = value` lines, the
/// `[default]` profile (or the only one); `aws_` prefixes optional.
fn read_credentials(path: &std::path::Path) -> Result<Credentials, CredentialsError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read { file: file.clone(), source })?;
    let mut profiles: Vec<(String, HashMap<String, String>)> = vec![(String::new(), HashMap::new())];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            profiles.push((name.trim().to_owned(), HashMap::new()));
        } else if let Some((k, v)) = line.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            let k = k.strip_prefix("aws_").unwrap_or(&k).to_owned();
            profiles.last_mut().expect("one profile at least").1.insert(k, v.trim().trim_matches('"').to_owned());
        } else {
            return Err(CredentialsError::Syntax(file));
        }
    }
    profiles.retain(|(_, kv)| !kv.is_empty());
    let chosen = match profiles.iter().find(|(n, _)| n == "default" || n.is_empty()) {
        Some((_, kv)) => kv,
        None if profiles.len() == 1 => &profiles[0].1,
        None => return Err(CredentialsError::NoDefault(file)),
    };
    let get = |k: &str| chosen.get(k).filter(|v| !v.is_empty()).cloned();
    match (get("access_key_id"), get("secret_access_key")) {
        (Some(key_id), Some(secret)) => Ok(Credentials { key_id, secret, token: get("session_token") }),
        _ => Err(CredentialsError::Incomplete(file)),
    }
}

impl Target {
    fn backend(&self, op: &'static str, key: &str, source: object_store::Error) -> StorageError {
        StorageError::Backend { target: self.name.clone(), op, key: key.to_owned(), source: Box::new(source) }
    }

    /// Replaces the object at `key` atomically.
    pub async fn put_overwrite(&self, key: &str, jpg: Bytes) -> Result<(), StorageError> {
        let path = check_key(key)?;
        let opts = PutOptions { mode: PutMode::Overwrite, ..self.options(&jpg) };
        self.store.put_opts(&path, PutPayload::from_bytes(jpg), opts).await.map_err(|e| self.backend("put", key, e))?;
        Ok(())
    }

    /// Replaces the object at `key` atomically with the object at `from` on
    /// this target, without sending the bytes again: a hard link renamed
    /// into place on a local directory, a server-side copy on S3.
    pub async fn copy_overwrite(&self, from: &str, key: &str) -> Result<(), StorageError> {
        let (from_path, path) = (check_key(from)?, check_key(key)?);
        self.store.copy(&from_path, &path).await.map_err(|e| self.backend("copy", key, e))
    }

    /// Stores a new object at `key`, or at the first free `NAME-N.ext`;
    /// returns the key used. Never replaces an existing object.
    pub async fn put_sequential(&self, key: &str, jpg: Bytes) -> Result<String, StorageError> {
        check_key(key)?;
        let conditional = *self.conditional.get_or_try_init(|| self.probe()).await?;
        for candidate in candidates(key).take(MAX_SUFFIX as usize + 1) {
            let path = check_key(&candidate)?;
            let mode = if conditional {
                PutMode::Create
            } else if self.exists(&candidate).await? {
                continue;
            } else {
                PutMode::Overwrite
            };
            let opts = PutOptions { mode, ..self.options(&jpg) };
            match self.store.put_opts(&path, PutPayload::from_bytes(jpg.clone()), opts).await {
                Ok(_) => return Ok(candidate),
                Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => continue,
                Err(e) => return Err(self.backend("create", &candidate, e)),
            }
        }
        Err(StorageError::NoFreeName { target: self.name.clone(), key: key.to_owned(), tries: MAX_SUFFIX })
    }

    /// Whether the backend refuses a second create of one key; logs the answer.
    pub async fn probe(&self) -> Result<bool, StorageError> {
        let key = format!(".edgesnap-probe/{:016x}", rand::random::<u64>());
        let path = check_key(&key)?;
        let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
        self.store
            .put_opts(&path, PutPayload::from_static(b"1"), create())
            .await
            .map_err(|e| self.backend("probe create", &key, e))?;
        let supported = match self.store.put_opts(&path, PutPayload::from_static(b"2"), create()).await {
            Ok(_) => false,
            Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => true,
            Err(object_store::Error::NotImplemented { .. }) => false,
            Err(e) => return Err(self.backend("probe create", &key, e)),
        };
        if let Err(e) = self.store.delete(&path).await {
            tracing::warn!(target = %self.name, key, error = %e, "probe object not removed");
        }
        if supported {
            tracing::info!(target = %self.name, "storage target supports conditional create");
        } else {
            tracing::warn!(
                target = %self.name,
                "storage target does not support conditional create: sequential writes check each key with HEAD first, \
                 so a writer outside edgesnap racing for the same key could be replaced"
            );
        }
        Ok(supported)
    }

    /// Probes once (see [`Target::probe`]); a failed probe is tried again later.
    pub async fn ensure_probed(&self) -> Result<bool, StorageError> {
        self.conditional.get_or_try_init(|| self.probe()).await.copied()
    }

    /// The keys under `prefix` (a folder: `a/b` lists `a/b/...`), sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        use futures::TryStreamExt;
        let path = check_key(prefix)?;
        let mut keys: Vec<String> = self
            .store
            .list(Some(&path))
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .map_err(|e| self.backend("list", prefix, e))?;
        keys.sort();
        Ok(keys)
    }

    /// The length of the object at `key`, or `None` if there is none.
    pub async fn head_size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = check_key(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.backend("head", key, e)),
        }
    }

    /// This target's name, `domain/target`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn options(&self, picture: &[u8]) -> PutOptions {
        let mut attributes = object_store::Attributes::new();
        if self.content_type {
            attributes.insert(object_store::Attribute::ContentType, content_type(picture).into());
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
        let r = self.store.get(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                StorageError::NotFound { target: self.name.clone(), key: key.to_owned() }
            }
            e => self.backend("get", key, e),
        })?;
        r.bytes().await.map_err(|e| self.backend("read", key, e))
    }
}

/// The media type of a stored object, from its bytes: WebP (a RIFF
/// container of type WEBP), a WebVTT storyboard, or else JPEG.
pub fn content_type(object: &[u8]) -> &'static str {
    if object.len() >= 12 && &object[..4] == b"RIFF" && &object[8..12] == b"WEBP" {
        "image/webp"
    } else if object.starts_with(b"WEBVTT") {
        "text/vtt; charset=utf-8"
    } else {
        "image/jpeg"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend that ignores conditional create, as some S3-compatible ones do.
    #[derive(Debug, Default)]
    struct NoConditional(object_store::memory::InMemory);

    impl std::fmt::Display for NoConditional {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "NoConditional")
        }
    }

    #[async_trait::async_trait]
    impl ObjectStore for NoConditional {
        async fn put_opts(
            &self,
            p: &ObjectPath,
            payload: PutPayload,
            opts: PutOptions,
        ) -> object_store::Result<object_store::PutResult> {
            self.0.put_opts(p, payload, PutOptions { mode: PutMode::Overwrite, ..opts }).await
        }
        async fn put_multipart_opts(
            &self,
            p: &ObjectPath,
            o: object_store::PutMultipartOptions,
        ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
            self.0.put_multipart_opts(p, o).await
        }
        async fn get_opts(
            &self,
            p: &ObjectPath,
            o: object_store::GetOptions,
        ) -> object_store::Result<object_store::GetResult> {
            self.0.get_opts(p, o).await
        }
        fn delete_stream(
            &self,
            l: futures::stream::BoxStream<'static, object_store::Result<ObjectPath>>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<ObjectPath>> {
            self.0.delete_stream(l)
        }
        fn list(
            &self,
            p: Option<&ObjectPath>,
        ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
            self.0.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&ObjectPath>) -> object_store::Result<object_store::ListResult> {
            self.0.list_with_delimiter(p).await
        }
        async fn copy_opts(
            &self,
            from: &ObjectPath,
            to: &ObjectPath,
            o: object_store::CopyOptions,
        ) -> object_store::Result<()> {
            self.0.copy_opts(from, to, o).await
        }
    }

    fn target_on(store: Arc<dyn ObjectStore>) -> Target {
        Target {
            name: "d/t".into(),
            store,
            endpoint: String::new(),
            bucket: String::new(),
            content_type: false,
            conditional: tokio::sync::OnceCell::new(),
        }
    }

    #[tokio::test]
    async fn without_conditional_create_sequential_writes_still_never_replace() {
        let t = target_on(Arc::new(NoConditional::default()));
        assert!(!t.ensure_probed().await.unwrap(), "the probe sees the second create succeed");
        let k1 = t.put_sequential("a/1.jpg", Bytes::from_static(b"one")).await.unwrap();
        let k2 = t.put_sequential("a/1.jpg", Bytes::from_static(b"two")).await.unwrap();
        assert_eq!((k1.as_str(), k2.as_str()), ("a/1.jpg", "a/1-1.jpg"));
        assert_eq!(&t.get("a/1.jpg").await.unwrap()[..], b"one");
        assert!(t.head_size(".edgesnap-probe/x").await.unwrap().is_none());
        let with = target_on(Arc::new(object_store::memory::InMemory::new()));
        assert!(with.ensure_probed().await.unwrap(), "InMemory refuses a second create");
    }

    #[test]
    fn credentials_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c");
        std::fs::write(&f, "# x\n[other]\naws_access_key_id = A\n[default]\naws_access_key_id = K\naws_secret_access_key = S\naws_session_token = T\n").unwrap();
        let c = read_credentials(&f).unwrap();
        assert_eq!((c.key_id.as_str(), c.secret.as_str(), c.token.as_deref()), ("K", "S", Some("T")));
        std::fs::write(&f, "access_key_id = K\nsecret_access_key = \"S\"\n").unwrap();
        assert_eq!(read_credentials(&f).unwrap().secret, "S");
        std::fs::write(&f, "[p]\naws_access_key_id = K\n").unwrap();
        assert!(
            read_credentials(&f)
                .err()
                .unwrap()
                .to_string()
                .contains("needs aws_access_key_id and aws_secret_access_key")
        );
        std::fs::write(&f, "garbage\n").unwrap();
        assert!(read_credentials(&f).err().unwrap().to_string().contains("neither"));
        assert!(
            read_credentials(&dir.path().join("missing")).err().unwrap().to_string().contains("read credentials_file")
        );
    }

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
        // A missing object is told apart from a failing backend.
        assert!(matches!(t.get("live/nope.jpg").await, Err(StorageError::NotFound { .. })));
    }
}
