//! This node's membership of a fleet (SPEC §9) on NATS JetStream: it
//! connects to the cluster named by `[fleet]`, says every 2 s in the KV
//! bucket `EDGESNAP_NODES` that it is alive (its roles, version, live
//! streams), and reads the others' entries for `GET /v1/fleet`.
//!
//! Invariants:
//! - Only `fleet` imports async-nats; the rest of the host sees plain types.
//! - NATS never holds up the node: the connection is made in the
//!   background (retried for as long as the node runs), a heartbeat that
//!   fails is logged and tried again at the next tick, and nothing on the
//!   snapshot path waits on NATS.
//! - A node's entry is its last heartbeat. An entry older than
//!   [`SILENT_AFTER`] is reported silent; a node that stops cleanly deletes
//!   its entry; a crashed node's entry is dropped by JetStream after
//!   [`FORGET_AFTER`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::config::Fleet as FleetConfig;

use crate::metrics::Metrics;

mod control;
mod leases;
mod records;
mod shards;
pub use control::{CATALOG_BUCKET, ControlPlane, Effects, PLUGINS_BUCKET, SECRETS_BUCKET};
pub use leases::{Leases, NotAnEdge, STREAMS_BUCKET};
pub use records::{RECORDS_STREAM, Records, subject};
pub use shards::{AssignError, INDEX_BUCKET, Keeper, MAX_DOMAINS, Shard};

/// The KV bucket of the fleet's members, one key per node id.
pub const NODES_BUCKET: &str = "EDGESNAP_NODES";
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A node whose last heartbeat is older than this is silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(10);
/// A crashed node's entry expires after this.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// How long one request to NATS may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("fleet: NATS at {urls} is not reachable yet")]
    NotConnected { urls: String },
    #[error("fleet: {what}: {source}")]
    Nats { what: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
    #[error("fleet: credentials file {path}: {source}")]
    Credentials { path: String, source: std::io::Error },
}

fn nats(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> FleetError {
    FleetError::Nats { what, source: Box::new(source) }
}

/// A node's heartbeat, as kept in `EDGESNAP_NODES`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeEntry {
    pub node_id: String,
    pub roles: Vec<String>,
    pub version: String,
    pub started_ms: u64,
    pub heartbeat_ms: u64,
    pub live_streams: u64,
    /// Records stored or deleted here and not yet published.
    #[serde(default)]
    pub outbox_depth: u64,
    /// Where the node's API answers (its `server.public_url`, or its bound
    /// HTTP address): an index node redirects image requests there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// On an index node: records published and not yet indexed here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_lag: Option<u64>,
    /// Domains whose plugin activated elsewhere this node cannot use
    /// (it keeps the previous one), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin_problems: BTreeMap<String, String>,
    /// On an index node: the domains it keeps (None: every domain).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_domains: Shard,
}

