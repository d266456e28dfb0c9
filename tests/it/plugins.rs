//! Tenant policy plugins through the real host: upload (validated and run
//! on golden inputs), versions, activation deciding the names of a pushed
//! stream's snapshots, persistence across a restart, rollback, deletion.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{DomainSpec, Host, OutputWithin, TOKEN};
use crate::media::{Clip, decode, ffmpeg_push, moving_flv, solid_flv};

pub fn example(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"))).unwrap()
}

pub fn upload(host: &Host, bytes: Vec<u8>) -> (u16, Value) {
    let (status, body) =
        host.raw_request(Some(TOKEN), "POST", "/v1/domains/localhost/plugins", Some(("application/wasm", bytes)));
    (status, serde_json::from_slice(&body).unwrap())
}

/// Pushes 12 s (GOP 1 s) to `live/{stream}` and returns its sequential
/// objects' keys in capture order.
pub fn push(host: &Host, stream: &str) -> Vec<String> {
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url(&format!("live/{stream}")), false).status.success());
    host.wait_for("3 captures", Duration::from_secs(30), || {
        host.snapshots("localhost", "live", Some(stream)).iter().filter(|r| r["is_overlay"] == false).count() >= 3
    });
    let mut records: Vec<Value> =
        host.snapshots("localhost", "live", Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect();
    records.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    records.iter().map(|r| r["object"].as_str().unwrap().to_owned()).collect()
}

pub fn is_date_folder_key(key: &str, stream: &str) -> bool {
    // live/{stream}/YYYY/MM/DD/HHmmss-{seq}.jpg
    let parts: Vec<&str> = key.split('/').collect();
    parts.len() == 6
        && parts[0] == "live"
        && parts[1] == stream
        && parts[2].len() == 4
        && parts[3].len() == 2
        && parts[4].len() == 2
        && parts[5].ends_with(".jpg")
        && parts[5].chars().take(6).all(|c| c.is_ascii_digit())
}

#[test]
fn upload_activate_restart_rollback_delete() {
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    let dates = example("date_folders");

    // Refused uploads: not a component, a component that never returns, the wrong type, 100 MiB.
    let (status, v) = upload(&host, b"\0asm\x01\0\0\0 not a component".to_vec());
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidPlugin")), "{v}");
    let (status, v) = upload(&host, example("spin"));
    assert_eq!((status, v["code"].as_str()), (400, Some("PluginConformance")), "{v}");
    let (status, _) = host.raw_request(
        Some(TOKEN),
        "POST",
        "/v1/domains/localhost/plugins",
        Some(("application/json", dates.clone())),
    );
    assert_eq!(status, 415);
    let (status, _) = host.raw_request(
        Some(TOKEN),
        "POST",
        "/v1/domains/localhost/plugins",
        Some(("application/wasm", vec![0u8; 100 << 20])),
    );
    assert_eq!(status, 413);

    // A good one: a version named by its sha256, with its conformance figures.
    let (status, v) = upload(&host, dates.clone());
    assert_eq!(status, 201, "{v}");
    let version = v["version"].as_str().unwrap().to_owned();
    assert_eq!(version.len(), 64);
    assert!(
        v["conformance"]["fuel"].as_u64().unwrap() > 0 && v["conformance"]["peak_memory_bytes"].as_u64().unwrap() > 0
    );
    assert_eq!(v["active"], false);
    assert_eq!(upload(&host, dates.clone()).0, 200, "the same bytes again");
    let (_, list) = host.api("GET", "/v1/domains/localhost/plugins", None);
    assert_eq!((list["active"].as_str(), list["versions"].as_array().unwrap().len()), (Some("default"), 1));

    // Active: the plugin names the snapshots; pixels are the stream's.
    let (status, v) = host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None);
    assert_eq!((status, v["active"].as_str()), (200, Some(version.as_str())), "{v}");
    let keys = push(&host, "cam1");
    assert!(keys.iter().all(|k| is_date_folder_key(k, "cam1")), "{keys:?}");
    let seconds: Vec<u32> = keys.iter().map(|k| decode(&host.objects("localhost").get(k)).grey_second()).collect();
    assert_eq!(seconds, vec![0, 5, 10]);
    assert!(
        host.snapshots("localhost", "live", Some("cam1")).iter().all(|r| r["is_overlay"] == false),
        "no overwrite object"
    );

    // It stays active across a restart.
    host.restart();
    let keys = push(&host, "cam2");
    assert!(keys.iter().all(|k| is_date_folder_key(k, "cam2")), "{keys:?}");

    // The active version cannot be deleted; rollback to the built-in policy.
    let (status, v) = host.api("DELETE", &format!("/v1/domains/localhost/plugins/{version}"), None);
    assert_eq!((status, v["code"].as_str()), (409, Some("PluginActive")), "{v}");
    assert_eq!(host.api("POST", "/v1/domains/localhost/plugins/default/activate", None).0, 200);
    let keys = push(&host, "cam3");
    assert!(keys.iter().all(|k| k.starts_with("live/cam3/") && k.split('/').count() == 3), "template names: {keys:?}");
    assert_eq!(host.api("DELETE", &format!("/v1/domains/localhost/plugins/{version}"), None).0, 204);
    let (_, list) = host.api("GET", "/v1/domains/localhost/plugins", None);
    assert_eq!(list["versions"].as_array().unwrap().len(), 0);
    let (status, v) = host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None);
    assert_eq!((status, v["code"].as_str()), (404, Some("PluginNotFound")), "{v}");
}

