//! Prometheus metrics of the whole host, served at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    pub rtmp_connections: Gauge,
    pub live_streams: Gauge,
    pub rtmp_rejected: Family<Labels, Counter>,
    pub snapshots_queued: Counter,
    pub snapshots_missed: Counter,
    pub snapshots_stored: Counter,
    pub snapshots_failed: Family<Labels, Counter>,
    /// Seconds per stage of the snapshot path (`stage` = decode, policy, store, index).
    pub stage_seconds: Family<Labels, Histogram>,
    /// Seconds from the keyframe's arrival to its index record being committed, by domain.
    pub lateness_seconds: Family<Vec<(&'static str, String)>, Histogram>,
    /// Captures an uploaded plugin failed to name, stored by the default policy instead.
    pub policy_fallbacks: Family<Vec<(&'static str, String)>, Counter>,
    /// Calls of uploaded plugins by domain, version (12 hex digits), call
    /// (`name`, `select_deletions`) and outcome.
    pub policy_calls: Family<Vec<(&'static str, String)>, Counter>,
    /// Their duration, fuel and peak memory, by domain and version.
    pub policy_call_seconds: Family<Vec<(&'static str, String)>, Histogram>,
    pub policy_fuel: Family<Vec<(&'static str, String)>, Histogram>,
    pub policy_peak_memory_bytes: Family<Vec<(&'static str, String)>, Histogram>,
    /// Snapshots deleted because a domain's plugin selected them.
    pub policy_deletions: Family<Vec<(&'static str, String)>, Counter>,
    /// Plugins demoted after consecutive failures.
    pub policy_demotions: Family<Vec<(&'static str, String)>, Counter>,
    /// Callback deliveries by domain and outcome (delivered, retried, failed, dropped).
    pub callbacks: Family<Vec<(&'static str, String)>, Counter>,
    /// Callbacks waiting in the outbox.
    pub outbox_pending: Gauge,
    /// Captures waiting in the local spool for their target, and their bytes, by domain.
    pub spool_entries: Family<Vec<(&'static str, String)>, Gauge>,
    pub spool_bytes: Family<Vec<(&'static str, String)>, Gauge>,
    /// The most bytes the spool held since start.
    pub spool_peak_bytes: Gauge,
    /// Captures spooled because their target was down, and those skipped because the spool was full.
    pub snapshots_spooled: Family<Vec<(&'static str, String)>, Counter>,
    pub snapshots_skipped: Family<Vec<(&'static str, String)>, Counter>,
    /// 1 while a storage target answers, 0 while it is down, by domain and target.
    pub target_up: Family<Vec<(&'static str, String)>, Gauge>,
    /// Captures in flight at a crash, settled at the next start, by outcome (recorded, nothing).
    pub recovered: Family<Vec<(&'static str, String)>, Counter>,
    /// HTTP requests by method, route pattern and status, with their latency.
    pub http_seconds: Family<Vec<(&'static str, String)>, Histogram>,
}

/// Fine enough to read a p99 against a 500 ms target.
const LATENESS_BUCKETS: [f64; 18] =
    [0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0];

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("edgesnap");
        let m = Metrics {
            rtmp_connections: Gauge::default(),
            live_streams: Gauge::default(),
            rtmp_rejected: Family::default(),
            snapshots_queued: Counter::default(),
            snapshots_missed: Counter::default(),
            snapshots_stored: Counter::default(),
            snapshots_failed: Family::default(),
            stage_seconds: Family::new_with_constructor(histogram),
            lateness_seconds: Family::new_with_constructor(|| Histogram::new(LATENESS_BUCKETS.iter().copied())),
            http_seconds: Family::new_with_constructor(histogram),
            policy_fallbacks: Family::default(),
            policy_demotions: Family::default(),
            policy_deletions: Family::default(),
            callbacks: Family::default(),
            outbox_pending: Gauge::default(),
            spool_entries: Family::default(),
            spool_bytes: Family::default(),
            spool_peak_bytes: Gauge::default(),
            snapshots_spooled: Family::default(),
            snapshots_skipped: Family::default(),
            target_up: Family::default(),
            recovered: Family::default(),
            policy_calls: Family::default(),
            policy_call_seconds: Family::new_with_constructor(histogram),
            policy_fuel: Family::new_with_constructor(|| Histogram::new(exponential_buckets(1_000.0, 4.0, 12))),
            policy_peak_memory_bytes: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(65_536.0, 2.0, 12))
            }),
            registry: Registry::default(),
        };
        registry.register("rtmp_connections", "Open RTMP connections", m.rtmp_connections.clone());
        registry.register("live_streams", "Streams publishing now", m.live_streams.clone());
        registry.register(
            "rtmp_rejected",
            "RTMP connections closed for bad input or refusal, by reason",
            m.rtmp_rejected.clone(),
        );
        registry.register("snapshots_queued", "Keyframes queued for a snapshot", m.snapshots_queued.clone());
        registry.register(
            "snapshots_missed",
            "Due snapshots skipped because the capture queue was full",
            m.snapshots_missed.clone(),
        );
        registry.register("snapshots_stored", "Snapshots stored and indexed", m.snapshots_stored.clone());
        registry.register("snapshots_failed", "Snapshots that failed, by stage", m.snapshots_failed.clone());
        registry.register("stage_seconds", "Time per stage of the snapshot path", m.stage_seconds.clone());
        registry.register("lateness_seconds", "Keyframe arrival to index record committed", m.lateness_seconds.clone());
        registry.register(
            "http_request_seconds",
            "HTTP request latency by method, route and status",
            m.http_seconds.clone(),
        );
        registry.register(
            "policy_fallbacks",
            "Captures named by the default policy because the domain's plugin failed",
            m.policy_fallbacks.clone(),
        );
        registry.register(
            "policy_demotions",
            "Domain plugins demoted to the default policy after consecutive failures",
            m.policy_demotions.clone(),
        );
        registry.register("policy_calls", "Calls of uploaded plugins, by call and outcome", m.policy_calls.clone());
        registry.register("callbacks", "Callback deliveries, by domain and outcome", m.callbacks.clone());
        registry.register("outbox_pending", "Callbacks waiting in the outbox", m.outbox_pending.clone());
        registry.register("spool_entries", "Captures waiting in the local spool, by domain", m.spool_entries.clone());
        registry.register("spool_bytes", "Bytes in the local spool, by domain", m.spool_bytes.clone());
        registry.register(
            "spool_peak_bytes",
            "Most bytes the local spool held since start",
            m.spool_peak_bytes.clone(),
        );
        registry.register(
            "snapshots_spooled",
            "Captures spooled locally because their storage target was down",
            m.snapshots_spooled.clone(),
        );
        registry.register(
            "snapshots_skipped",
            "Captures skipped because the spool (or the domain's share of it) was full",
            m.snapshots_skipped.clone(),
        );
        registry.register("target_up", "1 while a storage target answers, 0 while it is down", m.target_up.clone());
        registry.register(
            "recovered",
            "Captures in flight at a crash, settled at the next start, by outcome",
            m.recovered.clone(),
        );
        registry.register(
            "policy_deletions",
            "Snapshots deleted because the domain's plugin selected them",
            m.policy_deletions.clone(),
        );
        registry.register(
            "policy_call_seconds",
            "Duration of uploaded plugins' naming calls",
            m.policy_call_seconds.clone(),
        );
        registry.register(
            "policy_fuel",
            "Fuel used by uploaded plugins' successful naming calls",
            m.policy_fuel.clone(),
        );
        registry.register(
            "policy_peak_memory_bytes",
            "Peak linear memory of uploaded plugins' successful naming calls",
            m.policy_peak_memory_bytes.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rtmp_rejected.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn failed(&self, stage: &'static str) {
        self.snapshots_failed.get_or_create(&vec![("stage", stage)]).inc();
    }

    pub fn policy_fallback(&self, domain: &str) {
        self.policy_fallbacks.get_or_create(&vec![("domain", domain.to_owned())]).inc();
    }

    /// One call (`name`, `select_deletions`) of an uploaded plugin; `usage`
    /// (fuel, peak memory) when it succeeded.
    pub fn policy_call(
        &self,
        domain: &str,
        version: &str,
        call: &'static str,
        outcome: &'static str,
        seconds: f64,
        usage: Option<(u64, usize)>,
    ) {
        let version: String = version.chars().take(12).collect();
        let dv = vec![("domain", domain.to_owned()), ("version", version)];
        let mut with_outcome = dv.clone();
        with_outcome.push(("call", call.to_owned()));
        with_outcome.push(("outcome", outcome.to_owned()));
        self.policy_calls.get_or_create(&with_outcome).inc();
        self.policy_call_seconds.get_or_create(&dv).observe(seconds);
        if let Some((fuel, memory)) = usage {
            self.policy_fuel.get_or_create(&dv).observe(fuel as f64);
            self.policy_peak_memory_bytes.get_or_create(&dv).observe(memory as f64);
        }
    }

    pub fn callback(&self, domain: &str, outcome: &'static str) {
        self.callbacks.get_or_create(&vec![("domain", domain.to_owned()), ("outcome", outcome.to_owned())]).inc();
    }

    pub fn policy_deleted(&self, domain: &str, n: u64) {
        self.policy_deletions.get_or_create(&vec![("domain", domain.to_owned())]).inc_by(n);
    }

    pub fn lateness(&self, domain: &str, seconds: f64) {
        self.lateness_seconds.get_or_create(&vec![("domain", domain.to_owned())]).observe(seconds);
    }

    pub fn policy_demotion(&self, domain: &str) {
        self.policy_demotions.get_or_create(&vec![("domain", domain.to_owned())]).inc();
    }

    pub fn http(&self, method: &str, route: &'static str, status: u16, seconds: f64) {
        let labels = vec![("method", method.to_owned()), ("route", route.to_owned()), ("status", status.to_string())];
        self.http_seconds.get_or_create(&labels).observe(seconds);
    }

    pub fn stage(&self, stage: &'static str, seconds: f64) {
        self.stage_seconds.get_or_create(&vec![("stage", stage)]).observe(seconds);
    }
}
