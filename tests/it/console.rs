//! The console in a real browser: `console/e2e/console.e2e.mjs` drives
//! Debian's Chromium (playwright-core) against the real binary with real
//! pushed streams — sign in, templates with a validation error, browsing
//! and previewing a stream's snapshots, batch-deleting three, the live wall
//! refreshing, uploading and rolling back a plugin, notify settings, a
//! phone's width, no console errors. This side sets the host up and checks
//! storage after the batch delete. Screenshots of every page are saved
//! under the target dir's `tmp/console-screenshots`.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::harness::{DomainSpec, Host, OutputWithin, TOKEN};
use crate::media::{ffmpeg_push, moving_flv, testsrc_flv};

#[test]
fn the_console_in_a_real_browser() {
    // A second domain: the operator sees both in the picker, a domain token only its own.
    let host = Host::start(&[DomainSpec::new("localhost"), DomainSpec::new("other.example")], 1);
    let (status, minted) = host.api("POST", "/v1/domains/localhost/tokens", Some(serde_json::json!({"label": "e2e"})));
    assert_eq!(status, 201, "{minted}");
    // 720p, so the console's thumbnails are the host's scaled copies.
    assert!(ffmpeg_push(&testsrc_flv(1280, 720, 30), &host.rtmp_url("live/cam1"), false).status.success());
    // 320 s of content: 64 sequential snapshots, more than one page of the grid.
    assert!(ffmpeg_push(&testsrc_flv(160, 120, 320), &host.rtmp_url("live/many"), false).status.success());
    host.wait_for("the snapshots", Duration::from_secs(60), || {
        host.snapshots("localhost", "live", Some("cam1")).len() >= 7
            && host.snapshots("localhost", "live", Some("many")).len() >= 65
    });
    // Two streams live for the wall, in real time, until the test ends.
    let stop = Arc::new(AtomicBool::new(false));
    let walls: Vec<_> = ["wall1", "wall2"]
        .into_iter()
        .map(|s| {
            let (stop, flv, url) = (stop.clone(), moving_flv(), host.rtmp_url(&format!("live/{s}")));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let _ = ffmpeg_push(&flv, &url, true);
                }
            })
        })
        .collect();
    host.wait_for("the wall streams' first snapshots", Duration::from_secs(30), || {
        ["wall1", "wall2"].iter().all(|s| !host.snapshots("localhost", "live", Some(s)).is_empty())
    });

    let console = Path::new(env!("CARGO_MANIFEST_DIR")).join("../console");
    let plugins = Path::new(env!("PLUGINS_WASM_DIR"));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let out = Command::new("node")
        .arg(console.join("e2e/console.e2e.mjs"))
        .current_dir(&console)
        .env("BASE_URL", format!("http://127.0.0.1:{}", host.http_port))
        .env("TOKEN", TOKEN)
        .env("DOMAIN_TOKEN", minted["token"].as_str().unwrap())
        .env("SHOTS", &shots)
        .env("PLUGIN_A", plugins.join("keep_last.wasm"))
        .env("PLUGIN_B", plugins.join("rendition_folders.wasm"))
        .output_within(Duration::from_secs(600));
    stop.store(true, Ordering::SeqCst);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stderr}\nhost log:\n{}", host.log());
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the e2e script's JSON line");
    let objects = host.objects("localhost");
    let keys = objects.keys("live/cam1/");
    for k in result["deleted"].as_array().unwrap() {
        assert!(!keys.contains(&k.as_str().unwrap().to_owned()), "{k} was removed from storage: {keys:?}");
    }
    for k in result["kept"].as_array().unwrap() {
        assert!(keys.contains(&k.as_str().unwrap().to_owned()), "{k} is still in storage");
    }
    assert_eq!(result["deleted"].as_array().unwrap().len(), 3);
    for shot in ["01-sign-in", "04-preview", "05-snapshots", "07-wall", "08-plugins", "10-phone"] {
        assert!(shots.join(format!("{shot}.png")).exists(), "screenshot {shot}");
    }
    // The wall publishers end with their current push (the host stops when dropped).
    drop(walls);
}