#[test]
fn local_runner_reports_output_usage_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ctx.json");
    std::fs::write(
        &input,
        r#"{"capture": {"domain": "a.example", "app": "live", "stream": "cam1",
            "create_timestamp_ms": 1764057600123, "sequence": 9},
            "template": {"overwrite_object": "{AppName}/{StreamName}.jpg"}}"#,
    )
    .unwrap();
    let wasm = |name: &str| std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"));
    let run = |name: &str| {
        std::process::Command::new(crate::harness::bin())
            .args(["plugin", "run"])
            .arg(wasm(name))
            .arg("--input")
            .arg(&input)
            .output_within(Duration::from_secs(60))
    };
    let out = run("date_folders");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["placements"][0]["key"], "live/cam1/2025/11/25/080000-9.jpg");
    assert_eq!(v["placements"][0]["mode"], "sequential");
    assert!(v["fuel"].as_u64().unwrap() > 0 && v["peak_memory_bytes"].as_u64().unwrap() > 0, "{v}");

    let out = run("default_policy");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["placements"][0]["key"], "live/cam1.jpg");

    // What a plugin sees of the world: the clock is the capture time, no
    // environment, no filesystem, and randomness seeded by the host, so the
    // same input gives the same output.
    std::fs::write(&input, std::fs::read_to_string(&input).unwrap().replace("\"cam1\"", "\"peek\"")).unwrap();
    let peeks: Vec<Value> = (0..2).map(|_| serde_json::from_slice(&run("hostile").stdout).unwrap()).collect();
    let key = peeks[0]["placements"][0]["key"].as_str().unwrap();
    assert!(key.starts_with("peek/1764057600123-0-false-"), "{key}");
    assert_eq!(peeks[0]["placements"], peeks[1]["placements"]);

    let out = run("spin");
    assert_eq!(out.status.code(), Some(1), "a call that fails exits 1");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"].as_str().unwrap().contains("fuel"), "{v}");
    assert_eq!(v["fuel"], v["fuel_limit"]);
    assert_eq!(v["contract"], "1.0.0");

    // A 1.1.0 plugin is also given the template's output settings.
    std::fs::write(
        &input,
        r#"{"capture": {"domain": "a.example", "app": "live", "stream": "cam1",
            "create_timestamp_ms": 1764057600123, "sequence": 9, "width": 320, "height": 180},
            "template": {"sequence_object": "{AppName}/{Sequence}.webp", "format": "webp", "width": 320,
            "jpeg_quality": 60, "skip_blank": true, "storyboard": 3600}}"#,
    )
    .unwrap();
    let out = run("rendition_folders");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["contract"], "1.1.0");
    assert_eq!(v["placements"][0]["key"], "live/cam1/320x180-q60/9.webp");
    assert_eq!(v["logs"][0], "info: webp asked 320x0 q60 skip-blank true storyboard 3600 s");
}

