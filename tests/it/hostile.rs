//! Hostile plugins through the real host, with a second tenant streaming at
//! the same time: each attack is refused at upload or contained at run time
//! with a clear error, every capture of both tenants is stored, nothing is
//! written outside the hostile tenant's target, and the other tenant's
//! lateness stays within 2x of a run without the hostile tenant.

use std::time::Duration;

use serde_json::Value;

use crate::harness::{DomainSpec, Host, TOKEN};
use crate::media::{Clip, ffmpeg_push};

fn example(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"))).unwrap()
}

fn upload(host: &Host, bytes: Vec<u8>) -> (u16, Value) {
    let (status, body) =
        host.raw_request(Some(TOKEN), "POST", "/v1/domains/localhost/plugins", Some(("application/wasm", bytes)));
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The hostile streams, and what the run record's error must say.
const ATTACKS: [(&str, &str); 10] = [
    ("loop", "wasm trap: all fuel consumed"),
    ("bomb", "memory limit of 16 MiB was reached"),
    ("recurse", "wasm trap: call stack exhausted"),
    ("panic", "wasm trap: wasm `unreachable` instruction executed"),
    ("huge", "10000 placements, at most 16"),
    ("longkey", "must be 1-1024 bytes"),
    ("dotdot", "'..'"),
    ("abs", "must be a relative path"),
    ("ctrl", "control characters"),
    ("backslash", "must be a relative path"),
];

/// The p99 upper bound (s) of a domain's lateness histogram between two
/// scrapes of /metrics, and the number of samples.
fn lateness_p99(before: &str, after: &str, domain: &str) -> (f64, u64) {
    let buckets = |text: &str| -> Vec<(f64, u64)> {
        let suffix = format!("\",domain=\"{domain}\"}}");
        text.lines()
            .filter_map(|l| l.strip_prefix("edgesnap_lateness_seconds_bucket{le=\""))
            .filter_map(|rest| rest.split_once(&suffix))
            .map(|(le, count)| {
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() };
                (le, count.trim().parse::<f64>().unwrap() as u64)
            })
            .collect()
    };
    let (b, a) = (buckets(before), buckets(after));
    let delta: Vec<(f64, u64)> =
        a.iter().map(|(le, n)| (*le, n - b.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m))).collect();
    let total = delta.last().map_or(0, |d| d.1);
    let p99 = delta.iter().find(|(_, n)| (*n as f64) >= 0.99 * total as f64).map_or(f64::NAN, |d| d.0);
    (p99, total)
}

fn metrics(host: &Host) -> String {
    String::from_utf8(host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None).1).unwrap()
}

/// Tenant b pushes `streams` streams of 20 s in real time at once; returns
/// when all have ended.
fn push_tenant_b(host: &Host, lap: &str, streams: usize) -> Vec<std::thread::JoinHandle<()>> {
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 20, 1) };
    let flv = clip.flv();
    (0..streams)
        .map(|i| {
            let url = host.rtmp_url(&format!("live/{lap}-{i}?vhost=b.example.com"));
            let flv = flv.clone();
            std::thread::spawn(move || assert!(ffmpeg_push(&flv, &url, true).status.success()))
        })
        .collect()
}

