//! Tenants: the domains in force, made of the operator's file and of what
//! the API made (kept in redb's `catalog` table in the file's own raw form).
//!
//! The file wins for what it names: a domain or a (domain, app) template
//! the file names cannot be changed through the API (409
//! `ManagedByConfigFile`), and an API-made entry the file later names is
//! shadowed by it. Every change is validated by the same functions as the
//! file, its storage targets are built before it is accepted, and then the
//! catalog is committed and the new config put in force, in that order.
//! Changes are serialized by one lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::config::{
    self, Config, ConfigError, Domain, Origin, RawDomain, RawNotify, RawTemplate, RuleError, Settings, Template,
};
use crate::datadir::Sealer;
use crate::index::CatalogKey;
use crate::storage::{Storage, StorageError};
pub use crate::tokens::Role;
use crate::tokens::{constant_time_eq, hash_token};

mod catalog;
mod plugins;
mod sources;
use catalog::Catalog;
pub use catalog::{CatalogAccept, CatalogError, CatalogStore, CatalogWrite, reseal};
pub use plugins::{Demotion, PluginDoc};

const DOMAIN: &str = "domain";
const TEMPLATE: &str = "template";
const NOTIFY: &str = "notify";
const TOKEN: &str = "token";
const PLUGIN: &str = "plugin";
const PLUGIN_ACTIVE: &str = "plugin-active";
const PLUGIN_PREVIOUS: &str = "plugin-previous";
const SOURCE: &str = "source";

/// Fields a template update may name.
const TEMPLATE_FIELDS: &[&str] = &[
    "app_name",
    "time_interval",
    "storage",
    "overwrite_object",
    "sequence_object",
    "callback",
    "width",
    "height",
    "jpeg_quality",
    "format",
    "skip_blank",
    "storyboard",
];
const REQUIRED_TEMPLATE_FIELDS: &[&str] = &["app_name", "time_interval", "storage"];

/// A domain token as stored: only its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenDoc {
    sha256: String,
    created_ms: u64,
    #[serde(default)]
    label: Option<String>,
}

/// What a node must do after [`Tenants::apply_remote`] beyond the config
/// in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteChange {
    /// The domain was removed: its live publishers go, its policy is the default.
    pub gone: bool,
    /// The domain's active plugin changed to this (None inside: the default).
    pub active_plugin: Option<Option<String>>,
}

