//! The sandbox one plugin call runs in: the store's context (WASI, the
//! state host functions with their limits, the log), the memory limiter,
//! the fixed clock, and turning a trap into the error the tenant reads.

use super::*;

/// Caps the guest's memories and tables, and remembers the peak memory.
pub(super) struct Limiter {
    max_memory: usize,
    memory: usize,
    pub(super) peak_memory: usize,
    /// A growth past the cap was refused (the guest usually traps next).
    refused: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory - current + desired;
        if total > self.max_memory {
            self.refused = true;
            return Ok(false);
        }
        self.memory = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        4
    }

    fn tables(&self) -> usize {
        16
    }

    fn memories(&self) -> usize {
        4
    }
}

/// The store data of one call.
pub(super) struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(super) limits: Limiter,
    /// The limits this call runs under.
    pub(super) budget: Limits,
    domain: String,
    index: Arc<Index>,
    pub(super) staged: BTreeMap<String, Option<Vec<u8>>>,
    /// `set` and `delete` calls made.
    state_writes: usize,
    /// The first state limit the call broke: it fails when it returns.
    pub(super) state_error: Option<String>,
    log_lines: u32,
    max_log_lines: u32,
    /// The call's log lines, kept (up to the cap) for its run record.
    pub(super) logs: Vec<String>,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl wit::Host for Ctx {}

impl wit_output::Host for Ctx {}

impl bindings::edgesnap::policy::state::Host for Ctx {
    fn get(&mut self, key: String) -> Option<Vec<u8>> {
        if let Some(v) = self.staged.get(&key) {
            return v.clone();
        }
        match self.index.plugin_state(&self.domain, &key) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(domain = %self.domain, error = %e, "plugin state read failed");
                None
            }
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) {
        self.stage(key, Some(value));
    }

    fn delete(&mut self, key: String) {
        self.stage(key, None);
    }
}

impl Ctx {
    /// Stages a state write within the per-call limits; past one the write
    /// is dropped and the call will fail.
    fn stage(&mut self, key: String, value: Option<Vec<u8>>) {
        if self.state_error.is_some() {
            return;
        }
        self.state_writes += 1;
        let broken = if key.len() > STATE_KEY_MAX {
            Some(format!("a state key of {} bytes (at most {STATE_KEY_MAX})", key.len()))
        } else if let Some(v) = value.as_ref().filter(|v| v.len() > STATE_VALUE_MAX) {
            Some(format!("a state value of {} bytes (at most {STATE_VALUE_MAX})", v.len()))
        } else if self.state_writes > STATE_WRITES_MAX {
            Some(format!("more than {STATE_WRITES_MAX} state writes in one call"))
        } else {
            None
        };
        match broken {
            Some(why) => {
                self.staged.clear();
                self.state_error = Some(why);
            }
            None => drop(self.staged.insert(key, value)),
        }
    }
}

impl bindings::edgesnap::policy::log::Host for Ctx {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > self.max_log_lines {
            return;
        }
        let message: String = message.chars().take(1024).collect();
        let name = match level {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        };
        self.logs.push(format!("{name}: {message}"));
        let domain = &self.domain;
        match level {
            Level::Debug => tracing::debug!(%domain, "plugin: {message}"),
            Level::Info => tracing::info!(%domain, "plugin: {message}"),
            Level::Warn => tracing::warn!(%domain, "plugin: {message}"),
            Level::Error => tracing::error!(%domain, "plugin: {message}"),
        }
    }
}

/// The guest's wall clock: fixed at the capture time.
struct FixedClock(Duration);

impl wasmtime_wasi::HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        self.0
    }
}

impl wasmtime_wasi::HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.0.as_nanos() as u64
    }
}

impl Policies {
    /// A fresh sandbox for one call: WASI with a clock fixed at the capture
    /// time, deterministic random sources, the call's fuel, epoch deadline
    /// and memory cap, and the domain's state.
    pub(super) fn store(&self, domain: &str, now_ms: u64, limits: Limits) -> Store<Ctx> {
        let clock = Duration::from_millis(now_ms);
        let wasi = WasiCtxBuilder::new()
            .wall_clock(FixedClock(clock))
            .monotonic_clock(FixedClock(clock))
            .secure_random(wasmtime_wasi::Deterministic::new(now_ms.to_le_bytes().to_vec()))
            .insecure_random(wasmtime_wasi::Deterministic::new(now_ms.to_be_bytes().to_vec()))
            .insecure_random_seed(u128::from(now_ms))
            .build();
        let ctx = Ctx {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter { max_memory: limits.memory_bytes, memory: 0, peak_memory: 0, refused: false },
            budget: limits,
            domain: domain.to_owned(),
            index: self.index.clone(),
            staged: BTreeMap::new(),
            state_writes: 0,
            state_error: None,
            log_lines: 0,
            max_log_lines: limits.max_log_lines,
            logs: Vec::new(),
        };
        let mut store = Store::new(&self.engine, ctx);
        store.limiter(|c| &mut c.limits);
        store.set_fuel(limits.fuel).expect("fuel is enabled");
        let ticks = limits.deadline.as_millis().div_ceil(EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store
    }
}

/// A failed call as the tenant reads it: a trap by its name (the wasm
/// backtrace is left out), anything else with its causes.
pub(super) fn call_error(version: &str, e: &wasmtime::Error) -> PolicyError {
    let why = match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => clip(&format!("{e:#}"), 1000),
    };
    PolicyError::Call { version: version.to_owned(), why }
}

/// Names the memory cap in a failed call's error when the guest was
/// refused memory (its allocator then usually aborts with `unreachable`).
pub(super) fn with_memory_note<T>(result: Result<T, PolicyError>, store: &Store<Ctx>) -> Result<T, PolicyError> {
    let limiter = &store.data().limits;
    match result {
        Err(PolicyError::Call { version, why }) if limiter.refused => Err(PolicyError::Call {
            version,
            why: format!("{why} (after its memory limit of {} MiB was reached)", limiter.max_memory >> 20),
        }),
        other => other,
    }
}

/// Compiles a component and checks it against the contract its `name`
/// export is of: 1.1.0 when it takes the `output` record, else 1.0.0.
pub(super) fn load(engine: &Engine, linker: &Linker<Ctx>, version: &str, bytes: &[u8]) -> Result<Plugin, PolicyError> {
    let component = Component::new(engine, bytes)
        .map_err(|e| PolicyError::Load { version: version.to_owned(), why: format!("{e:#}") })?;
    let takes_output = component.component_type().exports(engine).any(|(name, item)| {
        name == "name" && matches!(item.ty, ComponentItem::ComponentFunc(f) if f.params().len() == 3)
    });
    let contract = if takes_output { Contract::V1_1 } else { Contract::V1_0 };
    let err = |e: wasmtime::Error| PolicyError::Load {
        version: version.to_owned(),
        why: format!("as a component of edgesnap:policy@{}: {e:#}", contract.as_str()),
    };
    let instance_pre = linker.instantiate_pre(&component).map_err(err)?;
    let pre = match contract {
        Contract::V1_0 => Pre::V1_0(PolicyPre::new(instance_pre).map_err(err)?),
        Contract::V1_1 => Pre::V1_1(bindings_1_1::PolicyPre::new(instance_pre).map_err(err)?),
    };
    Ok(Plugin { version: version.to_owned(), contract, pre })
}
