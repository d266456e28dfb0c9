//! Policy plugins (docs/plugins.md): WebAssembly components of `wit/` that decide
//! where each capture is stored and which snapshots to delete.
//!
//! One Engine; each plugin compiled once into a pre-instantiated component;
//! every call gets a fresh Store with a fuel budget, an epoch deadline and a
//! memory cap. Plugins see no filesystem, network, environment or real clock:
//! the WASI imports std needs are linked to a clock fixed at the capture time
//! and a deterministic random source, so output depends only on input and state.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config as EngineConfig, Engine, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

mod budgets;
mod conformance;
mod plugins;
mod runs;
mod sandbox;

use budgets::{CpuBudgets, thread_cpu_ms};
pub use plugins::{PluginCatalog, PluginFileError, PluginStore};
pub use runs::{DeletionRun, Demoted, RUNS_KEPT, RunRecord};
use sandbox::{Ctx, call_error, load, with_memory_note};

use crate::config::Template;
use crate::index::{Index, Record, RecordId};
use crate::metrics::Metrics;

/// `edgesnap:policy@1.0.0` (`wit/policy.wit`).
mod bindings {
    wasmtime::component::bindgen!({ world: "policy", path: "../wit" });
}

/// `edgesnap:policy@1.1.0` (`wit/1.1/policy.wit`): 1.0.0's interfaces,
/// whose generated types and host functions are 1.0.0's (a unit test checks
/// the two files state them alike), and `output`, passed to `name`.
mod bindings_1_1 {
    wasmtime::component::bindgen!({
        world: "policy",
        path: "../wit/1.1",
        with: {
            "edgesnap:policy/types": super::bindings::edgesnap::policy::types,
            "edgesnap:policy/state": super::bindings::edgesnap::policy::state,
            "edgesnap:policy/log": super::bindings::edgesnap::policy::log,
        },
    });
}

use bindings::edgesnap::policy::log::Level;
use bindings::edgesnap::policy::types as wit;
use bindings::{Policy, PolicyPre};
use bindings_1_1::edgesnap::policy::output as wit_output;

/// The default plugin, built from `plugins/default-policy` by build.rs.
pub const DEFAULT_PLUGIN: &[u8] = include_bytes!(env!("DEFAULT_POLICY_WASM"));

/// Limits of one plugin call: config defaults, per-domain overrides.
pub use crate::config::PluginLimits as Limits;

/// Plugin instances alive at once: a call holds one for its duration; the
/// snapshot path runs at most 64 calls at once, deletion passes one.
const POOL_INSTANCES: u32 = 256;

const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("set up the plugin engine: {0}")]
    Engine(String),
    #[error("plugin {version} does not load: {why}")]
    Load { version: String, why: String },
    #[error("plugin {version} failed: {why}")]
    Call { version: String, why: String },
    #[error("plugin {version} refused: {message}")]
    Refused { version: String, message: String },
    #[error("plugin {version} returned bad output: {why}")]
    BadOutput { version: String, why: String },
    #[error("plugin {version} exceeded its state limits: {why}; nothing of the call was written")]
    State { version: String, why: String },
}

/// The largest state key, value and number of writes one call may make (SPEC §6).
pub const STATE_KEY_MAX: usize = 256;
pub const STATE_VALUE_MAX: usize = 64 << 10;
pub const STATE_WRITES_MAX: usize = 64;

/// Where one capture goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub key: String,
    pub overwrite: bool,
}

/// What a naming call is told about a capture.
#[derive(Debug, Clone)]
pub struct CaptureFacts<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    pub create_timestamp_ms: u64,
    pub sequence: u64,
    pub width: u32,
    pub height: u32,
    pub frame: crate::media::FrameFacts,
}

/// A compiled plugin.
pub struct Plugin {
    /// "default" or the sha256 of the component.
    pub version: String,
    /// The version of `wit/` it was built against.
    pub contract: Contract,
    pre: Pre,
}

/// The contract versions the host serves, each a world of `wit/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    /// `edgesnap:policy@1.0.0`.
    V1_0,
    /// `edgesnap:policy@1.1.0`: `name` is also given the template's `output`.
    V1_1,
}

impl Contract {
    pub fn as_str(self) -> &'static str {
        match self {
            Contract::V1_0 => "1.0.0",
            Contract::V1_1 => "1.1.0",
        }
    }
}

