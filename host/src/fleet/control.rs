//! The fleet's control plane (SPEC §9): the catalog the API makes (domains,
//! templates, notify settings, token hashes, plugin versions and which is
//! active) kept in the KV bucket `EDGESNAP_CATALOG`, one key per domain
//! holding all of that domain's entries; plugin components in the object
//! store `EDGESNAP_PLUGINS` by sha256; the fleet's sealing key in
//! `EDGESNAP_SECRETS`.
//!
//! Invariants:
//! - The tenants see a [`CatalogStore`] and nothing of NATS. This node's
//!   index keeps a copy of every domain as it last saw it, with its KV
//!   revision: a start reads the copy and never waits on NATS.
//! - A change made here is written to KV with compare-and-set on the
//!   domain's revision as this node last saw it: a change another node
//!   made first fails it (409 `ConcurrentChange`, nothing written), so no
//!   update is lost. Then the copy is written, then the config is put in
//!   force (the tenants' order).
//! - A change seen in KV (the watcher) goes through the same steps as a
//!   local one (`Tenants::apply_remote`), under the tenants' lock, once per
//!   revision: a revision not newer than the copy's is skipped, so a
//!   node's own writes and replays after a reconnect change nothing.
//! - Secrets move sealed: notify keys are sealed with the fleet's key in KV
//!   and with this node's key in its index.
//! - Without NATS the node runs on its copy; changes are refused (503
//!   `ControlPlaneUnavailable`), never made locally only.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{kv, object_store};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::{Fleet, FleetError, REQUEST_TIMEOUT, nats};
use crate::datadir::Sealer;
use crate::index::{CatalogKey, Index};
use crate::ingest::Ingest;
use crate::policy::PluginStore;
use crate::tenants::{CatalogAccept, CatalogError, CatalogStore, CatalogWrite, RemoteChange, Tenants, reseal};
use crate::urls::UrlSigner;

/// The catalog's bucket: one key per domain.
pub const CATALOG_BUCKET: &str = "EDGESNAP_CATALOG";
/// The fleet's secrets (its sealing key).
pub const SECRETS_BUCKET: &str = "EDGESNAP_SECRETS";
/// Uploaded plugin components, named by their sha256.
pub const PLUGINS_BUCKET: &str = "EDGESNAP_PLUGINS";
/// The kind of the index's copy rows that hold a domain's KV revision.
const REVISION: &str = "fleet-revision";
/// The largest plugin component fetched (the API accepts 8 MiB).
const MAX_PLUGIN_BYTES: u64 = 8 << 20;

/// A domain's entries as one KV value.
#[derive(Debug, Serialize, Deserialize)]
struct DomainDoc {
    v: u32,
    entries: Vec<DocEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DocEntry {
    kind: String,
    #[serde(default)]
    name: String,
    doc: serde_json::Value,
}

/// A domain as this node last saw it in KV: its revision and entries
/// ((kind, name) → bytes, secrets sealed with this node's key). Revision 0:
/// never in KV (made before the node joined the fleet).
#[derive(Debug, Clone, Default)]
struct Seen {
    revision: u64,
    entries: BTreeMap<(String, String), Vec<u8>>,
}

pub struct ControlPlane {
    fleet: Arc<Fleet>,
    copy: Arc<Index>,
    node_sealer: Sealer,
    fleet_sealer: OnceCell<Sealer>,
    catalog: OnceCell<kv::Store>,
    secrets: OnceCell<kv::Store>,
    plugins: OnceCell<object_store::ObjectStore>,
    seen: Mutex<BTreeMap<String, Seen>>,
    /// Whether the watcher is following KV (changes are refused while not).
    following: AtomicBool,
}

/// What this node does about a change beyond the config in force.
pub struct Effects {
    pub ingest: Arc<Ingest>,
    pub plugins: Arc<PluginStore>,
    /// Signs with the fleet's URL-signing key once it is known.
    pub urls: Arc<UrlSigner>,
    /// Where the fleet's URL-signing key is kept for starts without NATS.
    pub data_dir: std::path::PathBuf,
}

fn unavailable(e: impl std::fmt::Display) -> CatalogError {
    CatalogError::Unavailable(format!(
        "the fleet's control plane cannot be reached ({e}); nothing was changed, try again when NATS is back"
    ))
}

/// Why following the catalog ended without an error.
enum Followed {
    Stopped,
    Reconnected,
}

impl ControlPlane {
    /// The control plane over this node's copy in `index`.
    pub fn new(fleet: Arc<Fleet>, index: Arc<Index>, node_sealer: Sealer) -> Result<Arc<ControlPlane>, CatalogError> {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        for ((kind, domain, name), bytes) in index.catalog()? {
            let s = seen.entry(domain.clone()).or_default();
            if kind == REVISION {
                s.revision = std::str::from_utf8(&bytes).ok().and_then(|r| r.parse().ok()).ok_or_else(|| {
                    CatalogError::Corrupt { what: format!("{REVISION} {domain}"), why: "not a number".into() }
                })?;
            } else {
                s.entries.insert((kind, name), bytes);
            }
        }
        Ok(Arc::new(ControlPlane {
            fleet,
            copy: index,
            node_sealer,
            fleet_sealer: OnceCell::new(),
            catalog: OnceCell::new(),
            secrets: OnceCell::new(),
            plugins: OnceCell::new(),
            seen: Mutex::new(seen),
            following: AtomicBool::new(false),
        }))
    }