/// A delete asked of the node that stored the records (core NATS request
/// on `edgesnap.node.{node_id}.delete`).
#[derive(Debug, Serialize, Deserialize)]
struct DeleteAsk {
    domain: String,
    ids: Vec<String>,
    remove_files: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DeleteDone {
    records_deleted: u64,
    files_removed: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn delete_subject(node: &str) -> String {
    format!("edgesnap.node.{node}.delete")
}

/// A node as `GET /v1/fleet` reports it.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub entry: NodeEntry,
    /// Milliseconds since its last heartbeat, by this node's clock.
    pub heartbeat_age_ms: u64,
    pub silent: bool,
}

pub struct Fleet {
    config: FleetConfig,
    started_ms: u64,
    metrics: Arc<Metrics>,
    client: async_nats::Client,
    nodes: OnceCell<kv::Store>,
    assignments: OnceCell<kv::Store>,
    plugin_problems: Mutex<BTreeMap<String, String>>,
    index: Arc<crate::index::Index>,
    /// The record stream's side of this node (set once at start).
    records: std::sync::OnceLock<Arc<Records>>,
    /// Where this node's API answers (set once its listener is bound).
    public_url: std::sync::OnceLock<String>,
    /// Asks for a heartbeat now (what it says changed).
    beat_now: tokio::sync::Notify,
    /// Times the connection to NATS was (re)made: a watch made before a
    /// reconnect may have lost its consumer with the server it was on.
    connections: Arc<std::sync::atomic::AtomicU64>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Fleet {
    /// Starts connecting to the fleet's NATS servers (in the background:
    /// this returns at once, whether or not one answers).
    pub async fn join(
        config: &FleetConfig,
        metrics: Arc<Metrics>,
        index: Arc<crate::index::Index>,
    ) -> Result<Arc<Fleet>, FleetError> {
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = connections.clone();
        let mut options = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                async {}
            })
            .name(format!("edgesnap {}", config.node_id))
            .retry_on_initial_connect()
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT));
        if let Some(path) = &config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| FleetError::Credentials { path: path.display().to_string(), source })?;
        }
        let client = options.connect(config.nats_urls.as_slice()).await.map_err(|e| nats("connect", e))?;
        Ok(Arc::new(Fleet {
            config: config.clone(),
            started_ms: now_ms(),
            metrics,
            client,
            nodes: OnceCell::new(),
            assignments: OnceCell::new(),
            plugin_problems: Mutex::default(),
            index,
            records: std::sync::OnceLock::new(),
            public_url: std::sync::OnceLock::new(),
            beat_now: tokio::sync::Notify::new(),
            connections,
        }))
    }

    /// How many times the connection to NATS was made (or made again).
    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the connection to NATS is up now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn not_connected(&self) -> FleetError {
        FleetError::NotConnected { urls: self.config.nats_urls.join(",") }
    }

    /// A KV bucket of the fleet, made by the first node that needs it: on a
    /// cluster kept on three servers (one server lost loses nothing), on a
    /// single server one copy; a cluster that cannot keep three gets one
    /// (logged).
    async fn bucket<'a>(&self, cell: &'a OnceCell<kv::Store>, config: kv::Config) -> Result<&'a kv::Store, FleetError> {
        if !self.connected() {
            return Err(self.not_connected());
        }
        cell.get_or_try_init(|| async {
            let js = jetstream::new(self.client.clone());
            if let Ok(store) = js.get_key_value(&config.bucket).await {
                return Ok(store);
            }
            let clustered = self.client.server_info().cluster.is_some();
            let name = config.bucket.clone();
            let replicated = kv::Config { num_replicas: if clustered { 3 } else { 1 }, ..config.clone() };
            match js.create_key_value(replicated).await {
                Ok(store) => Ok(store),
                Err(e) if clustered => {
                    tracing::warn!(error = %e, "fleet: the cluster cannot keep 3 copies of {name}; keeping one");
                    js.create_key_value(config).await.map_err(|e| nats("create a bucket", e))
                }
                Err(e) => Err(nats("create a bucket", e)),
            }
        })
        .await
    }

    /// The fleet's JetStream context (for its object store).
    fn jetstream(&self) -> Result<jetstream::Context, FleetError> {
        if !self.connected() {
            return Err(self.not_connected());
        }
        Ok(jetstream::new(self.client.clone()))
    }

    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    pub fn roles(&self) -> Vec<&'static str> {
        self.config.roles()
    }

    /// The members' bucket.
    async fn nodes(&self) -> Result<&kv::Store, FleetError> {
        let config = kv::Config {
            bucket: NODES_BUCKET.into(),
            description: "edgesnap: the fleet's nodes, each its last heartbeat".into(),
            history: 1,
            max_age: FORGET_AFTER,
            ..Default::default()
        };
        self.bucket(&self.nodes, config).await
    }

    fn entry(&self) -> NodeEntry {
        NodeEntry {
            node_id: self.config.node_id.clone(),
            roles: self.roles().into_iter().map(String::from).collect(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_ms: self.started_ms,
            heartbeat_ms: now_ms(),
            live_streams: self.metrics.live_streams.get().max(0) as u64,
            plugin_problems: self.plugin_problems.lock().unwrap().clone(),
            outbox_depth: self.index.fleet_outbox_depth().unwrap_or(0),
            public_url: self.public_url.get().cloned(),
            index_lag: self.config.index.then(|| self.records.get().map_or(0, |r| r.lag())),
            index_domains: if self.config.index { self.records.get().and_then(|r| r.shard()) } else { None },
        }
    }

    /// Whether a node heartbeats (its entry is younger than [`SILENT_AFTER`]).
    pub(crate) async fn alive(&self, node: &str) -> Result<bool, FleetError> {
        let Some(bytes) = self.nodes().await?.get(node).await.map_err(|e| nats("read a node", e))? else {
            return Ok(false);
        };
        let Ok(entry) = serde_json::from_slice::<NodeEntry>(&bytes) else { return Ok(false) };
        Ok(now_ms().saturating_sub(entry.heartbeat_ms) <= SILENT_AFTER.as_millis() as u64)
    }

    /// Where this node's API answers, told to the others in its heartbeat.
    pub fn set_public_url(&self, url: String) {
        let _ = self.public_url.set(url);
    }

    /// Where another node's API answers, from its last heartbeat (None: it
    /// is not in the fleet, silent, or did not say).
    pub async fn public_url_of(&self, node: &str) -> Option<String> {
        let read = async {
            let bytes = self.nodes().await.ok()?.get(node).await.ok()??;
            let entry: NodeEntry = serde_json::from_slice(&bytes).ok()?;
            let silent = now_ms().saturating_sub(entry.heartbeat_ms) > SILENT_AFTER.as_millis() as u64;
            if silent { None } else { entry.public_url }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read).await.ok().flatten()
    }

    /// Asks another node to delete records it stored (their objects too
    /// with `remove_files`), as its own API would; waits for its answer.
    /// Returns the records and objects it removed.
    pub async fn delete_on(
        &self,
        node: &str,
        domain: &str,
        ids: &[crate::index::RecordId],
        remove_files: bool,
    ) -> Result<(u64, u64), FleetError> {
        if !self.connected() {
            return Err(self.not_connected());
        }
        let ask =
            DeleteAsk { domain: domain.to_owned(), ids: ids.iter().map(|i| i.to_string()).collect(), remove_files };
        let payload = serde_json::to_vec(&ask).expect("a delete request serializes");
        let answer =
            tokio::time::timeout(REQUEST_TIMEOUT * 2, self.client.request(delete_subject(node), payload.into()))
                .await
                .map_err(|_| self.not_connected())?
                .map_err(|e| nats("ask a node to delete", e))?;
        let done: DeleteDone =
            serde_json::from_slice(&answer.payload).map_err(|e| nats("read a node's delete answer", e))?;
        match done.error {
            Some(e) => Err(FleetError::Nats { what: "delete on another node", source: e.into() }),
            None => Ok((done.records_deleted, done.files_removed)),
        }
    }

    /// Deletes what other nodes ask this one to (records it stored) until `stop`.
    pub async fn serve_deletes(
        self: Arc<Self>,
        notifier: Arc<crate::notify::Notifier>,
        storage: Arc<crate::storage::Storage>,
        stop: CancellationToken,
    ) {
        let mut sub = match self.client.subscribe(delete_subject(self.node_id())).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "fleet: cannot take delete requests from other nodes");
                return;
            }
        };
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                m = sub.next() => match m { Some(m) => m, None => return },
            };
            let done = match serde_json::from_slice::<DeleteAsk>(&msg.payload) {
                Ok(ask) => self.delete_here(&ask, &notifier, &storage).await,
                Err(e) => DeleteDone { error: Some(format!("the request does not read: {e}")), ..Default::default() },
            };
            if let Some(reply) = msg.reply {
                let body = serde_json::to_vec(&done).expect("a delete answer serializes");
                if let Err(e) = self.client.publish(reply, body.into()).await {
                    tracing::warn!(error = %e, "fleet: could not answer a delete request");
                }
            }
        }
    }

    async fn delete_here(
        &self,
        ask: &DeleteAsk,
        notifier: &Arc<crate::notify::Notifier>,
        storage: &crate::storage::Storage,
    ) -> DeleteDone {
        let ids: Vec<_> = ask.ids.iter().filter_map(|i| crate::index::RecordId::parse(i)).collect();
        let mine = match self.index.get_many(&ids) {
            Ok(found) => found
                .into_iter()
                .flatten()
                .filter(|r| r.domain == ask.domain && (r.node.is_empty() || r.node == self.node_id()))
                .map(|r| r.id)
                .collect(),
            Err(e) => return DeleteDone { error: Some(e.to_string()), ..Default::default() },
        };
        match crate::retention::delete_records(&self.index, notifier, storage, mine, ask.remove_files).await {
            Ok((removed, files)) => {
                tracing::info!(domain = %ask.domain, records = removed.len(), files, "fleet: deleted on another node's request");
                DeleteDone { records_deleted: removed.len() as u64, files_removed: files, error: None }
            }
            Err(e) => DeleteDone { error: Some(e.to_string()), ..Default::default() },
        }
    }

    /// Starts this node's side of the record stream: an edge publishes its
    /// outbox, an index node consumes the stream into its index.
    pub fn start_records(self: &Arc<Self>, tasks: &tokio_util::task::TaskTracker, stop: CancellationToken) {
        let records = self.records.get_or_init(|| Records::new(self.clone(), self.index.clone())).clone();
        let roles = self.config.roles();
        if roles.contains(&"edge") {
            tasks.spawn(records.clone().publish(stop.clone()));
        }
        if roles.contains(&"index") {
            tasks.spawn(records.index(stop));
        }
    }

    /// Records (or clears, with None) why a domain's plugin activated on
    /// another node is not in force here; heartbeats carry it.
    fn plugin_problem(&self, domain: &str, problem: Option<String>) {
        let mut problems = self.plugin_problems.lock().unwrap();
        match problem {
            Some(p) => drop(problems.insert(domain.to_owned(), p)),
            None => drop(problems.remove(domain)),
        }
    }

    async fn heartbeat(&self) -> Result<(), FleetError> {
        let bytes = serde_json::to_vec(&self.entry()).expect("a node entry serializes");
        let nodes = self.nodes().await?;
        nodes.put(&self.config.node_id, bytes.into()).await.map_err(|e| nats("heartbeat", e))?;
        Ok(())
    }

    /// Heartbeats until `stop`, then deletes this node's entry (the node left).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut failing = false;
        let mut tick = tokio::time::interval(HEARTBEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
                _ = self.beat_now.notified() => {}
            }
            match tokio::time::timeout(REQUEST_TIMEOUT, self.heartbeat()).await {
                Ok(Ok(())) if failing => {
                    failing = false;
                    tracing::info!(node = %self.config.node_id, "fleet: heartbeats reach NATS again");
                }
                Ok(Ok(())) => {}
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(node = %self.config.node_id, error = %e, "fleet: heartbeat failed; the node goes on and retries");
                }
                Err(_) if !failing => {
                    failing = true;
                    tracing::warn!(node = %self.config.node_id, "fleet: heartbeat timed out; the node goes on and retries");
                }
                _ => {}
            }
        }
        if let Ok(Ok(nodes)) = tokio::time::timeout(REQUEST_TIMEOUT, self.nodes()).await {
            let gone = tokio::time::timeout(REQUEST_TIMEOUT, nodes.delete(&self.config.node_id)).await;
            if !matches!(gone, Ok(Ok(()))) {
                tracing::warn!(node = %self.config.node_id, "fleet: could not remove this node's entry; it expires");
            }
        }
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, self.client.flush()).await;
    }

    /// Every node with an entry, by node id.
    pub async fn status(&self) -> Result<Vec<NodeStatus>, FleetError> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.read_nodes()).await.unwrap_or_else(|_| Err(self.not_connected()))
    }

    async fn read_nodes(&self) -> Result<Vec<NodeStatus>, FleetError> {
        let nodes = self.nodes().await?;
        let mut keys = nodes.keys().await.map_err(|e| nats("list the nodes", e))?;
        let now = now_ms();
        let mut out = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| nats("list the nodes", e))?;
            let Some(bytes) = nodes.get(&key).await.map_err(|e| nats("read a node", e))? else { continue };
            let Ok(entry) = serde_json::from_slice::<NodeEntry>(&bytes) else {
                tracing::warn!(%key, "fleet: an entry in {NODES_BUCKET} is not a node's heartbeat; skipped");
                continue;
            };
            let heartbeat_age_ms = now.saturating_sub(entry.heartbeat_ms);
            out.push(NodeStatus {
                entry,
                heartbeat_age_ms,
                silent: heartbeat_age_ms > SILENT_AFTER.as_millis() as u64,
            });
        }
        out.sort_by(|a, b| a.entry.node_id.cmp(&b.entry.node_id));
        Ok(out)
    }
}
