//! Logs as journald and log shippers get them: plain text without colour
//! when stderr is not a terminal, or one JSON object a line; a summary line
//! when a publish ends; each HTTP request and each deletion at debug.

use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DomainSpec, Host};
use crate::media::{Clip, ffmpeg_push};

#[test]
fn text_logs_have_no_colour_and_json_logs_are_one_object_a_line() {
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false).status.success());
    host.wait_for("3 captures", Duration::from_secs(30), || {
        host.snapshots("localhost", "live", Some("cam")).len() == 4
    });
    host.stop();
    let text = host.log();
    assert!(!text.contains('\u{1b}'), "no ANSI escape in a log that is not a terminal:\n{text}");
    let ended = text.lines().find(|l| l.contains("publish ended")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        ended.contains("INFO") && ended.contains("bytes_received=") && ended.contains("snapshots_queued=3"),
        "{ended}"
    );

    // The same host logging JSON (EDGESNAP_LOG_FORMAT, as --log-format json).
    let before = text.lines().count();
    host.env = vec![("EDGESNAP_LOG_FORMAT".into(), "json".into())];
    host.spawn();
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam2"), false).status.success());
    host.wait_for("3 captures", Duration::from_secs(30), || {
        host.snapshots("localhost", "live", Some("cam2")).len() == 4
    });
    let seq = host.snapshots("localhost", "live", Some("cam2")).into_iter().find(|r| r["is_overlay"] == false).unwrap();
    let (status, _) = host.api(
        "POST",
        "/v1/domains/localhost/snapshots/delete",
        Some(json!({"ids": [seq["id"]], "remove_file": true})),
    );
    assert_eq!(status, 200);
    host.stop();
    let lines: Vec<Value> = host
        .log()
        .lines()
        .skip(before)
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let find = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"].as_str().is_some_and(|m| m.starts_with(message)))
            .unwrap_or_else(|| panic!("no {message:?} line in {lines:?}"))
    };
    let serving = find("edgesnap is serving");
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["http"], format!("127.0.0.1:{}", host.http_port), "the bound address: {serving}");
    let ended = find("publish ended");
    assert_eq!((ended["stream"].as_str(), ended["snapshots_queued"].as_u64()), (Some("cam2"), Some(3)), "{ended}");
    assert!(ended["bytes_received"].as_u64().unwrap() > 1000, "{ended}");
    let request = find("http");
    assert_eq!(request["level"], "DEBUG");
    assert!(request["request_id"].as_str().is_some_and(|id| id.len() == 16), "{request}");
    let deleted = find("snapshot deleted");
    assert_eq!((deleted["level"].as_str(), deleted["id"].as_str()), (Some("DEBUG"), seq["id"].as_str()), "{deleted}");
    assert_eq!(deleted["file_removed_too"], true, "{deleted}");
    assert!(lines.iter().all(|l| l["timestamp"].is_string() && l["target"].is_string()), "every line stamped");
}