/// A plugin's instance template, of its contract's world.
enum Pre {
    V1_0(PolicyPre<Ctx>),
    V1_1(bindings_1_1::PolicyPre<Ctx>),
}

pub struct Policies {
    engine: Engine,
    linker: Linker<Ctx>,
    default: Arc<Plugin>,
    index: Arc<Index>,
    /// The compiled-plugin cache on disk, if any.
    cache: Option<wasmtime::Cache>,
    /// Limits when no config is followed (tests, the local runner).
    limits: Limits,
    /// The config in force, for the limits of each domain's calls.
    settings: std::sync::OnceLock<Arc<crate::config::Settings>>,
    metrics: Arc<Metrics>,
    /// Each domain's active uploaded plugin; absent: the default.
    active: RwLock<HashMap<String, Arc<Plugin>>>,
    /// Consecutive failures of each domain's active plugin, by call
    /// (`name`, `select_deletions`): either kind failing in a row demotes it.
    failures: std::sync::Mutex<HashMap<(String, &'static str), u32>>,
    /// Each domain's recent naming calls of uploaded plugins, newest last.
    runs: std::sync::Mutex<HashMap<String, std::collections::VecDeque<RunRecord>>>,
    /// Told of each demotion, so the catalog follows.
    demotions: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<Demoted>>>,
    /// Bytes of each domain's plugin state, counted from the index once.
    state_usage: std::sync::Mutex<HashMap<String, u64>>,
    /// Each domain's plugin CPU budget.
    cpu: CpuBudgets,
}

/// A deletion answer for one page: the records to delete (all from the
/// page), and whether older pages may be skipped in this pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletions {
    pub ids: Vec<RecordId>,
    pub done: bool,
}

/// A deletion question about one page of a stream's sequential snapshots,
/// newest first.
#[derive(Debug, Clone, Copy)]
pub struct DeletionQuestion<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    /// How many of the stream's snapshots are newer than `items[0]`.
    pub offset: u64,
    pub items: &'a [Record],
    /// The snapshot just newer than `items[0]`.
    pub newer: Option<&'a Record>,
    pub now_ms: u64,
}

/// A capture's placements, and the state writes of the plugin that named it
/// (committed with the capture's records, or with its intent's end if it
/// is skipped; dropped if nothing could be stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub placements: Vec<Placement>,
    pub state: Vec<(String, Option<Vec<u8>>)>,
}

/// What one call used, as measured by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub fuel: u64,
    pub peak_memory_bytes: usize,
}

/// One naming call run on its own (`edgesnap plugin run`): what it
/// returned, logged, used and would have written to its state.
#[derive(Debug)]
pub struct Run {
    pub result: Result<Vec<Placement>, PolicyError>,
    pub logs: Vec<String>,
    pub usage: Usage,
    pub state_writes: Vec<(String, Option<Vec<u8>>)>,
}

