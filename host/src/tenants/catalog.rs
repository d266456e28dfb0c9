//! The catalog: what the API made (domains, templates, notify settings,
//! tokens, plugin versions), kept as (kind, domain, name) → JSON entries in
//! the file's own raw forms.
//!
//! [`CatalogStore`] is the seam between the tenants and where the catalog
//! lives: a node keeps it in its index (redb's `catalog` table); a fleet
//! would keep it in its control plane. Everything above the seam (the
//! entries' meaning, validation, the config in force) is the same.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use super::*;
use crate::index::{Index, IndexError};

/// Why the catalog cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The store has stopped (the host is shutting down).
    #[error("the catalog store has stopped")]
    Stopped,
    #[error("catalog entry {what} does not read: {why}")]
    Corrupt { what: String, why: String },
    /// Another node changed the same domain first (a fleet's control
    /// plane): nothing was written; the change may be tried again.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot be reached (a fleet's control plane without NATS):
    /// nothing was written.
    #[error("{0}")]
    Unavailable(String),
    #[error("catalog store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<IndexError> for CatalogError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Stopped => CatalogError::Stopped,
            e => CatalogError::Store(Box::new(e)),
        }
    }
}

pub type CatalogWrite<'a> = Pin<Box<dyn Future<Output = Result<(), CatalogError>> + Send + 'a>>;
pub type CatalogAccept<'a> = Pin<Box<dyn Future<Output = Result<bool, CatalogError>> + Send + 'a>>;

/// Where the catalog is kept. Reads it whole at start; writes one change
/// (entries set or deleted with `None`, after clearing every entry of
/// `clear_domain`) atomically. The tenants call it under their lock, one
/// change at a time.
pub trait CatalogStore: Send + Sync {
    fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError>;
    fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_>;
    /// Takes in every entry of `domain` as another writer left them at
    /// `revision` (a fleet's control plane; `None`: the domain is gone).
    /// `Ok(false)`: the store holds that revision or a later one already,
    /// and nothing changed.
    fn accept(&self, domain: &str, revision: u64, entries: Option<Vec<(CatalogKey, Vec<u8>)>>) -> CatalogAccept<'_>;
}

/// A node's catalog: its index.
impl CatalogStore for Index {
    fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError> {
        Ok(self.catalog()?)
    }

    fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_> {
        Box::pin(async move { Ok(self.write_catalog(clear_domain, writes).await?) })
    }

    /// A node alone keeps no revisions: what it is given replaces the domain.
    fn accept(&self, domain: &str, _revision: u64, entries: Option<Vec<(CatalogKey, Vec<u8>)>>) -> CatalogAccept<'_> {
        let writes = entries.unwrap_or_default().into_iter().map(|(k, v)| (k, Some(v))).collect();
        let domain = domain.to_owned();
        Box::pin(async move {
            self.write_catalog(Some(domain), writes).await?;
            Ok(true)
        })
    }
}

/// What the API made, decoded from the catalog.
#[derive(Debug, Clone, Default)]
pub(super) struct Catalog {
    pub(super) domains: BTreeMap<String, RawDomain>,
    pub(super) templates: BTreeMap<(String, String), RawTemplate>,
    pub(super) notify: BTreeMap<String, RawNotify>,
    pub(super) tokens: BTreeMap<(String, String), TokenDoc>,
    pub(super) plugins: BTreeMap<(String, String), PluginDoc>,
    /// Pull sources by (domain, "app/stream").
    pub(super) sources: BTreeMap<(String, String), crate::config::RawSource>,
    pub(super) active_plugins: BTreeMap<String, String>,
    /// The version active before the active one, per domain: where a
    /// demotion goes (absent: the default).
    pub(super) previous_plugins: BTreeMap<String, String>,
}

impl Catalog {
    /// The catalog, its sealed notify keys opened; also the domains whose
    /// key an earlier version stored unsealed.
    pub(super) fn load(store: &dyn CatalogStore, sealer: &Sealer) -> Result<(Catalog, Vec<String>), CatalogError> {
        let mut c = Catalog::default();
        let mut unsealed = Vec::new();
        for (key, bytes) in store.entries()? {
            if !c.insert(key.clone(), &bytes, sealer)? {
                unsealed.push(key.1);
            }
        }
        Ok((c, unsealed))
    }

