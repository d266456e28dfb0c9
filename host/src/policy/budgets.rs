//! What a domain's plugin may use besides one call's fuel, memory and
//! time: CPU per second (measured, shared fairly between domains) and the
//! bytes of its state.

use super::*;

/// Why a call's state writes are not kept.
#[derive(Debug, thiserror::Error)]
pub(super) enum StateRefused {
    #[error("state cannot be read: {0}")]
    Read(#[from] crate::index::IndexError),
    #[error("the domain's state would grow to {size} bytes, over its quota of {quota} (plugin_limits.state_quota_mib)")]
    OverQuota { size: u64, quota: u64 },
}

/// Plugin CPU per second for each domain (SPEC §6): a bucket refilled at
/// the domain's rate and holding at most one second of it. A call is let
/// in while the bucket is not empty, charged the domain's recent mean cost
/// on the way in (so concurrent calls see each other) and trued up with
/// the thread CPU time it took. Fuel counts instructions, not time; this
/// counts time.
#[derive(Default)]
pub(super) struct CpuBudgets {
    buckets: std::sync::Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    level_ms: f64,
    at: std::time::Instant,
    mean_ms: f64,
}

impl CpuBudgets {
    /// Lets a call in (its reservation, in ms) unless the domain's budget is spent.
    pub(super) fn admit(&self, domain: &str, rate_ms_per_s: f64) -> Option<f64> {
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap();
        let b = buckets.entry(domain.to_owned()).or_insert(Bucket { level_ms: rate_ms_per_s, at: now, mean_ms: 0.0 });
        b.level_ms = (b.level_ms + rate_ms_per_s * now.duration_since(b.at).as_secs_f64()).min(rate_ms_per_s);
        b.at = now;
        if b.level_ms <= 0.0 {
            return None;
        }
        b.level_ms -= b.mean_ms;
        Some(b.mean_ms)
    }

    /// Charges what a call took, less what was reserved for it.
    pub(super) fn charge(&self, domain: &str, reserved_ms: f64, spent_ms: f64) {
        if let Some(b) = self.buckets.lock().unwrap().get_mut(domain) {
            b.level_ms -= spent_ms - reserved_ms;
            b.mean_ms = if b.mean_ms == 0.0 { spent_ms } else { 0.8 * b.mean_ms + 0.2 * spent_ms };
        }
    }
}

/// This thread's CPU time, in ms.
pub(super) fn thread_cpu_ms() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}

impl Policies {
    /// The plugin CPU per second a domain may use: its own `cpu_ms_per_s`,
    /// or an equal share of a quarter of the cores among the domains with a
    /// plugin (half was measured not to be enough: at 700 streams on 2
    /// cores the host's own work needs more than the other half;
    /// BENCHMARKS.md, noisy neighbour).
    pub(super) fn cpu_rate(&self, limits: &Limits) -> f64 {
        match limits.cpu_ms_per_s {
            Some(ms) => ms as f64,
            None => {
                let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
                let domains = self.active.read().unwrap().len().max(1) as f64;
                cores * 250.0 / domains
            }
        }
    }

    /// The plugin CPU per second a domain's calls may use now, in ms.
    pub fn cpu_ms_per_s(&self, limits: &Limits) -> u64 {
        self.cpu_rate(limits).round() as u64
    }

    /// Lets a naming call of a domain's plugin in, or records why not: its
    /// CPU budget is spent, so the default policy names this capture.
    pub(super) fn cpu_admit(&self, facts: &CaptureFacts<'_>, plugin: &Plugin) -> Option<f64> {
        let rate = self.cpu_rate(&self.limits_for(facts.domain, plugin));
        if let Some(reserved) = self.cpu.admit(facts.domain, rate) {
            return Some(reserved);
        }
        let why = format!(
            "the domain's plugin used its {rate:.0} ms of CPU per second (plugin_limits.cpu_ms_per_s); the default policy names captures until it refills"
        );
        self.metrics.limit_hit("plugin_cpu", format_args!("domain {}: {why}", facts.domain));
        self.metrics.policy_fallback(facts.domain);
        self.metrics.policy_call(facts.domain, &plugin.version, "name", "cpu_budget", 0.0, None);
        self.keep_run(
            facts.domain,
            RunRecord { error: Some(why), fell_back: true, ..RunRecord::naming(&plugin.version, facts, "cpu_budget") },
        );
        None
    }

    /// Takes a call's state writes into its domain's state quota, or says
    /// why they do not fit. Usage is the committed state's key and value
    /// bytes, counted once per domain and kept up to date here; it is
    /// counted again before a refusal (concurrent calls of a domain may
    /// have counted one new key twice).
    pub(super) fn admit_state(
        &self,
        domain: &str,
        writes: &[(String, Option<Vec<u8>>)],
        quota: u64,
    ) -> Result<(), StateRefused> {
        let size = |k: &str, v: Option<usize>| v.map_or(0, |n| (k.len() + n) as i64);
        let mut delta = 0i64;
        for (k, v) in writes {
            let old = self.index.plugin_state(domain, k)?;
            delta += size(k, v.as_ref().map(Vec::len)) - size(k, old.as_ref().map(Vec::len));
        }
        let mut usage = self.state_usage.lock().unwrap();
        let counted = |index: &Index| index.plugin_state_usage(domain);
        let mut used = match usage.get(domain) {
            Some(u) => *u,
            None => counted(&self.index)?,
        };
        if delta > 0 && used + delta as u64 > quota {
            used = counted(&self.index)?;
            if used + delta as u64 > quota {
                usage.insert(domain.to_owned(), used);
                return Err(StateRefused::OverQuota { size: used + delta as u64, quota });
            }
        }
        usage.insert(domain.to_owned(), used.saturating_add_signed(delta));
        Ok(())
    }

    /// The bytes (keys and values) of a domain's committed plugin state.
    pub fn state_in_use(&self, domain: &str) -> Result<u64, crate::index::IndexError> {
        self.index.plugin_state_usage(domain)
    }
}
