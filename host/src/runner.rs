//! `edgesnap plugin run FILE --input ctx.json`: runs a plugin's naming call
//! with the production engine and limits and prints what it returned,
//! logged, used and would have written, so tenants can test plugins in their
//! own CI. Nothing is stored; state reads see the `state` of the input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use serde_json::json;

use edgesnap::config::{Origin, Template};
use edgesnap::index::Index;
use edgesnap::media::FrameFacts;
use edgesnap::policy::{CaptureFacts, Limits, Policies};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Input {
    capture: CaptureIn,
    template: TemplateIn,
    /// The domain's state before the call: key → UTF-8 value.
    #[serde(default)]
    state: BTreeMap<String, String>,
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
        rt.block_on(index.commit_plugin_state(input.capture.domain.clone(), writes))?;
        let policies = Policies::new(index, Limits::default(), Arc::new(edgesnap::metrics::Metrics::new()))?;
        let plugin = policies.load("local", &bytes)?;
        let c = &input.capture;
        let facts = CaptureFacts {
            domain: &c.domain,
            app: &c.app,
            stream: &c.stream,
            create_timestamp_ms: c.create_timestamp_ms,
            sequence: c.sequence,
            width: c.width,
            height: c.height,
            frame: FrameFacts { mean_luma: c.mean_luma, ahash: c.ahash },
        };
        let t = &input.template;
        let template = Template {
            app_name: t.app_name.clone(),
            time_interval_s: t.time_interval,
            storage: t.storage.clone(),
            overwrite_object: t.overwrite_object.clone(),
            sequence_object: t.sequence_object.clone(),
            callback: None,
            jpeg_quality: edgesnap::config::DEFAULT_JPEG_QUALITY,
            origin: Origin::Api,
        };
        let run = policies.run(&plugin, &facts, &template);
        let ok = run.result.is_ok();
        let out = json!({
            "placements": run.result.as_ref().ok().map(|p| p.iter().map(|p| json!({
                "key": p.key, "mode": if p.overwrite { "overwrite" } else { "sequential" }
            })).collect::<Vec<_>>()),
            "error": run.result.as_ref().err().map(ToString::to_string),
            "logs": run.logs,
            "fuel": run.usage.fuel,
            "fuel_limit": Limits::default().fuel,
            "peak_memory_bytes": run.usage.peak_memory_bytes,
            "memory_limit_bytes": Limits::default().memory_bytes,
            "state_writes": run.state_writes.iter().map(|(k, v)| (k.clone(), json!(v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        anyhow::Ok(ok)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