    /// Decodes one entry into the catalog. `Ok(false)`: a notify key an
    /// earlier version stored unsealed.
    pub(super) fn insert(&mut self, key: CatalogKey, bytes: &[u8], sealer: &Sealer) -> Result<bool, CatalogError> {
        let (kind, domain, name) = key;
        let what = format!("{kind} {domain}/{name}");
        match kind.as_str() {
            DOMAIN => drop(self.domains.insert(domain, decode(&what, bytes)?)),
            TEMPLATE => drop(self.templates.insert((domain, name), decode(&what, bytes)?)),
            NOTIFY => {
                let mut raw: RawNotify = decode(&what, bytes)?;
                let mut was_sealed = true;
                if let Some(key) = &raw.notify_auth_key {
                    let (plain, sealed) = sealer
                        .unseal(key)
                        .map_err(|e| CatalogError::Corrupt { what: what.clone(), why: e.to_string() })?;
                    was_sealed = sealed;
                    raw.notify_auth_key = Some(plain);
                }
                self.notify.insert(domain, raw);
                return Ok(was_sealed);
            }
            TOKEN => drop(self.tokens.insert((domain, name), decode(&what, bytes)?)),
            PLUGIN => drop(self.plugins.insert((domain, name), decode(&what, bytes)?)),
            SOURCE => drop(self.sources.insert((domain, name), decode(&what, bytes)?)),
            PLUGIN_ACTIVE => drop(self.active_plugins.insert(domain, decode(&what, bytes)?)),
            PLUGIN_PREVIOUS => drop(self.previous_plugins.insert(domain, decode(&what, bytes)?)),
            other => tracing::warn!(kind = other, "unknown catalog entry kind; ignored"),
        }
        Ok(true)
    }

    /// Removes every entry of a domain.
    pub(super) fn remove_domain(&mut self, name: &str) {
        self.domains.remove(name);
        self.templates.retain(|(d, _), _| d != name);
        self.notify.remove(name);
        self.tokens.retain(|(d, _), _| d != name);
        self.plugins.retain(|(d, _), _| d != name);
        self.sources.retain(|(d, _), _| d != name);
        self.active_plugins.remove(name);
        self.previous_plugins.remove(name);
    }
}