/// A domain token as listed.
#[derive(Debug, Clone, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub label: Option<String>,
    pub created_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Rule(RuleError),
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{1}")]
    Conflict(&'static str, String),
    #[error("{1}")]
    NotFound(&'static str, String),
    #[error("{0}")]
    Storage(StorageError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("catalog documents serialize")
}

/// The config in force: the file's domains, then the API's where the file
/// is silent. API entries that no longer validate (an environment variable
/// gone) or that the file shadows are left out with a warning each.
fn effective(file: &Config, cat: &Catalog) -> (Config, Vec<String>) {
    let mut warnings = Vec::new();
    let mut domains = file.domains.clone();
    for (name, raw) in &cat.domains {
        if domains.contains_key(name) {
            warnings.push(format!("domain {name:?} is named by the config file, which wins over its API definition"));
            continue;
        }
        match config::validate_domain(name, raw, "", Origin::Api) {
            Ok(d) => {
                let mut candidate = domains.clone();
                candidate.insert(name.clone(), d);
                if let Some((d, t, owner)) = config::find_overlap(&candidate) {
                    warnings.push(format!("domain {d:?} target {t:?} overlaps domain {owner:?}; {name:?} left out"));
                } else {
                    domains = candidate;
                }
            }
            Err(e) => warnings.push(format!("domain {name:?} made through the API is invalid now ({e}); left out")),
        }
    }
    for ((domain, app), raw) in &cat.templates {
        let Some(d) = domains.get_mut(domain) else { continue };
        if d.templates.iter().any(|t| &t.app_name == app) {
            warnings.push(format!(
                "template {domain}/{app} is named by the config file, which wins over its API definition"
            ));
            continue;
        }
        match config::validate_template(raw, &d.storage, domain, Origin::Api) {
            Ok(t) => d.templates.push(Arc::new(t)),
            Err(e) => warnings.push(format!("template {domain}/{app} made through the API is invalid now ({e})")),
        }
    }
    for ((domain, name), raw) in &cat.sources {
        let Some(d) = domains.get_mut(domain) else { continue };
        if d.sources.iter().any(|s| format!("{}/{}", s.app, s.stream) == *name) {
            warnings.push(format!(
                "source {domain}/{name} is named by the config file, which wins over its API definition"
            ));
            continue;
        }
        match config::validate_source(raw, "", Origin::Api) {
            Ok(s) => d.sources.push(s),
            Err(e) => warnings.push(format!("source {domain}/{name} made through the API is invalid now ({e})")),
        }
    }
    for (domain, raw) in &cat.notify {
        if let Some(d) = domains.get_mut(domain) {
            match config::validate_notify(raw) {
                Ok(n) => d.notify = Some(n),
                Err(e) => warnings.push(format!("notify settings of {domain} are invalid now ({e})")),
            }
        }
    }
    for d in domains.values_mut() {
        d.templates.sort_by(|a, b| a.app_name.cmp(&b.app_name));
    }
    (
        Config { server: file.server.clone(), plugin_limits: file.plugin_limits, domains, fleet: file.fleet.clone() },
        warnings,
    )
}

pub struct Tenants {
    settings: Arc<Settings>,
    catalog: Arc<dyn CatalogStore>,
    storage: Arc<Storage>,
    operator_sha256: String,
    state: tokio::sync::Mutex<State>,
    /// Domain token hash → (domain, token id).
    tokens: RwLock<HashMap<String, (String, String)>>,
    /// Seals the notify keys kept in the catalog.
    sealer: Sealer,
    /// Domains whose notify key an earlier version stored in the clear.
    unsealed: std::sync::Mutex<Vec<String>>,
}

struct State {
    file: Arc<Config>,
    catalog: Catalog,
}

impl Tenants {
    /// Loads the catalog, builds the config in force from `file` and it, and
    /// sets up every storage target.
    pub fn start(
        file: Config,
        operator_token: &str,
        store: Arc<dyn CatalogStore>,
        sealer: Sealer,
    ) -> Result<Arc<Tenants>, ChangeError> {
        let (catalog, unsealed) = Catalog::load(store.as_ref(), &sealer)?;
        let (config, warnings) = effective(&file, &catalog);
        for w in warnings {
            tracing::warn!("{w}");
        }
        let storage = Arc::new(Storage::from_config(&config).map_err(ChangeError::Storage)?);
        let settings = Settings::new(config);
        let tenants = Arc::new(Tenants {
            settings: settings.clone(),
            catalog: store,
            storage: storage.clone(),
            operator_sha256: hash_token(operator_token),
            state: tokio::sync::Mutex::new(State { file: Arc::new(file), catalog }),
            tokens: RwLock::default(),
            sealer,
            unsealed: std::sync::Mutex::new(unsealed),
        });
        tenants.reload_tokens(&tenants.state.try_lock().expect("not shared yet").catalog);
        Ok(tenants)
    }

    /// The config in force.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The storage targets of the domains in force.
    pub fn storage(&self) -> &Arc<Storage> {
        &self.storage
    }

    fn reload_tokens(&self, cat: &Catalog) {
        let map = cat.tokens.iter().map(|((d, id), t)| (t.sha256.clone(), (d.clone(), id.clone()))).collect();
        *self.tokens.write().unwrap() = map;
    }

    /// The role of a bearer token, if it is one.
    pub fn authenticate(&self, token: &str) -> Option<Role> {
        let h = hash_token(token);
        if constant_time_eq(h.as_bytes(), self.operator_sha256.as_bytes()) {
            return Some(Role::Operator);
        }
        self.tokens.read().unwrap().get(&h).map(|(d, _)| Role::Domain(d.clone()))
    }

    /// Re-reads the operator's file (SIGHUP). Live publishers keep their
    /// sessions; a file that does not validate changes nothing.
    pub async fn apply_file(&self, file: Config) -> Result<Vec<String>, ChangeError> {
        let mut state = self.state.lock().await;
        let mut warnings = Vec::new();
        let old = &state.file.server;
        let new = &file.server;
        if old.rtmp_listen != new.rtmp_listen
            || old.http_listen != new.http_listen
            || old.data_dir != new.data_dir
            || old.decoder_workers != new.decoder_workers
            || old.capture_queue != new.capture_queue
            || old.operator_token != new.operator_token
            || old.http_max_connections != new.http_max_connections
            || old.http_header_timeout != new.http_header_timeout
        {
            warnings.push(
                "changes to listen addresses, data_dir, decoder_workers, capture_queue, the operator token, http_max_connections or http_header_timeout need a restart"
                    .into(),
            );
        }
        if state.file.fleet != file.fleet {
            warnings.push("changes to [fleet] need a restart".into());
        }
        // What can change live: the domains, the plugin limits, and how URLs and domains resolve.
        let server = crate::config::Server {
            default_domain: new.default_domain.clone(),
            public_url: new.public_url.clone(),
            url_ttl: new.url_ttl,
            allow_private_callbacks: new.allow_private_callbacks,
            stream_metrics: new.stream_metrics,
            metrics_public: new.metrics_public,
            http_body_timeout: new.http_body_timeout,
            rtmp_limits: new.rtmp_limits.clone(),
            callback_retry_for: new.callback_retry_for,
            outbox_quota: new.outbox_quota,
            spool_max_bytes: new.spool_max_bytes,
            spool_domain_share: new.spool_domain_share,
            reconcile_every: new.reconcile_every,
            ..old.clone()
        };
        let fleet = state.file.fleet.clone();
        let file = Config { server, plugin_limits: file.plugin_limits, domains: file.domains, fleet };
        let (config, w) = effective(&file, &state.catalog);
        warnings.extend(w);
        let prepared = self.storage.prepare(&config).map_err(ChangeError::Storage)?;
        self.storage.commit(prepared);
        self.settings.set(config);
        state.file = Arc::new(file);
        Ok(warnings)
    }

    /// Validates a candidate catalog, builds its targets, commits the
    /// writes, and puts the new config in force.
    async fn change(
        &self,
        state: &mut State,
        next: Catalog,
        clear_domain: Option<String>,
        writes: Vec<(CatalogKey, Option<Vec<u8>>)>,
    ) -> Result<(), ChangeError> {
        let (config, _) = effective(&state.file, &next);
        let prepared = self.storage.prepare(&config).map_err(ChangeError::Storage)?;
        self.catalog.write(clear_domain, writes).await?;
        self.storage.commit(prepared);
        self.settings.set(config);
        self.reload_tokens(&next);
        state.catalog = next;
        Ok(())
    }

    /// Holds off every change until the guard drops (a store that writes
    /// outside a change, like a fleet offering what a node made alone).
    pub async fn hold_changes(&self) -> impl Sized + '_ {
        self.state.lock().await
    }

    /// Puts in force a domain as another writer of the catalog left it at
    /// `revision` (another node of a fleet; `None`: the domain is gone),
    /// through the same steps as a change made here. Returns what this node
    /// must do about it, or None when the store had that revision already.
    /// Targets that cannot be built on this node leave the config in force
    /// as it was (logged); the catalog still follows.
    pub async fn apply_remote(
        &self,
        domain: &str,
        revision: u64,
        entries: Option<Vec<(CatalogKey, Vec<u8>)>>,
    ) -> Result<Option<RemoteChange>, ChangeError> {
        let mut state = self.state.lock().await;
        let mut next = state.catalog.clone();
        next.remove_domain(domain);
        for (key, bytes) in entries.iter().flatten() {
            if key.1 != domain {
                return Err(CatalogError::Corrupt {
                    what: format!("{} {}/{}", key.0, key.1, key.2),
                    why: format!("offered as an entry of domain {domain:?}"),
                }
                .into());
            }
            next.insert(key.clone(), bytes, &self.sealer)?;
        }
        if !self.catalog.accept(domain, revision, entries).await? {
            return Ok(None);
        }
        let (config, _) = effective(&state.file, &next);
        match self.storage.prepare(&config) {
            Ok(prepared) => {
                self.storage.commit(prepared);
                self.settings.set(config);
            }
            Err(e) => tracing::error!(
                %domain, revision, error = %e,
                "a change made on another node cannot be put in force here (its storage targets do not build); the config in force stays as it was"
            ),
        }
        self.reload_tokens(&next);
        let change = RemoteChange {
            gone: !next.domains.contains_key(domain) && state.catalog.domains.contains_key(domain),
            active_plugin: (next.active_plugins.get(domain) != state.catalog.active_plugins.get(domain))
                .then(|| next.active_plugins.get(domain).cloned()),
        };
        state.catalog = next;
        Ok(Some(change))
    }

    fn domain_in_force(&self, name: &str) -> Result<Domain, ChangeError> {
        self.settings
            .get()
            .domains
            .get(name)
            .cloned()
            .ok_or_else(|| ChangeError::NotFound("DomainNotFound", format!("domain {name:?} does not exist")))
    }

    // ---- domains ---------------------------------------------------------

    /// The raw definition of an API-made domain (None for a file domain).
    pub async fn raw_domain(&self, name: &str) -> Option<RawDomain> {
        self.state.lock().await.catalog.domains.get(name).cloned()
    }

    /// Creates or replaces an API-made domain. Returns true if it is new.
    pub async fn put_domain(&self, name: &str, raw: RawDomain) -> Result<bool, ChangeError> {
        let mut state = self.state.lock().await;
        if state.file.domains.contains_key(name) {
            return Err(ChangeError::Conflict(
                "ManagedByConfigFile",
                format!("domain {name:?} is defined in the config file; change it there"),
            ));
        }
        if !raw.snapshot_configs.is_empty() {
            return Err(ChangeError::Invalid(ConfigError::new(
                "snapshot_configs",
                "templates of an API-made domain are managed under /snapshot-configs",
            )));
        }
        let domain = config::validate_domain(name, &raw, "", Origin::Api).map_err(ChangeError::Invalid)?;
        let mut domains = self.settings.get().domains.clone();
        domains.insert(name.to_owned(), domain.clone());
        let data_dir = self.settings.get().server.data_dir.clone();
        if let Some((_, t)) = config::data_dir_clash(&BTreeMap::from([(name.to_owned(), domain.clone())]), &data_dir) {
            return Err(ChangeError::Conflict(
                "StorageOverlap",
                format!(
                    "storage target {t:?} is the host's data_dir, inside it or around it; store snapshots apart from it"
                ),
            ));
        }
        if let Some((t, owner)) = config::overlap_of(&domains, name) {
            return Err(ChangeError::Conflict(
                "StorageOverlap",
                format!(
                    "storage target {t:?} overlaps a target of domain {owner:?}; domains may not share a bucket + prefix or a directory"
                ),
            ));
        }
        for ((d, app), t) in &state.catalog.templates {
            if d == name && !domain.storage.contains_key(&t.storage) {
                return Err(ChangeError::Conflict(
                    "StorageInUse",
                    format!("storage target {:?} is used by the snapshot config of app {app:?}", t.storage),
                ));
            }
        }
        let mut next = state.catalog.clone();
        let created = next.domains.insert(name.to_owned(), raw.clone()).is_none();
        let key = (DOMAIN.to_owned(), name.to_owned(), String::new());
        self.change(&mut state, next, None, vec![(key, Some(json_bytes(&raw)))]).await?;
        Ok(created)
    }

    /// Removes an API-made domain with its templates, notify settings and
    /// tokens. Its records are removed by the caller.
    pub async fn delete_domain(&self, name: &str) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        if state.file.domains.contains_key(name) {
            return Err(ChangeError::Conflict(
                "ManagedByConfigFile",
                format!("domain {name:?} is defined in the config file; remove it there"),
            ));
        }
        if !state.catalog.domains.contains_key(name) {
            return Err(ChangeError::NotFound("DomainNotFound", format!("domain {name:?} does not exist")));
        }
        let mut next = state.catalog.clone();
        next.remove_domain(name);
        self.change(&mut state, next, Some(name.to_owned()), Vec::new()).await
    }

    // ---- templates -------------------------------------------------------

    pub async fn add_template(&self, domain: &str, raw: RawTemplate) -> Result<Arc<Template>, ChangeError> {
        let mut state = self.state.lock().await;
        let d = self.domain_in_force(domain)?;
        config::template::check_app_name(&raw.app_name).map_err(ChangeError::Rule)?;
        if d.templates.iter().any(|t| t.app_name == raw.app_name) {
            return Err(ChangeError::Conflict(
                "ConfigAlreadyExists",
                format!("app {:?} of domain {domain:?} already has a snapshot config", raw.app_name),
            ));
        }
        let t = config::validate_template(&raw, &d.storage, domain, Origin::Api).map_err(ChangeError::Rule)?;
        self.check_callback(t.callback.as_deref(), "InvalidParameter.Callback", "callback")?;
        let mut next = state.catalog.clone();
        next.templates.insert((domain.to_owned(), raw.app_name.clone()), raw.clone());
        let key = (TEMPLATE.to_owned(), domain.to_owned(), raw.app_name.clone());
        self.change(&mut state, next, None, vec![(key, Some(json_bytes(&raw)))]).await?;
        Ok(Arc::new(t))
    }

    /// Applies a partial update: a field set to `null` or `"-"` is cleared.
    pub async fn update_template(
        &self,
        domain: &str,
        app: &str,
        patch: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Arc<Template>, ChangeError> {
        let mut state = self.state.lock().await;
        let d = self.domain_in_force(domain)?;
        let current = d.templates.iter().find(|t| t.app_name == app).ok_or_else(|| not_found_template(domain, app))?;
        if current.origin == Origin::File {
            return Err(file_managed_template(domain, app));
        }
        let raw = state
            .catalog
            .templates
            .get(&(domain.to_owned(), app.to_owned()))
            .cloned()
            .ok_or_else(|| not_found_template(domain, app))?;
        let mut doc = match serde_json::to_value(&raw).expect("templates serialize") {
            serde_json::Value::Object(m) => m,
            _ => unreachable!("a template serializes to an object"),
        };
        for (k, v) in patch {
            if !TEMPLATE_FIELDS.contains(&k.as_str()) {
                return Err(ChangeError::Invalid(ConfigError::new(k, "unknown field")));
            }
            let clear = v.is_null() || v.as_str() == Some("-");
            if clear && REQUIRED_TEMPLATE_FIELDS.contains(&k.as_str()) {
                return Err(ChangeError::Invalid(ConfigError::new(k, "is required and cannot be cleared")));
            }
            if k == "app_name" && v.as_str() != Some(app) {
                return Err(ChangeError::Invalid(ConfigError::new(k, "cannot be changed; delete and add instead")));
            }
            if clear {
                doc.remove(&k);
            } else {
                doc.insert(k, v);
            }
        }
        let updated: RawTemplate = serde_json::from_value(serde_json::Value::Object(doc))
            .map_err(|e| ChangeError::Invalid(ConfigError::new("body", e.to_string())))?;
        let t = config::validate_template(&updated, &d.storage, domain, Origin::Api).map_err(ChangeError::Rule)?;
        self.check_callback(t.callback.as_deref(), "InvalidParameter.Callback", "callback")?;
        let mut next = state.catalog.clone();
        next.templates.insert((domain.to_owned(), app.to_owned()), updated.clone());
        let key = (TEMPLATE.to_owned(), domain.to_owned(), app.to_owned());
        self.change(&mut state, next, None, vec![(key, Some(json_bytes(&updated)))]).await?;
        Ok(Arc::new(t))
    }

    pub async fn delete_template(&self, domain: &str, app: &str) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        let d = self.domain_in_force(domain)?;
        let current = d.templates.iter().find(|t| t.app_name == app).ok_or_else(|| not_found_template(domain, app))?;
        if current.origin == Origin::File {
            return Err(file_managed_template(domain, app));
        }
        let mut next = state.catalog.clone();
        next.templates.remove(&(domain.to_owned(), app.to_owned()));
        let key = (TEMPLATE.to_owned(), domain.to_owned(), app.to_owned());
        self.change(&mut state, next, None, vec![(key, None)]).await
    }

    // ---- notify ----------------------------------------------------------

    pub async fn put_notify(&self, domain: &str, raw: RawNotify) -> Result<bool, ChangeError> {
        let mut state = self.state.lock().await;
        self.domain_in_force(domain)?;
        config::validate_notify(&raw).map_err(ChangeError::Rule)?;
        self.check_callback(Some(&raw.notify_url), "InvalidParameter.NotifyUrl", "notify_url")?;
        let mut next = state.catalog.clone();
        let created = next.notify.insert(domain.to_owned(), raw.clone()).is_none();
        let key = (NOTIFY.to_owned(), domain.to_owned(), String::new());
        self.change(&mut state, next, None, vec![(key, Some(self.sealed_notify(&raw)))]).await?;
        Ok(created)
    }

    /// A domain's notify settings as stored: the signing key sealed.
    fn sealed_notify(&self, raw: &RawNotify) -> Vec<u8> {
        let stored =
            RawNotify { notify_auth_key: raw.notify_auth_key.as_deref().map(|k| self.sealer.seal(k)), ..raw.clone() };
        json_bytes(&stored)
    }

    /// Seals the notify keys an earlier version stored in the clear (once, at start).
    pub async fn seal_earlier_notify_keys(&self) -> Result<usize, ChangeError> {
        let domains = std::mem::take(&mut *self.unsealed.lock().unwrap());
        if domains.is_empty() {
            return Ok(0);
        }
        let state = self.state.lock().await;
        let writes: Vec<_> = domains
            .iter()
            .filter_map(|d| state.catalog.notify.get(d).map(|raw| (d, raw)))
            .map(|(d, raw)| ((NOTIFY.to_owned(), d.clone(), String::new()), Some(self.sealed_notify(raw))))
            .collect();
        let n = writes.len();
        self.catalog.write(None, writes).await?;
        tracing::info!(domains = n, "sealed the notify keys an earlier version stored in the clear");
        Ok(n)
    }

    pub async fn delete_notify(&self, domain: &str) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        self.domain_in_force(domain)?;
        if !state.catalog.notify.contains_key(domain) {
            return Err(ChangeError::NotFound(
                "NotifyConfigNotFound",
                format!("domain {domain:?} has no notify config"),
            ));
        }
        let mut next = state.catalog.clone();
        next.notify.remove(domain);
        let key = (NOTIFY.to_owned(), domain.to_owned(), String::new());
        self.change(&mut state, next, None, vec![(key, None)]).await
    }

    // ---- tokens ----------------------------------------------------------

    /// Mints a domain token; the secret is returned once and only its hash kept.
    pub async fn mint_token(&self, domain: &str, label: Option<String>) -> Result<(TokenInfo, String), ChangeError> {
        let mut state = self.state.lock().await;
        self.domain_in_force(domain)?;
        let secret: [u8; 32] = rand::random();
        let token = format!("esd_{}", hex::encode(secret));
        let id = hex::encode(rand::random::<[u8; 8]>());
        let doc = TokenDoc { sha256: hash_token(&token), created_ms: crate::unix_ms(), label: label.clone() };
        let mut next = state.catalog.clone();
        next.tokens.insert((domain.to_owned(), id.clone()), doc.clone());
        let key = (TOKEN.to_owned(), domain.to_owned(), id.clone());
        self.change(&mut state, next, None, vec![(key, Some(json_bytes(&doc)))]).await?;
        Ok((TokenInfo { id, label, created_ms: doc.created_ms }, token))
    }

    pub async fn tokens(&self, domain: &str) -> Vec<TokenInfo> {
        let state = self.state.lock().await;
        state
            .catalog
            .tokens
            .iter()
            .filter(|((d, _), _)| d == domain)
            .map(|((_, id), t)| TokenInfo { id: id.clone(), label: t.label.clone(), created_ms: t.created_ms })
            .collect()
    }

    pub async fn revoke_token(&self, domain: &str, id: &str) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        let key = (domain.to_owned(), id.to_owned());
        if !state.catalog.tokens.contains_key(&key) {
            return Err(ChangeError::NotFound("TokenNotFound", format!("domain {domain:?} has no token {id:?}")));
        }
        let mut next = state.catalog.clone();
        next.tokens.remove(&key);
        let ckey = (TOKEN.to_owned(), domain.to_owned(), id.to_owned());
        self.change(&mut state, next, None, vec![(ckey, None)]).await
    }

    /// Whether the API made this notify config (and so it can be read back).
    pub async fn raw_notify(&self, domain: &str) -> Option<RawNotify> {
        self.state.lock().await.catalog.notify.get(domain).cloned()
    }
}

impl Tenants {
    /// Refuses a callback URL naming a loopback, link-local or private
    /// address unless the operator allows them (names are checked again
    /// when they resolve, at each delivery).
    fn check_callback(&self, url: Option<&str>, code: &'static str, field: &'static str) -> Result<(), ChangeError> {
        if self.settings.get().server.allow_private_callbacks {
            return Ok(());
        }
        match url.and_then(crate::notify::private_literal) {
            Some(message) => Err(ChangeError::Rule(RuleError { code, field, message })),
            None => Ok(()),
        }
    }
}

fn not_found_template(domain: &str, app: &str) -> ChangeError {
    ChangeError::NotFound("ConfigNotFound", format!("app {app:?} of domain {domain:?} has no snapshot config"))
}

fn file_managed_template(domain: &str, app: &str) -> ChangeError {
    ChangeError::Conflict(
        "ManagedByConfigFile",
        format!(
            "the snapshot config of app {app:?} in domain {domain:?} is defined in the config file; change it there"
        ),
    )
}
