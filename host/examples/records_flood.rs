//! Publishes record events into a fleet's record stream at a fixed rate, as
//! many edges would (one event per stored snapshot of `streams` streams),
//! and reports how far behind the index node's consumer is while it runs:
//! the "records into one index node" benchmark (BENCHMARKS.md,
//! `scripts/bench_records.py` runs it against a real index node).
//!
//! Usage: `records_flood NATS_URL RATE SECONDS STREAMS CONSUMER`
//! (CONSUMER: the index node's durable consumer, `index-{node_id}`).
//! Prints one JSON line: events published, the publish rate reached, and
//! the consumer's pending count sampled every 250 ms (p50/p99/max, in
//! events and in seconds at RATE).

use std::time::{Duration, Instant};

use async_nats::jetstream;
use edgesnap::fleet::{RECORDS_STREAM, subject};
use edgesnap::index::{FleetEvent, Record, RecordId, encode_fleet_event};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: records_flood NATS_URL RATE SECONDS STREAMS CONSUMER");
        std::process::exit(2);
    }
    let (url, rate, seconds, streams, consumer_name) = (
        args[1].clone(),
        args[2].parse::<u64>().expect("RATE"),
        args[3].parse::<u64>().expect("SECONDS"),
        args[4].parse::<u64>().expect("STREAMS"),
        args[5].clone(),
    );
    let client = async_nats::connect(&url).await.expect("connect to NATS");
    let js = jetstream::new(client);
    // The index node makes the stream and its consumer when it starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut stream = loop {
        match js.get_stream(RECORDS_STREAM).await {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("no {RECORDS_STREAM}: {e}"),
        }
    };
    let _ = stream.info().await;

    // Samples the consumer's pending count while publishing.
    let sampler = {
        let js = js.clone();
        let name = consumer_name.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let stream = js.get_stream(RECORDS_STREAM).await.expect("the record stream");
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let end = Instant::now() + Duration::from_secs(seconds);
            while Instant::now() < end {
                tick.tick().await;
                if let Ok(mut c) = stream.get_consumer::<jetstream::consumer::pull::Config>(&name).await
                    && let Ok(info) = c.info().await
                {
                    samples.push(info.num_pending + info.num_ack_pending as u64);
                }
            }
            samples
        })
    };

    let started = Instant::now();
    let per_tick = rate / 100;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut acks = std::collections::VecDeque::new();
    let mut sent = 0u64;
    let base_ms = edgesnap::unix_ms();
    while started.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        for _ in 0..per_tick {
            let s = sent % streams;
            let ts = base_ms + sent / streams * 5000;
            let id = RecordId::new(ts);
            let r = Record {
                id,
                domain: "bench".into(),
                app: "live".into(),
                stream: format!("s{s}"),
                create_timestamp_ms: ts,
                key: format!("live/s{s}/{ts}.jpg"),
                storage: "main".into(),
                endpoint: String::new(),
                bucket: String::new(),
                size: 60_000,
                width: 1280,
                height: 720,
                is_overlay: false,
                sequence: sent / streams,
                node: format!("edge-{}", s % 4),
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{id}.{ts}.stored").as_str());
            let event = encode_fleet_event(&FleetEvent::Stored(r));
            let ack = js
                .publish_with_headers(subject("bench", "live", &format!("s{s}")), headers, event.into())
                .await
                .expect("publish");
            acks.push_back(ack);
            sent += 1;
            while acks.len() > 4096 {
                acks.pop_front().unwrap().await.expect("ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("ack");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut samples = sampler.await.expect("sampler");
    samples.sort_unstable();
    let q = |p: f64| samples.get(((samples.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0);
    let (p50, p99, max) = (q(0.5), q(0.99), samples.last().copied().unwrap_or(0));
    println!(
        "{}",
        serde_json::json!({
            "published": sent,
            "rate": sent as f64 / elapsed,
            "pending_p50": p50, "pending_p99": p99, "pending_max": max,
            "lag_p50_s": p50 as f64 / rate as f64, "lag_p99_s": p99 as f64 / rate as f64,
            "lag_max_s": max as f64 / rate as f64,
        })
    );
}