    async fn catalog_bucket(&self) -> Result<&kv::Store, FleetError> {
        let config = kv::Config {
            bucket: CATALOG_BUCKET.into(),
            description: "edgesnap: the API-made catalog, one key per domain".into(),
            history: 5,
            ..Default::default()
        };
        self.fleet.bucket(&self.catalog, config).await
    }

    /// A secret of the fleet (32 bytes): made by the first node that asks
    /// (KV create: one writer wins), read by the others. Never returned by
    /// any API.
    async fn fleet_secret(&self, name: &'static str) -> Result<Vec<u8>, FleetError> {
        let config = kv::Config {
            bucket: SECRETS_BUCKET.into(),
            description: "edgesnap: the fleet's keys".into(),
            history: 1,
            ..Default::default()
        };
        let secrets = self.fleet.bucket(&self.secrets, config).await?;
        let fresh = rand::random::<[u8; 32]>().to_vec();
        let key = match secrets.create(name, fresh.clone().into()).await {
            Ok(_) => fresh,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => secrets
                .get(name)
                .await
                .map_err(|e| nats("read a fleet key", e))?
                .map(|b| b.to_vec())
                .unwrap_or_default(),
            Err(e) => return Err(nats("make a fleet key", e)),
        };
        if key.len() != 32 {
            return Err(FleetError::Nats {
                what: "read a fleet key",
                source: format!("{SECRETS_BUCKET} {name}: {} bytes, a key is 32", key.len()).into(),
            });
        }
        Ok(key)
    }

    /// The fleet's sealing key (notify keys in KV are sealed with it).
    async fn fleet_sealer(&self) -> Result<&Sealer, FleetError> {
        self.fleet_sealer.get_or_try_init(|| async { Ok(Sealer::with_key(&self.fleet_secret("sealing").await?)) }).await
    }

    /// Signs and verifies URLs with the fleet's key, kept for starts without NATS.
    async fn use_fleet_url_key(&self, effects: &Effects) -> Result<(), FleetError> {
        let key = self.fleet_secret("url-signing").await?;
        if crate::datadir::fleet_url_signing_key(&effects.data_dir).ok().flatten().as_ref() != Some(&key) {
            crate::datadir::keep_fleet_url_signing_key(&effects.data_dir, &key)
                .map_err(|e| nats("keep the fleet's URL-signing key", e))?;
        }
        if effects.urls.set_key(key) {
            tracing::info!(
                "fleet: image URLs are signed with the fleet's key now (URLs this node signed alone no longer open)"
            );
        }
        Ok(())
    }

    async fn plugin_bucket(&self) -> Result<&object_store::ObjectStore, FleetError> {
        let js = self.fleet.jetstream()?;
        self.plugins
            .get_or_try_init(|| async {
                if let Ok(store) = js.get_object_store(PLUGINS_BUCKET).await {
                    return Ok(store);
                }
                let clustered = self.fleet.client.server_info().cluster.is_some();
                let config = object_store::Config {
                    bucket: PLUGINS_BUCKET.into(),
                    description: Some("edgesnap: uploaded plugin components by sha256".into()),
                    num_replicas: if clustered { 3 } else { 1 },
                    ..Default::default()
                };
                match js.create_object_store(config.clone()).await {
                    Ok(store) => Ok(store),
                    Err(_) if clustered => js
                        .create_object_store(object_store::Config { num_replicas: 1, ..config })
                        .await
                        .map_err(|e| nats("create the plugins bucket", e)),
                    Err(e) => Err(nats("create the plugins bucket", e)),
                }
            })
            .await
    }

