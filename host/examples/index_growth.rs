//! Does the index's memory follow its size? Commits records like the
//! snapshot path does (200 streams at once) and prints RSS every 20k captures.
//!
//! cargo run --release --example index_growth -- DIR [CAPTURES]

use edgesnap::index::{Index, Intent, Planned, Record, RecordId};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let dir = std::env::args().nth(1).expect("usage: index_growth DIR [CAPTURES]");
    let n: u64 = std::env::args().nth(2).map_or(100_000, |s| s.parse().unwrap());
    let index = std::sync::Arc::new(Index::open(&std::path::Path::new(&dir).join("index.redb")).unwrap());
    // 200 streams at once, as the host writes them.
    let mut round = 0;
    while round * 200 < n {
        let tasks: Vec<_> = (0..200u64).map(|s| tokio::spawn(capture(index.clone(), round * 200 + s))).collect();
        for t in tasks {
            t.await.unwrap();
        }
        if round % 100 == 0 {
            println!("{} captures: RSS {} KiB", round * 200, rss_kib());
        }
        round += 1;
    }
    println!("{} captures: RSS {} KiB", round * 200, rss_kib());
}

async fn capture(index: std::sync::Arc<Index>, i: u64) {
    {
        let stream = format!("s{}", i % 200);
        let ts = 1_800_000_000_000 + i * 25;
        let id = RecordId::new(ts);
        let seq = index.next_sequence(edgesnap::stream::StreamKey::new("bench", "live", &stream)).unwrap();
        let planned = |key: String, overwrite| Planned { key, overwrite };
        let intent = Intent {
            domain: "bench".into(),
            app: "live".into(),
            stream: stream.clone(),
            create_timestamp_ms: ts,
            sequence: seq,
            storage: "local".into(),
            placements: vec![
                planned(format!("live/{stream}.jpg"), true),
                planned(format!("live/{stream}/{ts}.jpg"), false),
            ],
            size: 60_000,
            md5: [0; 16],
            width: 1280,
            height: 720,
        };
        index.reserve(id, intent).await.unwrap();
        let rec = |id, key: String, overlay| Record {
            id,
            domain: "bench".into(),
            app: "live".into(),
            stream: stream.clone(),
            create_timestamp_ms: ts,
            key,
            storage: "local".into(),
            endpoint: "file:///tmp/x".into(),
            bucket: String::new(),
            size: 60_000,
            width: 1280,
            height: 720,
            is_overlay: overlay,
            sequence: seq,
            node: String::new(),
        };
        index
            .commit(
                id,
                vec![
                    rec(RecordId::new(ts), format!("live/{stream}.jpg"), true),
                    rec(id, format!("live/{stream}/{ts}.jpg"), false),
                ],
            )
            .await
            .unwrap();
    }
}
