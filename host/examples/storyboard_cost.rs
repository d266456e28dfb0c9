//! What a storyboard adds to a snapshot (BENCHMARKS.md): the stored
//! picture decoded, scaled to a 160 px tile and the 5x5 sheet encoded, as
//! `storyboard::Storyboards::add` does, on the JPGs the decoder pool made of
//! a clip's keyframes. Prints CPU ms per snapshot.
//!
//! cargo run --release --example storyboard_cost -- clip.flv [snapshots]

use std::sync::Arc;
use std::time::Instant;

use edgesnap::capture::{CaptureJob, StreamInfo};
use edgesnap::media::{Decoded, PoolOptions};
use edgesnap::storyboard::{GRID, TILE_W};

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().expect("usage: storyboard_cost CLIP.flv [SNAPSHOTS]");
    let n: usize = args.next().map_or(200, |s| s.parse().unwrap());
    let tags = edgesnap_testkit::flv::read(std::path::Path::new(&path));
    let jobs = edgesnap::ingest::keyframe_jobs(tags.iter().filter(|t| t.kind == 9).map(|t| t.data.as_slice()));
    // The pictures, as the pool stores them.
    let template = Arc::new(edgesnap::config::Template {
        storyboard_s: 3600,
        ..edgesnap::config::Template::plain("local", "x.jpg")
    });
    let info = Arc::new(StreamInfo::new(1, "d".into(), "live".into(), "s".into(), Some(template.clone())));
    let (tx, rx) = crossbeam_channel::bounded(16);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Decoded>(16);
    let metrics = Arc::new(edgesnap::metrics::Metrics::new());
    let handles = edgesnap::media::start(PoolOptions { workers: 1 }, rx, out_tx, metrics).unwrap();
    let mut pictures = Vec::new();
    for (codec, annexb) in jobs.into_iter().take(10) {
        tx.send(CaptureJob {
            info: info.clone(),
            template: template.clone(),
            create_timestamp_ms: 0,
            media_ts_ms: 0,
            received: Instant::now(),
            annexb,
            codec,
            on_grid: true,
            waiters: Vec::new(),
            frames: Vec::new(),
        })
        .unwrap();
        pictures.push(out_rx.blocking_recv().unwrap().result.unwrap().bytes);
    }
    drop(tx);
    for h in handles {
        h.join().unwrap();
    }
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());
    let mut sheet_bytes = 0;
    for i in 0..n {
        let (rgb, w, h) = edgesnap::thumbs::decode_rgb(&pictures[i % pictures.len()]).unwrap();
        let tile_h = ((TILE_W * h / w).max(2) + 1) & !1;
        let tile = edgesnap::thumbs::area_average(&rgb, w, h, TILE_W, tile_h);
        let mut sheet = vec![0u8; TILE_W * GRID * tile_h * GRID * 3];
        for (r, line) in tile.chunks_exact(TILE_W * 3).enumerate() {
            let at = r * TILE_W * GRID * 3;
            sheet[at..at + line.len()].copy_from_slice(line);
        }
        let mut out = Vec::new();
        jpeg_encoder::Encoder::new(&mut out, 80)
            .encode(&sheet, (TILE_W * GRID) as u16, (tile_h * GRID) as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        sheet_bytes += out.len();
    }
    let cpu = cpu_seconds() - cpu0;
    println!(
        "{{\"snapshots\": {n}, \"cpu_ms_per_snapshot\": {:.2}, \"wall_ms_per_snapshot\": {:.2}, \"mean_sheet_bytes\": {}}}",
        cpu * 1000.0 / n as f64,
        wall0.elapsed().as_secs_f64() * 1000.0 / n as f64,
        sheet_bytes / n
    );
}