    /// Shares an uploaded component with the fleet (before its version is
    /// recorded in the catalog, so every node that sees the version can
    /// fetch it).
    pub async fn share_plugin(&self, version: &str, bytes: &[u8]) -> Result<(), CatalogError> {
        let put = async {
            let store = self.plugin_bucket().await?;
            if store.info(version).await.is_ok() {
                return Ok(());
            }
            store.put(version, &mut &bytes[..]).await.map_err(|e| nats("share a plugin", e))?;
            Ok::<_, FleetError>(())
        };
        match tokio::time::timeout(REQUEST_TIMEOUT * 2, put).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(unavailable(e)),
            Err(_) => Err(unavailable("timed out")),
        }
    }

    /// A component from the fleet's object store.
    async fn fetch_plugin(&self, version: &str) -> Result<Vec<u8>, FleetError> {
        let store = self.plugin_bucket().await?;
        let object = store.get(version).await.map_err(|e| nats("fetch a plugin", e))?;
        let mut bytes = Vec::new();
        object.take(MAX_PLUGIN_BYTES + 1).read_to_end(&mut bytes).await.map_err(|e| nats("fetch a plugin", e))?;
        if bytes.len() as u64 > MAX_PLUGIN_BYTES {
            return Err(FleetError::Nats { what: "fetch a plugin", source: "larger than 8 MiB".into() });
        }
        Ok(bytes)
    }

    /// A domain's KV value, its secrets sealed with the fleet's key.
    fn encode(&self, domain: &str, s: &Seen, fleet: &Sealer) -> Result<Vec<u8>, CatalogError> {
        let mut entries = Vec::new();
        for ((kind, name), bytes) in &s.entries {
            let key = (kind.clone(), domain.to_owned(), name.clone());
            let bytes = reseal(&key, bytes, &self.node_sealer, fleet)?;
            let doc = serde_json::from_slice(&bytes)
                .map_err(|e| CatalogError::Corrupt { what: format!("{kind} {domain}/{name}"), why: e.to_string() })?;
            entries.push(DocEntry { kind: kind.clone(), name: name.clone(), doc });
        }
        Ok(serde_json::to_vec(&DomainDoc { v: 1, entries }).expect("a domain document serializes"))
    }

    /// A domain's entries from its KV value, secrets sealed with this node's key.
    fn decode(&self, domain: &str, value: &[u8], fleet: &Sealer) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError> {
        let doc: DomainDoc = serde_json::from_slice(value)
            .map_err(|e| CatalogError::Corrupt { what: format!("{CATALOG_BUCKET} {domain}"), why: e.to_string() })?;
        let mut out = Vec::new();
        for e in doc.entries {
            let key = (e.kind, domain.to_owned(), e.name);
            let bytes = serde_json::to_vec(&e.doc).expect("JSON serializes");
            let bytes = reseal(&key, &bytes, fleet, &self.node_sealer)?;
            out.push((key, bytes));
        }
        Ok(out)
    }

    /// Writes a domain's copy with its revision, in one commit.
    async fn keep_copy(&self, domain: &str, s: &Seen) -> Result<(), CatalogError> {
        let mut writes: Vec<(CatalogKey, Option<Vec<u8>>)> = s
            .entries
            .iter()
            .map(|((kind, name), v)| ((kind.clone(), domain.to_owned(), name.clone()), Some(v.clone())))
            .collect();
        let revision = (REVISION.to_owned(), domain.to_owned(), String::new());
        writes.push((revision, Some(s.revision.to_string().into_bytes())));
        Ok(self.copy.write_catalog(Some(domain.to_owned()), writes).await?)
    }

