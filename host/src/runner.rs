//! `edgesnap plugin run FILE --input ctx.json`: runs one call of a plugin,
//! naming (`capture` + `template`) or a deletion question
//! (`select_deletions`), with the production engine and limits and prints
//! what it returned, logged, used and would have written, so tenants can
//! test plugins in their own CI. Nothing is stored; state reads see the
//! `state` of the input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use edgesnap::config::{Origin, Template, check_format};
use edgesnap::index::{Index, Record, RecordId};
use edgesnap::media::FrameFacts;
use edgesnap::policy::{CaptureFacts, DeletionQuestion, Limits, Plugin, Policies};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    capture: Option<CaptureIn>,
    template: Option<TemplateIn>,
    select_deletions: Option<DeletionIn>,
    /// The domain's state before the call: key → UTF-8 value.
    #[serde(default)]
    state: BTreeMap<String, String>,
}

/// A deletion question: one page of a stream's sequential snapshots, newest first.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeletionIn {
    domain: String,
    app: String,
    stream: String,
    now_ms: u64,
    #[serde(default)]
    offset: u64,
    items: Vec<SnapshotIn>,
    #[serde(default)]
    newer: Option<SnapshotIn>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    /// 32 hex digits; made from the timestamp and position when absent.
    id: Option<String>,
    create_timestamp_ms: u64,
    #[serde(default)]
    key: String,
    #[serde(default)]
    sequence: u64,
    #[serde(default)]
    size: u64,
}

