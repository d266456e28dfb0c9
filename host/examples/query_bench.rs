//! Query and delete latency of the management API over a large index.
//!
//! Builds (once, kept in DIR) an index of STREAMS x PER_STREAM records
//! spread over APPS apps, 5 s apart, with objects for the first 100 streams;
//! starts the real `edgesnap` binary on it; then measures through HTTP:
//! `limit=100` pages of one stream and of a whole app, ascending and
//! descending, warm and after dropping the OS page cache (and restarting the
//! host, so redb's own cache is empty too); and deletes of 200 snapshots by
//! timestamp with their files. Prints a table and one JSON line.
//!
//! usage: query_bench --bin PATH [--dir DIR] [--streams 10000] [--per-stream 1000] [--apps 10] [--queries 300]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgesnap::index::{Index, Record, RecordId};

const DOMAIN: &str = "bench.example";
const TOKEN: &str = "bench-operator-token-0123456789";
/// 2026-01-01T00:00:00Z
const T0: u64 = 1_767_225_600_000;
const STEP_MS: u64 = 5_000;
/// Streams whose objects exist, for deletes with files.
const WITH_FILES: usize = 100;

struct Opts {
    bin: PathBuf,
    dir: PathBuf,
    streams: usize,
    per_stream: usize,
    apps: usize,
    queries: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        bin: PathBuf::new(),
        dir: std::env::temp_dir().join("edgesnap-query-bench"),
        streams: 10_000,
        per_stream: 1_000,
        apps: 10,
        queries: 300,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--bin" => o.bin = v().into(),
            "--dir" => o.dir = v().into(),
            "--streams" => o.streams = v().parse().unwrap(),
            "--per-stream" => o.per_stream = v().parse().unwrap(),
            "--apps" => o.apps = v().parse().unwrap(),
            "--queries" => o.queries = v().parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(o.bin.exists(), "--bin must name the edgesnap binary");
    o
}

fn stream_name(i: usize) -> String {
    format!("s{i:05}")
}

fn app_of(o: &Opts, i: usize) -> String {
    format!("app{}", i % o.apps)
}

fn ts_of(i: usize, j: usize) -> u64 {
    T0 + j as u64 * STEP_MS + (i as u64 * 7) % STEP_MS
}

fn objects_dir(o: &Opts) -> PathBuf {
    o.dir.join("objects")
}

/// Builds the index once; returns (build seconds or None if reused, index bytes).
fn build(o: &Opts) -> (Option<f64>, u64) {
    let data = o.dir.join("data");
    let path = data.join("index.redb");
    let marker = o.dir.join(format!("built-{}x{}x{}", o.streams, o.per_stream, o.apps));
    if marker.exists() {
        return (None, std::fs::metadata(&path).unwrap().len());
    }
    let _ = std::fs::remove_file(o.dir.join("delete-round"));
    let _ = std::fs::remove_dir_all(&o.dir);
    std::fs::create_dir_all(&data).unwrap();
    let objects = objects_dir(o);
    let endpoint = format!("file://{}", objects.display());
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let index = Index::open(&path).unwrap();
    let jpg = vec![0u8; 2048];
    let mut batch = Vec::with_capacity(20_000);
    let total = o.streams * o.per_stream;
    let mut done = 0usize;
    // Written in time order across streams, as a live host would.
    for j in 0..o.per_stream {
        for i in 0..o.streams {
            let ts = ts_of(i, j);
            let (app, stream) = (app_of(o, i), stream_name(i));
            let key = format!("{app}/{stream}/{}.jpg", ts / 1000);
            if i < WITH_FILES {
                let p = objects.join(&key);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, &jpg).unwrap();
            }
            batch.push(Record {
                id: RecordId::new(ts),
                domain: DOMAIN.into(),
                app,
                stream,
                create_timestamp_ms: ts,
                key,
                storage: "local".into(),
                endpoint: endpoint.clone(),
                bucket: String::new(),
                size: 30_000,
                width: 1280,
                height: 720,
                is_overlay: false,
                sequence: j as u64,
                node: String::new(),
            });
            if batch.len() == batch.capacity() {
                done += batch.len();
                rt.block_on(index.commit(RecordId(0), std::mem::take(&mut batch))).unwrap();
                batch.reserve(20_000);
                if done.is_multiple_of(1_000_000) {
                    eprintln!("built {done} of {total} records ({:.0} s)", started.elapsed().as_secs_f64());
                }
            }
        }
    }
    if !batch.is_empty() {
        rt.block_on(index.commit(RecordId(0), batch)).unwrap();
    }
    index.close();
    let secs = started.elapsed().as_secs_f64();
    std::fs::write(&marker, b"").unwrap();
    (Some(secs), std::fs::metadata(&path).unwrap().len())
}

