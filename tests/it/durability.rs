//! Nothing lost (docs/storage.md) under real faults: a storage outage (a gate in
//! front of a real S3-compatible server that closes connections), crashes
//! at each step of the write path (the fail-point build), SIGKILL at random
//! moments under 20 streams, and SIGTERM under load. After each recovery
//! every record has its object, every object its record, no `{Sequence}`
//! repeats within a stream, and the callback receiver has every event.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::harness::{DomainSpec, Gate, Host, Objects, Receiver, S3Server, failpoints_bin};
use crate::media::{Clip, decode, ffmpeg_push};

const BUCKET: &str = "snaps";

/// The index as the host left it (the host is stopped): every record, and
/// the captures still in flight.
fn index_after_stop(host: &Host) -> (Vec<edgesnap::index::Record>, usize) {
    let index = edgesnap::index::Index::open(&host.dir.path().join("data/index.redb")).unwrap();
    let records = index.domain_records("localhost", None, 1_000_000).unwrap();
    let pending = index.pending_intents().unwrap().len();
    index.close();
    (records, pending)
}

/// Every record has its object and every object (but the probe's) its
/// record; no sequence repeats within a stream.
fn assert_consistent(records: &[edgesnap::index::Record], objects: &Objects, context: &str) {
    let keys: BTreeSet<String> = objects.keys("").into_iter().filter(|k| !k.starts_with(".edgesnap-probe")).collect();
    let recorded: BTreeSet<String> = records.iter().map(|r| r.key.clone()).collect();
    let missing: Vec<_> = recorded.difference(&keys).collect();
    let orphans: Vec<_> = keys.difference(&recorded).collect();
    assert!(missing.is_empty(), "{context}: records without objects: {missing:?}");
    assert!(orphans.is_empty(), "{context}: objects without records: {orphans:?}");
    let mut seqs: HashMap<&str, BTreeSet<u64>> = HashMap::new();
    for r in records.iter().filter(|r| !r.is_overlay) {
        assert!(
            seqs.entry(&r.stream).or_default().insert(r.sequence),
            "{context}: {} repeats {}",
            r.stream,
            r.sequence
        );
    }
}

