//! Bad input of every kind closes that connection with a clear log line and
//! leaves a concurrent good stream untouched.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::harness::{DomainSpec, Host};
use crate::media::{Clip, decode, ffmpeg, ffmpeg_push, frame_tag, nalus, read_flv};
use crate::publisher::Publisher;

fn closed(mut sock: TcpStream, within: Duration) -> bool {
    use std::io::Read;
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 8192];
    loop {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[test]
fn bad_connections_close_and_a_good_stream_keeps_its_snapshots() {
    let host = Host::start(&[DomainSpec::new("localhost")], 2);
    // The good stream, in real time for 12 s, across everything below.
    let clip = Clip::new(640, 360, 12, 1);
    let good = {
        let (flv, url) = (clip.flv(), host.rtmp_url("live/good"));
        std::thread::spawn(move || ffmpeg_push(&flv, &url, true))
    };
    std::thread::sleep(Duration::from_millis(1500));

    // Random bytes instead of a handshake.
    let mut s = TcpStream::connect(("127.0.0.1", host.rtmp_port)).unwrap();
    let junk: Vec<u8> = (0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80).collect();
    s.write_all(&junk).unwrap();
    assert!(closed(s, Duration::from_secs(5)), "random bytes: connection closed");

    // A handshake cut short and left hanging: closed after the handshake timeout.
    let mut hanging = TcpStream::connect(("127.0.0.1", host.rtmp_port)).unwrap();
    hanging.write_all(&[3u8; 700]).unwrap();

    // A chunk that continues a message never started.
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    p.raw(&[0xc9, 1, 2, 3, 4, 5]).unwrap();
    assert!(p.closed_by_host(Duration::from_secs(5)), "malformed chunk stream: closed");

    // A command that is not AMF0.
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    p.raw(&[0x03, 0, 0, 0, 0, 0, 4, 20, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]).unwrap();
    assert!(p.closed_by_host(Duration::from_secs(5)), "malformed AMF: closed");

    // An unknown domain, an invalid stream name, a second publisher of a live stream, a player.
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(!p.publish("cam?vhost=nope.example.com").unwrap(), "unknown domain refused");
    assert!(p.closed_by_host(Duration::from_secs(5)));
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(!p.publish(".hidden").unwrap(), "invalid stream name refused");
    let dup = ffmpeg_push(&clip.flv(), &host.rtmp_url("live/good"), false);
    assert!(!dup.status.success(), "a duplicate publish fails");

    // A video codec that is not H.264 (Sorenson H.263).
    let h263 = std::env::temp_dir().join("edgesnap-it-fixtures/h263.flv");
    if !h263.exists() {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "3",
            "-c:v",
            "flv1",
            "-f",
            "flv",
            h263.to_str().unwrap(),
        ]);
    }
    let out = ffmpeg_push(&h263, &host.rtmp_url("live/h263"), false);
    assert!(!out.status.success() || host.log().contains("is not supported"), "non-H.264 closed");

    // A stream whose first due keyframe has NAL lengths that do not add up:
    // it is not decoded, and the next keyframe is taken instead.
    let tags = read_flv(&Clip { bframes: false, ..Clip::new(640, 360, 7, 1) }.flv());
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(p.publish("broken").unwrap());
    for t in &tags {
        if t.is_video_keyframe() && t.ts == 0 {
            let mut bad = frame_tag(t, &nalus(t).iter().map(|n| n.to_vec()).collect::<Vec<_>>());
            let len = bad.data.len();
            bad.data[5..9].copy_from_slice(&(len as u32 * 2).to_be_bytes());
            p.send(&bad, 0).unwrap();
        } else if t.kind == 9 {
            p.send(t, t.ts).unwrap();
        }
    }
    host.wait_for("broken stream snapshots", Duration::from_secs(20), || {
        host.snapshots("localhost", "live", Some("broken")).iter().filter(|r| r["is_overlay"] == false).count() >= 2
    });
    let mut recs: Vec<_> =
        host.snapshots("localhost", "live", Some("broken")).into_iter().filter(|r| r["is_overlay"] == false).collect();
    recs.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    let secs: Vec<u32> = recs
        .iter()
        .map(|r| decode(&host.objects("localhost").get(r["object"].as_str().unwrap())).grey_second())
        .collect();
    assert_eq!(secs, vec![1, 6], "first decodable keyframe, then the grid from it");

    assert!(closed(hanging, Duration::from_secs(15)), "half a handshake: closed after the timeout");

    // The good stream got every snapshot: 0, 5, 10.
    let out = good.join().unwrap();
    assert!(out.status.success(), "good stream push: {}", String::from_utf8_lossy(&out.stderr));
    crate::pipeline::check_stream(&host, "localhost", "live", "good", &clip, 5);

    let log = host.log();
    for needle in [
        "not RTMP: version byte is not 3",
        "continues a message that never started",
        "amf0 marker 0x11 is not supported",
        "vhost \"nope.example.com\" names no configured domain",
        "stream name \".hidden\" is invalid",
        "is already being published by a live session",
        "video codec Sorenson H.263 (FLV codec id 2) is not supported",
        "NAL unit lengths do not add up",
        "handshake: timed out",
    ] {
        assert!(log.contains(needle), "log line with {needle:?}:\n{log}");
    }
    let metrics = String::from_utf8(host.try_get("/metrics").unwrap().1).unwrap();
    for reason in ["handshake", "protocol", "refused", "unsupported_codec"] {
        assert!(
            metrics.contains(&format!("edgesnap_rtmp_rejected_total{{reason=\"{reason}\"}}")),
            "{reason} counted:\n{metrics}"
        );
    }
}