struct Host {
    child: Child,
    port: u16,
}

fn start_host(o: &Opts) -> Host {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let rtmp = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        "version = 1\n[server]\nrtmp_listen = \"127.0.0.1:{rtmp}\"\nhttp_listen = \"127.0.0.1:{port}\"\n\
         data_dir = \"{data}\"\noperator_token = \"{TOKEN}\"\n\
         [domains.\"{DOMAIN}\".storage.local]\ntype = \"local\"\npath = \"{objects}\"\n",
        data = o.dir.join("data").display(),
        objects = objects_dir(o).display(),
    );
    let cfg = o.dir.join("bench.toml");
    std::fs::write(&cfg, config).unwrap();
    let child = Command::new(&o.bin)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let host = Host { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ureq::get(&format!("http://127.0.0.1:{port}/healthz")).call().is_ok() {
            return host;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("host did not start");
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// A tiny deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn iso(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Clone, Copy, Debug)]
enum Scope {
    Stream,
    App,
}

/// Times `n` page queries; each must return a full page of 100.
fn queries(o: &Opts, host: &Host, scope: Scope, desc: bool, n: usize, rng: &mut Rng) -> Vec<f64> {
    let agent = ureq::Agent::new_with_defaults();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let i = WITH_FILES + rng.below(o.streams - WITH_FILES); // streams untouched by the deletes
        // A window that holds at least a page either way.
        let j = rng.below(o.per_stream - 200) + 100;
        let (start, end) = if desc { (T0, ts_of(i, j)) } else { (ts_of(i, j), T0 + o.per_stream as u64 * STEP_MS) };
        let mut url = format!(
            "http://127.0.0.1:{}/v1/domains/{DOMAIN}/snapshots?app={}&start_time={}&end_time={}&limit=100",
            host.port,
            app_of(o, i),
            iso(start),
            iso(end)
        );
        if let Scope::Stream = scope {
            url += &format!("&stream={}", stream_name(i));
        }
        if desc {
            url += "&order=desc";
        }
        let t = Instant::now();
        let body = agent
            .get(&url)
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_vec()
            .unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 100, "{url}");
    }
    times
}

/// Times deletes of 200 snapshots by timestamp, files included.
fn deletes(o: &Opts, host: &Host, round: usize) -> Vec<f64> {
    let agent = ureq::Agent::new_with_defaults();
    let mut times = Vec::new();
    for i in 0..WITH_FILES {
        let stamps: Vec<u64> = (round * 200..(round + 1) * 200).map(|j| ts_of(i, j)).collect();
        let body = serde_json::json!({
            "app": app_of(o, i), "stream": stream_name(i), "create_timestamps": stamps, "remove_file": true
        });
        let t = Instant::now();
        let mut resp = agent
            .post(&format!("http://127.0.0.1:{}/v1/domains/{DOMAIN}/snapshots/delete", host.port))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&resp.body_mut().read_to_vec().unwrap()).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(v["success_count"], 200, "{v}");
        assert_eq!(v["files_removed"], 200, "{v}");
    }
    times
}

fn pct(times: &[f64], p: f64) -> f64 {
    let mut s = times.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1]
}

fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", b"3\n").is_ok()
}