    /// Writes a domain to KV if it is still at the revision this node saw.
    async fn put_domain(&self, domain: &str, s: &Seen) -> Result<u64, CatalogError> {
        let kv = self.catalog_bucket().await.map_err(unavailable)?;
        let fleet = self.fleet_sealer().await.map_err(unavailable)?;
        let value = self.encode(domain, s, fleet)?.into();
        let conflict = || {
            CatalogError::Conflict(format!(
                "domain {domain:?} was changed on another node meanwhile; nothing was written, read it again and retry"
            ))
        };
        let put = async {
            if s.revision == 0 {
                kv.create(domain, value).await.map_err(|e| match e.kind() {
                    kv::CreateErrorKind::AlreadyExists => conflict(),
                    _ => unavailable(e),
                })
            } else {
                kv.update(domain, value, s.revision).await.map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => conflict(),
                    _ => unavailable(e),
                })
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, put).await.map_err(|_| unavailable("timed out"))?
    }

    /// Follows the catalog in KV until `stop`, reconnecting after failures
    /// and watching again after NATS reconnects.
    pub async fn run(self: Arc<Self>, tenants: Arc<Tenants>, effects: Effects, stop: CancellationToken) {
        let mut failing = false;
        loop {
            match self.follow(&tenants, &effects, &stop).await {
                Ok(Followed::Stopped) => return,
                Ok(Followed::Reconnected) => {
                    tracing::info!("fleet: NATS reconnected; watching the control plane again");
                    continue;
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "fleet: not following the control plane; this node runs on its copy and retries");
                }
                Err(_) => {}
            }
            self.following.store(false, Ordering::SeqCst);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            if self.fleet.connected() && failing {
                failing = false;
            }
        }
    }

    async fn follow(
        &self,
        tenants: &Tenants,
        effects: &Effects,
        stop: &CancellationToken,
    ) -> Result<Followed, FleetError> {
        let connections = self.fleet.connections();
        let kv = self.catalog_bucket().await?;
        let fleet = self.fleet_sealer().await?;
        self.use_fleet_url_key(effects).await?;
        self.offer_own(tenants).await;
        let mut watch = tokio::time::timeout(REQUEST_TIMEOUT, kv.watch_with_history(">"))
            .await
            .map_err(|_| nats("watch the catalog", std::io::Error::from(std::io::ErrorKind::TimedOut)))?
            .map_err(|e| nats("watch the catalog", e))?;
        self.following.store(true, Ordering::SeqCst);
        tracing::info!(bucket = CATALOG_BUCKET, "fleet: following the control plane");
        let mut check = tokio::time::interval(Duration::from_secs(1));
        loop {
            let entry = tokio::select! {
                _ = stop.cancelled() => return Ok(Followed::Stopped),
                entry = watch.next() => entry,
                // A reconnect may have taken the watch's consumer with the
                // server it was on (seen: a change on another node never
                // arrived); the watch is made again, its history replayed
                // (revisions already applied are skipped).
                _ = check.tick() => {
                    if self.fleet.connections() != connections {
                        return Ok(Followed::Reconnected);
                    }
                    continue;
                }
            };
            let entry = match entry {
                Some(Ok(entry)) => entry,
                Some(Err(e)) => return Err(nats("watch the catalog", e)),
                None => return Err(nats("watch the catalog", std::io::Error::other("the watch ended"))),
            };
            let domain = entry.key.clone();
            let entries = match entry.operation {
                kv::Operation::Put => match self.decode(&domain, &entry.value, fleet) {
                    Ok(entries) => entries,
                    Err(e) => {
                        tracing::error!(%domain, revision = entry.revision, error = %e, "fleet: a catalog value does not read; skipped");
                        continue;
                    }
                },
                kv::Operation::Delete | kv::Operation::Purge => Vec::new(),
            };
            match tenants.apply_remote(&domain, entry.revision, Some(entries)).await {
                Ok(Some(change)) => {
                    tracing::info!(%domain, revision = entry.revision, "fleet: applied a change made on another node");
                    self.take_effect(&domain, change, effects).await;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(%domain, revision = entry.revision, error = %e, "fleet: a catalog change cannot be applied; skipped")
                }
            }
        }
    }

    /// Offers the fleet the domains this node made before it joined (never
    /// in KV): each is created unless the fleet has it already, which wins.
    async fn offer_own(&self, tenants: &Tenants) {
        let own: Vec<(String, Seen)> = {
            let seen = self.seen.lock().unwrap();
            seen.iter()
                .filter(|(_, s)| s.revision == 0 && !s.entries.is_empty())
                .map(|(d, s)| (d.clone(), s.clone()))
                .collect()
        };
        for (domain, s) in own {
            let _serialized = tenants.hold_changes().await;
            match self.put_domain(&domain, &s).await {
                Ok(revision) => {
                    let s = Seen { revision, ..s };
                    if let Err(e) = self.keep_copy(&domain, &s).await {
                        tracing::error!(%domain, error = %e, "fleet: keeping the copy of an offered domain failed");
                    }
                    self.seen.lock().unwrap().insert(domain.clone(), s);
                    tracing::info!(%domain, "fleet: a domain made before joining is now the fleet's");
                }
                Err(CatalogError::Conflict(_)) => {
                    tracing::warn!(%domain, "fleet: the fleet already has this domain; its definition replaces this node's")
                }
                Err(e) => tracing::warn!(%domain, error = %e, "fleet: offering a domain made before joining failed"),
            }
        }
    }

    /// Live publishers of a removed domain go; a newly active plugin is
    /// fetched (if this node does not have it), checked and put in force.
    async fn take_effect(&self, domain: &str, change: RemoteChange, effects: &Effects) {
        let policies = effects.plugins.policies();
        if change.gone {
            let n = effects.ingest.disconnect_domain(domain);
            policies.activate(domain, None);
            tracing::info!(%domain, disconnected = n, "fleet: the domain was removed on another node");
            self.fleet.plugin_problem(domain, None);
            return;
        }
        let Some(active) = change.active_plugin else { return };
        let Some(version) = active else {
            policies.activate(domain, None);
            self.fleet.plugin_problem(domain, None);
            return;
        };
        match self.load_plugin(&version, effects).await {
            Ok(plugin) => {
                policies.activate(domain, Some(Arc::new(plugin)));
                self.fleet.plugin_problem(domain, None);
                tracing::info!(%domain, %version, "fleet: plugin activated on another node is in force here");
            }
            Err(e) => {
                tracing::error!(%domain, %version, error = %e, "fleet: the plugin activated on another node cannot be used here; the previous one stays in force");
                self.fleet.plugin_problem(domain, Some(format!("version {version}: {e}")));
            }
        }
    }

    async fn load_plugin(&self, version: &str, effects: &Effects) -> Result<crate::policy::Plugin, String> {
        self.fetch_missing_plugin(version, &effects.plugins).await?;
        effects.plugins.compile(version).await.map_err(|e| e.to_string())
    }

    /// Puts a version's component in this node's plugin store from the
    /// fleet's object store, if the node does not have it (its sha256
    /// checked).
    pub async fn fetch_missing_plugin(&self, version: &str, plugins: &PluginStore) -> Result<(), String> {
        if plugins.has(version) {
            return Ok(());
        }
        let bytes = tokio::time::timeout(REQUEST_TIMEOUT * 2, self.fetch_plugin(version))
            .await
            .map_err(|_| "fetching it from the fleet timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        if digest != version {
            return Err(format!("the fleet's copy has sha256 {digest}"));
        }
        plugins.save(version, &bytes).map_err(|e| e.to_string())
    }
}

