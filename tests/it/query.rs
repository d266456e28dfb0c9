//! DescribeLiveStreamSnapshotInfo paging and DeleteSnapshotFiles at their
//! limits, on snapshots made by pushing 21 minutes of content faster than
//! real time (the capture grid runs on the media clock).

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{DomainSpec, Host};
use crate::media::{Clip, read_flv};
use crate::publisher::Publisher;

const WINDOW: &str = "start_time=2000-01-01T00:00:00Z&end_time=2100-01-01T00:00:00Z";

/// Pushes `laps` x 30 s of a 160x120 clip (GOP 5 s) as fast as the host reads it.
fn push_fast(host: &Host, app: &str, stream: &str, laps: u32) {
    let tags = read_flv(&Clip { bframes: false, ..Clip::new(160, 120, 30, 5) }.flv());
    let mut p = Publisher::connect(host.rtmp_port, app).unwrap();
    assert!(p.publish(stream).unwrap());
    for lap in 0..laps {
        for t in tags.iter().filter(|t| t.kind == 8 || t.kind == 9) {
            p.send(t, lap * 30_000 + t.ts).unwrap();
        }
    }
}

/// Pages through a query: the first page of `first`, then pages of `rest`,
/// passing back `next_token` and (`pass_start`) `next_start_time` as
/// start_time, as docs/api.md says, in either order; a client that keeps its
/// window's start is served the same.
fn page_through(host: &Host, scope: &str, desc: bool, pass_start: bool, first: usize, rest: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut start = "2000-01-01T00:00:00Z".to_owned();
    let mut token: Option<String> = None;
    let mut limit = first;
    loop {
        let mut path = format!(
            "/v1/domains/localhost/snapshots?{scope}&start_time={start}&end_time=2100-01-01T00:00:00Z&limit={limit}"
        );
        if desc {
            path += "&order=desc";
        }
        if let Some(t) = &token {
            path += &format!("&next_token={t}");
        }
        let page = host.get_json(&path);
        let items = page["snapshots"].as_array().unwrap();
        assert!(items.len() <= limit);
        out.extend(items.iter().cloned());
        match page.get("next_token").and_then(Value::as_str) {
            Some(t) => {
                assert_eq!(items.len(), limit, "a page before the last is full");
                token = Some(t.to_owned());
                if pass_start {
                    start = page["next_start_time"].as_str().unwrap().to_owned();
                }
            }
            None => return out,
        }
        limit = rest;
    }
}

fn key(v: &Value) -> (u64, String) {
    (v["create_timestamp"].as_u64().unwrap(), v["id"].as_str().unwrap().to_owned())
}

/// All of `expected`, each once, in (create_timestamp, id) order.
#[track_caller]
fn assert_exactly_in_order(got: &[Value], expected: &BTreeSet<(u64, String)>, desc: bool) {
    let keys: Vec<(u64, String)> = got.iter().map(key).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    if desc {
        sorted.reverse();
    }
    assert_eq!(keys, sorted, "in order");
    let unique: BTreeSet<_> = keys.iter().cloned().collect();
    assert_eq!(unique.len(), keys.len(), "no duplicates");
    assert_eq!(&unique, expected, "exactly all");
}