impl SnapshotIn {
    fn record(&self, d: &DeletionIn, n: u64) -> anyhow::Result<Record> {
        let id = match &self.id {
            Some(s) => RecordId::parse(s).with_context(|| format!("id {s:?} is not 32 hex digits"))?,
            None => RecordId(u128::from(self.create_timestamp_ms) << 64 | u128::from(n)),
        };
        Ok(Record {
            id,
            domain: d.domain.clone(),
            app: d.app.clone(),
            stream: d.stream.clone(),
            create_timestamp_ms: self.create_timestamp_ms,
            key: self.key.clone(),
            storage: "local".into(),
            endpoint: String::new(),
            bucket: String::new(),
            size: self.size,
            width: 0,
            height: 0,
            is_overlay: false,
            sequence: self.sequence,
            node: String::new(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaptureIn {
    domain: String,
    app: String,
    stream: String,
    create_timestamp_ms: u64,
    #[serde(default)]
    sequence: u64,
    #[serde(default = "w")]
    width: u32,
    #[serde(default = "h")]
    height: u32,
    #[serde(default)]
    mean_luma: u8,
    #[serde(default)]
    ahash: u64,
}

fn w() -> u32 {
    1280
}

fn h() -> u32 {
    720
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateIn {
    #[serde(default = "star")]
    app_name: String,
    #[serde(default = "five")]
    time_interval: u32,
    #[serde(default = "local")]
    storage: String,
    overwrite_object: Option<String>,
    sequence_object: Option<String>,
    /// What a 1.1.0 plugin is also told (`output`); 1.0.0 plugins do not see them.
    #[serde(default = "jpg")]
    format: String,
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default = "quality")]
    jpeg_quality: u8,
    #[serde(default)]
    skip_blank: bool,
    #[serde(default)]
    storyboard: u32,
}

fn jpg() -> String {
    "jpg".into()
}

fn quality() -> u8 {
    edgesnap::config::DEFAULT_JPEG_QUALITY
}

fn star() -> String {
    "*".into()
}

fn five() -> u32 {
    5
}

fn local() -> String {
    "local".into()
}

/// Runs the plugin; returns whether the call succeeded.
pub(crate) fn run(file: &Path, input: &Path) -> anyhow::Result<bool> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    let text = std::fs::read_to_string(input).with_context(|| format!("read {}", input.display()))?;
    let input: Input =
        serde_json::from_str(&text).with_context(|| format!("{}: not a valid input", input.display()))?;
    let dir = std::env::temp_dir().join(format!("edgesnap-plugin-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        let index = Arc::new(Index::open(&dir.join("state.redb"))?);
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let writes = input.state.iter().map(|(k, v)| (k.clone(), Some(v.clone().into_bytes()))).collect();
        let domain = match (&input.capture, &input.select_deletions) {
            (Some(c), _) => c.domain.clone(),
            (None, Some(d)) => d.domain.clone(),
            (None, None) => anyhow::bail!("the input has either `capture` and `template`, or `select_deletions`"),
        };
        rt.block_on(index.commit_plugin_state(domain, writes))?;
        let policies = Policies::new(index, Limits::default(), Arc::new(edgesnap::metrics::Metrics::new()), None)?;
        let plugin = policies.load("local", &bytes)?;
        let limits =
            json!({"fuel_limit": Limits::default().fuel, "memory_limit_bytes": Limits::default().memory_bytes});
        let (ok, mut out) = match (&input.capture, &input.template, &input.select_deletions) {
            (Some(c), Some(t), None) => name(&policies, &plugin, c, t)?,
            (None, None, Some(d)) => deletions(&policies, &plugin, d)?,
            _ => anyhow::bail!("the input has either `capture` and `template`, or `select_deletions`"),
        };
        let out_fields = out.as_object_mut().expect("an object");
        out_fields.extend(limits.as_object().expect("an object").clone());
        out_fields.insert("contract".into(), json!(plugin.contract.as_str()));
        outln!("{}", serde_json::to_string_pretty(&out)?);
        anyhow::Ok(ok)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// One naming call: its placements, or its error.
fn name(
    policies: &Policies,
    plugin: &Plugin,
    c: &CaptureIn,
    t: &TemplateIn,
) -> anyhow::Result<(bool, serde_json::Value)> {
    let facts = CaptureFacts {
        domain: &c.domain,
        app: &c.app,
        stream: &c.stream,
        create_timestamp_ms: c.create_timestamp_ms,
        sequence: c.sequence,
        width: c.width,
        height: c.height,
        frame: FrameFacts { mean_luma: c.mean_luma, ahash: c.ahash, ..FrameFacts::default() },
    };
    let template = Template {
        app_name: t.app_name.clone(),
        time_interval_s: t.time_interval,
        overwrite_object: t.overwrite_object.clone(),
        sequence_object: t.sequence_object.clone(),
        format: check_format(&t.format).map_err(|e| anyhow::anyhow!("template: {e}"))?,
        width: t.width,
        height: t.height,
        jpeg_quality: t.jpeg_quality,
        skip_blank: t.skip_blank,
        storyboard_s: t.storyboard,
        origin: Origin::Api,
        ..Template::plain(&t.storage, "")
    };
    let run = policies.run(plugin, &facts, &template);
    let out = json!({
        "placements": run.result.as_ref().ok().map(|p| p.iter().map(|p| json!({
            "key": p.key, "mode": if p.overwrite { "overwrite" } else { "sequential" }
        })).collect::<Vec<_>>()),
        "error": run.result.as_ref().err().map(ToString::to_string),
        "logs": run.logs,
        "fuel": run.usage.fuel,
        "peak_memory_bytes": run.usage.peak_memory_bytes,
        "state_writes": run.state_writes.iter().map(|(k, v)| (k.clone(), json!(v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())))).collect::<serde_json::Map<_, _>>(),
    });
    Ok((run.result.is_ok(), out))
}

/// One deletion question: the ids (and timestamps) selected, or the error.
fn deletions(policies: &Policies, plugin: &Plugin, d: &DeletionIn) -> anyhow::Result<(bool, serde_json::Value)> {
    let items: Vec<Record> =
        d.items.iter().enumerate().map(|(n, s)| s.record(d, n as u64)).collect::<anyhow::Result<_>>()?;
    let newer = d.newer.as_ref().map(|s| s.record(d, u64::MAX)).transpose()?;
    let q = DeletionQuestion {
        domain: &d.domain,
        app: &d.app,
        stream: &d.stream,
        offset: d.offset,
        items: &items,
        newer: newer.as_ref(),
        now_ms: d.now_ms,
    };
    let (result, logs, usage) = policies.ask(plugin, &q);
    let selected: Vec<&Record> =
        result.as_ref().map(|a| items.iter().filter(|r| a.ids.contains(&r.id)).collect()).unwrap_or_default();
    let out = json!({
        "selected": selected.iter().map(|r| r.id.to_string()).collect::<Vec<_>>(),
        "selected_timestamps": selected.iter().map(|r| r.create_timestamp_ms).collect::<Vec<_>>(),
        "done": result.as_ref().ok().map(|a| a.done),
        "error": result.as_ref().err().map(ToString::to_string),
        "logs": logs,
        "fuel": usage.fuel,
        "peak_memory_bytes": usage.peak_memory_bytes,
    });
    Ok((result.is_ok(), out))
}
