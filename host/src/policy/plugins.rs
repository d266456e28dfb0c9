//! The uploaded plugins on disk (`data_dir/plugins/{version}.wasm`, the
//! version being the sha256 of the bytes) and putting them in force: each
//! domain's active version at start, a new activation, and the version
//! that takes over after a demotion. Which version is active is the
//! catalog's (`tenants`); this module only reads it at start and tells it
//! of demotions through [`PluginCatalog`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Demoted, Plugin, Policies, PolicyError};

#[derive(Debug, thiserror::Error)]
pub enum PluginFileError {
    #[error("plugin file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Where the plugin store records a demotion: the catalog of which version
/// is active. Returns the version that is active after it (`None`: the
/// default policy).
pub trait PluginCatalog: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;
    fn demote(
        &self,
        domain: &str,
        version: &str,
        reason: &str,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;
}

pub struct PluginStore {
    dir: PathBuf,
    policies: Arc<Policies>,
}

impl PluginStore {
    pub fn new(data_dir: &Path, policies: Arc<Policies>) -> Arc<PluginStore> {
        Arc::new(PluginStore { dir: data_dir.join("plugins"), policies })
    }

    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    fn path(&self, version: &str) -> PathBuf {
        self.dir.join(format!("{version}.wasm"))
    }

    /// Whether this node has a version's component.
    pub fn has(&self, version: &str) -> bool {
        self.path(version).is_file()
    }

    /// Reads and compiles (or takes from the compiled cache) a stored version.
    pub fn load(&self, version: &str) -> Result<Plugin, PluginFileError> {
        let path = self.path(version);
        let bytes = std::fs::read(&path).map_err(|source| io(&path, source))?;
        Ok(self.policies.load(version, &bytes)?)
    }

    /// [`load`](Self::load), off the runtime.
    pub async fn compile(self: &Arc<Self>, version: &str) -> Result<Plugin, PluginFileError> {
        let (store, version) = (self.clone(), version.to_owned());
        tokio::task::spawn_blocking(move || store.load(&version)).await.expect("plugin compile task")
    }

    /// Keeps an accepted upload (written whole, then renamed into place).
    pub fn save(&self, version: &str, bytes: &[u8]) -> Result<(), PluginFileError> {
        let path = self.path(version);
        if path.exists() {
            return Ok(());
        }
        let tmp = self.dir.join(format!("{version}.part"));
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| io(&path, source))
    }

    /// Removes a version no domain holds any more.
    pub fn remove(&self, version: &str) {
        let _ = std::fs::remove_file(self.path(version));
    }

    /// Puts each domain's active version in force, at start. One that no
    /// longer loads is logged and the domain runs the default policy.
    pub async fn activate_all(self: &Arc<Self>, active: Vec<(String, String)>) {
        for (domain, version) in active {
            match self.compile(&version).await {
                Ok(plugin) => self.policies.activate(&domain, Some(Arc::new(plugin))),
                Err(e) => {
                    tracing::error!(%domain, %version, error = %e, "active plugin does not load; the default policy runs")
                }
            }
        }
    }

    /// Follows demotions until `stop`: the catalog records each one (so it
    /// survives a restart) and names the version that takes over, which is
    /// put in force here. Returns the task to track.
    pub fn follow_demotions<C: PluginCatalog>(
        self: &Arc<Self>,
        catalog: C,
        stop: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = ()> + Send + 'static {
        // Unbounded: a demotion is sent once per failing version (it is
        // then inactive), so the queue is bounded by the domains.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Demoted>();
        self.policies.on_demotion(tx);
        let store = self.clone();
        async move {
            loop {
                let d = tokio::select! {
                    _ = stop.cancelled() => return,
                    d = rx.recv() => match d { Some(d) => d, None => return },
                };
                store.demoted(&catalog, d).await;
            }
        }
    }

    async fn demoted<C: PluginCatalog>(self: &Arc<Self>, catalog: &C, d: Demoted) {
        let back = match catalog.demote(&d.domain, &d.version, &d.reason).await {
            Ok(back) => back,
            Err(e) => {
                tracing::error!(domain = %d.domain, version = %d.version, error = %e, "recording a demotion failed");
                return;
            }
        };
        let Some(back) = back else {
            tracing::warn!(domain = %d.domain, demoted = %d.version, "the default policy is active");
            return;
        };
        match self.compile(&back).await {
            Ok(plugin) => {
                self.policies.activate(&d.domain, Some(Arc::new(plugin)));
                tracing::warn!(domain = %d.domain, demoted = %d.version, active = %back, "the previous plugin version is active again");
            }
            Err(e) => {
                tracing::error!(domain = %d.domain, version = %back, error = %e, "the previous plugin version does not load; the default policy runs")
            }
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> PluginFileError {
    PluginFileError::Io { path: path.display().to_string(), source }
}
