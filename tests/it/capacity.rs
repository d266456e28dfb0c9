//! The capacity benchmark's smoke version (issue 3): 20 real-time streams for
//! 30 s through the load generator, and not one snapshot missed. It times
//! nothing; BENCHMARKS.md has the measurements.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::harness::{DomainSpec, Host, OutputWithin, bin};
use crate::media::ffmpeg;

const STREAMS: usize = 20;
const SECONDS: u64 = 30;

fn loadgen() -> std::path::PathBuf {
    // `cargo test` builds the package's examples next to its binaries.
    std::path::Path::new(bin()).parent().unwrap().join("examples/loadgen")
}

#[test]
fn twenty_streams_for_thirty_seconds_miss_nothing() {
    let host = Host::start(&[DomainSpec::new("localhost")], 2);
    let clip = std::env::temp_dir().join("edgesnap-it-fixtures/loadgen-360p-gop2.flv");
    if !clip.exists() {
        let part = clip.with_extension("part");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            "20",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-b:v",
            "1000k",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            "-bf",
            "2",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            "-f",
            "flv",
            part.to_str().unwrap(),
        ]);
        std::fs::rename(&part, &clip).unwrap();
    }
    let out = Command::new(loadgen())
        .args(["--url", &host.rtmp_url("live"), "--flv", clip.to_str().unwrap()])
        .args(["--streams", &STREAMS.to_string(), "--seconds", &SECONDS.to_string(), "--ramp", "2"])
        .output_within(Duration::from_secs(600));
    assert!(out.status.success(), "loadgen: {}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(out.stdout.trim_ascii()).unwrap();
    assert_eq!(report["failed"], 0, "every stream published: {report}");
    std::thread::sleep(Duration::from_secs(1));

    let metrics = String::from_utf8(host.try_get("/metrics").unwrap().1).unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    };
    assert_eq!(value("edgesnap_snapshots_missed_total"), 0.0, "no snapshot missed:\n{metrics}");
    let failed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("edgesnap_snapshots_failed_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(metrics.contains("edgesnap_snapshots_failed_total{stage=\"store\"} 0"), "failure series at 0:\n{metrics}");
    assert_eq!(failed, 0.0, "no snapshot failed:\n{metrics}");
    assert_eq!(value("edgesnap_snapshots_stored_total"), value("edgesnap_snapshots_queued_total"));

    // Every stream got one snapshot per 5 s of the ~30 s it published (the
    // first at its first keyframe, which comes within a 2 s GOP of its start).
    let mut per_stream: BTreeMap<String, usize> = BTreeMap::new();
    for r in host.snapshots("localhost", "live", None) {
        if r["is_overlay"] == false {
            *per_stream.entry(r["stream"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(per_stream.len(), STREAMS, "{per_stream:?}");
    for (stream, n) in &per_stream {
        assert!((6..=7).contains(n), "{stream}: {n} snapshots in {SECONDS} s at 5 s");
    }
}