#[test]
fn paging_250_snapshots_and_deleting_200_at_once() {
    let host = Host::start(&[DomainSpec::new("localhost")], 2);
    // 42 laps of 30 s: 252 keyframes 5 s apart, each due.
    push_fast(&host, "live", "long", 42);
    host.wait_for("252 snapshots", Duration::from_secs(120), || {
        host.get_json("/v1/domains/localhost/streams")["streams"].as_array().is_some_and(|s| s.is_empty())
            && host.snapshots("localhost", "live", Some("long")).len() >= 253
    });
    let all = host.snapshots("localhost", "live", Some("long"));
    assert_eq!(all.len(), 253, "252 sequential records and the overwrite record");
    let expected: BTreeSet<(u64, String)> = all.iter().map(key).collect();

    for (desc, pass_start) in [(false, true), (true, true), (true, false)] {
        let got = page_through(&host, "app=live&stream=long", desc, pass_start, 100, 10);
        assert_exactly_in_order(&got, &expected, desc);
    }
    // The overwrite record shares its millisecond with the last capture: a
    // page boundary between them (after 100 + 38 x 4 = 252 items) is resumed
    // by next_token without a repeat or a gap.
    let got = page_through(&host, "app=live&stream=long", false, true, 100, 4);
    assert_exactly_in_order(&got, &expected, false);

    // Limits of the query.
    for (q, want) in [
        ("limit=0", "InvalidParameter.Limit"),
        ("limit=101", "InvalidParameter.Limit"),
        ("order=sideways", "InvalidParameter.Order"),
        ("next_token=zzz", "InvalidParameter.NextToken"),
    ] {
        let (status, v) = host.api("GET", &format!("/v1/domains/localhost/snapshots?app=live&{WINDOW}&{q}"), None);
        assert_eq!((status, v["code"].as_str()), (400, Some(want)), "{q}: {v}");
    }
    let (status, v) =
        host.api("GET", "/v1/domains/localhost/snapshots?app=live&start_time=yesterday&end_time=now", None);
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter.StartTime")), "{v}");
    let (status, v) = host.api("GET", &format!("/v1/domains/localhost/snapshots?{WINDOW}"), None);
    assert_eq!((status, v["code"].as_str()), (400, Some("MissingParameter.App")), "{v}");
    // Default limit 10; the reference's one-stream form with a one-day window.
    let first = &all[0];
    let day = &first["create_time"].as_str().unwrap()[..10];
    let page = host.get_json(&format!(
        "/v1/domains/localhost/snapshots?app=live&stream=long&start_time={day}T00:00:00Z&end_time={day}T23:59:59.999Z"
    ));
    assert_eq!(page["snapshots"].as_array().unwrap().len(), 10);
    assert_eq!(key(&page["snapshots"][0]), key(first));

    // Delete 200 by create timestamp, files too: 150 real, 50 that match nothing.
    let mut sequential: Vec<&Value> = all.iter().filter(|r| r["is_overlay"] == false).collect();
    sequential.sort_by_key(|r| key(r));
    let (doomed, kept) = sequential.split_at(150);
    let mut stamps: Vec<u64> = doomed.iter().map(|r| r["create_timestamp"].as_u64().unwrap()).collect();
    stamps.extend((0..50).map(|i| 1_000 + i));
    let body = json!({"app": "live", "stream": "long", "create_timestamps": stamps, "remove_file": true});
    let (status, v) = host.api("POST", "/v1/domains/localhost/snapshots/delete", Some(body));
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["success_count"].as_u64(), v["failure_count"].as_u64()), (Some(150), Some(50)), "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 200);
    assert_eq!(v["results"][0]["status"], "OK");
    assert_eq!(v["results"][199], json!({"create_timestamp": 1049, "status": "FileNotFound"}));
    let objects = host.objects("localhost");
    for r in doomed {
        let path = match objects {
            crate::harness::Objects::Dir(d) => d.join(r["object"].as_str().unwrap()),
            _ => unreachable!("a local target"),
        };
        assert!(!path.exists(), "{} removed from storage", path.display());
    }
    assert_eq!(host.snapshots("localhost", "live", Some("long")).len(), 253 - 150);

    // Delete by id, records only: 102 real (the rest of the sequential
    // records and the overwrite record), 98 unknown ids.
    let remaining = host.snapshots("localhost", "live", Some("long"));
    let mut ids: Vec<String> = remaining.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 103);
    ids.truncate(102);
    ids.extend((0..98).map(|i| format!("{i:032x}")));
    let body = json!({"ids": ids, "remove_file": false});
    let (status, v) = host.api("POST", "/v1/domains/localhost/snapshots/delete", Some(body));
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["success_count"].as_u64(), v["failure_count"].as_u64()), (Some(102), Some(98)), "{v}");
    assert_eq!(host.snapshots("localhost", "live", Some("long")).len(), 1);
    for r in kept {
        objects.get(r["object"].as_str().unwrap()); // still there: panics if not
    }

    // 0 and 201 items, both forms at once, timestamps without a stream.
    for body in [
        json!({"app": "live", "stream": "long", "create_timestamps": (0..201).collect::<Vec<u64>>()}),
        json!({"app": "live", "stream": "long", "create_timestamps": []}),
        json!({"app": "live", "stream": "long", "create_timestamps": [1], "ids": ["x"]}),
        json!({"app": "live", "stream": "long"}),
    ] {
        let (status, v) = host.api("POST", "/v1/domains/localhost/snapshots/delete", Some(body));
        assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter.CreateTimestampList")), "{v}");
    }
    let (status, v) = host.api(
        "POST",
        "/v1/domains/localhost/snapshots/delete",
        Some(json!({"app": "live", "create_timestamps": [1]})),
    );
    assert_eq!((status, v["code"].as_str()), (400, Some("MissingParameter.Stream")), "{v}");
    // A null is not "absent": the document says string and array (schemathesis found nulls taken).
    for body in [
        json!({"app": "live", "stream": null, "ids": ["x"]}),
        json!({"app": "live", "stream": "long", "create_timestamps": [1], "ids": null}),
    ] {
        let (status, v) = host.api("POST", "/v1/domains/localhost/snapshots/delete", Some(body.clone()));
        assert_eq!((status, v["code"].as_str()), (400, Some("InvalidBody")), "{body}: {v}");
        assert!(v["message"].as_str().unwrap().contains("null"), "{v}");
    }
}

#[test]
fn paging_a_whole_app_of_several_streams() {
    let host = Host::start(&[DomainSpec::new("localhost")], 2);
    let pushers: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(|s| {
            let port = host.rtmp_port;
            std::thread::spawn(move || {
                let tags = read_flv(&Clip { bframes: false, ..Clip::new(160, 120, 30, 5) }.flv());
                let mut p = Publisher::connect(port, "many").unwrap();
                assert!(p.publish(s).unwrap());
                for lap in 0..14 {
                    for t in tags.iter().filter(|t| t.kind == 8 || t.kind == 9) {
                        p.send(t, lap * 30_000 + t.ts).unwrap();
                    }
                }
            })
        })
        .collect();
    for p in pushers {
        p.join().unwrap();
    }
    // 3 streams x 84 captures, and one overwrite record each.
    host.wait_for("255 records", Duration::from_secs(120), || host.snapshots("localhost", "many", None).len() >= 255);
    std::thread::sleep(Duration::from_millis(500));
    let all = host.snapshots("localhost", "many", None);
    assert_eq!(all.len(), 255);
    let expected: BTreeSet<(u64, String)> = all.iter().map(key).collect();
    for (desc, pass_start) in [(false, true), (true, true), (true, false)] {
        let got = page_through(&host, "app=many", desc, pass_start, 100, 10);
        assert_exactly_in_order(&got, &expected, desc);
    }
    let streams: BTreeSet<&str> = all.iter().map(|r| r["stream"].as_str().unwrap()).collect();
    assert_eq!(streams, BTreeSet::from(["a", "b", "c"]));
}