#[test]
fn hostile_plugins_are_refused_or_contained_while_another_tenant_streams() {
    let hostile = DomainSpec {
        // The operator's overrides: failures never demote (so every attack
        // runs), and a tighter deadline than the default.
        plugin_limits: Some("demote_after = 1000000\ndeadline = \"100ms\""),
        ..DomainSpec::new("localhost")
    };
    let host = Host::start(&[hostile, DomainSpec::new("b.example.com")], 2);
    let domain = host.get_json("/v1/domains/localhost");
    assert_eq!(domain["plugin_limits"]["demote_after"], 1_000_000, "{domain}");
    assert_eq!(domain["plugin_limits"]["deadline"], "100ms");

    // Refused at upload, each with its reason.
    let default = example("default_policy");
    let refused: [(&str, Vec<u8>, u16, &str, &str); 5] = [
        ("an import the host does not offer", example("foreign_import"), 400, "InvalidPlugin", "exfiltrate"),
        ("a truncated component", default[..default.len() / 2].to_vec(), 400, "InvalidPlugin", "does not load"),
        ("a core module", b"\0asm\x01\0\0\0".to_vec(), 400, "InvalidPlugin", "does not load"),
        ("not wasm at all", b"MZ\x90\0 an exe".to_vec(), 400, "InvalidPlugin", "does not load"),
        ("100 MB", vec![0u8; 100 << 20], 413, "PayloadTooLarge", ""),
    ];
    for (what, bytes, status, code, says) in refused {
        let (got, v) = upload(&host, bytes);
        assert_eq!((got, v["code"].as_str()), (status, Some(code)), "{what}: {v}");
        assert!(v["message"].as_str().unwrap_or("").contains(says), "{what}: {v}");
    }
    assert_eq!(host.get_json("/v1/domains/localhost/plugins")["versions"].as_array().unwrap().len(), 0);

    // Baseline: tenant b alone.
    let m0 = metrics(&host);
    push_tenant_b(&host, "alone", 6).into_iter().for_each(|t| t.join().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let m1 = metrics(&host);
    let (alone_p99, alone_n) = lateness_p99(&m0, &m1, "b.example.com");
    assert_eq!(alone_n, 6 * 4, "every capture of b stored");

    // The hostile plugin passes its conformance run, then misbehaves on
    // every attack stream while b streams again.
    let (status, v) = upload(&host, example("hostile"));
    assert_eq!(status, 201, "{v}");
    let version = v["version"].as_str().unwrap().to_owned();
    assert_eq!(host.api("POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None).0, 200);
    let b = push_tenant_b(&host, "with", 6);
    std::thread::sleep(Duration::from_secs(2));
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    // Each attack's run records (read after it, as the ring keeps the last 50).
    let mut attack_runs = Vec::new();
    for (stream, _) in ATTACKS {
        assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url(&format!("live/{stream}")), false).status.success());
        host.wait_for("the attack's 3 naming calls", Duration::from_secs(30), || {
            let named = crate::plugins::runs_of(&host, stream);
            let done = named.len() == 3;
            if done {
                attack_runs.push((stream, named));
            }
            done
        });
    }
    b.into_iter().for_each(|t| t.join().unwrap());
    std::thread::sleep(Duration::from_millis(500));
    let m2 = metrics(&host);
    let (with_p99, with_n) = lateness_p99(&m1, &m2, "b.example.com");
    assert_eq!(with_n, 6 * 4, "every capture of b stored");
    eprintln!("tenant b lateness p99: alone {alone_p99} s, beside the hostile tenant {with_p99} s");
    assert!(with_p99 <= 2.0 * alone_p99, "lateness p99 {with_p99} s vs {alone_p99} s alone");

    // The host is up, and every hostile capture was stored by the default
    // policy under the template's names: nothing lost.
    assert_eq!(host.try_get("/healthz").unwrap().0, 200);
    host.wait_for("every attack's 3 captures", Duration::from_secs(30), || {
        ATTACKS.iter().all(|(s, _)| {
            host.snapshots("localhost", "live", Some(s)).iter().filter(|r| r["is_overlay"] == false).count() == 3
        })
    });
    for (stream, _) in ATTACKS {
        for r in host.snapshots("localhost", "live", Some(stream)) {
            let key = r["object"].as_str().unwrap();
            assert!(key == format!("live/{stream}.jpg") || key.starts_with(&format!("live/{stream}/")), "{key}");
        }
    }
    // Nothing outside the tenant's target; b's target holds only b's streams.
    let objects = host.dir.path().join("objects");
    let mut roots: Vec<String> =
        std::fs::read_dir(&objects).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    roots.sort();
    assert_eq!(roots, vec!["b.example.com", "localhost"]);
    let b_files = crate::harness::files(&objects.join("b.example.com"));
    assert!(b_files.iter().all(|f| f.starts_with("live/alone-") || f.starts_with("live/with-")), "{b_files:?}");
    let a_files = crate::harness::files(&objects.join("localhost"));
    assert!(a_files.iter().all(|f| f.starts_with("live/")), "{a_files:?}");

    // Each attack's calls have run records naming what went wrong, and fell back.
    for (stream, runs) in &attack_runs {
        let says = ATTACKS.iter().find(|(s, _)| s == stream).unwrap().1;
        for run in runs {
            assert!(run["error"].as_str().unwrap_or("").contains(says), "{stream}: {run}");
            assert_eq!(run["fell_back"], true, "{stream}");
        }
        if *stream == "bomb" {
            let peak = runs[0]["peak_memory_bytes"].as_u64().unwrap();
            assert!(peak > 15 << 20 && peak <= 16 << 20, "the bomb reached the 16 MiB cap: {peak}");
        }
    }
    let m = metrics(&host);
    assert!(m.contains(r#"edgesnap_policy_fallbacks_total{domain="localhost"} 30"#), "{m}");
    assert!(m.contains("edgesnap_policy_demotions_total{domain=\"localhost\"} 0\n"), "the operator said never: {m}");
}