impl Policies {
    /// The engine, the linker and the default plugin. With `compiled_cache`,
    /// compiled plugins are kept in that directory, keyed by the engine's
    /// compatibility hash and the component's bytes (wasmtime's cache): a
    /// restart or another version of edgesnap with the same engine loads them
    /// without compiling again.
    pub fn new(
        index: Arc<Index>,
        limits: Limits,
        metrics: Arc<Metrics>,
        compiled_cache: Option<&std::path::Path>,
    ) -> Result<Policies, PolicyError> {
        let mut config = EngineConfig::new();
        config.wasm_component_model(true).consume_fuel(true).epoch_interruption(true);
        // Instances come from a pool of pre-reserved slots: a fresh instance
        // per call costs about 20 µs instead of 35 (BENCHMARKS.md).
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 8)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .max_memory_size(crate::config::MAX_PLUGIN_MEMORY_MIB << 20)
            // A slot's pages that a call dirtied are reset in place (found
            // with PAGEMAP_SCAN where the kernel has it, else the low 256 KiB
            // by memset) instead of `madvise`d away: an madvise per call
            // flushed the TLB of every core the host runs on (BENCHMARKS.md).
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let cache =
            match compiled_cache {
                None => None,
                Some(dir) => {
                    let mut cache = wasmtime::CacheConfig::new();
                    // Compiled versions nothing loads any more are evicted,
                    // least recently used first, past 512 MiB.
                    cache
                        .with_directory(dir)
                        .with_files_total_size_soft_limit(512 << 20)
                        .with_cleanup_interval(Duration::from_secs(3600));
                    Some(wasmtime::Cache::new(cache).map_err(|e| {
                        PolicyError::Engine(format!("compiled plugin cache in {}: {e:#}", dir.display()))
                    })?)
                }
            };
        config.cache(cache.clone());
        let engine = Engine::new(&config).map_err(|e| PolicyError::Engine(e.to_string()))?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let mut linker = Linker::<Ctx>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| PolicyError::Engine(e.to_string()))?;
        // 1.0.0's interfaces serve 1.1.0's imports of them too (the linker
        // matches semver-compatible names); 1.1.0 adds `output`.
        Policy::add_to_linker::<_, HasSelf<_>>(&mut linker, |c| c).map_err(|e| PolicyError::Engine(e.to_string()))?;
        wit_output::add_to_linker::<_, HasSelf<_>>(&mut linker, |c| c)
            .map_err(|e| PolicyError::Engine(e.to_string()))?;
        let default = Arc::new(load(&engine, &linker, "default", DEFAULT_PLUGIN)?);
        Ok(Policies {
            engine,
            linker,
            default,
            index,
            cache,
            limits,
            settings: Default::default(),
            metrics,
            active: RwLock::default(),
            failures: Default::default(),
            runs: Default::default(),
            demotions: Default::default(),
            state_usage: Default::default(),
            cpu: CpuBudgets::default(),
        })
    }

    /// Takes each call's limits from the config in force: its `[plugins]`
    /// defaults with the domain's `plugin_limits`.
    pub fn follow(&self, settings: Arc<crate::config::Settings>) {
        let _ = self.settings.set(settings);
    }

    /// The limits of a call of `plugin` for `domain`. The built-in plugin
    /// runs with the defaults, whatever a domain's overrides say.
    fn limits_for(&self, domain: &str, plugin: &Plugin) -> Limits {
        match self.settings.get() {
            None => self.limits,
            Some(s) if plugin.version == "default" => s.get().plugin_limits,
            Some(s) => s.get().plugin_limits_for(domain),
        }
    }

    /// Where demotions are reported.
    pub fn on_demotion(&self, tx: tokio::sync::mpsc::UnboundedSender<Demoted>) {
        *self.demotions.lock().unwrap() = Some(tx);
    }

    /// Puts a domain's plugin in force (None: the default).
    pub fn activate(&self, domain: &str, plugin: Option<Arc<Plugin>>) {
        let mut active = self.active.write().unwrap();
        match plugin {
            Some(p) => drop(active.insert(domain.to_owned(), p)),
            None => drop(active.remove(domain)),
        }
        self.failures.lock().unwrap().retain(|(d, _), _| d != domain);
    }

    /// Compiles a component (or takes it from the compiled cache) and checks
    /// it is of this world.
    pub fn load(&self, version: &str, bytes: &[u8]) -> Result<Plugin, PolicyError> {
        // An uploaded version is the sha256 of its bytes ("default" and the
        // local runner's "local" are not).
        if version.len() == 64 && version.bytes().all(|b| b.is_ascii_hexdigit()) {
            use sha2::Digest;
            let sha = hex::encode(sha2::Sha256::digest(bytes));
            if sha != version {
                return Err(PolicyError::Load {
                    version: version.to_owned(),
                    why: format!("its file's sha256 is {sha}: the stored file was altered; re-upload it"),
                });
            }
        }
        let hits = self.cache.as_ref().map(|c| c.cache_hits());
        let started = std::time::Instant::now();
        let plugin = load(&self.engine, &self.linker, version, bytes)?;
        let from_cache = hits.is_some() && self.cache.as_ref().map(|c| c.cache_hits()) > hits;
        tracing::info!(%version, from_cache, ms = started.elapsed().as_millis() as u64, "plugin loaded");
        Ok(plugin)
    }

    /// Runs one naming call with production limits and reports everything,
    /// committing nothing (the local runner).
    pub fn run(&self, plugin: &Plugin, facts: &CaptureFacts<'_>, template: &Template) -> Run {
        self.call_name(plugin, facts, template)
    }

    /// Names a capture with the domain's plugin. A failure of an uploaded
    /// plugin (trap, fuel, deadline, memory, bad output, refusal) falls back
    /// to the default plugin: the capture is stored, never lost. The state
    /// writes of a successful call are returned, for the caller to commit
    /// with the capture's records.
    /// Blocking: call it off the async runtime.
    pub fn name(&self, facts: &CaptureFacts<'_>, template: &Template) -> Result<Named, PolicyError> {
        let plugin = self.active.read().unwrap().get(facts.domain).cloned();
        if let Some(plugin) = plugin
            && let Some(reserved) = self.cpu_admit(facts, &plugin)
        {
            let started = std::time::Instant::now();
            let cpu_before = thread_cpu_ms();
            let mut call = self.call_name(&plugin, facts, template);
            let cpu_ms = thread_cpu_ms() - cpu_before;
            self.cpu.charge(facts.domain, reserved, cpu_ms);
            self.metrics.policy_cpu(facts.domain, cpu_ms / 1000.0);
            if call.result.is_ok() && !call.state_writes.is_empty() {
                let quota = self.limits_for(facts.domain, &plugin).state_quota_bytes;
                if let Err(why) = self.admit_state(facts.domain, &call.state_writes, quota) {
                    call.result = Err(PolicyError::State { version: plugin.version.clone(), why: why.to_string() });
                    call.state_writes.clear();
                }
            }
            if let Err(e @ PolicyError::State { .. }) = &call.result {
                self.metrics.limit_hit("plugin_state", format_args!("domain {}: {e}", facts.domain));
            }
            let seconds = started.elapsed().as_secs_f64();
            let outcome = outcome_of(&call.result);
            let usage = call.result.is_ok().then_some((call.usage.fuel, call.usage.peak_memory_bytes));
            self.metrics.policy_call(facts.domain, &plugin.version, "name", outcome, seconds, usage);
            self.record(facts, &plugin.version, outcome, seconds, cpu_ms, &call);
            match call.result {
                Ok(placements) => {
                    self.failures.lock().unwrap().remove(&(facts.domain.to_owned(), "name"));
                    return Ok(Named { placements, state: call.state_writes });
                }
                Err(e) => {
                    tracing::warn!(domain = %facts.domain, error = %e, "plugin failed; the default policy names this capture");
                    self.metrics.policy_fallback(facts.domain);
                    self.failed(facts.domain, "name", &plugin, &e);
                }
            }
        }
        Ok(Named { placements: self.name_with(&self.default, facts, template)?, state: Vec::new() })
    }

    /// Whether a domain has an uploaded plugin in force. The default policy
    /// keeps everything, so only such a domain is asked about deletions.
    pub fn has_plugin(&self, domain: &str) -> bool {
        self.active.read().unwrap().contains_key(domain)
    }

    /// Asks the domain's plugin which of a page of snapshots to delete.
    /// None: the domain runs the default policy, which deletes nothing. A
    /// failure counts toward demotion; the caller deletes nothing of its pass.
    /// Blocking: call it off the async runtime.
    pub fn select_deletions(&self, q: &DeletionQuestion<'_>) -> Option<Result<Deletions, PolicyError>> {
        let plugin = self.active.read().unwrap().get(q.domain).cloned()?;
        // Past its CPU budget a domain's deletion pass waits (for the next snapshot).
        let rate = self.cpu_rate(&self.limits_for(q.domain, &plugin));
        let Some(reserved) = self.cpu.admit(q.domain, rate) else {
            self.metrics.limit_hit(
                "plugin_cpu",
                format_args!("domain {}: its plugin's CPU budget is spent; a deletion pass waits", q.domain),
            );
            return None;
        };
        let started = std::time::Instant::now();
        let cpu_before = thread_cpu_ms();
        let (result, logs, usage) = self.ask(&plugin, q);
        let cpu_ms = thread_cpu_ms() - cpu_before;
        self.cpu.charge(q.domain, reserved, cpu_ms);
        self.metrics.policy_cpu(q.domain, cpu_ms / 1000.0);
        let seconds = started.elapsed().as_secs_f64();
        let outcome = outcome_of(&result);
        let ok_usage = result.is_ok().then_some((usage.fuel, usage.peak_memory_bytes));
        self.metrics.policy_call(q.domain, &plugin.version, "select_deletions", outcome, seconds, ok_usage);
        self.keep_run(
            q.domain,
            RunRecord {
                app: q.app.to_owned(),
                stream: q.stream.to_owned(),
                deletion: Some(DeletionRun {
                    offset: q.offset,
                    items: q.items.len(),
                    selected: result
                        .as_ref()
                        .map(|d| d.ids.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    done: result.as_ref().is_ok_and(|d| d.done),
                }),
                error: result.as_ref().err().map(ToString::to_string),
                logs,
                fuel: usage.fuel,
                peak_memory_bytes: usage.peak_memory_bytes,
                duration_ms: seconds * 1000.0,
                cpu_ms,
                ..RunRecord::new(&plugin.version, "select_deletions", outcome)
            },
        );
        match &result {
            Ok(_) => drop(self.failures.lock().unwrap().remove(&(q.domain.to_owned(), "select_deletions"))),
            Err(e) => {
                tracing::warn!(domain = %q.domain, app = %q.app, stream = %q.stream, error = %e, "plugin failed a deletion question; nothing of this pass is deleted");
                self.failed(q.domain, "select_deletions", &plugin, e);
            }
        }
        Some(result)
    }

    /// One deletion call of a given plugin, active or not (the local
    /// runner): its answer, logs and usage.
    pub fn ask(
        &self,
        plugin: &Plugin,
        q: &DeletionQuestion<'_>,
    ) -> (Result<Deletions, PolicyError>, Vec<String>, Usage) {
        let mut store = self.store(q.domain, q.now_ms, self.limits_for(q.domain, plugin));
        let result = with_memory_note(self.deletions_in(&mut store, plugin, q), &store);
        let usage = Usage {
            fuel: store.data().budget.fuel - store.get_fuel().unwrap_or(0),
            peak_memory_bytes: store.data().limits.peak_memory,
        };
        (result, std::mem::take(&mut store.data_mut().logs), usage)
    }

    /// One deletion call in a given store; the answer must name only the
    /// page's items. State writes of a deletion call are discarded.
    fn deletions_in(
        &self,
        store: &mut Store<Ctx>,
        plugin: &Plugin,
        q: &DeletionQuestion<'_>,
    ) -> Result<Deletions, PolicyError> {
        let version = &plugin.version;
        let call_err = |e: wasmtime::Error| call_error(version, &e);
        let shown = |r: &Record| wit::StoredSnapshot {
            id: r.id.to_string(),
            create_timestamp_ms: r.create_timestamp_ms,
            key: r.key.clone(),
            sequence: r.sequence,
            size: r.size,
        };
        let stream = wit::StreamRef { domain: q.domain.into(), app: q.app.into(), stream: q.stream.into() };
        let page = wit::DeletionPage {
            offset: q.offset,
            items: q.items.iter().map(shown).collect(),
            newer: q.newer.map(shown),
        };
        let out = match &plugin.pre {
            Pre::V1_0(pre) => pre.instantiate(&mut *store).map_err(call_err)?.call_select_deletions(
                &mut *store,
                &stream,
                &page,
                q.now_ms,
            ),
            Pre::V1_1(pre) => pre.instantiate(&mut *store).map_err(call_err)?.call_select_deletions(
                &mut *store,
                &stream,
                &page,
                q.now_ms,
            ),
        }
        .map_err(call_err)?
        .map_err(|message| PolicyError::Refused { version: version.clone(), message: clip(&message, 1000) })?;
        let mut ids = Vec::with_capacity(out.ids.len());
        for id in &out.ids {
            match RecordId::parse(id).filter(|id| q.items.iter().any(|r| r.id == *id)) {
                Some(id) => ids.push(id),
                None => {
                    return Err(PolicyError::BadOutput {
                        version: version.clone(),
                        why: format!("id {:?} is not one of the page's snapshots", clip(id, 100)),
                    });
                }
            }
        }
        ids.sort();
        ids.dedup();
        Ok(Deletions { ids, done: out.done })
    }

    pub fn name_with(
        &self,
        plugin: &Plugin,
        facts: &CaptureFacts<'_>,
        template: &Template,
    ) -> Result<Vec<Placement>, PolicyError> {
        self.call_name(plugin, facts, template).result
    }

    /// One naming call in a fresh store: its result, logs, usage and staged
    /// state writes (none when it failed).
    fn call_name(&self, plugin: &Plugin, facts: &CaptureFacts<'_>, template: &Template) -> Run {
        let mut store = self.store(facts.domain, facts.create_timestamp_ms, self.limits_for(facts.domain, plugin));
        let result = with_memory_note(self.name_in(&mut store, plugin, facts, template), &store);
        let usage = Usage {
            fuel: store.data().budget.fuel - store.get_fuel().unwrap_or(0),
            peak_memory_bytes: store.data().limits.peak_memory,
        };
        let data = store.data_mut();
        let logs = std::mem::take(&mut data.logs);
        let staged = std::mem::take(&mut data.staged);
        let result = match (result, data.state_error.take()) {
            (Ok(_), Some(why)) => Err(PolicyError::State { version: plugin.version.clone(), why }),
            (result, _) => result,
        };
        let state_writes = if result.is_ok() { staged.into_iter().collect() } else { Vec::new() };
        Run { result, logs, usage, state_writes }
    }

    /// One naming call in a given store: instantiate, call, check the output.
    fn name_in(
        &self,
        store: &mut Store<Ctx>,
        plugin: &Plugin,
        facts: &CaptureFacts<'_>,
        template: &Template,
    ) -> Result<Vec<Placement>, PolicyError> {
        let version = &plugin.version;
        let call_err = |e: wasmtime::Error| call_error(version, &e);
        let capture = wit::Capture {
            domain: facts.domain.to_owned(),
            app: facts.app.to_owned(),
            stream: facts.stream.to_owned(),
            create_timestamp_ms: facts.create_timestamp_ms,
            sequence: facts.sequence,
            width: facts.width,
            height: facts.height,
            frame: wit::FrameFacts { mean_luma: facts.frame.mean_luma, ahash: facts.frame.ahash },
        };
        let shown = wit::Template {
            app_name: template.app_name.clone(),
            time_interval: template.time_interval_s,
            storage: template.storage.clone(),
            overwrite_object: template.overwrite_object.clone(),
            sequence_object: template.sequence_object.clone(),
        };
        let out = match &plugin.pre {
            Pre::V1_0(pre) => pre.instantiate(&mut *store).map_err(call_err)?.call_name(&mut *store, &capture, &shown),
            Pre::V1_1(pre) => {
                let output = wit_output::Output {
                    format: match template.format {
                        crate::config::ImageFormat::Jpg => wit_output::ImageFormat::Jpg,
                        crate::config::ImageFormat::Webp => wit_output::ImageFormat::Webp,
                    },
                    width: template.width,
                    height: template.height,
                    jpeg_quality: template.jpeg_quality,
                    skip_blank: template.skip_blank,
                    storyboard_seconds: template.storyboard_s,
                };
                pre.instantiate(&mut *store).map_err(call_err)?.call_name(&mut *store, &capture, &shown, output)
            }
        }
        .map_err(call_err)?
        .map_err(|message| PolicyError::Refused { version: version.clone(), message: clip(&message, 1000) })?;
        let max = store.data().budget.max_placements;
        if out.len() > max {
            return Err(PolicyError::BadOutput {
                version: version.clone(),
                why: format!("{} placements, at most {max}", out.len()),
            });
        }
        let placements = out
            .into_iter()
            .map(|p| {
                crate::storage::check_key(&p.key)
                    .map(|_| Placement { key: p.key, overwrite: matches!(p.mode, wit::Mode::Overwrite) })
                    .map_err(|e| PolicyError::BadOutput { version: version.clone(), why: e.to_string() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(placements)
    }
}

/// The outcome label of a call.
fn outcome_of<T>(result: &Result<T, PolicyError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(PolicyError::Refused { .. }) => "refused",
        Err(PolicyError::BadOutput { .. }) => "bad_output",
        Err(PolicyError::State { .. }) => "state_limit",
        Err(_) => "trap",
    }
}

/// At most `n` characters of a string from or about a plugin, for an error message.
fn clip(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(over: Option<&str>, seq: Option<&str>) -> Template {
        Template {
            app_name: "*".into(),
            time_interval_s: 5,
            storage: "local".into(),
            overwrite_object: over.map(Into::into),
            sequence_object: seq.map(Into::into),
            callback: None,
            jpeg_quality: 85,
            width: 0,
            height: 0,
            format: Default::default(),
            skip_blank: false,
            storyboard_s: 0,
            origin: crate::config::Origin::File,
        }
    }

    #[test]
    fn default_plugin_names_by_the_template() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let p = Policies::new(index, Limits::default(), Arc::new(Metrics::new()), None).unwrap();
        let facts = CaptureFacts {
            domain: "push.example.com",
            app: "live",
            stream: "cam1",
            create_timestamp_ms: 1_764_057_600_123,
            sequence: 42,
            width: 1280,
            height: 720,
            frame: Default::default(),
        };
        let t =
            template(Some("{AppName}/{StreamName}.jpg"), Some("snapshot/{AppName}/{StreamName}/{UnixTimestamp}.jpg"));
        assert_eq!(
            p.name(&facts, &t).unwrap().placements,
            vec![
                Placement { key: "live/cam1.jpg".into(), overwrite: true },
                Placement { key: "snapshot/live/cam1/1764057600.jpg".into(), overwrite: false },
            ]
        );
        let t = template(None, Some("{Domain}/{Date}/{Time}-{Sequence}-{UnixTimestampMs}.jpg"));
        assert_eq!(
            p.name(&facts, &t).unwrap().placements,
            vec![Placement { key: "push.example.com/2025-11-25/080000-42-1764057600123.jpg".into(), overwrite: false }]
        );
    }

    #[test]
    fn bytes_that_are_not_a_component_do_not_load() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let p = Policies::new(index, Limits::default(), Arc::new(Metrics::new()), None).unwrap();
        assert!(matches!(p.load("x", b"\0asm garbage"), Err(PolicyError::Load { .. })));
    }

    fn example(name: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"))).unwrap()
    }

    /// Instance slots are reused and reset in place (keep-resident): no
    /// call sees what an earlier one left in memory, near or far.
    #[test]
    fn every_call_starts_from_fresh_memory() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let p = Policies::new(index, Limits::default(), Arc::new(Metrics::new()), None).unwrap();
        let hostile = Arc::new(p.load("hostile", &example("hostile")).unwrap());
        p.activate("a.example", Some(hostile));
        let facts = CaptureFacts {
            domain: "a.example",
            app: "live",
            stream: "remember",
            create_timestamp_ms: 1_764_057_600_123,
            sequence: 1,
            width: 64,
            height: 48,
            frame: Default::default(),
        };
        let t = template(None, Some("{AppName}/{StreamName}/{Sequence}.jpg"));
        for _ in 0..5 {
            let named = p.name(&facts, &t).unwrap().placements;
            assert_eq!(named, vec![Placement { key: "live/remember/1-0.jpg".into(), overwrite: false }]);
        }
    }

    /// 1.1.0's bindings reuse 1.0.0's for `types`, `state` and `log`, so the
    /// two files must state those interfaces alike (and semver says a
    /// published interface never changes).
    #[test]
    fn contract_1_1_restates_the_1_0_interfaces_unchanged() {
        let v1_0 = include_str!("../../../wit/policy.wit");
        let v1_1 = include_str!("../../../wit/1.1/policy.wit");
        let interface = |src: &'static str, name: &str| {
            let start = src.find(&format!("\ninterface {name} {{")).expect("the interface");
            &src[start..start + src[start..].find("\n}\n").expect("its end")]
        };
        for name in ["types", "state", "log"] {
            assert_eq!(interface(v1_0, name), interface(v1_1, name), "interface {name}");
        }
        assert!(!v1_0.contains("\ninterface output {") && v1_1.contains("\ninterface output {"));
    }

    /// A component's contract is told by its `name` export; a 1.1.0 plugin
    /// is given the template's output settings, a 1.0.0 one still works.
    #[test]
    fn each_contract_version_is_served() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let p = Policies::new(index, Limits::default(), Arc::new(Metrics::new()), None).unwrap();
        let renditions = p.load("renditions", &example("rendition_folders")).unwrap();
        assert_eq!(renditions.contract, Contract::V1_1);
        p.conformance(&renditions, "a.example").unwrap();
        let dates = p.load("dates", &example("date_folders")).unwrap();
        assert_eq!((dates.contract, p.default.contract), (Contract::V1_0, Contract::V1_0));
        let facts = CaptureFacts {
            domain: "a.example",
            app: "live",
            stream: "cam1",
            create_timestamp_ms: 1_764_057_600_123,
            sequence: 3,
            width: 320,
            height: 180,
            frame: Default::default(),
        };
        let t = Template {
            format: crate::config::ImageFormat::Webp,
            width: 320,
            jpeg_quality: 70,
            skip_blank: true,
            storyboard_s: 3600,
            ..template(None, Some("{AppName}/{StreamName}/{Sequence}.webp"))
        };
        let run = p.run(&renditions, &facts, &t);
        assert_eq!(
            run.result.unwrap(),
            vec![Placement { key: "live/cam1/320x180-q70/3.webp".into(), overwrite: false }]
        );
        assert_eq!(run.logs, vec!["info: webp asked 320x0 q70 skip-blank true storyboard 3600 s"]);
        let jpg = Template { format: crate::config::ImageFormat::Jpg, ..t };
        assert_eq!(p.run(&renditions, &facts, &jpg).result.unwrap()[0].key, "live/cam1/320x180-q70/3.jpg");
        assert_eq!(p.run(&dates, &facts, &jpg).result.unwrap()[0].key, "live/cam1/2025/11/25/080000-3.jpg");
    }

    #[test]
    fn uploaded_plugins_name_and_a_failing_one_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let index = Arc::new(Index::open(&dir.path().join("i.redb")).unwrap());
        let metrics = Arc::new(Metrics::new());
        let p = Policies::new(index, Limits::default(), metrics.clone(), None).unwrap();
        let usage = p.conformance(&p.default, "a.example").unwrap();
        assert!(usage.fuel > 0 && usage.peak_memory_bytes >= 64 << 10, "{usage:?}");

        let facts = CaptureFacts {
            domain: "a.example",
            app: "live",
            stream: "cam1",
            create_timestamp_ms: 1_764_057_600_123,
            sequence: 9,
            width: 1280,
            height: 720,
            frame: Default::default(),
        };
        let t = template(Some("{AppName}/{StreamName}.jpg"), None);
        let dates = Arc::new(p.load("dates", &example("date_folders")).unwrap());
        p.conformance(&dates, "a.example").unwrap();
        p.activate("a.example", Some(dates));
        let want = vec![Placement { key: "live/cam1/2025/11/25/080000-9.jpg".into(), overwrite: false }];
        assert_eq!(p.name(&facts, &t).unwrap().placements, want);
        // Another domain keeps the default.
        let other = CaptureFacts { domain: "b.example", ..facts.clone() };
        assert_eq!(
            p.name(&other, &t).unwrap().placements,
            vec![Placement { key: "live/cam1.jpg".into(), overwrite: true }]
        );

        // A plugin that never returns fails conformance, and if active anyway,
        // is stopped and the default names the capture.
        let spin = Arc::new(p.load("spin", &example("spin")).unwrap());
        let e = p.conformance(&spin, "a.example").unwrap_err();
        assert!(matches!(e, PolicyError::Call { .. }), "{e}");
        p.activate("a.example", Some(spin));
        let started = std::time::Instant::now();
        assert_eq!(
            p.name(&facts, &t).unwrap().placements,
            vec![Placement { key: "live/cam1.jpg".into(), overwrite: true }]
        );
        assert!(started.elapsed() < Duration::from_secs(2), "stopped by fuel or the deadline");
        assert!(metrics.render_text().contains("edgesnap_policy_fallbacks_total{domain=\"a.example\"} 1"));
        let m = metrics.render_text();
        assert!(
            m.contains(r#"edgesnap_policy_calls_total{domain="a.example",version="dates",call="name",outcome="ok"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(
                r#"edgesnap_policy_calls_total{domain="a.example",version="spin",call="name",outcome="trap"} 1"#
            ),
            "{m}"
        );
        assert!(m.contains(r#"edgesnap_policy_fuel_count{domain="a.example",version="dates"} 1"#), "{m}");
        // Failures in a row demote it, once, and say so.
        let (tx, mut demoted) = tokio::sync::mpsc::unbounded_channel();
        p.on_demotion(tx);
        for _ in 1..Limits::default().demote_after {
            p.name(&facts, &t).unwrap();
        }
        let d = demoted.try_recv().unwrap();
        assert_eq!((d.domain.as_str(), d.version.as_str()), ("a.example", "spin"));
        assert!(d.reason.starts_with("5 failures in a row, the last: plugin spin failed"), "{}", d.reason);
        assert!(p.active.read().unwrap().get("a.example").is_none(), "the default runs");
        assert!(metrics.render_text().contains("edgesnap_policy_demotions_total{domain=\"a.example\"} 1"));
        p.name(&facts, &t).unwrap();
        assert!(demoted.try_recv().is_err());
        p.activate("a.example", None);
        assert_eq!(
            p.name(&facts, &t).unwrap().placements,
            vec![Placement { key: "live/cam1.jpg".into(), overwrite: true }]
        );
    }
}