fn metric(host: &Host, name: &str) -> f64 {
    let (_, body) = host.try_get("/metrics").unwrap();
    String::from_utf8(body)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn s3_host(gate_port: u16, extra: &str) -> Host {
    // Credentials from a file (moto takes any; without them the S3 client finds none and fails).
    let domain = DomainSpec {
        s3: Some((gate_port, BUCKET)),
        s3_credentials_file: true,
        sequence: Some("{AppName}/{StreamName}/{Sequence}.jpg"),
        ..DomainSpec::new("localhost")
    };
    Host::start_with(&[domain], 1, &format!("allow_private_callbacks = true\n{extra}"))
}

fn notify_to(host: &Host, rx: &Receiver) {
    let body = json!({"notify_url": rx.url(), "notify_req_auth": "yes", "notify_auth_key": "k0123456789abcdef"});
    let (s, v) = host.api("PUT", "/v1/domains/localhost/notify", Some(body));
    assert_eq!(s, 201, "{v}");
}

#[test]
fn a_storage_outage_spools_in_order_across_a_restart_then_stores_everything() {
    let s3 = S3Server::start(BUCKET);
    let gate = Gate::start(s3.port);
    let moto = Objects::S3 { port: s3.port, bucket: BUCKET.into() };
    // 1 MiB of spool, one domain may fill 1 % of it (10 KiB): a few grey captures.
    let mut host = s3_host(gate.port, "spool_max_mib = 1\nspool_domain_share = 1");
    let rx = Receiver::start();
    notify_to(&host, &rx);

    gate.set_up(false);
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 30, 1) };
    let streams = ["a", "b", "c"];
    for s in streams {
        assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url(&format!("live/{s}")), false).status.success());
    }
    let captures = 3 * clip.expected_seconds(5).len();
    host.wait_for("every capture spooled or skipped", Duration::from_secs(60), || {
        let spooled = metric(&host, "edgesnap_snapshots_spooled_total");
        let skipped = metric(&host, "edgesnap_snapshots_skipped_total");
        spooled + skipped == captures as f64
    });
    let spooled = metric(&host, "edgesnap_snapshots_spooled_total") as usize;
    let skipped = metric(&host, "edgesnap_snapshots_skipped_total") as usize;
    assert!(
        spooled > 0 && skipped > 0,
        "some spooled ({spooled}) and, past the domain's share, some skipped ({skipped})"
    );
    let ready = host.get_json("/readyz");
    assert_eq!(ready["degraded"], true, "{ready}");
    assert_eq!(ready["targets_down"][0]["target"], "store", "{ready}");
    assert_eq!(ready["spool"]["entries"], spooled, "{ready}");
    assert!(ready["spool"]["bytes"].as_u64().unwrap() <= 10_485, "within the share: {ready}");
    assert_eq!(metric(&host, "edgesnap_target_up{domain=\"localhost\",target=\"store\"}"), 0.0);
    assert_eq!(host.get_json("/v1/domains/localhost/streams")["spooled"], spooled);
    assert!(host.snapshots("localhost", "live", None).is_empty(), "no record before its object is stored");

    // Restart while the target is still down: the spool is on disk.
    host.restart();
    assert_eq!(host.get_json("/readyz")["spool"]["entries"], spooled, "spooled captures survive a restart");
    assert!(host.snapshots("localhost", "live", None).is_empty());

    gate.set_up(true);
    host.wait_for("the spool drained", Duration::from_secs(60), || host.get_json("/readyz")["spool"]["entries"] == 0);
    assert_eq!(host.get_json("/readyz")["degraded"], false);
    assert_eq!(metric(&host, "edgesnap_target_up{domain=\"localhost\",target=\"store\"}"), 1.0);
    let api_records = host.snapshots("localhost", "live", None);
    let sequential: Vec<_> = api_records.iter().filter(|r| r["is_overlay"] == false).collect();
    assert_eq!(sequential.len(), spooled, "every spooled capture stored and recorded");
    // Stored in capture order: each stream's overwrite object holds its newest spooled capture.
    let seconds = clip.expected_seconds(5);
    for s in streams {
        let mut mine: Vec<_> = sequential.iter().filter(|r| r["stream"] == s).collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by_key(|r| r["sequence"].as_u64());
        let got: Vec<u32> =
            mine.iter().map(|r| decode(&moto.get(r["object"].as_str().unwrap())).grey_second()).collect();
        // In capture order, each a due second of the clip. Not always the
        // earliest ones: past the domain's share a capture is skipped, and a
        // later, smaller JPG may still fit (the share is counted in bytes).
        assert!(got.windows(2).all(|w| w[0] < w[1]), "stream {s}: spooled captures stored in capture order: {got:?}");
        assert!(got.iter().all(|g| seconds.contains(g)), "stream {s}: {got:?} are due seconds of {seconds:?}");
        let overwrite = decode(&moto.get(&format!("live/{s}.jpg"))).grey_second();
        assert_eq!(
            overwrite,
            *got.last().unwrap(),
            "stream {s}: the overwrite object holds the newest spooled capture"
        );
    }
    host.wait_for("every stored capture told", Duration::from_secs(30), || {
        let d = rx.delivered();
        sequential.iter().all(|r| d.contains_key(r["id"].as_str().unwrap()))
    });
    host.stop();
    let (records, pending) = index_after_stop(&host);
    assert_eq!(pending, 0);
    assert_consistent(&records, &moto, "after the outage");
}

/// Crashes the host at `point` (`FAILPOINTS` syntax) while a clip is
/// pushed, restarts it normally; returns the records after recovery.
fn crash_at(host: &mut Host, point: &str, clip: &Clip) {
    host.stop();
    host.bin = failpoints_bin();
    host.env = vec![("FAILPOINTS".into(), point.into())];
    host.spawn();
    let _ = ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false);
    let status = host.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{point}: the host aborted at the fail point ({status})");
    assert!(host.log().contains("failpoint"), "{point}: {}", host.log());
    host.bin = crate::harness::bin().into();
    host.env.clear();
    host.spawn();
}