/// A catalog entry's bytes with its secrets (a notify key) opened with
/// `from` and sealed again with `to`: how an entry moves between stores
/// that keep secrets under different keys (a node's index, a fleet's
/// control plane). Other entries are returned as they are.
pub fn reseal(key: &CatalogKey, bytes: &[u8], from: &Sealer, to: &Sealer) -> Result<Vec<u8>, CatalogError> {
    if key.0 != NOTIFY {
        return Ok(bytes.to_vec());
    }
    let what = format!("{} {}/{}", key.0, key.1, key.2);
    let mut raw: RawNotify = decode(&what, bytes)?;
    if let Some(k) = &raw.notify_auth_key {
        let (plain, _) = from.unseal(k).map_err(|e| CatalogError::Corrupt { what, why: e.to_string() })?;
        raw.notify_auth_key = Some(to.seal(&plain));
    }
    Ok(json_bytes(&raw))
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, CatalogError> {
    serde_json::from_slice(bytes).map_err(|e| CatalogError::Corrupt { what: what.to_owned(), why: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A catalog kept in memory: what a control plane would stand in for.
    #[derive(Default)]
    struct Memory(Mutex<BTreeMap<CatalogKey, Vec<u8>>>, Mutex<BTreeMap<String, u64>>);

    impl CatalogStore for Memory {
        fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError> {
            Ok(self.0.lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        }

        fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_> {
            let mut entries = self.0.lock().unwrap();
            if let Some(d) = clear_domain {
                entries.retain(|(_, domain, _), _| *domain != d);
            }
            for (k, v) in writes {
                match v {
                    Some(v) => drop(entries.insert(k, v)),
                    None => drop(entries.remove(&k)),
                }
            }
            Box::pin(async { Ok(()) })
        }

        fn accept(
            &self,
            domain: &str,
            revision: u64,
            entries: Option<Vec<(CatalogKey, Vec<u8>)>>,
        ) -> CatalogAccept<'_> {
            let newer = {
                let mut revisions = self.1.lock().unwrap();
                let seen = revisions.entry(domain.to_owned()).or_default();
                (revision > *seen).then(|| *seen = revision).is_some()
            };
            if newer {
                let writes = entries.unwrap_or_default().into_iter().map(|(k, v)| (k, Some(v))).collect();
                drop(self.write(Some(domain.to_owned()), writes));
            }
            Box::pin(async move { Ok(newer) })
        }
    }

    fn config(dir: &std::path::Path) -> Config {
        Config::parse(&format!(
            "version = 1\n[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
            dir.join("data")
        ))
        .unwrap()
    }

    /// The tenants see the catalog only through the seam: what one start
    /// wrote, the next start (on the same store) reads back.
    #[tokio::test]
    async fn tenants_keep_their_catalog_through_the_store_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Memory::default());
        let sealer = || Sealer::open_dir(dir.path()).unwrap();
        let tenants = Tenants::start(config(dir.path()), "operator-token", store.clone(), sealer()).unwrap();
        let raw: RawDomain = serde_json::from_value(serde_json::json!({
            "storage": {"main": {"type": "local", "path": dir.path().join("snaps")}}
        }))
        .unwrap();
        assert!(tenants.put_domain("api.example.com", raw).await.unwrap(), "created");
        let (_, secret) = tenants.mint_token("api.example.com", Some("ci".into())).await.unwrap();
        assert!(store.entries().unwrap().iter().any(|((kind, d, _), _)| kind == DOMAIN && d == "api.example.com"));
        drop(tenants);

        let again = Tenants::start(config(dir.path()), "operator-token", store.clone(), sealer()).unwrap();
        assert!(again.settings().get().domains.contains_key("api.example.com"), "the domain is back");
        assert!(matches!(again.authenticate(&secret), Some(Role::Domain(d)) if d == "api.example.com"));
        again.delete_domain("api.example.com").await.unwrap();
        assert!(store.entries().unwrap().iter().all(|((_, d, _), _)| d != "api.example.com"), "cleared from the store");
    }

    /// A change another writer made is put in force once, in revision
    /// order, and says what the node must do about it.
    #[tokio::test]
    async fn changes_made_elsewhere_are_put_in_force_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Memory::default());
        let tenants =
            Tenants::start(config(dir.path()), "operator-token", store.clone(), Sealer::open_dir(dir.path()).unwrap())
                .unwrap();
        let d = "remote.example.com";
        let domain = serde_json::json!({"storage": {"main": {"type": "local", "path": dir.path().join("snaps")}}});
        let token = TokenDoc { sha256: hash_token("esd_remote"), created_ms: 1, label: None };
        let entries = vec![
            ((DOMAIN.into(), d.into(), String::new()), serde_json::to_vec(&domain).unwrap()),
            ((TOKEN.into(), d.into(), "t1".into()), json_bytes(&token)),
            ((PLUGIN_ACTIVE.into(), d.into(), String::new()), json_bytes(&"ab".repeat(32))),
        ];
        let change = tenants.apply_remote(d, 5, Some(entries.clone())).await.unwrap().expect("applied");
        assert_eq!(change, RemoteChange { gone: false, active_plugin: Some(Some("ab".repeat(32))) });
        assert!(tenants.settings().get().domains.contains_key(d));
        assert!(matches!(tenants.authenticate("esd_remote"), Some(Role::Domain(x)) if x == d));
        assert_eq!(tenants.apply_remote(d, 5, Some(entries)).await.unwrap(), None, "the same revision again");
        assert_eq!(tenants.apply_remote(d, 4, None).await.unwrap(), None, "an older revision");
        assert!(tenants.settings().get().domains.contains_key(d));

        let change = tenants.apply_remote(d, 6, None).await.unwrap().expect("applied");
        assert_eq!(change, RemoteChange { gone: true, active_plugin: Some(None) });
        assert!(!tenants.settings().get().domains.contains_key(d));
        assert!(tenants.authenticate("esd_remote").is_none(), "its token went with it");
        assert!(store.entries().unwrap().iter().all(|((_, x, _), _)| x != d));

        let stray = vec![((DOMAIN.into(), "other.example.com".into(), String::new()), b"{}".to_vec())];
        let e = tenants.apply_remote(d, 7, Some(stray)).await.unwrap_err();
        assert!(e.to_string().contains("offered as an entry of domain"), "{e}");
    }

    /// A notify key moves between stores sealed under each one's key.
    #[test]
    fn reseal_moves_a_notify_key_between_keys() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (node, fleet) = (Sealer::open_dir(a.path()).unwrap(), Sealer::open_dir(b.path()).unwrap());
        let key = (NOTIFY.to_owned(), "x.example.com".to_owned(), String::new());
        let raw = RawNotify {
            notify_auth_key: Some(node.seal("s3cret")),
            ..serde_json::from_value(serde_json::json!({"notify_url": "https://example.com/cb"})).unwrap()
        };
        let moved = reseal(&key, &json_bytes(&raw), &node, &fleet).unwrap();
        let back: RawNotify = serde_json::from_slice(&moved).unwrap();
        let sealed = back.notify_auth_key.unwrap();
        assert_eq!(fleet.unseal(&sealed).unwrap(), ("s3cret".to_owned(), true));
        assert!(node.unseal(&sealed).is_err(), "no longer under the node's key");
        let other = (DOMAIN.to_owned(), "x.example.com".to_owned(), String::new());
        assert_eq!(reseal(&other, b"{\"a\":1}", &node, &fleet).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn an_entry_that_does_not_read_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Memory::default();
        store.0.lock().unwrap().insert((DOMAIN.into(), "x.example.com".into(), String::new()), b"{nope".to_vec());
        let e = Catalog::load(&store, &Sealer::open_dir(dir.path()).unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("catalog entry domain x.example.com/ does not read"), "{e}");
    }
}
