//! What a tenant can read back of its plugin's calls: run records, and the
//! failures that count towards demotion.

use super::*;

/// A domain's plugin version demoted after consecutive failures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demoted {
    pub domain: String,
    pub version: String,
    pub reason: String,
}

/// Run records kept per domain.
pub const RUNS_KEPT: usize = 50;

/// One call of an uploaded plugin (or its demotion), as the tenant can read it back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub time_ms: u64,
    pub version: String,
    /// `name`, `select_deletions`, or `demotion` (the host's own record).
    pub call: &'static str,
    pub app: String,
    pub stream: String,
    /// The capture named (naming calls).
    pub create_timestamp_ms: Option<u64>,
    pub sequence: Option<u64>,
    /// The page asked about and the answer (deletion calls).
    pub deletion: Option<DeletionRun>,
    pub outcome: &'static str,
    pub error: Option<String>,
    /// (key, mode) as the plugin returned them.
    pub placements: Vec<(String, &'static str)>,
    pub logs: Vec<String>,
    pub fuel: u64,
    pub peak_memory_bytes: usize,
    pub duration_ms: f64,
    /// CPU time of the call (the thread's clock).
    pub cpu_ms: f64,
    /// True when a failure made the default policy name this capture.
    pub fell_back: bool,
}

impl RunRecord {
    /// A record of a naming call about a capture, now; the rest empty.
    pub(super) fn naming(version: &str, facts: &CaptureFacts<'_>, outcome: &'static str) -> RunRecord {
        RunRecord {
            app: facts.app.to_owned(),
            stream: facts.stream.to_owned(),
            create_timestamp_ms: Some(facts.create_timestamp_ms),
            sequence: Some(facts.sequence),
            ..RunRecord::new(version, "name", outcome)
        }
    }

    /// A record of `call` with `outcome`, now; the rest empty.
    pub(super) fn new(version: &str, call: &'static str, outcome: &'static str) -> RunRecord {
        RunRecord {
            time_ms: crate::unix_ms(),
            version: version.to_owned(),
            call,
            app: String::new(),
            stream: String::new(),
            create_timestamp_ms: None,
            sequence: None,
            deletion: None,
            outcome,
            error: None,
            placements: Vec::new(),
            logs: Vec::new(),
            fuel: 0,
            peak_memory_bytes: 0,
            duration_ms: 0.0,
            cpu_ms: 0.0,
            fell_back: false,
        }
    }
}

/// A deletion call's page and answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeletionRun {
    pub offset: u64,
    pub items: usize,
    pub selected: Vec<String>,
    pub done: bool,
}

impl Policies {
    pub(super) fn record(
        &self,
        facts: &CaptureFacts<'_>,
        version: &str,
        outcome: &'static str,
        seconds: f64,
        cpu_ms: f64,
        call: &Run,
    ) {
        self.keep_run(
            facts.domain,
            RunRecord {
                error: call.result.as_ref().err().map(ToString::to_string),
                placements: call
                    .result
                    .as_ref()
                    .map(|p| {
                        p.iter()
                            .map(|p| (p.key.clone(), if p.overwrite { "overwrite" } else { "sequential" }))
                            .collect()
                    })
                    .unwrap_or_default(),
                logs: call.logs.clone(),
                fuel: call.usage.fuel,
                peak_memory_bytes: call.usage.peak_memory_bytes,
                duration_ms: seconds * 1000.0,
                cpu_ms,
                fell_back: call.result.is_err(),
                ..RunRecord::naming(version, facts, outcome)
            },
        );
    }

    pub(super) fn keep_run(&self, domain: &str, record: RunRecord) {
        let mut runs = self.runs.lock().unwrap();
        let q = runs.entry(domain.to_owned()).or_default();
        if q.len() == RUNS_KEPT {
            q.pop_front();
        }
        q.push_back(record);
    }

    /// A domain's recent run records, newest first.
    pub fn runs(&self, domain: &str) -> Vec<RunRecord> {
        self.runs.lock().unwrap().get(domain).map(|q| q.iter().rev().cloned().collect()).unwrap_or_default()
    }

    /// Counts a failure of a domain's plugin; demotes it after its limits'
    /// `demote_after` failures in a row.
    pub(super) fn failed(&self, domain: &str, call: &'static str, plugin: &Arc<Plugin>, why: &PolicyError) {
        let count = {
            let mut failures = self.failures.lock().unwrap();
            let n = failures.entry((domain.to_owned(), call)).or_default();
            *n += 1;
            *n
        };
        if count < self.limits_for(domain, plugin).demote_after {
            return;
        }
        {
            let mut active = self.active.write().unwrap();
            // Only the version that failed; the tenant may have activated another meanwhile.
            if !active.get(domain).is_some_and(|p| Arc::ptr_eq(p, plugin)) {
                return;
            }
            active.remove(domain);
        }
        self.failures.lock().unwrap().retain(|(d, _), _| d != domain);
        let reason = format!("{count} failures in a row, the last: {why}");
        tracing::error!(
            %domain, version = %plugin.version, %reason,
            "plugin demoted after consecutive failures; the previous version or the default takes over"
        );
        self.metrics.policy_demotion(domain);
        let record =
            RunRecord { error: Some(reason.clone()), ..RunRecord::new(&plugin.version, "demotion", "demoted") };
        self.keep_run(domain, record);
        if let Some(tx) = self.demotions.lock().unwrap().as_ref() {
            let _ = tx.send(Demoted { domain: domain.to_owned(), version: plugin.version.clone(), reason });
        }
    }
}
