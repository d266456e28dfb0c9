//! The physical floor of the capacity benchmark: the decoder pool's
//! long-lived GStreamer pipeline decoding a clip's keyframes (H.264 or
//! HEVC, made into jobs by ingest's own parser) into JPEGs with nothing
//! else of the host around it. Prints CPU ms per keyframe.
//!
//! cargo run --release --example floor -- clip.flv [jobs] [streams] [pace_ms] [burst] [output]
//!
//! With `streams` > 1 consecutive jobs come from different publish sessions,
//! as in a host with many streams: the worker flushes its decoder between
//! them (the pixel isolation of SPEC §3), and that cost is in the figure.
//! With `pace_ms` > 0 the jobs arrive that far apart instead of back to
//! back, as they do in a host that is not saturated (10 ms at 500 streams);
//! with `burst` > 1, that many jobs arrive together every `burst * pace_ms`.
//! `output` is the template's picture: `WxH` scales (0 for a side: the
//! source's), a `.webp` suffix encodes WebP (e.g. `320x180`, `0x0.webp`).

use std::sync::Arc;
use std::time::Instant;

use edgesnap::capture::{CaptureJob, StreamInfo};
use edgesnap::media::{Decoded, PoolOptions};

use edgesnap_testkit::flv;

/// CPU seconds (user + system) of this process so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: floor CLIP.flv [JOBS]");
    let n: usize = args.next().map_or(300, |s| s.parse().unwrap());
    let streams: usize = args.next().map_or(1, |s| s.parse().unwrap());
    let pace = std::time::Duration::from_millis(args.next().map_or(0, |s| s.parse().unwrap()));
    let burst: usize = args.next().map_or(1, |s| s.parse().unwrap());
    let output = args.next().unwrap_or_else(|| "0x0".into());
    let (size, format) = match output.strip_suffix(".webp") {
        Some(size) => (size, edgesnap::config::ImageFormat::Webp),
        None => (output.as_str(), edgesnap::config::ImageFormat::Jpg),
    };
    let (width, height) = size.split_once('x').expect("output: WxH[.webp]");
    let (width, height): (u32, u32) = (width.parse().unwrap(), height.parse().unwrap());
    let tags = flv::read(std::path::Path::new(&path));
    let keyframes = edgesnap::ingest::keyframe_jobs(tags.iter().filter(|t| t.kind == 9).map(|t| t.data.as_slice()));
    assert!(!keyframes.is_empty(), "no keyframes in {path}");
    let template = Arc::new(edgesnap::config::Template {
        width,
        height,
        format,
        ..edgesnap::config::Template::plain("local", "x.jpg")
    });
    let infos: Vec<Arc<StreamInfo>> = (0..streams.max(1))
        .map(|i| {
            Arc::new(StreamInfo::new(i as u64, "floor".into(), "live".into(), format!("s{i}"), Some(template.clone())))
        })
        .collect();
    let (tx, rx) = crossbeam_channel::bounded(16);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Decoded>(16);
    let metrics = Arc::new(edgesnap::metrics::Metrics::new());
    let handles = edgesnap::media::start(PoolOptions { workers: 1 }, rx, out_tx, metrics).unwrap();
    // Warm up: the first job negotiates caps and allocates.
    let job = move |i: usize| CaptureJob {
        info: infos[i % infos.len()].clone(),
        template: template.clone(),
        waiters: Vec::new(),
        frames: Vec::new(),
        on_grid: true,
        create_timestamp_ms: i as u64,
        media_ts_ms: 0,
        received: Instant::now(),
        annexb: keyframes[i % keyframes.len()].1.clone(),
        codec: keyframes[i % keyframes.len()].0,
    };
    tx.send(job(0)).unwrap();
    out_rx.blocking_recv().unwrap();
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let feeder = std::thread::spawn(move || {
        for i in 0..n {
            tx.send(job(i)).unwrap();
            if (i + 1) % burst.max(1) == 0 {
                std::thread::sleep(pace * burst.max(1) as u32);
            }
        }
    });
    let mut ok = 0;
    let mut bytes = 0;
    for _ in 0..n {
        let d = out_rx.blocking_recv().unwrap();
        if let Ok(j) = d.result {
            ok += 1;
            bytes += j.bytes.len();
        }
    }
    let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
    feeder.join().unwrap();
    for h in handles {
        drop(h);
    }
    println!(
        "{{\"jobs\": {n}, \"streams\": {streams}, \"pictures\": {ok}, \"cpu_ms_per_job\": {:.2}, \"wall_ms_per_job\": {:.2}, \"mean_jpeg_bytes\": {}}}",
        cpu * 1000.0 / n as f64,
        wall * 1000.0 / n as f64,
        bytes / ok.max(1)
    );
}