impl CatalogStore for ControlPlane {
    fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError> {
        Ok(self.copy.catalog()?.into_iter().filter(|((kind, _, _), _)| kind != REVISION).collect())
    }

    fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_> {
        Box::pin(async move {
            if !self.following.load(Ordering::SeqCst) || !self.fleet.connected() {
                return Err(unavailable("NATS is not reachable or the catalog is not followed yet"));
            }
            let domains: BTreeSet<String> =
                writes.iter().map(|((_, d, _), _)| d.clone()).chain(clear_domain.clone()).collect();
            // One KV value per domain: a change of several domains (only
            // re-sealing at start makes one) is written domain by domain.
            for domain in domains {
                let mut s = self.seen.lock().unwrap().get(&domain).cloned().unwrap_or_default();
                if clear_domain.as_deref() == Some(domain.as_str()) {
                    s.entries.clear();
                }
                for ((kind, d, name), v) in &writes {
                    if *d != domain {
                        continue;
                    }
                    match v {
                        Some(v) => drop(s.entries.insert((kind.clone(), name.clone()), v.clone())),
                        None => drop(s.entries.remove(&(kind.clone(), name.clone()))),
                    }
                }
                s.revision = self.put_domain(&domain, &s).await?;
                self.keep_copy(&domain, &s).await?;
                self.seen.lock().unwrap().insert(domain, s);
            }
            Ok(())
        })
    }

    fn accept(&self, domain: &str, revision: u64, entries: Option<Vec<(CatalogKey, Vec<u8>)>>) -> CatalogAccept<'_> {
        let domain = domain.to_owned();
        Box::pin(async move {
            if self.seen.lock().unwrap().get(&domain).is_some_and(|s| s.revision >= revision) {
                return Ok(false);
            }
            let entries =
                entries.unwrap_or_default().into_iter().map(|((kind, _, name), v)| ((kind, name), v)).collect();
            let s = Seen { revision, entries };
            self.keep_copy(&domain, &s).await?;
            self.seen.lock().unwrap().insert(domain, s);
            Ok(true)
        })
    }
}
