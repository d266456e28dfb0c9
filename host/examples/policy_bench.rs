//! The cost of a policy decision (issue 5), through the host's own policy
//! code: each call gets a fresh instance from the cached pre-instantiated
//! component, a fuel budget, an epoch deadline and a memory limit.
//!
//! Cases: the built-in default plugin naming a capture (what every capture
//! of a domain without an uploaded plugin costs); an uploaded plugin, with
//! its metrics and run record (date-folders); an uploaded plugin that reads
//! its `state` from redb and stages a write every call (skip-static; the
//! write is committed with the capture's records, in the same transaction); a deletion question over a full page of 256 snapshots
//! (keep-last); and the default plugin's naming rules compiled natively into
//! the host (the same `template-vars` source), for the ratio.
//!
//! usage: policy_bench [--calls 20000]

use std::sync::Arc;
use std::time::Instant;

use edgesnap::config::{Origin, Template};
use edgesnap::index::{Index, Record, RecordId};
use edgesnap::media::FrameFacts;
use edgesnap::metrics::Metrics;
use edgesnap::policy::{CaptureFacts, DeletionQuestion, Limits, Policies};

const DOMAIN: &str = "bench.example";

fn wasm(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("PLUGINS_WASM_DIR")).join(format!("{name}.wasm"))).unwrap()
}

/// Per-call latencies (µs), sorted.
fn measure(calls: usize, mut f: impl FnMut(usize)) -> Vec<f64> {
    for i in 0..calls / 10 {
        f(i);
    }
    let mut out: Vec<f64> = (0..calls)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let mut calls = 20_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => calls = args.next().and_then(|v| v.parse().ok()).expect("--calls N"),
            other => panic!("unknown argument {other}; usage: policy_bench [--calls 20000]"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let index = Arc::new(Index::open(&dir.path().join("index.redb")).unwrap());
    let policies = Arc::new(Policies::new(index, Limits::default(), Arc::new(Metrics::new()), None).unwrap());
    let template = Template {
        app_name: "*".into(),
        time_interval_s: 5,
        storage: "local".into(),
        overwrite_object: Some("{AppName}/{StreamName}.jpg".into()),
        sequence_object: Some("snapshot/{AppName}/{StreamName}/{UnixTimestamp}.jpg".into()),
        callback: None,
        jpeg_quality: 85,
        width: 0,
        height: 0,
        format: Default::default(),
        skip_blank: false,
        storyboard_s: 0,
        origin: Origin::Api,
    };
    let facts = |i: usize| CaptureFacts {
        domain: DOMAIN,
        app: "live",
        stream: "cam1",
        create_timestamp_ms: 1_764_057_600_000 + i as u64 * 5000,
        sequence: i as u64,
        width: 1280,
        height: 720,
        // A new picture each call, so skip-static stores (and writes its state) every time.
        frame: FrameFacts { mean_luma: 120, ahash: i as u64, luma_spread: 40 },
    };
    let page: Vec<Record> = (0..256u64)
        .map(|i| Record {
            id: RecordId(u128::from(i) << 64 | 1),
            domain: DOMAIN.into(),
            app: "live".into(),
            stream: "cam1".into(),
            create_timestamp_ms: 1_764_057_600_000 - i * 5000,
            key: format!("snapshot/live/cam1/{}.jpg", 1_764_057_600 - i * 5),
            storage: "local".into(),
            endpoint: String::new(),
            bucket: String::new(),
            size: 60_000,
            width: 1280,
            height: 720,
            is_overlay: false,
            sequence: 1000 - i,
            node: String::new(),
        })
        .collect();

    let p = policies.clone();
    let rows = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            let mut rows: Vec<(&str, Vec<f64>)> = Vec::new();
            rows.push((
                "native: the same rules compiled into the host",
                measure(calls, |i| {
                    let f = facts(i);
                    let v = template_vars::Vars {
                        domain: f.domain,
                        app: f.app,
                        stream: f.stream,
                        create_timestamp_ms: f.create_timestamp_ms,
                        sequence: f.sequence,
                    };
                    std::hint::black_box(template_vars::names(
                        template.overwrite_object.as_deref(),
                        template.sequence_object.as_deref(),
                        &v,
                    ));
                }),
            ));
            rows.push((
                "default plugin: name (fresh instance + call)",
                measure(calls, |i| drop(std::hint::black_box(p.name(&facts(i), &template).unwrap()))),
            ));
            let dates = Arc::new(p.load("date-folders", &wasm("date_folders")).unwrap());
            p.activate(DOMAIN, Some(dates));
            rows.push((
                "uploaded plugin: name + metrics + run record (date-folders)",
                measure(calls, |i| drop(std::hint::black_box(p.name(&facts(i), &template).unwrap()))),
            ));
            let skip = Arc::new(p.load("skip-static", &wasm("skip_static")).unwrap());
            p.activate(DOMAIN, Some(skip));
            rows.push((
                "uploaded plugin: name + state read + staged state write (skip-static)",
                measure(calls, |i| {
                    let named = p.name(&facts(i), &template).unwrap();
                    assert_eq!(named.state.len(), 1, "a new picture: the hash is written");
                    std::hint::black_box(named);
                }),
            ));
            let keep = Arc::new(p.load("keep-last", &wasm("keep_last")).unwrap());
            p.activate(DOMAIN, Some(keep));
            rows.push((
                "uploaded plugin: select-deletions over 256 snapshots (keep-last)",
                measure(calls / 10, |_| {
                    let q = DeletionQuestion {
                        domain: DOMAIN,
                        app: "live",
                        stream: "cam1",
                        offset: 0,
                        items: &page,
                        newer: None,
                        now_ms: 1_764_057_600_000,
                    };
                    let answer = p.select_deletions(&q).unwrap().unwrap();
                    assert_eq!(answer.ids.len(), 246);
                }),
            ));
            rows
        })
        .await
        .unwrap()
    });
    let native_mean = rows[0].1.iter().sum::<f64>() / rows[0].1.len() as f64;
    println!("| case | calls | p50 µs | p99 µs | mean µs | decisions / s / core | mean vs native |");
    println!("|---|---|---|---|---|---|---|");
    for (name, lat) in &rows {
        let mean = lat.iter().sum::<f64>() / lat.len() as f64;
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0}x |",
            lat.len(),
            pct(lat, 0.5),
            pct(lat, 0.99),
            mean,
            1e6 / mean,
            mean / native_mean
        );
    }
}
