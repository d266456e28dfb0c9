//! Metrics as a real Prometheus reads them: it scrapes the host (asking for
//! OpenMetrics, as it does), types every series (a counter as a counter, so
//! `rate()` works), and evaluates every expression of the shipped dashboard
//! and alert rules; promtool checks and unit-tests the rules. Without
//! OpenMetrics, `/metrics` answers the text format 0.0.4 with its own type.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{DomainSpec, Host, OutputWithin, TOKEN, start_on_free_port};
use crate::media::{Clip, ffmpeg_push};

fn monitoring() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/monitoring")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(10))).build().new_agent()
}

/// A PromQL query's result vector (`data.result`), or the error Prometheus gave.
fn query(port: u16, expr: &str) -> Result<Vec<Value>, String> {
    let mut resp = agent()
        .get(&format!("http://127.0.0.1:{port}/api/v1/query"))
        .query("query", expr)
        .call()
        .map_err(|e| format!("{expr}: {e}"))?;
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    if v["status"] != "success" {
        return Err(format!("{expr}: {v}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn value(sample: &Value) -> f64 {
    sample["value"][1].as_str().unwrap().parse().unwrap()
}

#[test]
fn promtool_checks_and_tests_the_alert_rules() {
    let dir = monitoring();
    for args in [vec!["check", "rules", "alerts.yml"], vec!["test", "rules", "alerts.test.yml"]] {
        let out = Command::new("promtool").args(&args).current_dir(&dir).output_within(Duration::from_secs(60));
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn prometheus_scrapes_typed_series_and_the_dashboard_and_alerts_evaluate() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);

    // Content negotiation, as any scraper sees it.
    let get = |accept: Option<&str>| {
        let mut req = agent()
            .get(&format!("http://127.0.0.1:{}/metrics", host.http_port))
            .header("Authorization", &format!("Bearer {TOKEN}"));
        if let Some(a) = accept {
            req = req.header("Accept", a);
        }
        let mut resp = req.call().unwrap();
        let ct = resp.headers().get("content-type").unwrap().to_str().unwrap().to_owned();
        (ct, resp.body_mut().read_to_string().unwrap())
    };
    let (ct, body) = get(None);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    assert!(body.contains("# TYPE edgesnap_snapshots_stored_total counter\n") && !body.contains("# EOF"), "{body}");
    let (ct, body) = get(Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"));
    assert_eq!(ct, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(body.contains("# TYPE edgesnap_snapshots_stored counter\n") && body.ends_with("# EOF\n"), "{body}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [{rules}]\n\
             scrape_configs:\n  - job_name: edgesnap\n    authorization: {{credentials: {TOKEN}}}\n\
             \x20   static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n",
            rules = monitoring().join("alerts.yml").display(),
            port = host.http_port
        ),
    )
    .unwrap();
    let (mut prometheus, port) = start_on_free_port(
        "prometheus",
        |port| {
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start prometheus (scripts/setup.sh installs it)")
        },
        |port| agent().get(&format!("http://127.0.0.1:{port}/-/ready")).call().is_ok(),
    );
    let up = || query(port, "up{job=\"edgesnap\"}").ok().and_then(|r| r.first().map(value)) == Some(1.0);
    host.wait_for("Prometheus scrapes the host", Duration::from_secs(30), up);

    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false).status.success());
    let stored = clip.expected_seconds(5).len() as f64;
    host.wait_for("Prometheus sees every stored snapshot", Duration::from_secs(60), || {
        query(port, "edgesnap_snapshots_stored_total").ok().and_then(|r| r.first().map(value)) == Some(stored)
    });
    let rate = query(port, "rate(edgesnap_snapshots_stored_total[1m])").unwrap();
    assert!(rate.first().map(value).is_some_and(|r| r > 0.0), "rate() of a counter: {rate:?}");
    let failed = query(port, "edgesnap_snapshots_failed_total{stage=\"store\"}").unwrap();
    assert_eq!(failed.first().map(value), Some(0.0), "a failure series is there at 0: {failed:?}");

    // Every family typed as it is, none unknown.
    let mut resp = agent()
        .get(&format!("http://127.0.0.1:{port}/api/v1/targets/metadata"))
        .query("match_target", "{job=\"edgesnap\"}")
        .call()
        .unwrap();
    let metadata: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    let types: std::collections::HashMap<String, String> = metadata["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["metric"].as_str().unwrap().to_owned(), m["type"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(types.get("edgesnap_snapshots_stored").map(String::as_str), Some("counter"), "{types:?}");
    assert_eq!(types.get("edgesnap_lateness_seconds").map(String::as_str), Some("histogram"), "{types:?}");
    assert_eq!(types.get("process_resident_memory_bytes").map(String::as_str), Some("gauge"), "{types:?}");
    let untyped: Vec<_> = types.iter().filter(|(_, t)| *t == "unknown" || *t == "untyped").collect();
    assert!(untyped.is_empty(), "untyped families: {untyped:?}");
    let info = query(port, "edgesnap_build_info").unwrap();
    assert_eq!(info.first().and_then(|s| s["metric"]["version"].as_str()), Some(env!("CARGO_PKG_VERSION")));

    // Every expression the dashboard and the alerts ship evaluates.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap()).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter().map(|t| t["expr"].as_str().unwrap().to_owned()))
        .collect();
    let rules = std::fs::read_to_string(monitoring().join("alerts.yml")).unwrap();
    exprs.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ").map(String::from)));
    assert!(exprs.len() > 20, "{exprs:?}");
    for e in &exprs {
        query(port, e).unwrap_or_else(|err| panic!("{err}"));
    }
    // The dashboard's series exist: each panel's metric names something
    // scraped. But two, which appear with what they describe: a target's
    // up/down once it was written to or probed (local targets never are),
    // and plugin calls per uploaded version.
    let at_first_use = ["edgesnap_target_up", "edgesnap_policy_calls"];
    let names = query(port, "count by (__name__) ({job=\"edgesnap\"})").unwrap();
    let scraped: Vec<&str> = names.iter().filter_map(|n| n["metric"]["__name__"].as_str()).collect();
    for e in &exprs {
        let metric = e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|w| w.starts_with("edgesnap_") || w.starts_with("process_"));
        if let Some(m) = metric.filter(|m| !at_first_use.iter().any(|a| m.starts_with(a))) {
            assert!(scraped.iter().any(|s| s.starts_with(m)), "{e}: {m} is not scraped ({scraped:?})");
        }
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[test]
fn stream_health_in_the_api_and_as_opt_in_per_stream_series() {
    let host = Host::start_with(&[DomainSpec::new("localhost")], 1, "stream_metrics = true");
    // 25 fps, GOP 1 s, pushed in real time for 12 s.
    let flv = crate::media::moving_flv();
    let bits = std::fs::metadata(&flv).unwrap().len() as f64 * 8.0;
    let url = host.rtmp_url("live/health");
    let push = std::thread::spawn(move || ffmpeg_push(&flv, &url, true));
    let mut stream = Value::Null;
    host.wait_for("a measured rate", Duration::from_secs(20), || {
        stream = host.get_json("/v1/domains/localhost/streams")["streams"][0].clone();
        stream["fps"].as_f64().is_some_and(|f| f > 0.0)
    });
    std::thread::sleep(Duration::from_secs(3));
    let s = &host.get_json("/v1/domains/localhost/streams")["streams"][0];
    let fps = s["fps"].as_f64().unwrap();
    assert!((23.0..=27.0).contains(&fps), "25 fps: {s}");
    assert_eq!(s["gop_ms"], 1000, "{s}");
    let bitrate = s["bitrate_bps"].as_f64().unwrap();
    let want = bits / 12.0;
    assert!(bitrate > want * 0.5 && bitrate < want * 2.0, "about {want} b/s: {s}");
    assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{s}");
    assert!(s["last_keyframe_age_ms"].as_u64().unwrap() < 1500, "a keyframe a second: {s}");

    let labels = "{domain=\"localhost\",app=\"live\",stream=\"health\"}";
    let metrics = String::from_utf8(host.try_get("/metrics").unwrap().1).unwrap();
    let series = |name: &str| -> Option<f64> {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name}{labels} "))?.parse().ok())
    };
    assert!(series("edgesnap_stream_fps").is_some_and(|f| (23.0..=27.0).contains(&f)), "{metrics}");
    assert_eq!(series("edgesnap_stream_gop_seconds"), Some(1.0), "{metrics}");
    assert!(series("edgesnap_stream_bitrate_bps").is_some_and(|b| b > want * 0.5), "{metrics}");
    assert!(series("edgesnap_stream_keyframe_age_seconds").is_some_and(|a| a < 1.5), "{metrics}");

    assert!(push.join().unwrap().status.success());
    host.wait_for("the stream ended", Duration::from_secs(20), || {
        host.get_json("/v1/domains/localhost/streams")["streams"].as_array().unwrap().is_empty()
    });
    let metrics = String::from_utf8(host.try_get("/metrics").unwrap().1).unwrap();
    assert!(!metrics.contains("stream=\"health\""), "an ended stream's series go with it:\n{metrics}");
}

#[test]
fn metrics_need_the_operator_token_unless_made_public() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    // The series name every domain and plugin version: not for anyone who can connect.
    let (status, body) = host.raw_request(None, "GET", "/metrics", None);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let domain_token = host.api("POST", "/v1/domains/localhost/tokens", Some(serde_json::json!({"label": "m"})));
    let domain_token = domain_token.1["token"].as_str().expect("a domain token").to_owned();
    assert_eq!(host.raw_request(Some(&domain_token), "GET", "/metrics", None).0, 403);
    let (status, body) = host.raw_request(Some(TOKEN), "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().contains("edgesnap_build_info"));

    let public = Host::start_with(&[DomainSpec::new("localhost")], 1, "metrics_public = true");
    let (status, body) = public.raw_request(None, "GET", "/metrics", None);
    assert_eq!(status, 200);
    assert!(String::from_utf8(body).unwrap().contains("edgesnap_build_info"));
}