fn main() {
    let o = opts();
    let (build_s, index_bytes) = build(&o);
    let records = o.streams * o.per_stream;
    let mut results = serde_json::Map::new();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    println!(
        "index: {records} records, {} streams, {} apps; {:.2} GiB on disk = {:.0} MiB per million records{}",
        o.streams,
        o.apps,
        index_bytes as f64 / (1u64 << 30) as f64,
        index_bytes as f64 / (1u64 << 20) as f64 / (records as f64 / 1e6),
        build_s.map_or(String::new(), |s| format!("; built in {s:.0} s"))
    );
    results.insert("records".into(), records.into());
    results.insert("index_bytes".into(), index_bytes.into());

    // Cold: OS page cache dropped, fresh host (empty redb cache). The first
    // query of each scenario on a fresh host is the coldest; each later one
    // reads pages of another random stream.
    let cold = drop_caches();
    println!("{:<28} {:>9} {:>9} {:>9}   (ms, limit=100, through HTTP)", "query", "p50", "p99", "max");
    for (label, scope, desc) in [
        ("stream asc", Scope::Stream, false),
        ("stream desc", Scope::Stream, true),
        ("app asc", Scope::App, false),
        ("app desc", Scope::App, true),
    ] {
        if cold {
            drop_caches();
            let host = start_host(&o);
            let t = queries(&o, &host, scope, desc, o.queries / 3, &mut rng);
            println!(
                "{:<28} {:>9.2} {:>9.2} {:>9.2}",
                format!("{label}, cold"),
                pct(&t, 0.5),
                pct(&t, 0.99),
                pct(&t, 1.0)
            );
            results.insert(format!("{label} cold p50").replace(' ', "_"), pct(&t, 0.5).into());
            results.insert(format!("{label} cold p99").replace(' ', "_"), pct(&t, 0.99).into());
        }
    }
    if !cold {
        println!("(cold runs skipped: cannot write /proc/sys/vm/drop_caches; run as root)");
    }
    let host = start_host(&o);
    for (label, scope, desc) in [
        ("stream asc", Scope::Stream, false),
        ("stream desc", Scope::Stream, true),
        ("app asc", Scope::App, false),
        ("app desc", Scope::App, true),
    ] {
        // Warm: every page the measured queries touch was read before.
        let mut warm_rng = Rng(0x5eed_0000_0000_0042);
        queries(&o, &host, scope, desc, o.queries, &mut warm_rng);
        let mut warm_rng = Rng(0x5eed_0000_0000_0042);
        let t = queries(&o, &host, scope, desc, o.queries, &mut warm_rng);
        println!("{:<28} {:>9.2} {:>9.2} {:>9.2}", format!("{label}, warm"), pct(&t, 0.5), pct(&t, 0.99), pct(&t, 1.0));
        results.insert(format!("{label} warm p50").replace(' ', "_"), pct(&t, 0.5).into());
        results.insert(format!("{label} warm p99").replace(' ', "_"), pct(&t, 0.99).into());
    }
    // Deletes: 100 streams x 200, files removed. Each run deletes the next
    // 200 of those streams; after the last round the index is rebuilt.
    let round_file = o.dir.join("delete-round");
    let round: usize = std::fs::read_to_string(&round_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let t = deletes(&o, &host, round);
    std::fs::write(&round_file, (round + 1).to_string()).unwrap();
    println!(
        "{:<28} {:>9.2} {:>9.2} {:>9.2}   (p90 {:.2}, n = {})",
        "delete 200 + files",
        pct(&t, 0.5),
        pct(&t, 0.99),
        pct(&t, 1.0),
        pct(&t, 0.9),
        t.len()
    );
    results.insert("delete_200_p50".into(), pct(&t, 0.5).into());
    results.insert("delete_200_p99".into(), pct(&t, 0.99).into());
    drop(host);
    if (round + 2) * 200 > o.per_stream {
        let _ = std::fs::remove_file(o.dir.join(format!("built-{}x{}x{}", o.streams, o.per_stream, o.apps)));
    }
    println!("{}", serde_json::Value::Object(results));
}
