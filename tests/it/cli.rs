//! The `edgesnap` client subcommands against a running host: tables by
//! default, `--json` for scripts, exit codes that tell success from failure.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{DomainSpec, Host, OutputWithin, TOKEN, bin};
use crate::media::{Clip, ffmpeg_push};

fn run(host: &Host, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("EDGESNAP_SERVER", format!("http://127.0.0.1:{}", host.http_port))
        .env("EDGESNAP_TOKEN", TOKEN)
        .output_within(Duration::from_secs(60))
}

#[track_caller]
fn ok_json(out: &Output) -> Value {
    assert!(out.status.success(), "exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn client_subcommands_script_the_api() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    let out = ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false);
    assert!(out.status.success());
    host.wait_for("3 snapshots", Duration::from_secs(30), || {
        host.snapshots("localhost", "live", Some("cam")).len() >= 4
    });

    let v = ok_json(&run(&host, &["whoami", "--json"]));
    assert_eq!(v["role"], "operator");

    let add = ["templates", "add", "--domain", "localhost", "--app", "cam2", "--interval", "10", "--storage", "store"];
    let v = ok_json(&run(&host, &[&add[..], &["--overwrite", "{StreamName}.jpg", "--json"]].concat()));
    assert_eq!((v["app_name"].as_str(), v["time_interval"].as_u64()), (Some("cam2"), Some(10)));
    let again = run(&host, &[&add[..], &["--overwrite", "{StreamName}.jpg"]].concat());
    assert_eq!(again.status.code(), Some(1));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("409 ConfigAlreadyExists"), "{again:?}");
    assert_eq!(said.lines().count(), 1, "printed once: {said}");
    // With --json, the error is JSON too.
    let again = run(&host, &[&add[..], &["--overwrite", "{StreamName}.jpg", "--json"]].concat());
    assert_eq!(again.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&again.stderr).unwrap_or_else(|e| panic!("{e}: {again:?}"));
    assert_eq!(error["error"]["code"], "ConfigAlreadyExists", "{error}");
    assert_eq!(error["error"]["status"], 409, "{error}");
    let bad = run(
        &host,
        &[
            "templates",
            "add",
            "--domain",
            "localhost",
            "--app",
            "x",
            "--interval",
            "4",
            "--storage",
            "store",
            "--overwrite",
            "a.jpg",
        ],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidParameter.TimeInterval"), "{bad:?}");

    let table = run(&host, &["templates", "ls", "--domain", "localhost"]);
    assert!(table.status.success());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("APP") && text.contains("cam2") && text.contains("{StreamName}.jpg"), "{text}");
    let v = ok_json(&run(
        &host,
        &["templates", "set", "--domain", "localhost", "--app", "cam2", "--interval", "20", "--json"],
    ));
    assert_eq!(v["time_interval"], 20);
    assert!(run(&host, &["templates", "rm", "--domain", "localhost", "--app", "cam2"]).status.success());

    let v = ok_json(&run(
        &host,
        &[
            "snapshots",
            "ls",
            "--domain",
            "localhost",
            "--app",
            "live",
            "--stream",
            "cam",
            "--since",
            "1h",
            "--all",
            "--json",
        ],
    ));
    let snaps = v["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 4, "{v}");
    // Without --domain: the server's default domain. The table shows what `rm` takes.
    let table = run(&host, &["snapshots", "ls", "--app", "live", "--since", "1h"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success() && text.contains("live/cam.jpg"), "{table:?}");
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&header[..3], ["ID", "TIMESTAMP", "CREATED"], "{text}");
    let first = &snaps[0];
    let row = text.lines().find(|l| l.starts_with(first["id"].as_str().unwrap())).unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains(&first["create_timestamp"].to_string()), "{row}");
    // Columns align: every row's OBJECT starts where the header's does.
    let at = text.lines().next().unwrap().find("OBJECT").unwrap();
    assert!(text.lines().skip(1).all(|l| l[at..].starts_with("live/")), "{text}");

    // A reader that goes away (`| head`) ends the command quietly.
    let mut child = Command::new(bin())
        .args(["snapshots", "ls", "--app", "live", "--since", "1h"])
        .env("EDGESNAP_SERVER", format!("http://127.0.0.1:{}", host.http_port))
        .env("EDGESNAP_TOKEN", TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = crate::harness::wait_within(&mut child, Duration::from_secs(30)).expect("the command ends");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success() && stderr.is_empty(), "{status}: {stderr}");

    let seq = snaps.iter().find(|s| s["is_overlay"] == false).unwrap();
    let ts = seq["create_timestamp"].to_string();
    let rm = ["snapshots", "rm", "--domain", "localhost", "--app", "live", "--stream", "cam", "--ts"];
    let v = ok_json(&run(&host, &[&rm[..], &[&ts, "--remove-file", "--json"]].concat()));
    assert_eq!(v["success_count"], 1);
    let missing = run(&host, &[&rm[..], &["1"]].concat());
    assert_eq!(missing.status.code(), Some(1), "a delete that finds nothing fails");
    assert!(String::from_utf8_lossy(&missing.stdout).contains("FileNotFound"));

    let v = ok_json(&run(&host, &["tokens", "mint", "--domain", "localhost", "--label", "ci", "--json"]));
    let token = v["token"].as_str().unwrap();
    let v = ok_json(&run(&host, &["whoami", "--token", token, "--json"]));
    assert_eq!(v["role"], "domain");
    let denied = run(&host, &["domains", "ls", "--token", token]);
    assert_eq!(denied.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403 Forbidden"));

    let wasm = std::path::Path::new(env!("PLUGINS_WASM_DIR")).join("date_folders.wasm");
    let v = ok_json(&run(
        &host,
        &["plugins", "upload", "--domain", "localhost", "--activate", "--json", wasm.to_str().unwrap()],
    ));
    let version = v["version"].as_str().unwrap().to_owned();
    let v = ok_json(&run(&host, &["plugins", "ls", "--domain", "localhost", "--json"]));
    assert_eq!(v["active"], version.as_str());
    assert!(run(&host, &["plugins", "activate", "--domain", "localhost", "default"]).status.success());
    let table = String::from_utf8(run(&host, &["plugins", "ls", "--domain", "localhost"]).stdout).unwrap();
    assert!(table.contains("active: default\nprevious: ") && table.contains(&version), "{table}");
    assert!(table.contains(&format!("previous: {version}")), "the version it replaced: {table}");
    assert!(run(&host, &["plugins", "rm", "--domain", "localhost", &version]).status.success());
    assert_eq!(run(&host, &["plugins", "rm", "--domain", "localhost", &version]).status.code(), Some(1));

    let unreachable =
        Command::new(bin()).args(["whoami", "--server", "http://127.0.0.1:9"]).output_within(Duration::from_secs(60));
    assert_eq!(unreachable.status.code(), Some(3));
    let usage = Command::new(bin()).args(["snapshots", "ls"]).output_within(Duration::from_secs(60));
    assert_eq!(usage.status.code(), Some(2));
}

/// `edgesnap sources`: add (the API's checks answer), list with the
/// source's state, replace, delete.
#[test]
fn sources_subcommands_add_list_replace_and_delete() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let add = ["sources", "add", "--app", "cams", "--stream", "door", "--url"];
    let bad = run(&host, &[&add[..], &["rtsp://u:p@127.0.0.1:9/x"]].concat());
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must not hold credentials"), "{bad:?}");
    // Nothing listens there: the source backs off, and says why.
    let url = "rtsp://127.0.0.1:9/x";
    let v =
        ok_json(&run(&host, &[&add[..], &[url, "--transport", "udp", "--warmup-keyframes", "2", "--json"]].concat()));
    assert_eq!(
        (v["url"].as_str(), v["transport"].as_str(), v["warmup_keyframes"].as_u64()),
        (Some(url), Some("udp"), Some(2))
    );
    host.wait_for("backoff", Duration::from_secs(30), || {
        let v = ok_json(&run(&host, &["sources", "ls", "--json"]));
        v["sources"][0]["state"] == "backoff"
    });
    let table = run(&host, &["sources", "ls"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("APP/STREAM") && text.contains("cams/door") && text.contains("backoff"), "{text}");
    let again = run(&host, &[&add[..], &[url]].concat());
    assert!(String::from_utf8_lossy(&again.stderr).contains("409 SourceAlreadyExists"), "{again:?}");
    let v = ok_json(&run(&host, &[&add[..], &[url, "--mode", "on-demand", "--replace", "--json"]].concat()));
    assert_eq!(v["mode"], "on-demand");
    assert!(run(&host, &["sources", "rm", "--app", "cams", "--stream", "door"]).status.success());
    let v = ok_json(&run(&host, &["sources", "ls", "--json"]));
    assert_eq!(v["sources"], serde_json::json!([]));
}
