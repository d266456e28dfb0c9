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

/// Where the catalog is kept. Reads it whole at start; writes one change
/// (entries set or deleted with `None`, after clearing every entry of
/// `clear_domain`) atomically.
pub trait CatalogStore: Send + Sync {
    fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError>;
    fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_>;
}

/// A node's catalog: its index.
impl CatalogStore for Index {
    fn entries(&self) -> Result<Vec<(CatalogKey, Vec<u8>)>, CatalogError> {
        Ok(self.catalog()?)
    }

    fn write(&self, clear_domain: Option<String>, writes: Vec<(CatalogKey, Option<Vec<u8>>)>) -> CatalogWrite<'_> {
        Box::pin(async move { Ok(self.write_catalog(clear_domain, writes).await?) })
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
        for ((kind, domain, name), bytes) in store.entries()? {
            let what = format!("{kind} {domain}/{name}");
            match kind.as_str() {
                DOMAIN => drop(c.domains.insert(domain, decode(&what, &bytes)?)),
                TEMPLATE => drop(c.templates.insert((domain, name), decode(&what, &bytes)?)),
                NOTIFY => {
                    let mut raw: RawNotify = decode(&what, &bytes)?;
                    if let Some(key) = &raw.notify_auth_key {
                        let (plain, was_sealed) = sealer
                            .unseal(key)
                            .map_err(|e| CatalogError::Corrupt { what: what.clone(), why: e.to_string() })?;
                        if !was_sealed {
                            unsealed.push(domain.clone());
                        }
                        raw.notify_auth_key = Some(plain);
                    }
                    c.notify.insert(domain, raw);
                }
                TOKEN => drop(c.tokens.insert((domain, name), decode(&what, &bytes)?)),
                PLUGIN => drop(c.plugins.insert((domain, name), decode(&what, &bytes)?)),
                PLUGIN_ACTIVE => drop(c.active_plugins.insert(domain, decode(&what, &bytes)?)),
                PLUGIN_PREVIOUS => drop(c.previous_plugins.insert(domain, decode(&what, &bytes)?)),
                other => tracing::warn!(kind = other, "unknown catalog entry kind; ignored"),
            }
        }
        Ok((c, unsealed))
    }
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
    struct Memory(Mutex<BTreeMap<CatalogKey, Vec<u8>>>);

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

    #[test]
    fn an_entry_that_does_not_read_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Memory::default();
        store.0.lock().unwrap().insert((DOMAIN.into(), "x.example.com".into(), String::new()), b"{nope".to_vec());
        let e = Catalog::load(&store, &Sealer::open_dir(dir.path()).unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("catalog entry domain x.example.com/ does not read"), "{e}");
    }
}