#[test]
fn a_crash_at_each_step_of_the_write_path_is_recovered() {
    let s3 = S3Server::start(BUCKET);
    let gate = Gate::start(s3.port);
    let moto = Objects::S3 { port: s3.port, bucket: BUCKET.into() };
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    // (fail point, what recovery finds of the capture it crashed in)
    for (point, outcome) in [
        ("capture-after-reserve", Some("nothing")),
        ("capture-after-put", Some("recorded")),
        ("capture-after-commit", None),
        ("notify-after-send", None),
    ] {
        let rx = Receiver::start();
        let mut host = s3_host(gate.port, "");
        notify_to(&host, &rx);
        host.wait_for("the start's probe", Duration::from_secs(10), || {
            host.log().contains("storage target supports conditional create")
        });
        // The second capture of the push crashes the host.
        crash_at(&mut host, &format!("{point}=1*off->return"), &clip);
        if let Some(outcome) = outcome {
            host.wait_for(point, Duration::from_secs(30), || {
                metric(&host, &format!("edgesnap_recovered_total{{outcome=\"{outcome}\"}}")) == 1.0
            });
        }
        let records = host.snapshots("localhost", "live", Some("cam"));
        let mut sequential: Vec<_> = records.iter().filter(|r| r["is_overlay"] == false).collect();
        sequential.sort_by_key(|r| r["sequence"].as_u64());
        let want = if point == "capture-after-reserve" { 1 } else { 2 };
        assert_eq!(sequential.len(), want, "{point}: {records:?}");
        // Numbered in capture order (stored in whatever order the tasks ran).
        let seconds = clip.expected_seconds(5);
        for r in &sequential {
            let got = decode(&moto.get(r["object"].as_str().unwrap())).grey_second();
            assert_eq!(got, seconds[r["sequence"].as_u64().unwrap() as usize], "{point}: {r}");
        }
        host.wait_for("every record told", Duration::from_secs(30), || {
            let d = rx.delivered();
            sequential.iter().all(|r| d.contains_key(r["id"].as_str().unwrap()))
        });
        host.stop();
        let (records, pending) = index_after_stop(&host);
        assert_eq!(pending, 0, "{point}");
        assert_consistent(&records, &moto, point);
        // Clean bucket for the next point.
        for k in moto.keys("") {
            moto.delete(&k);
        }
    }

    // A crash after a spooled capture's objects are stored, before its records:
    // the next start commits them without storing anything twice.
    let rx = Receiver::start();
    let mut host = s3_host(gate.port, "");
    notify_to(&host, &rx);
    gate.set_up(false);
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false).status.success());
    host.wait_for("spooled", Duration::from_secs(30), || host.get_json("/readyz")["spool"]["entries"] == 3);
    host.stop();
    host.bin = failpoints_bin();
    host.env = vec![("FAILPOINTS".into(), "spool-after-upload=return".into())];
    gate.set_up(true);
    // It aborts while draining the spool, maybe before it serves.
    host.spawn_unchecked();
    assert!(!host.wait_exit(Duration::from_secs(30)).success());
    assert_eq!(moto.keys("live/cam/").len(), 1, "the first spooled capture was stored, then the host crashed");
    host.bin = crate::harness::bin().into();
    host.env.clear();
    host.spawn();
    host.wait_for("the spool drained", Duration::from_secs(60), || host.get_json("/readyz")["spool"]["entries"] == 0);
    let keys = moto.keys("live/cam/");
    assert_eq!(keys, vec!["live/cam/0.jpg", "live/cam/1.jpg", "live/cam/2.jpg"], "nothing stored twice");
    host.stop();
    let (records, pending) = index_after_stop(&host);
    assert_eq!((records.iter().filter(|r| !r.is_overlay).count(), pending), (3, 0));
    assert_consistent(&records, &moto, "spool-after-upload");
}

/// ffmpeg publishers of streams `live/s0`, `live/s1`, ..., each pushing
/// `flv` faster than real time again and again until stopped.
struct Pushers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Pushers {
    fn start(host: &Host, n: usize, flv: &std::path::Path) -> Pushers {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|i| {
                let (stop, flv, url) = (stop.clone(), flv.to_owned(), host.rtmp_url(&format!("live/s{i}")));
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let _ = ffmpeg_push(&flv, &url, false);
                    }
                })
            })
            .collect();
        Pushers { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

/// A tiny deterministic generator for the kill moments (the seed is printed).
fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    *state >> 33
}

