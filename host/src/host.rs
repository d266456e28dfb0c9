//! The running host: every stage wired together ([`Host::start`]) and taken
//! down in order ([`Host::shutdown`]).
//!
//! Invariants:
//! - Every task the host spawns belongs to one [`Stage`] (its stop signal
//!   and its task tracker); shutdown stops the stages in the order below and
//!   waits for each one's tasks, so nothing runs on after `shutdown` returns
//!   but the process's exit.
//! - Start-up order: the data directory, the index, the tenants (catalog +
//!   file → config in force), objects of deleted records removed, plugins
//!   in force, the spool recovered, then the listeners, so no capture and
//!   no request arrives before what it needs exists.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::index::{Index, IndexError};
use crate::metrics::Metrics;
use crate::policy::{PluginCatalog, PluginStore, Policies, PolicyError};
use crate::tenants::{CatalogError, ChangeError, Tenants};
use crate::{api, datadir, ingest, listen, media, notify, retention, snapshot, sources, spool, store, urls};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    DataDir(#[from] datadir::DataDirError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Tenants(#[from] ChangeError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Media(#[from] media::MediaError),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
    #[error(transparent)]
    Bind(#[from] listen::BindError),
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// One stage of the ordered shutdown: its stop signal and every task it runs.
#[derive(Clone, Default)]
pub struct Stage {
    pub stop: CancellationToken,
    pub tasks: TaskTracker,
}

impl Stage {
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Signals the stage to stop and waits for its tasks.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.wait().await;
    }

    /// Waits for the stage's tasks (without signalling them).
    pub async fn wait(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// The stages, in shutdown order.
#[derive(Default)]
struct Stages {
    /// The RTMP accept loop and its sessions.
    ingest: Stage,
    /// Following the fleet's control plane (it holds ingest, to disconnect
    /// a removed domain's publishers, so it stops with ingest).
    control: Stage,
    /// The snapshot path's loop and its in-flight snapshots.
    snapshots: Stage,
    /// Deletion passes and reconcile rounds.
    retention: Stage,
    /// The callback worker.
    notify: Stage,
    /// The HTTP server: stops accepting with ingest; its connections end
    /// gracefully (within 10 s) while the stages before it finish.
    http: Stage,
    /// Spool drain and recovery tasks.
    spool: Stage,
    /// Storage probes and the plugin store's demotion follower.
    background: Stage,
    /// Fleet heartbeats: the node leaves the fleet last.
    fleet: Stage,
}

pub struct Host {
    pub rtmp_addr: SocketAddr,
    pub http_addr: SocketAddr,
    tenants: Arc<Tenants>,
    index: Arc<Index>,
    metrics: Arc<Metrics>,
    spool: Arc<spool::Spool>,
    ingest: Arc<ingest::Ingest>,
    decoders: Vec<std::thread::JoinHandle<()>>,
    listening: PathBuf,
    stages: Stages,
}

/// The catalog side of demotions: the tenants record them.
struct Demotions(Arc<Tenants>);

impl PluginCatalog for Demotions {
    type Error = ChangeError;

    async fn demote(&self, domain: &str, version: &str, reason: &str) -> Result<Option<String>, ChangeError> {
        self.0.demote_plugin(domain, version, reason).await
    }
}

impl Host {
    /// Opens what the host keeps, recovers what the last run left, binds the
    /// listeners and starts serving.
    pub async fn start(config: Config, operator_token: &str) -> Result<Host, StartError> {
        let server = config.server.clone();
        let config_fleet = config.fleet.clone();
        let stages = Stages::default();
        datadir::prepare(&server.data_dir)?;
        let metrics = Arc::new(Metrics::new());
        let index = Arc::new(Index::open(&server.data_dir.join("index.redb"))?);
        datadir::private(&server.data_dir.join("index.redb"))?;
        let sealer = || datadir::Sealer::open_dir(&server.data_dir);
        // In a fleet the catalog is the control plane's (this node's index
        // keeps a copy to start from); the connection is made in the background.
        let (fleet, control) = match &config_fleet {
            Some(f) => {
                let fleet = crate::fleet::Fleet::join(f, metrics.clone(), index.clone()).await?;
                if f.roles().contains(&"edge") {
                    index.join_fleet(&f.node_id);
                }
                let control = crate::fleet::ControlPlane::new(fleet.clone(), index.clone(), sealer()?)
                    .map_err(|e| StartError::Tenants(e.into()))?;
                tracing::info!(node = %f.node_id, roles = ?f.roles(), nats = %f.nats_urls.join(","), "joining the fleet");
                (Some(fleet), Some(control))
            }
            None => (None, None),
        };
        let store: Arc<dyn crate::tenants::CatalogStore> = match &control {
            Some(c) => c.clone(),
            None => index.clone(),
        };
        let tenants = Tenants::start(config, operator_token, store, sealer()?)?;
        match tenants.seal_earlier_notify_keys().await {
            Err(ChangeError::Catalog(CatalogError::Unavailable(e))) => {
                tracing::warn!(error = %e, "notify keys an earlier version stored in the clear are sealed at a later start")
            }
            r => drop(r?),
        }
        let (settings, storage) = (tenants.settings().clone(), tenants.storage().clone());
        retention::remove_tombstoned(&index, &storage).await?;

        let compiled = server.data_dir.join("plugins/compiled");
        let policies =
            Arc::new(Policies::new(index.clone(), settings.get().plugin_limits, metrics.clone(), Some(&compiled))?);
        policies.follow(settings.clone());
        let plugins = PluginStore::new(&server.data_dir, policies.clone());
        plugins.activate_all(tenants.active_plugins().await).await;
        // A demoted plugin stays demoted across restarts: the catalog
        // follows, and the previous version (or the default) takes over.
        let background = &stages.background;
        background.spawn(plugins.follow_demotions(Demotions(tenants.clone()), background.stop.clone()));

        let rtmp = listen::bind(server.rtmp_listen, "RTMP").await?;
        let http = listen::bind(server.http_listen, "HTTP").await?;
        let local = |l: &tokio::net::TcpListener| {
            l.local_addr().map_err(|source| StartError::Io { what: "read a bound address".into(), source })
        };
        let (rtmp_addr, http_addr) = (local(&rtmp)?, local(&http)?);
        // A node of a fleet signs with the fleet's key once it has had it.
        let signing_key = match fleet.is_some().then(|| datadir::fleet_url_signing_key(&server.data_dir)) {
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Some(key))) => key,
            _ => datadir::url_signing_key(&server.data_dir, &index)?,
        };
        let urls = Arc::new(urls::UrlSigner::new(settings.clone(), signing_key, http_addr));
        if let Some(fleet) = &fleet {
            fleet.set_public_url(urls.base());
        }

        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(server.capture_queue);
        let (decoded_tx, decoded_rx) = tokio::sync::mpsc::channel(256);
        let decoders =
            media::start(media::PoolOptions { workers: server.decoder_workers }, jobs_rx, decoded_tx, metrics.clone())?;
        let ingest = ingest::Ingest::new(settings.clone(), jobs_tx, metrics.clone());
        // Pull sources run with ingest's tasks: they stop with it, before the decoders drain.
        let sources = sources::Sources::new(ingest.clone(), settings.clone(), stages.ingest.tasks.clone());

        let notifier = notify::Notifier::new(index.clone(), settings.clone(), urls.clone(), metrics.clone())?;
        stages.notify.spawn(notifier.clone().run(stages.notify.stop.clone()));
        let store = store::Store::new(index.clone(), notifier.clone(), metrics.clone());
        let spool = spool::Spool::new(
            server.data_dir.join("spool"),
            stages.spool.tasks.clone(),
            stages.spool.stop.clone(),
            index.clone(),
            storage.clone(),
            store.clone(),
            settings.clone(),
            metrics.clone(),
        )?;
        // Before ingest: spooled captures are queued first, so new ones line up behind them.
        spool.recover().await?;
        storage.probe_all(&stages.background.tasks, stages.background.stop.clone());

        let (retention, retention_rx) = retention::Retention::new(
            index.clone(),
            storage.clone(),
            policies.clone(),
            notifier.clone(),
            metrics.clone(),
        );
        let r = &stages.retention;
        r.spawn(retention.clone().run(retention_rx, r.stop.clone()));
        r.spawn(retention::reconcile_schedule(
            index.clone(),
            storage.clone(),
            notifier.clone(),
            settings.clone(),
            r.stop.clone(),
        ));
        let path = Arc::new(snapshot::SnapshotPath {
            index: index.clone(),
            storage: storage.clone(),
            policies: policies.clone(),
            retention,
            store,
            spool: spool.clone(),
            storyboards: Arc::new(crate::storyboard::Storyboards::new(storage.clone())),
            metrics: metrics.clone(),
        });
        if let (Some(fleet), Some(control)) = (&fleet, &control) {
            stages.fleet.spawn(fleet.clone().run(stages.fleet.stop.clone()));
            fleet.start_records(&stages.fleet.tasks, stages.fleet.stop.clone());
            if fleet.roles().contains(&"edge") {
                let f = &stages.fleet;
                f.spawn(fleet.clone().serve_deletes(notifier.clone(), storage.clone(), f.stop.clone()));
                let leases = crate::fleet::Leases::new(fleet.clone(), index.clone(), &ingest);
                ingest.use_leases(leases.clone());
                stages.fleet.spawn(leases.run(stages.fleet.stop.clone()));
            } else {
                ingest.use_leases(Arc::new(crate::fleet::NotAnEdge(fleet.node_id().to_owned())));
            }
            let effects = crate::fleet::Effects {
                ingest: ingest.clone(),
                plugins: plugins.clone(),
                urls: urls.clone(),
                data_dir: server.data_dir.clone(),
            };
            let c = &stages.control;
            c.spawn(control.clone().run(tenants.clone(), effects, c.stop.clone()));
        }
        let api = Arc::new(api::Api {
            settings: settings.clone(),
            tenants: tenants.clone(),
            index: index.clone(),
            storage,
            ingest: ingest.clone(),
            sources: sources.clone(),
            metrics: metrics.clone(),
            policies,
            plugins,
            urls,
            notifier,
            spool: spool.clone(),
            thumbs: Default::default(),
            fleet: fleet.clone(),
            control,
        });
        let s = &stages.snapshots;
        s.spawn(path.run(decoded_rx, s.tasks.clone()));
        let i = &stages.ingest;
        i.spawn(ingest.clone().run(rtmp, i.stop.clone(), i.tasks.clone()));
        i.spawn(sources.run(i.stop.clone()));
        stages.http.spawn(api.run(http, stages.http.stop.clone()));

        let listening = server.data_dir.join(listen::LISTENING_FILE);
        listen::announce(&listening, rtmp_addr, http_addr)
            .map_err(|source| StartError::Io { what: format!("write {}", listening.display()), source })?;
        tracing::info!(rtmp = %rtmp_addr, http = %http_addr, decoders = server.decoder_workers, "edgesnap is serving");
        Ok(Host { rtmp_addr, http_addr, tenants, index, metrics, spool, ingest, decoders, listening, stages })
    }

    /// The tenants in force (SIGHUP re-reads the file through them).
    pub fn tenants(&self) -> &Arc<Tenants> {
        &self.tenants
    }

    /// Stops in order: nothing captured is lost, what is not done yet is
    /// left where the next start finds it.
    pub async fn shutdown(self) {
        let Host { tenants, index, metrics, spool, ingest, decoders, listening, stages, .. } = self;
        tracing::info!("shutting down: closing publishers, finishing in-flight snapshots");
        let _ = std::fs::remove_file(&listening);
        // 1. Stop ingest: no new keyframes enter the capture queue. The
        //    HTTP server stops accepting; its requests finish meanwhile.
        stages.http.stop.cancel();
        stages.ingest.stop().await;
        stages.control.stop().await;
        // 2. The decoders drain the queue; the capture queue's last sender is ingest's.
        drop(ingest);
        let _ = tokio::task::spawn_blocking(move || decoders.into_iter().for_each(|h| drop(h.join()))).await;
        // 3. The snapshot path stores what was decoded (its loop ends when
        //    the decoders hang up).
        stages.snapshots.wait().await;
        // 4. A deletion pass under way finishes; no new one starts.
        stages.retention.stop().await;
        // 5. Callbacks not delivered yet stay in the outbox for the next
        //    start; a round under way ends within the delivery timeout.
        let notify = stages.notify.stop();
        if tokio::time::timeout(std::time::Duration::from_secs(6), notify).await.is_err() {
            tracing::warn!("a callback round was still under way after 6 s; its deliveries stay in the outbox");
        }
        stages.http.wait().await;
        // 6. Spooled captures stay on disk; an upload under way ends first.
        stages.spool.stop().await;
        stages.background.stop().await;
        stages.fleet.stop().await;
        let spooled = spool.status().entries;
        drop(spool);
        // 7. Close redb cleanly: the last holder of the index is this function.
        drop(tenants);
        close_index(index).await;
        tracing::info!(
            queued = metrics.snapshots_queued.get(),
            stored = metrics.snapshots_stored.get(),
            spooled,
            "stopped"
        );
    }
}

/// Closes redb after the writer has committed what was queued. Tasks that
/// finished their work may still be dropping their handles (HTTP
/// connections closing), so this waits up to 5 s to be the last holder: a
/// redb that is not closed cleanly is checked at the next start.
async fn close_index(mut index: Arc<Index>) {
    for _ in 0..500 {
        match Arc::try_unwrap(index) {
            Ok(index) => {
                tokio::task::spawn_blocking(move || index.close()).await.ok();
                return;
            }
            Err(shared) => {
                index = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    tracing::warn!(
        holders = Arc::strong_count(&index),
        "index still shared at shutdown; redb closes when the process exits"
    )
}
