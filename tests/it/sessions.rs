//! Publish sessions: encoder restarts, takeover of silent sessions, and
//! `{Sequence}` across re-publishes.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{DomainSpec, Host};
use crate::media::{Clip, Tag, decode, read_flv};
use crate::publisher::Publisher;

/// The seconds the sequential snapshots of a stream show, in create order.
fn seconds(host: &Host, domain: &str, app: &str, stream: &str) -> Vec<u32> {
    let mut recs: Vec<_> =
        host.snapshots(domain, app, Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect();
    recs.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    recs.iter().map(|r| decode(&host.objects(domain).get(r["object"].as_str().unwrap())).grey_second()).collect()
}

fn send_all(p: &mut Publisher, tags: &[Tag], ts_offset: u32) {
    for t in tags {
        if t.kind == 8 || t.kind == 9 {
            p.send(t, t.ts.wrapping_add(ts_offset)).unwrap();
        }
    }
}

#[test]
fn encoder_restart_inside_one_publish_restarts_the_grid() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 12, 1) };
    let tags = read_flv(&clip.flv());
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(p.publish("restart").unwrap());
    // The clip from media time 0, then the encoder restarts: time goes back to 0.
    send_all(&mut p, &tags, 0);
    send_all(&mut p, &tags, 0);
    host.wait_for("6 snapshots", Duration::from_secs(30), || seconds(&host, "localhost", "live", "restart").len() >= 6);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seconds(&host, "localhost", "live", "restart"), vec![0, 5, 10, 0, 5, 10]);
}

#[test]
fn timestamp_wrap_and_forward_jump_restart_the_grid() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 12, 1) };
    let tags = read_flv(&clip.flv());
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(p.publish("wrap").unwrap());
    // Near the end of the 32-bit clock: 0..11 s run across the wrap at about 6 s.
    let near_wrap = u32::MAX - 5_999;
    send_all(&mut p, &tags, near_wrap);
    // Then a jump forward by 2 hours.
    send_all(&mut p, &tags, 7_200_000);
    host.wait_for("snapshots", Duration::from_secs(30), || seconds(&host, "localhost", "live", "wrap").len() >= 6);
    std::thread::sleep(Duration::from_millis(300));
    // Before the wrap: 0 and 5; the wrap restarts the grid at second 6, then
    // 11; the jump restarts it at 0, then 5 and 10.
    assert_eq!(seconds(&host, "localhost", "live", "wrap"), vec![0, 5, 6, 11, 0, 5, 10]);
}

#[test]
fn silent_publisher_is_taken_over_and_sequence_continues() {
    let spec = DomainSpec { sequence: Some("{AppName}/{StreamName}/{Sequence}.jpg"), ..DomainSpec::new("localhost") };
    let host = Host::start(&[spec], 1);
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 7, 1) };
    let tags = read_flv(&clip.flv());

    let mut first = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(first.publish("cam").unwrap());
    send_all(&mut first, &tags, 0); // snapshots at 0 and 5, then silence with the socket open
    host.wait_for("first snapshots", Duration::from_secs(20), || seconds(&host, "localhost", "live", "cam").len() >= 2);

    // While the first sends media (it did just now), a second is refused.
    let mut second = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(!second.publish("cam").unwrap(), "a second publisher of a live stream is refused");
    assert!(second.closed_by_host(Duration::from_secs(5)), "refused publisher's connection is closed");

    // After 10 s of silence the session is dead: a new publish takes over.
    std::thread::sleep(Duration::from_millis(10_500));
    let mut third = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(third.publish("cam").unwrap(), "takeover after 10 s without media:\n{}", host.log());
    assert!(first.closed_by_host(Duration::from_secs(5)), "the silent session is closed");
    assert!(host.log().contains("taken over by a new publisher after 10 s without media"), "the log says why");
    send_all(&mut third, &tags, 0);
    host.wait_for("4 snapshots", Duration::from_secs(20), || seconds(&host, "localhost", "live", "cam").len() >= 4);
    drop(third);

    // And once more in a fresh connection after the last one ended.
    let mut fourth = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(fourth.publish("cam").unwrap());
    send_all(&mut fourth, &tags, 0);
    host.wait_for("6 snapshots", Duration::from_secs(20), || seconds(&host, "localhost", "live", "cam").len() >= 6);
    std::thread::sleep(Duration::from_millis(300));

    // {Sequence} counted on across the re-publishes: 0..5, each its own object.
    let records: Vec<_> =
        host.snapshots("localhost", "live", Some("cam")).into_iter().filter(|r| r["is_overlay"] == false).collect();
    let seqs: BTreeSet<u64> = records.iter().map(|r| r["sequence"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..6).collect::<BTreeSet<u64>>());
    let keys: BTreeSet<String> = records.iter().map(|r| r["object"].as_str().unwrap().to_owned()).collect();
    let want: BTreeSet<String> = (0..6).map(|n| format!("live/cam/{n}.jpg")).collect();
    assert_eq!(keys, want, "keys follow {{Sequence}} and no object was written twice");
    let stored: Vec<String> = host.objects("localhost").keys("live/cam/");
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert_eq!(seconds(&host, "localhost", "live", "cam"), vec![0, 5, 0, 5, 0, 5]);
}
