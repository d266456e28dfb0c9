//! Prometheus metrics of the whole host, served at `/metrics`: OpenMetrics
//! text to scrapers that ask for it (Prometheus does), Prometheus' text
//! format 0.0.4 to the rest, each with its own content type. Besides the
//! host's own series (`edgesnap_*`): `edgesnap_build_info` and the standard
//! `process_*` series (CPU, RSS, open descriptors). Failure series exist at 0
//! before the first failure, for every stage, reason and configured domain,
//! so `rate()` and alerts see them from the start.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::render_openmetrics`].
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::render_text`].
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The limits of `limit_hits`, shown at 0 from the start.
const LIMITS: [&str; 14] = [
    "http_connections",
    "http_header_timeout",
    "http_body_timeout",
    "http_accept_errors",
    "rtmp_accept_errors",
    "rtmp_connections",
    "rtmp_connections_per_ip",
    "rtmp_buffer_per_connection",
    "rtmp_buffer_total",
    "rtmp_amf",
    "rtmp_write_timeout",
    "plugin_state",
    "plugin_uploads",
    "plugin_cpu",
];

/// A limit hit is logged at most once per this long per limit (with the count since).
const LIMIT_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The stages of `snapshots_failed` and the reasons of `rtmp_rejected`, shown at 0 from the start.
const FAILED_STAGES: [&str; 5] = ["decode", "policy", "store", "index", "storyboard"];
const REJECT_REASONS: [&str; 8] =
    ["io", "handshake", "protocol", "refused", "unsupported_codec", "malformed_video", "idle", "limit"];

type Labels = Vec<(&'static str, &'static str)>;
type StreamLabels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// At most this many live streams get per-stream series (`server.stream_metrics`).
pub const STREAM_SERIES_MAX: usize = 1000;

/// One live stream's health, as its per-stream series show it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamHealth {
    pub domain: String,
    pub app: String,
    pub stream: String,
    pub bitrate_bps: f64,
    pub fps: f64,
    pub gop_seconds: f64,
    pub keyframe_age_seconds: f64,
}

pub struct Metrics {
    registry: Registry,
    pub rtmp_connections: Gauge,
    pub live_streams: Gauge,
    pub rtmp_rejected: Family<Labels, Counter>,
    pub snapshots_queued: Counter,
    pub snapshots_missed: Counter,
    pub snapshots_blank: Counter,
    pub snapshots_stored: Counter,
    pub snapshots_failed: Family<Labels, Counter>,
    /// Seconds per stage of the snapshot path (`stage` = decode, policy, store, index, storyboard).
    pub stage_seconds: Family<Labels, Histogram>,
    /// Seconds from the keyframe's arrival to its index record being committed, by domain.
    pub lateness_seconds: Family<Vec<(&'static str, String)>, Histogram>,
    /// Captures an uploaded plugin failed to name, stored by the default policy instead.
    pub policy_fallbacks: Family<Vec<(&'static str, String)>, Counter>,
    policy_cpu: Family<Vec<(&'static str, String)>, Counter<f64, std::sync::atomic::AtomicU64>>,
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
    /// Times a limit on what outsiders may hold was reached, by limit.
    limit_hits: Family<Labels, Counter>,
    /// When each limit was last logged, and the hits since.
    limit_log: std::sync::Mutex<std::collections::HashMap<&'static str, (std::time::Instant, u64)>>,
    /// Per live stream (opt-in): bitrate, frame rate, GOP length, keyframe age.
    stream_bitrate: Family<StreamLabels, FloatGauge>,
    stream_fps: Family<StreamLabels, FloatGauge>,
    stream_gop: Family<StreamLabels, FloatGauge>,
    stream_keyframe_age: Family<StreamLabels, FloatGauge>,
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
        let mut top = Registry::default();
        top.register_collector(Box::new(Process { started: crate::unix_ms() as f64 / 1000.0 }));
        let registry = top.sub_registry_with_prefix("edgesnap");
        registry.register(
            "build",
            "The running build: version, minimum Rust version and compiled-in features",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("rust_version", env!("CARGO_PKG_RUST_VERSION")),
                ("failpoints", if cfg!(feature = "failpoints") { "on" } else { "off" }),
            ]),
        );
        let m = Metrics {
            rtmp_connections: Gauge::default(),
            live_streams: Gauge::default(),
            rtmp_rejected: Family::default(),
            snapshots_queued: Counter::default(),
            snapshots_missed: Counter::default(),
            snapshots_blank: Counter::default(),
            snapshots_stored: Counter::default(),
            snapshots_failed: Family::default(),
            stage_seconds: Family::new_with_constructor(histogram),
            lateness_seconds: Family::new_with_constructor(|| Histogram::new(LATENESS_BUCKETS.iter().copied())),
            http_seconds: Family::new_with_constructor(histogram),
            policy_fallbacks: Family::default(),
            policy_cpu: Family::default(),
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
            limit_hits: Family::default(),
            limit_log: Default::default(),
            stream_bitrate: Family::default(),
            stream_fps: Family::default(),
            stream_gop: Family::default(),
            stream_keyframe_age: Family::default(),
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
        registry.register(
            "snapshots_blank",
            "Blank keyframes refused (templates with skip_blank); the next keyframe within the interval is taken",
            m.snapshots_blank.clone(),
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
            "policy_cpu_seconds",
            "CPU time of a domain's plugin calls (its budget: plugin_limits.cpu_ms_per_s)",
            m.policy_cpu.clone(),
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
        registry.register(
            "stream_bitrate_bps",
            "Media bitrate of a live stream, bits per second (server.stream_metrics)",
            m.stream_bitrate.clone(),
        );
        registry.register(
            "stream_fps",
            "Video frame rate of a live stream (server.stream_metrics)",
            m.stream_fps.clone(),
        );
        registry.register(
            "stream_gop_seconds",
            "Media time between a live stream's last two keyframes (server.stream_metrics)",
            m.stream_gop.clone(),
        );
        registry.register(
            "stream_keyframe_age_seconds",
            "Seconds since a live stream's last keyframe arrived (server.stream_metrics)",
            m.stream_keyframe_age.clone(),
        );
        registry.register(
            "limit_hits",
            "Times a limit on connections, timeouts or accepts was reached, by limit (docs/configuration.md)",
            m.limit_hits.clone(),
        );
        for limit in LIMITS {
            let _ = m.limit_hits.get_or_create(&vec![("limit", limit)]);
        }
        for stage in FAILED_STAGES {
            let _ = m.snapshots_failed.get_or_create(&vec![("stage", stage)]);
        }
        for reason in REJECT_REASONS {
            let _ = m.rtmp_rejected.get_or_create(&vec![("reason", reason)]);
        }
        Metrics { registry: top, ..m }
    }

    /// Shows a domain's failure and delivery series (at 0 until they count).
    pub fn domain_series(&self, domain: &str) {
        let d = || vec![("domain", domain.to_owned())];
        let _ = self.policy_fallbacks.get_or_create(&d());
        let _ = self.policy_demotions.get_or_create(&d());
        let _ = self.snapshots_spooled.get_or_create(&d());
        let _ = self.snapshots_skipped.get_or_create(&d());
        let _ = self.spool_entries.get_or_create(&d());
        let _ = self.spool_bytes.get_or_create(&d());
        for outcome in ["delivered", "retried", "failed", "dropped"] {
            let _ = self.callbacks.get_or_create(&vec![("domain", domain.to_owned()), ("outcome", outcome.to_owned())]);
        }
    }

    /// Counts a limit hit; logs it at most once per [`LIMIT_LOG_EVERY`] per
    /// limit, with how many hits that line stands for: an attacker cannot
    /// turn a limit into a flood of log lines.
    pub fn limit_hit(&self, limit: &'static str, detail: std::fmt::Arguments<'_>) {
        self.limit_hits.get_or_create(&vec![("limit", limit)]).inc();
        let now = std::time::Instant::now();
        let mut log = self.limit_log.lock().unwrap();
        let entry = log.entry(limit).or_insert((now - LIMIT_LOG_EVERY, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= LIMIT_LOG_EVERY {
            tracing::warn!(limit, hits = entry.1, "limit reached: {detail}");
            *entry = (now, 0);
        }
    }

    /// Replaces the per-stream series with these streams' (at most
    /// [`STREAM_SERIES_MAX`]); an empty list removes them all.
    pub fn set_streams(&self, streams: &[StreamHealth]) {
        let families = [&self.stream_bitrate, &self.stream_fps, &self.stream_gop, &self.stream_keyframe_age];
        for f in families {
            f.clear();
        }
        for h in streams.iter().take(STREAM_SERIES_MAX) {
            let labels = vec![("domain", h.domain.clone()), ("app", h.app.clone()), ("stream", h.stream.clone())];
            let values = [h.bitrate_bps, h.fps, h.gop_seconds, h.keyframe_age_seconds];
            for (f, v) in families.iter().zip(values) {
                f.get_or_create(&labels).set(v);
            }
        }
    }

    /// OpenMetrics text (content type [`OPENMETRICS`]).
    pub fn render_openmetrics(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Prometheus' text format 0.0.4 (content type [`TEXT_004`]).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render_openmetrics())
    }

    pub fn rejected(&self, reason: &'static str) {
        self.rtmp_rejected.get_or_create(&vec![("reason", reason)]).inc();
    }

    pub fn failed(&self, stage: &'static str) {
        self.snapshots_failed.get_or_create(&vec![("stage", stage)]).inc();
    }

    pub fn policy_cpu(&self, domain: &str, seconds: f64) {
        self.policy_cpu.get_or_create(&vec![("domain", domain.to_owned())]).inc_by(seconds);
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

/// Rewrites OpenMetrics text as Prometheus' text format 0.0.4: a counter's
/// family is named with its `_total` samples, an info family becomes the
/// gauge `NAME_info`, `# UNIT` and `# EOF` go. Everything else is the same
/// in both formats.
fn openmetrics_to_text(om: &str) -> String {
    let mut types = std::collections::HashMap::new();
    for line in om.lines() {
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            types.insert(name, kind);
        }
    }
    let renamed = |name: &str| match types.get(name) {
        Some(&"counter") => format!("{name}_total"),
        Some(&"info") => format!("{name}_info"),
        _ => name.to_owned(),
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some((name, help)) = line.strip_prefix("# HELP ").and_then(|r| r.split_once(' ')) {
            out += &format!("# HELP {} {help}\n", renamed(name));
        } else if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            let kind = match kind {
                "info" => "gauge",
                "unknown" => "untyped",
                k => k,
            };
            out += &format!("# TYPE {} {kind}\n", renamed(name));
        } else {
            out += line;
            out.push('\n');
        }
    }
    out
}