#[test]
fn twenty_streams_survive_ten_sigkills() {
    let s3 = S3Server::start(BUCKET);
    let moto = Objects::S3 { port: s3.port, bucket: BUCKET.into() };
    let rx = Receiver::start();
    let mut host = s3_host(s3.port, "");
    notify_to(&host, &rx);
    let clip = Clip { bframes: false, ..Clip::new(160, 120, 30, 1) };
    let flv = clip.flv();
    let mut seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kill test seed {seed}");
    let mut kills = Vec::new();
    for round in 0..10 {
        let pushers = Pushers::start(&host, 20, &flv);
        let at = Duration::from_millis(1500 + lcg(&mut seed) % 3500);
        std::thread::sleep(at);
        let stored = metric(&host, "edgesnap_snapshots_stored_total");
        host.kill();
        kills.push((round, at.as_millis(), stored));
        pushers.stop();
        host.spawn();
    }
    eprintln!("kills (round, ms after start, captures stored before the kill): {kills:?}");
    // The last recovery: every capture in flight is settled, every event told.
    std::thread::sleep(Duration::from_secs(3));
    host.wait_for("every snapshot told", Duration::from_secs(120), || metric(&host, "edgesnap_outbox_pending") == 0.0);
    host.stop();
    let (records, pending) = index_after_stop(&host);
    assert_eq!(pending, 0, "no capture left in flight");
    assert!(records.len() > 200, "the streams were captured: {} records", records.len());
    assert_consistent(&records, &moto, "after 10 SIGKILLs");
    let told = rx.delivered();
    let untold: Vec<_> = records
        .iter()
        .filter(|r| !r.is_overlay)
        .map(|r| r.id.to_string())
        .filter(|id| !told.contains_key(id))
        .collect();
    assert!(
        untold.is_empty(),
        "{} of {} snapshots never told: {:?}",
        untold.len(),
        records.len(),
        &untold[..untold.len().min(5)]
    );
    let log = host.log();
    let (settled, nothing) = (log.matches("settled a capture in flight").count(), log.matches("objects=0").count());
    eprintln!(
        "records {}, captures in flight at a kill: {} recorded, {nothing} had stored nothing",
        records.len(),
        settled - nothing
    );
    assert!(settled > 0, "the kills caught captures in flight, and recovery settled them");
}

#[test]
fn sigterm_under_load_stores_every_queued_capture() {
    let s3 = S3Server::start(BUCKET);
    let moto = Objects::S3 { port: s3.port, bucket: BUCKET.into() };
    let rx = Receiver::start();
    let mut host = s3_host(s3.port, "");
    notify_to(&host, &rx);
    let clip = Clip { bframes: false, ..Clip::new(160, 120, 30, 1) };
    let pushers = Pushers::start(&host, 10, &clip.flv());
    std::thread::sleep(Duration::from_secs(4));
    let status = host.stop().unwrap();
    pushers.stop();
    assert!(status.success(), "{status}");
    let log = host.log();
    let last = log.lines().rfind(|l| l.contains("stopped")).expect("a stopped line").to_owned();
    let field = |name: &str| -> u64 {
        let at = last.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name} in {last}"));
        last[at + name.len() + 1..].split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    let (queued, stored) = (field("queued"), field("stored"));
    assert!(queued > 20, "load: {last}");
    assert_eq!(queued, stored, "every queued capture stored before exit: {last}");
    let (records, pending) = index_after_stop(&host);
    assert_eq!(pending, 0);
    assert_eq!(records.iter().filter(|r| !r.is_overlay).count() as u64, stored);
    assert_consistent(&records, &moto, "after SIGTERM");
    // What was not delivered before the stop is delivered after the next start.
    host.spawn();
    host.wait_for("every snapshot told", Duration::from_secs(60), || {
        let d = rx.delivered();
        records.iter().filter(|r| !r.is_overlay).all(|r| d.contains_key(&r.id.to_string()))
    });
}