/// A plugin of contract 1.1.0 is told how the template stores the picture
/// and names its renditions by it; a 1.0.0 plugin is served beside it.
#[test]
fn a_1_1_plugin_names_by_the_templates_output() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, v) = upload(&host, example("date_folders"));
    assert_eq!((status, v["contract"].as_str()), (201, Some("1.0.0")), "{v}");
    let (status, v) = upload(&host, example("rendition_folders"));
    assert_eq!((status, v["contract"].as_str()), (201, Some("1.1.0")), "{v}");
    let version = v["version"].as_str().unwrap();
    let (_, list) = host.api("GET", "/v1/domains/localhost/plugins", None);
    let mut contracts: Vec<&str> =
        list["versions"].as_array().unwrap().iter().map(|v| v["contract"].as_str().unwrap()).collect();
    contracts.sort();
    assert_eq!(contracts, ["1.0.0", "1.1.0"], "{list}");
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None).0, 200);

    let tpl = serde_json::json!({"app_name": "wide", "time_interval": 5, "storage": "store", "format": "webp",
        "width": 320, "jpeg_quality": 70, "sequence_object": "{AppName}/{StreamName}/{UnixTimestampMs}.webp"});
    let (status, body) = host.api("POST", "/v1/domains/localhost/snapshot-configs", Some(tpl));
    assert_eq!(status, 201, "{body}");
    let clip = Clip::new(640, 360, 11, 1);
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("wide/cam"), false).status.success());
    host.wait_for("3 captures", Duration::from_secs(60), || {
        host.snapshots("localhost", "wide", Some("cam")).len() >= 3
    });
    let mut records = host.snapshots("localhost", "wide", Some("cam"));
    records.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    let keys: Vec<&str> = records.iter().map(|r| r["object"].as_str().unwrap()).collect();
    let first = records[0]["sequence"].as_u64().unwrap();
    let want: Vec<String> = (first..first + 3).map(|n| format!("wide/cam/320x180-q70/{n}.webp")).collect();
    assert_eq!(keys, want);
    let seconds: Vec<u32> = keys
        .iter()
        .map(|k| {
            let bytes = host.objects("localhost").get(k);
            assert_eq!(&bytes[8..12], b"WEBP", "{k}");
            let pic = crate::media::decode_webp(&bytes);
            assert_eq!((pic.width, pic.height), (320, 180), "{k}");
            pic.grey_second()
        })
        .collect();
    assert_eq!(seconds, clip.expected_seconds(5));
}

#[test]
fn skip_static_uses_frame_facts_and_state() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, v) = upload(&host, example("skip_static"));
    assert_eq!(status, 201, "{v}");
    let version = v["version"].as_str().unwrap();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None).0, 200);
    let sequential = |stream: &str| {
        host.snapshots("localhost", "live", Some(stream)).iter().filter(|r| r["is_overlay"] == false).count()
    };
    // A moving picture: every due keyframe (0, 5, 10 s) differs, all are stored.
    assert!(ffmpeg_push(&moving_flv(), &host.rtmp_url("live/moving"), false).status.success());
    host.wait_for("3 captures", Duration::from_secs(30), || sequential("moving") >= 3);
    // A static picture: the first capture is stored, the two that look the same are skipped.
    let red = solid_flv("red", "0xE02020", 320, 180, 12);
    assert!(ffmpeg_push(&red, &host.rtmp_url("live/static"), false).status.success());
    host.wait_for("the first capture", Duration::from_secs(30), || sequential("static") >= 1);
    host.wait_for("the stream's end", Duration::from_secs(30), || {
        host.get_json("/v1/domains/localhost/streams")["streams"].as_array().is_some_and(|s| s.is_empty())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sequential("static"), 1, "{:#?}", host.snapshots("localhost", "live", Some("static")));
    assert_eq!(sequential("moving"), 3);
}