/// The standard `process_*` series of this process, read from `/proc` at each scrape.
#[derive(Debug)]
struct Process {
    started: f64,
}

impl Process {
    /// CPU seconds (user + system): fields 14 and 15 of `/proc/self/stat`,
    /// in USER_HZ (100 on Linux for every `/proc` interface).
    fn cpu_seconds() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) may hold spaces: count from after it.
        let mut fields = stat[stat.rfind(')')? + 2..].split(' ');
        let utime: f64 = fields.nth(11)?.parse().ok()?;
        let stime: f64 = fields.next()?.parse().ok()?;
        Some((utime + stime) / 100.0)
    }

    fn resident_bytes() -> Option<i64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?;
        Some(kb.trim().parse::<i64>().ok()? * 1024)
    }

    fn open_fds() -> Option<i64> {
        Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as i64)
    }

    fn max_fds() -> Option<i64> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        limits.lines().find_map(|l| l.strip_prefix("Max open files")?.split_whitespace().next()?.parse().ok())
    }
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(cpu) = Process::cpu_seconds() {
            let m = ConstCounter::new(cpu);
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                m.metric_type(),
            )?)?;
        }
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size, in bytes", Process::resident_bytes()),
            ("process_open_fds", "Open file descriptors", Process::open_fds()),
            ("process_max_fds", "Limit of open file descriptors", Process::max_fds()),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        let m = ConstGauge::new(self.started);
        m.encode(encoder.encode_descriptor(
            "process_start_time_seconds",
            "Start time of the process since the unix epoch, in seconds",
            None,
            m.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_type_every_family() {
        let m = Metrics::new();
        m.snapshots_stored.inc();
        m.domain_series("a.example");
        let om = m.render_openmetrics();
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("# TYPE edgesnap_snapshots_stored counter\nedgesnap_snapshots_stored_total 1\n"), "{om}");
        let text = m.render_text();
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
        assert!(
            text.contains("# HELP edgesnap_snapshots_stored_total Snapshots stored and indexed.\n# TYPE edgesnap_snapshots_stored_total counter\nedgesnap_snapshots_stored_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE edgesnap_build_info gauge\nedgesnap_build_info{"), "{text}");
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "), "{text}");
        // Every sample's family is typed: each sample name is a TYPE'd name,
        // or one with a histogram's suffix.
        let typed: std::collections::HashSet<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(typed.contains(name) || typed.contains(family), "untyped sample {sample}");
        }
    }

    #[test]
    fn failure_series_are_there_at_zero() {
        let m = Metrics::new();
        m.domain_series("a.example");
        let text = m.render_text();
        for series in [
            "edgesnap_snapshots_failed_total{stage=\"store\"} 0",
            "edgesnap_rtmp_rejected_total{reason=\"protocol\"} 0",
            "edgesnap_policy_demotions_total{domain=\"a.example\"} 0",
            "edgesnap_callbacks_total{domain=\"a.example\",outcome=\"failed\"} 0",
            "edgesnap_snapshots_skipped_total{domain=\"a.example\"} 0",
            "edgesnap_snapshots_missed_total 0",
            "edgesnap_snapshots_blank_total 0",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    #[test]
    fn limit_hits_count_every_time_and_log_once_per_interval() {
        let m = Metrics::new();
        for _ in 0..1000 {
            m.limit_hit("http_accept_errors", format_args!("accept failed"));
        }
        assert!(m.render_text().contains("edgesnap_limit_hits_total{limit=\"http_accept_errors\"} 1000\n"));
        assert!(m.render_text().contains("edgesnap_limit_hits_total{limit=\"http_connections\"} 0\n"));
        let log = m.limit_log.lock().unwrap();
        let (_, since) = log["http_accept_errors"];
        assert_eq!(since, 999, "one line for the first hit, the other 999 wait for the next interval");
    }

    #[test]
    fn process_series_read_this_process() {
        assert!(Process::cpu_seconds().unwrap() >= 0.0);
        assert!(Process::resident_bytes().unwrap() > 1 << 20);
        let (open, max) = (Process::open_fds().unwrap(), Process::max_fds().unwrap());
        assert!(open >= 3 && max >= open, "{open} of {max}");
    }
}
