//! Callbacks (docs/callbacks.md) to a real HTTP receiver in the test: every stored and
//! deleted snapshot is told, signed (the reference's headers and the body
//! HMAC), at least once, across a host restart while the receiver was down;
//! what cannot be delivered is kept as failed and can be replayed; private
//! targets are refused unless the operator allows them.

use std::sync::atomic::Ordering;
use std::time::Duration;

use hmac::Mac;
use md5::Digest;
use serde_json::{Value, json};

use crate::harness::{DomainSpec, Hit, Host, Receiver};
use crate::media::{Clip, ffmpeg_push};

const KEY: &str = "0123456789abcdefXYZ";

/// Checks both signatures of a request against the body it carried.
fn assert_signed(hit: &Hit, authority: &str) {
    let ts = hit.headers["ali-live-timestamp"].clone();
    let md5 = hex::encode(md5::Md5::digest(format!("{authority}|{ts}|{KEY}").as_bytes()));
    assert_eq!(hit.headers["ali-live-signature"], md5, "{hit:?}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(format!("{ts}.{}", hit.raw).as_bytes());
    let want = format!("t={ts},v1={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hit.headers["x-edgesnap-signature"], want, "{hit:?}");
}

fn sequential(host: &Host, stream: &str) -> Vec<Value> {
    host.snapshots("localhost", "live", Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect()
}

fn push(host: &Host, path: &str) {
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 12, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url(path), false).status.success());
}

#[test]
fn every_snapshot_and_deletion_is_told_signed_at_least_once_across_a_restart() {
    let rx = Receiver::start();
    let mut host = Host::start_with(&[DomainSpec::new("localhost")], 1, "allow_private_callbacks = true");
    let notify = json!({"notify_url": rx.url(), "notify_req_auth": "yes", "notify_auth_key": KEY});
    assert_eq!(host.api("PUT", "/v1/domains/localhost/notify", Some(notify)).0, 201);
    // App `cb` names the same URL as its template callback: one delivery each.
    let tpl = json!({"app_name": "cb", "time_interval": 5, "storage": "store",
                     "sequence_object": "{AppName}/{StreamName}/{Sequence}.jpg", "callback": rx.url()});
    assert_eq!(host.api("POST", "/v1/domains/localhost/snapshot-configs", Some(tpl)).0, 201);

    push(&host, "live/cam1");
    push(&host, "cb/cam2");
    let records = || {
        let mut all = sequential(&host, "cam1");
        all.extend(host.snapshots("localhost", "cb", Some("cam2")));
        all
    };
    host.wait_for("every snapshot told", Duration::from_secs(30), || {
        let got = rx.delivered();
        let rs = records();
        rs.len() == 6 && rs.iter().all(|r| got.contains_key(r["id"].as_str().unwrap()))
    });
    let authority = format!("127.0.0.1:{}", rx.port);
    for hit in rx.hits() {
        assert_signed(&hit, &authority);
        assert_eq!(hit.headers["content-type"], "application/json");
    }
    let got = rx.delivered();
    for r in records() {
        let id = r["id"].as_str().unwrap();
        assert_eq!(got[id], 1, "answered 200 once: {id}");
        let hit = rx.hits().into_iter().find(|h| h.body["id"] == id).unwrap();
        let b = &hit.body;
        assert_eq!(b["event"], "live_snapshot");
        for f in [
            "object",
            "size",
            "sequence",
            "create_timestamp",
            "create_time",
            "width",
            "height",
            "is_overlay",
            "app",
            "stream",
        ] {
            assert_eq!(b[f], r[f], "{f}: {b} vs {r}");
        }
        assert_eq!(b["domain"], "localhost");
        let url = b["url"].as_str().unwrap();
        let path = url.split_once("127.0.0.1").unwrap().1.split_once('/').unwrap().1;
        let (status, jpg) = host.try_get(&format!("/{path}")).unwrap();
        assert_eq!((status, jpg.len() as u64), (200, r["size"].as_u64().unwrap()), "the signed URL serves it");
    }
    // The overwrite object's replacements are events of their own (one id each).
    let overlay: Vec<String> = rx
        .hits()
        .iter()
        .filter(|h| h.body["is_overlay"] == true && h.body["stream"] == "cam1")
        .map(|h| h.body["id"].as_str().unwrap().to_owned())
        .collect();
    let distinct: std::collections::HashSet<&String> = overlay.iter().collect();
    assert!(!overlay.is_empty() && distinct.len() == overlay.len(), "{overlay:?}");

    // The receiver goes down; three more captures wait; the host restarts meanwhile.
    rx.answer.store(503, Ordering::SeqCst);
    push(&host, "live/cam3");
    host.wait_for("attempts while down", Duration::from_secs(30), || {
        rx.hits().iter().filter(|h| h.status == 503 && h.body["stream"] == "cam3").count() >= 3
    });
    host.restart();
    rx.answer.store(200, Ordering::SeqCst);
    host.wait_for("delivered after the restart", Duration::from_secs(40), || {
        let got = rx.delivered();
        let rs = sequential(&host, "cam3");
        rs.len() == 3 && rs.iter().all(|r| got.contains_key(r["id"].as_str().unwrap()))
    });

    // A deletion is told too.
    let victim = sequential(&host, "cam1")[0].clone();
    let del = json!({"app": "live", "stream": "cam1", "create_timestamps": [victim["create_timestamp"]], "remove_file": true});
    assert_eq!(host.api("POST", "/v1/domains/localhost/snapshots/delete", Some(del)).0, 200);
    let deleted_id = format!("{}-deleted", victim["id"].as_str().unwrap());
    host.wait_for("the deletion told", Duration::from_secs(30), || rx.delivered().contains_key(&deleted_id));
    let hit = rx.hits().into_iter().find(|h| h.body["id"] == deleted_id.as_str()).unwrap();
    assert_eq!((hit.body["event"].as_str(), &hit.body["object"]), (Some("live_snapshot_deleted"), &victim["object"]));
    let metrics = String::from_utf8(host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None).1).unwrap();
    assert!(metrics.contains(r#"edgesnap_callbacks_total{domain="localhost",outcome="delivered"}"#), "{metrics}");
}

#[test]
fn undeliverable_callbacks_are_kept_then_replayed_and_private_targets_need_the_operator() {
    let rx = Receiver::start();
    // Without the operator's leave, loopback targets are refused.
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, v) = host.api("PUT", "/v1/domains/localhost/notify", Some(json!({"notify_url": rx.url()})));
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter.NotifyUrl")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("server.allow_private_callbacks"), "{v}");
    let (status, v) = host.api("PUT", "/v1/domains/localhost/notify", Some(json!({"notify_url": "http://["})));
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter.NotifyUrl")), "not a URL: {v}");
    drop(host);

    let host = Host::start_with(
        &[DomainSpec::new("localhost")],
        1,
        "allow_private_callbacks = true\ncallback_retry_for = \"2s\"",
    );
    assert_eq!(host.api("PUT", "/v1/domains/localhost/notify", Some(json!({"notify_url": rx.url()}))).0, 201);
    rx.answer.store(500, Ordering::SeqCst);
    push(&host, "live/cam1");
    host.wait_for("3 captures", Duration::from_secs(30), || sequential(&host, "cam1").len() == 3);
    // Every event the receiver was sent (3 captures, and the overwrite
    // object's replacements) ends up kept as failed.
    let told = || {
        rx.hits().iter().map(|h| h.body["id"].as_str().unwrap().to_owned()).collect::<std::collections::HashSet<_>>()
    };
    let n = std::cell::Cell::new(0);
    host.wait_for("kept as failed", Duration::from_secs(30), || {
        let failed = host.get_json("/v1/domains/localhost/notify/failed")["failed"].as_array().map_or(0, Vec::len);
        n.set(failed);
        failed >= 3 && failed == told().len()
    });
    let n = n.get();
    for r in sequential(&host, "cam1") {
        assert!(told().contains(r["id"].as_str().unwrap()), "{r}");
    }
    let failed = host.get_json("/v1/domains/localhost/notify/failed");
    for f in failed["failed"].as_array().unwrap() {
        assert_eq!(f["last_error"], "answered 500 Internal Server Error", "{f}");
        assert!(f["attempts"].as_u64().unwrap() >= 1);
    }
    assert!(rx.delivered().is_empty());
    // Replay one by id, then the rest.
    rx.answer.store(200, Ordering::SeqCst);
    let one = failed["failed"][0]["id"].as_str().unwrap();
    let (status, v) = host.api("POST", "/v1/domains/localhost/notify/failed/replay", Some(json!({"ids": [one]})));
    assert_eq!((status, &v["replayed"]), (200, &json!(1)));
    // `"ids": null` is "all", as documented (the same as no ids).
    let (_, v) = host.api("POST", "/v1/domains/localhost/notify/failed/replay", Some(json!({"ids": null})));
    assert_eq!(v["replayed"], n - 1);
    host.wait_for("all delivered", Duration::from_secs(30), || rx.delivered().len() == n);
    assert_eq!(host.get_json("/v1/domains/localhost/notify/failed")["failed"].as_array().unwrap().len(), 0);
    let (_, v) = host.api("POST", "/v1/domains/localhost/notify/failed/replay", Some(json!({})));
    assert_eq!(v["replayed"], 0, "nothing left to replay");
    let (status, v) = host.api("POST", "/v1/domains/localhost/notify/failed/replay", Some(json!({"ids": ["x"]})));
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter.Ids")));
}

#[test]
fn reconcile_drops_records_whose_objects_vanished_and_tells() {
    let rx = Receiver::start();
    let host = Host::start_with(&[DomainSpec::new("localhost")], 1, "allow_private_callbacks = true");
    assert_eq!(host.api("PUT", "/v1/domains/localhost/notify", Some(json!({"notify_url": rx.url()}))).0, 201);
    push(&host, "live/cam1");
    host.wait_for("3 captures", Duration::from_secs(30), || sequential(&host, "cam1").len() == 3);
    // A bucket lifecycle rule (here: a hand) removes one object.
    let gone = sequential(&host, "cam1")[1].clone();
    std::fs::remove_file(host.dir.path().join("objects/localhost").join(gone["object"].as_str().unwrap())).unwrap();
    let (status, v) = host.api("POST", "/v1/domains/localhost/snapshots/reconcile", None);
    assert_eq!((status, &v["checked"], &v["removed"]), (200, &json!(4), &json!(1)), "{v}");
    let left: Vec<String> = sequential(&host, "cam1").iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(left.len(), 2);
    assert!(!left.contains(&gone["id"].as_str().unwrap().to_owned()));
    let told = format!("{}-deleted", gone["id"].as_str().unwrap());
    host.wait_for("the deletion told", Duration::from_secs(30), || rx.delivered().contains_key(&told));
    let (_, v) = host.api("POST", "/v1/domains/localhost/snapshots/reconcile", None);
    assert_eq!((&v["checked"], &v["removed"]), (&json!(3), &json!(0)));
}

#[test]
fn a_domain_outbox_over_its_quota_drops_and_counts() {
    let rx = Receiver::start();
    rx.answer.store(503, Ordering::SeqCst);
    let host = Host::start_with(&[DomainSpec::new("localhost")], 1, "allow_private_callbacks = true\noutbox_quota = 2");
    assert_eq!(host.api("PUT", "/v1/domains/localhost/notify", Some(json!({"notify_url": rx.url()}))).0, 201);
    push(&host, "live/cam1");
    host.wait_for("3 captures", Duration::from_secs(30), || sequential(&host, "cam1").len() == 3);
    host.wait_for("the admitted ones tried", Duration::from_secs(30), || {
        rx.hits().iter().map(|h| h.body["id"].clone()).collect::<std::collections::HashSet<_>>().len() == 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let ids: std::collections::HashSet<Value> = rx.hits().iter().map(|h| h.body["id"].clone()).collect();
    assert_eq!(ids.len(), 2, "only the quota's worth waits: {ids:?}");
    let metrics = String::from_utf8(host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None).1).unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"edgesnap_callbacks_total{domain="localhost",outcome="dropped"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 1, "{metrics}");
    assert!(host.log().contains("the domain's callback outbox is full; event dropped"));
}