#[test]
fn a_plugin_failing_on_real_captures_falls_back_then_is_demoted() {
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, v) = upload(&host, example("refuse_bad"));
    assert_eq!(status, 201, "passes conformance: {v}");
    let version = v["version"].as_str().unwrap().to_owned();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None).0, 200);
    // 30 s of content: six due keyframes, every one refused by the plugin.
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 30, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/bad1"), false).status.success());
    let sequential = || {
        let mut r: Vec<Value> = host
            .snapshots("localhost", "live", Some("bad1"))
            .into_iter()
            .filter(|r| r["is_overlay"] == false)
            .collect();
        r.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
        r
    };
    host.wait_for("6 captures", Duration::from_secs(30), || sequential().len() >= 6);
    // Nothing was lost: each stored under the template's names by the default policy.
    let seconds: Vec<u32> = sequential()
        .iter()
        .map(|r| {
            let key = r["object"].as_str().unwrap();
            assert!(key.starts_with("live/bad1/") && !key.ends_with(&format!("/{}.jpg", r["sequence"])), "{key}");
            decode(&host.objects("localhost").get(key)).grey_second()
        })
        .collect();
    assert_eq!(seconds, vec![0, 5, 10, 15, 20, 25]);
    // Five failures in a row demoted it, and the catalog followed.
    host.wait_for("the demotion recorded", Duration::from_secs(5), || {
        host.get_json("/v1/domains/localhost/plugins")["active"] == "default"
    });
    let (_, metrics) = host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains(r#"edgesnap_policy_demotions_total{domain="localhost"} 1"#), "{metrics}");
    assert!(host.log().contains("plugin demoted after consecutive failures"));
    // The tenant can see why: the run records.
    let runs = host.get_json("/v1/domains/localhost/plugins/runs");
    let runs = runs["runs"].as_array().unwrap();
    let named: Vec<&Value> = runs.iter().filter(|r| r["call"] == "name").collect();
    assert!(named.len() >= 5, "{runs:?}");
    assert!(named.iter().all(|r| r["outcome"] == "refused" && r["fell_back"] == true), "{runs:?}");
    assert!(named[0]["error"].as_str().unwrap().contains("stream bad1 is refused"), "{:?}", named[0]);
    let demotion = runs.iter().find(|r| r["call"] == "demotion").expect("a run record of the demotion");
    assert_eq!(demotion["outcome"], "demoted");
    assert!(demotion["error"].as_str().unwrap().starts_with("5 failures in a row"), "{demotion}");
    let list = host.get_json("/v1/domains/localhost/plugins");
    let reason = list["versions"][0]["demoted"]["reason"].as_str().unwrap();
    assert!(reason.contains("stream bad1 is refused"), "the operator sees why: {list}");
    host.restart();
    assert_eq!(host.get_json("/v1/domains/localhost/plugins")["active"], "default", "demoted across a restart");

    // With a good version active before it, a demotion goes back to that one.
    let (_, good) = upload(&host, example("date_folders"));
    let good = good["version"].as_str().unwrap().to_owned();
    for v in [&good, &version] {
        assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{v}/activate"), None).0, 200);
    }
    assert_eq!(host.get_json("/v1/domains/localhost/plugins")["previous"], good.as_str());
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/bad2"), false).status.success());
    host.wait_for("the previous version back", Duration::from_secs(30), || {
        host.get_json("/v1/domains/localhost/plugins")["active"] == good.as_str()
    });
    let keys = push(&host, "good1");
    assert!(keys.iter().all(|k| is_date_folder_key(k, "good1")), "named by the previous version: {keys:?}");
    let (_, metrics) = host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None);
    let metrics = String::from_utf8(metrics).unwrap();
    // Counted since the restart.
    assert!(metrics.contains(r#"edgesnap_policy_demotions_total{domain="localhost"} 1"#), "{metrics}");
}

/// The sequential records of a stream, oldest first.
fn sequential(host: &Host, stream: &str) -> Vec<Value> {
    let mut r: Vec<Value> =
        host.snapshots("localhost", "live", Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect();
    r.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    r
}

#[test]
fn keep_last_deletes_older_snapshots_with_their_files_after_each_new_one() {
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, v) = upload(&host, example("keep_last"));
    assert_eq!(status, 201, "{v}");
    let keep = v["version"].as_str().unwrap().to_owned();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{keep}/activate"), None).0, 200);
    // Three laps of 30 s (captures at 0, 5, ... 25 s each): 18 captured, the newest 10 kept.
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 30, 1) };
    for lap in 1..=3 {
        assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam1"), false).status.success());
        host.wait_for("the lap's captures", Duration::from_secs(30), || {
            let (_, m) = host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None);
            String::from_utf8(m).unwrap().contains(&format!("edgesnap_snapshots_stored_total {}", 6 * lap))
        });
    }
    host.wait_for("10 left", Duration::from_secs(30), || sequential(&host, "cam1").len() == 10);
    std::thread::sleep(Duration::from_millis(500));
    let kept = sequential(&host, "cam1");
    let seconds: Vec<u32> = kept
        .iter()
        .map(|r| decode(&host.objects("localhost").get(r["object"].as_str().unwrap())).grey_second())
        .collect();
    assert_eq!(seconds, vec![10, 15, 20, 25, 0, 5, 10, 15, 20, 25], "the newest 10: the last 4 of lap 2 and lap 3");
    // Files of the 8 deleted are gone; the overwrite object stays.
    let files = crate::harness::files(&host.dir.path().join("objects/localhost"));
    assert_eq!(files.len(), 11, "{files:?}");
    assert!(files.contains(&"live/cam1.jpg".to_string()));
    let (_, metrics) = host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(metrics.contains(r#"edgesnap_policy_deletions_total{domain="localhost"} 8"#), "{metrics}");
    let runs = host.get_json("/v1/domains/localhost/plugins/runs");
    let asked: Vec<&Value> =
        runs["runs"].as_array().unwrap().iter().filter(|r| r["call"] == "select_deletions").collect();
    assert!(!asked.is_empty() && asked.iter().all(|r| r["outcome"] == "ok" && r["deletion"]["offset"] == 0), "{runs}");

    // Thin by age keeps everything younger than an hour: nothing more goes.
    let (_, v) = upload(&host, example("thin_by_age"));
    let thin = v["version"].as_str().unwrap().to_owned();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{thin}/activate"), None).0, 200);
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam1"), false).status.success());
    host.wait_for("16 kept", Duration::from_secs(30), || sequential(&host, "cam1").len() == 16);
    let runs = host.get_json("/v1/domains/localhost/plugins/runs");
    let last = runs["runs"].as_array().unwrap().iter().find(|r| r["call"] == "select_deletions").unwrap().clone();
    assert_eq!((last["version"].as_str(), last["outcome"].as_str()), (Some(thin.as_str()), Some("ok")), "{last}");
    assert_eq!(last["deletion"]["selected"].as_array().unwrap().len(), 0);

    // Compiled once: a restart loads the active plugin from the compiled cache.
    host.restart();
    assert!(
        host.log().lines().any(|l| l.contains("plugin loaded") && l.contains(&thin) && l.contains("from_cache=true")),
        "{}",
        host.log()
    );
}

#[test]
fn thin_by_age_through_the_local_runner() {
    // Two days of snapshots a minute apart, newest first, asked at an hour's turn.
    let now: u64 = 1_764_057_600_000;
    let items: Vec<Value> = (0..2880u64)
        .map(|m| serde_json::json!({"create_timestamp_ms": now - m * 60_000, "sequence": 2880 - m}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("ask.json");
    let ask = serde_json::json!({"select_deletions": {
        "domain": "a.example", "app": "live", "stream": "cam1", "now_ms": now, "items": items}});
    std::fs::write(&input, ask.to_string()).unwrap();
    let out = std::process::Command::new(crate::harness::bin())
        .args(["plugin", "run"])
        .arg(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join("thin_by_age.wasm"))
        .arg("--input")
        .arg(&input)
        .output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let selected: std::collections::HashSet<u64> =
        v["selected_timestamps"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
    let kept: Vec<u64> = (0..2880u64).filter(|m| !selected.contains(&(now - m * 60_000))).collect();
    // The last hour: all 60. A day: one per 10-minute slot (the snapshot
    // exactly an hour old opens its own), newest in each. Older: one per hour.
    let hour: Vec<u64> = kept.iter().copied().filter(|m| *m < 60).collect();
    let day: Vec<u64> = kept.iter().copied().filter(|m| (60..1440).contains(m)).collect();
    let older: Vec<u64> = kept.iter().copied().filter(|m| *m >= 1440).collect();
    assert_eq!(hour.len(), 60);
    assert_eq!(day.len(), 1 + 138, "{day:?}");
    assert!(day.iter().skip(1).all(|m| m % 10 == 1), "newest of each slot: {day:?}");
    assert_eq!(older.len(), 1 + 24, "{older:?}");
    assert!(older.iter().skip(1).all(|m| m % 60 == 1), "{older:?}");
    assert_eq!(v["done"], false);
    assert!(v["fuel"].as_u64().unwrap() > 0);
}

/// The naming runs of a stream on domain localhost, oldest first.
pub fn runs_of(host: &Host, stream: &str) -> Vec<Value> {
    let runs = host.get_json("/v1/domains/localhost/plugins/runs");
    let mut named: Vec<Value> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["stream"] == stream && r["call"] == "name")
        .cloned()
        .collect();
    named.reverse();
    named
}

#[test]
fn a_tenant_cannot_fill_the_disk_with_state_or_uploads() {
    let spec = DomainSpec {
        plugin_limits: Some("state_quota_mib = 1\nmax_versions = 2\ndemote_after = 1000000"),
        ..DomainSpec::new("localhost")
    };
    let mut host = Host::start(&[spec], 1);

    // Two versions kept; a third is refused until one is deleted.
    let (status, v) = upload(&host, example("hostile"));
    assert_eq!(status, 201, "{v}");
    let hostile = v["version"].as_str().unwrap().to_owned();
    let (status, v) = upload(&host, example("date_folders"));
    assert_eq!(status, 201, "{v}");
    let folders = v["version"].as_str().unwrap().to_owned();
    let (status, v) = upload(&host, example("keep_last"));
    assert_eq!((status, v["code"].as_str()), (409, Some("PluginQuotaExceeded")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("max_versions"), "{v}");
    assert_eq!(host.limit_hits("plugin_uploads"), 1.0);
    assert_eq!(host.api("DELETE", &format!("/v1/domains/localhost/plugins/{folders}"), None).0, 204);
    assert_eq!(upload(&host, example("keep_last")).0, 201);
    let list = host.get_json("/v1/domains/localhost/plugins");
    assert_eq!((list["uploads"]["versions"].as_u64(), list["uploads"]["max_versions"].as_u64()), (Some(2), Some(2)));
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{hostile}/activate"), None).0, 200);

    // 960 KiB of new state per call against a 1 MiB quota: the first call's
    // writes fit, the next ones fail (the default policy names them) and
    // write nothing; every capture is stored.
    assert_eq!(push(&host, "statefill").len(), 3);
    let runs = runs_of(&host, "statefill");
    let outcomes: Vec<&str> = runs.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["ok", "state_limit", "state_limit"], "{runs:?}");
    assert!(runs[1]["error"].as_str().unwrap().contains("over its quota of 1048576"), "{}", runs[1]);
    assert_eq!(runs[1]["fell_back"], true);
    let state = host.get_json("/v1/domains/localhost/plugins")["state"].clone();
    let first_call = 16 * (60 << 10) + 16 * "fill-N-i".len() as u64;
    let bytes = state["bytes"].as_u64().unwrap();
    assert!((first_call..first_call + 64).contains(&bytes), "{state}");
    assert_eq!(state["quota_bytes"], 1 << 20);

    // The per-call limits: each call fails, its writes are dropped.
    for (stream, says) in [
        ("bigvalue", "a state value of 66560 bytes (at most 65536)"),
        ("bigkey", "a state key of 300 bytes (at most 256)"),
        ("manywrites", "more than 64 state writes in one call"),
    ] {
        push(&host, stream);
        let runs = runs_of(&host, stream);
        assert!(runs.iter().all(|r| r["outcome"] == "state_limit"), "{stream}: {runs:?}");
        assert!(runs[0]["error"].as_str().unwrap().contains(says), "{stream}: {}", runs[0]);
    }
    assert_eq!(host.get_json("/v1/domains/localhost/plugins")["state"]["bytes"].as_u64(), Some(bytes));
    assert_eq!(host.limit_hits("plugin_state"), 2.0 + 3.0 * 3.0);

    // A stored version altered on disk no longer loads: at start the
    // default policy runs instead, and it cannot be activated again.
    host.stop();
    let file = host.dir.path().join(format!("data/plugins/{hostile}.wasm"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(0);
    std::fs::write(&file, bytes).unwrap();
    host.spawn();
    assert!(host.log().contains("the stored file was altered"), "{}", host.log());
    let keys = push(&host, "after");
    assert!(keys.iter().all(|k| k.starts_with("live/after/") && k.split('/').count() == 3), "{keys:?}");
    assert!(runs_of(&host, "after").is_empty(), "the altered plugin ran");
    assert_eq!(host.api("POST", "/v1/domains/localhost/plugins/default/activate", None).0, 200);
    let (status, v) = host.api("POST", &format!("/v1/domains/localhost/plugins/{hostile}/activate"), None);
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidPlugin")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("sha256"), "{v}");
}

#[test]
fn a_cpu_hungry_plugin_gets_its_cpu_budget_and_the_default_names_the_rest() {
    let spec =
        DomainSpec { plugin_limits: Some("cpu_ms_per_s = 2\ndemote_after = 1000000"), ..DomainSpec::new("localhost") };
    let host = Host::start(&[spec], 1);
    assert_eq!(host.get_json("/v1/domains/localhost")["plugin_limits"]["cpu_ms_per_s"], 2);
    let (status, v) = upload(&host, example("hostile"));
    assert_eq!(status, 201, "{v}");
    let version = v["version"].as_str().unwrap().to_owned();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None).0, 200);

    // 6 captures in a second or two, each call within fuel (15 M of 20 M),
    // memory and deadline but costing milliseconds of CPU: a budget of
    // 2 ms/s lets the first in and holds the others off.
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 30, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/hog"), false).status.success());
    host.wait_for("6 captures stored", Duration::from_secs(60), || {
        host.snapshots("localhost", "live", Some("hog")).iter().filter(|r| r["is_overlay"] == false).count() >= 6
    });
    let runs = runs_of(&host, "hog");
    let ran: Vec<&Value> = runs.iter().filter(|r| r["outcome"] == "ok").collect();
    let held: Vec<&Value> = runs.iter().filter(|r| r["outcome"] == "cpu_budget").collect();
    assert_eq!(ran.len() + held.len(), 6, "{runs:?}");
    assert!(!ran.is_empty() && held.len() >= 3, "{} ran, {} over budget", ran.len(), held.len());
    assert!(ran.iter().all(|r| r["cpu_ms"].as_f64().unwrap() > 0.5), "{ran:?}");
    assert!(held[0]["error"].as_str().unwrap().contains("used its 2 ms of CPU per second"), "{}", held[0]);
    assert!(held.iter().all(|r| r["fell_back"] == true));
    let spent: f64 = ran.iter().map(|r| r["cpu_ms"].as_f64().unwrap()).sum();
    // (Deletion passes that found the budget spent count too.)
    assert!(host.limit_hits("plugin_cpu") >= held.len() as f64);
    let counted = host.metric("edgesnap_policy_cpu_seconds_total{domain=\"localhost\"}");
    assert!(counted * 1000.0 >= spent * 0.99, "{counted} s counted, {spent} ms in the runs");
}
