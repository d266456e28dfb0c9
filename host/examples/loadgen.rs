//! Load generator for the capacity benchmark: publishes N RTMP streams at
//! real-time pace from one pre-encoded FLV file, each starting at a random
//! offset so keyframes do not line up. No re-encoding: it reads the file once
//! and only frames tags into RTMP chunks, waking each stream every 100 ms.
//!
//! cargo run --release --example loadgen -- --url rtmp://127.0.0.1:1935/live \
//!     --flv clip.flv --streams 100 --seconds 60 [--prefix s] [--ramp 5]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use edgesnap_testkit::flv;
use edgesnap_testkit::rtmp::{self, CHUNK, write_message as message};

async fn publish(host: &str, port: u16, app: &str, name: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect((host, port)).await?;
    s.set_nodelay(true)?;
    s.write_all(&rtmp::c0c1()).await?;
    let mut s0s1s2 = vec![0u8; 3073];
    s.read_exact(&mut s0s1s2).await?;
    s.write_all(&s0s1s2[1..1537]).await?;
    let mut out = rtmp::connect(app, &format!("rtmp://{host}:{port}/{app}"));
    out.extend(rtmp::publish(name));
    s.write_all(&out).await?;
    // Wait for the answer to publish.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await.unwrap_or(Ok(0))?;
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(23).any(|w| w == b"NetStream.Publish.Start") {
            return Ok(s);
        }
        if n == 0 && seen.windows(9).any(|w| w == b"BadName") {
            break;
        }
    }
    Err(std::io::Error::other(format!("publish {name} refused")))
}

struct Args {
    url: String,
    flv: String,
    streams: usize,
    seconds: u64,
    prefix: String,
    ramp: f64,
}

fn args() -> Args {
    let mut a = Args { url: String::new(), flv: String::new(), streams: 1, seconds: 60, prefix: "s".into(), ramp: 5.0 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--url" => a.url = v,
            "--flv" => a.flv = v,
            "--streams" => a.streams = v.parse().expect("--streams N"),
            "--seconds" => a.seconds = v.parse().expect("--seconds S"),
            "--prefix" => a.prefix = v,
            "--ramp" => a.ramp = v.parse().expect("--ramp seconds"),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!(!a.url.is_empty() && !a.flv.is_empty(), "--url and --flv are required");
    a
}

#[tokio::main]
async fn main() {
    let a = args();
    let rest = a.url.strip_prefix("rtmp://").expect("rtmp:// url");
    let (hostport, app) = rest.split_once('/').expect("rtmp://host:port/app");
    let (host, port) = hostport.split_once(':').map_or((hostport, 1935), |(h, p)| (h, p.parse().unwrap()));
    let tags = Arc::new(flv::read(std::path::Path::new(&a.flv)));
    let duration = tags.last().map_or(1, |t| t.ts) + 40;
    let configs: Arc<Vec<usize>> = Arc::new((0..tags.len()).filter(|&i| tags[i].is_config()).collect());
    let media: Arc<Vec<usize>> = Arc::new((0..tags.len()).filter(|&i| !tags[i].is_config()).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs_f64(a.ramp) + Duration::from_secs(a.seconds);
    let mut tasks = Vec::new();
    for i in 0..a.streams {
        let (tags, configs, media, sent, failed) =
            (tags.clone(), configs.clone(), media.clone(), sent.clone(), failed.clone());
        let (host, app, name) = (host.to_owned(), app.to_owned(), format!("{}{i}", a.prefix));
        let delay = Duration::from_secs_f64(a.ramp * i as f64 / a.streams.max(1) as f64);
        // A random start offset into the file (a simple LCG: no dependency).
        let offset = (i as u64).wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) >> 33;
        let start_at = (offset as usize) % media.len();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let mut s = match publish(&host, port, &app, &name).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("loadgen: {name}: {e}");
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let mut out = Vec::with_capacity(1 << 20);
            for &c in configs.iter() {
                let t = &tags[c];
                message(&mut out, if t.kind == 8 { 4 } else { 6 }, t.kind, 1, 0, &t.data, CHUNK);
            }
            // The clock starts at the earliest tag near the start: audio and
            // video interleave a little out of order, and a tag before the
            // base would wrap to a time that never comes (the stream would
            // send nothing but its configuration).
            let base = media[start_at..].iter().take(256).map(|&m| tags[m].ts).min().unwrap_or(0);
            let t0 = tokio::time::Instant::now();
            let mut k = start_at;
            let mut loop_offset: u32 = 0;
            loop {
                if Instant::now() >= stop {
                    return;
                }
                let now_ms = t0.elapsed().as_millis() as u64 + 100;
                // Everything due in the next 100 ms goes in one write.
                loop {
                    let t = &tags[media[k]];
                    let ts = t.ts.wrapping_sub(base).wrapping_add(loop_offset);
                    if u64::from(ts) > now_ms {
                        break;
                    }
                    message(&mut out, if t.kind == 8 { 4 } else { 6 }, t.kind, 1, ts, &t.data, CHUNK);
                    k += 1;
                    if k == media.len() {
                        k = 0;
                        loop_offset = loop_offset.wrapping_add(duration);
                    }
                }
                if !out.is_empty() {
                    if let Err(e) = s.write_all(&out).await {
                        eprintln!("loadgen: {name}: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    sent.fetch_add(out.len() as u64, Ordering::Relaxed);
                    out.clear();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    println!(
        "{{\"streams\": {}, \"failed\": {}, \"bytes\": {}}}",
        a.streams,
        failed.load(Ordering::Relaxed),
        sent.load(Ordering::Relaxed)
    );
}
