//! The fleet (SPEC §9) with a real nats-server: nodes find each other
//! through their heartbeats, a node without NATS keeps serving, a node alone
//! says it is alone.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{DomainSpec, Host, NatsCluster, NatsServer, TOKEN, bin, output_within};
use crate::media::{Clip, ffmpeg_push};
use crate::pipeline::check_stream;
use crate::publisher::Publisher;

fn fleet_section(nats: &str, node_id: &str, roles: &str) -> String {
    format!("\n[fleet]\nnats_url = \"{nats}\"\nnode_id = \"{node_id}\"\nroles = {roles}\n")
}

pub fn fleet_node(nats: &str, node_id: &str, roles: &str) -> Host {
    Host::start_with(&[DomainSpec::new("localhost")], 1, &fleet_section(nats, node_id, roles))
}

/// The nodes `host` lists in `GET /v1/fleet`, by node id.
pub fn nodes(host: &Host) -> Vec<serde_json::Value> {
    let (status, body) = host.api("GET", "/v1/fleet", None);
    if status != 200 {
        return Vec::new();
    }
    body["nodes"].as_array().cloned().unwrap_or_default()
}

fn node<'a>(list: &'a [serde_json::Value], id: &str) -> Option<&'a serde_json::Value> {
    list.iter().find(|n| n["node_id"] == id)
}

#[test]
fn nodes_see_each_other_through_nats() {
    let nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let mut b = fleet_node(&nats.url(), "edge-b", r#"["edge", "index"]"#);

    a.wait_for("both nodes in edge-a's fleet status", Duration::from_secs(15), || {
        let list = nodes(&a);
        node(&list, "edge-a").is_some() && node(&list, "edge-b").is_some()
    });
    let (status, body) = a.api("GET", "/v1/fleet", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["node_id"].as_str(), body["roles"].clone()), (Some("edge-a"), serde_json::json!(["edge"])));
    let list = body["nodes"].as_array().unwrap();
    let eb = node(list, "edge-b").unwrap();
    assert_eq!(eb["roles"], serde_json::json!(["edge", "index"]), "{eb}");
    assert_eq!(eb["silent"], false, "{eb}");
    assert!(eb["heartbeat_age_ms"].as_u64().unwrap() < 10_000, "{eb}");
    assert_eq!(eb["version"], env!("CARGO_PKG_VERSION"));
    // A domain token does not see the fleet.
    let (status, _) = a.api_as(&mint_domain_token(&a), "GET", "/v1/fleet", None);
    assert_eq!(status, 403);

    // A stream published on edge-b is counted in edge-a's view of it.
    let mut publisher = Publisher::connect(b.rtmp_port, "live").unwrap();
    assert!(publisher.publish("cam1").unwrap());
    a.wait_for("edge-b's live stream seen from edge-a", Duration::from_secs(10), || {
        node(&nodes(&a), "edge-b").is_some_and(|n| n["live_streams"] == 1)
    });
    assert_eq!(node(&nodes(&a), "edge-a").unwrap()["live_streams"], 0);

    // The CLI prints the same, asked through edge-a.
    let text = fleet_status_cli(&a);
    assert!(text.contains("asked: edge-a (edge)"), "{text}");
    let row_b = text.lines().find(|l| l.starts_with("edge-b")).unwrap_or_else(|| panic!("no edge-b row: {text}"));
    assert!(row_b.contains("edge,index") && row_b.contains("alive"), "{row_b}");

    // A node that stops leaves the fleet.
    drop(publisher);
    assert!(b.stop().is_some_and(|s| s.success()), "edge-b stopped cleanly");
    a.wait_for("edge-b gone from the fleet", Duration::from_secs(10), || {
        let list = nodes(&a);
        node(&list, "edge-a").is_some() && node(&list, "edge-b").is_none()
    });
}

#[test]
fn a_crashed_node_turns_silent() {
    let nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let mut c = fleet_node(&nats.url(), "edge-c", r#"["edge"]"#);
    a.wait_for("edge-c in the fleet", Duration::from_secs(15), || node(&nodes(&a), "edge-c").is_some());
    c.kill();
    let killed = Instant::now();
    a.wait_for("edge-c reported silent", Duration::from_secs(20), || {
        node(&nodes(&a), "edge-c").is_some_and(|n| n["silent"] == true)
    });
    assert!(killed.elapsed() >= Duration::from_secs(8), "silent only after ~10 s without a heartbeat");
}

#[test]
fn a_three_server_cluster_loses_a_server_and_the_fleet_goes_on() {
    let mut cluster = NatsCluster::start();
    let a = fleet_node(&cluster.urls(), "edge-a", r#"["edge"]"#);
    let b = fleet_node(&cluster.urls(), "edge-b", r#"["edge"]"#);
    let x = fleet_node(&cluster.urls(), "index-x", r#"["index"]"#);
    // Every node listed, each with a heartbeat younger than 3 s.
    let fresh = |host: &Host| {
        let list = nodes(host);
        list.len() == 3
            && ["edge-a", "edge-b", "index-x"].iter().all(|id| {
                node(&list, id).is_some_and(|n| n["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 3_000))
            })
    };
    a.wait_for("every node in the fleet", Duration::from_secs(30), || fresh(&a));
    let ((status, body), _) = change(&a, "POST", "/v1/domains/localhost/tokens", Some(json!({"label": "before"})));
    assert_eq!(status, 201, "{body}");
    for bucket in ["KV_EDGESNAP_CATALOG", "KV_EDGESNAP_STREAMS", "EDGESNAP_RECORDS"] {
        a.wait_for(&format!("{bucket} made"), Duration::from_secs(10), || cluster.stream_replicas(bucket).is_some());
        assert_eq!(cluster.stream_replicas(bucket), Some(3), "{bucket} is kept on three servers");
    }
    // The bucket of nodes is kept on three servers: its leader killed loses
    // nothing, and both nodes go on heartbeating through the other two.
    // Checked 4 s after the kill, a heartbeat younger than 3 s was written
    // after it.
    let leader = cluster.stream_leader("KV_EDGESNAP_NODES").expect("a server leads the nodes bucket");
    cluster.servers[leader].kill();
    std::thread::sleep(Duration::from_secs(4));
    for host in [&a, &b] {
        host.wait_for("fresh heartbeats of both nodes after a server died", Duration::from_secs(30), || fresh(host));
    }
    // The catalog is kept on three servers too: with one of them gone, a
    // change through one node still reaches the other.
    let ((status, body), _) = change(&b, "POST", "/v1/domains/localhost/tokens", Some(json!({"label": "after"})));
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    everywhere(&[&a], "a token made after a server died on edge-a", |h| {
        h.api_as(&token, "GET", "/v1/whoami", None).0 == 200
    });
    // And the record stream: a push to edge-b after the kill, every
    // snapshot (pictures checked) listed by the index node.
    let clip = Clip::new(640, 360, 11, 1);
    let out = ffmpeg_push(&clip.flv(), &b.rtmp_url("live/cam1"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_stream(&b, "localhost", "live", "cam1", &clip, 5);
    let own = listed(&b, "cam1");
    assert_eq!(own.len(), 3, "{own:?}");
    x.wait_for("edge-b's snapshots on the index node", Duration::from_secs(30), || listed(&x, "cam1") == own);
}

#[test]
fn while_nats_is_down_a_node_captures_and_then_rejoins() {
    let mut nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    a.wait_for("edge-a in the fleet", Duration::from_secs(15), || node(&nodes(&a), "edge-a").is_some());
    // edge-a holds the stream's lease last, so it may take the stream while NATS is away.
    held_last(&a, "cam1");
    nats.kill();
    a.wait_for("503 while NATS is down", Duration::from_secs(15), || a.api("GET", "/v1/fleet", None).0 == 503);
    // A stream it never held cannot be checked: refused, saying why.
    let mut never = Publisher::connect(a.rtmp_port, "live").unwrap();
    assert!(!never.publish("never").unwrap(), "a stream whose lease cannot be checked");
    assert!(never.said("this node did not hold it last"), "the refusal says why");
    // Capture does not wait on NATS: a real push, every snapshot stored and its pixels right.
    let clip = Clip::new(640, 360, 11, 1);
    let out = ffmpeg_push(&clip.flv(), &a.rtmp_url("live/cam1"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = check_stream(&a, "localhost", "live", "cam1", &clip, 5);
    assert!(records.len() >= 3, "{records:?}");
    // NATS back on its port with what it stored: the node heartbeats again.
    nats.restart();
    a.wait_for("edge-a heartbeating again", Duration::from_secs(30), || {
        node(&nodes(&a), "edge-a").is_some_and(|n| n["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 3_000))
    });
}

#[test]
fn without_nats_a_node_serves_and_says_so() {
    // A port nothing listens on: the node starts, answers 503, and answers
    // a publish at once: refused, as no node's lease on the stream can be
    // checked and this node never held it (SPEC §9).
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let host = fleet_node(&format!("nats://127.0.0.1:{port}"), "edge-d", r#"["edge"]"#);
    let (status, body) = host.api("GET", "/v1/fleet", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "FleetUnavailable", "{body}");
    let mut publisher = Publisher::connect(host.rtmp_port, "live").unwrap();
    let asked = Instant::now();
    assert!(!publisher.publish("cam1").unwrap());
    assert!(publisher.said("its fleet lease cannot be checked (NATS is unreachable)"), "refused, saying why");
    assert!(asked.elapsed() < Duration::from_secs(2), "without waiting on NATS: {:?}", asked.elapsed());

    // And a node alone has no fleet.
    let alone = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, body) = alone.api("GET", "/v1/fleet", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NotInFleet", "{body}");
}

/// Publishes `live/{stream}` on `host` and ends it: the node holds the
/// stream's fleet lease last.
fn held_last(host: &Host, stream: &str) {
    let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(p.publish(stream).unwrap(), "{stream} published on {}", host.rtmp_port);
}

/// What `edgesnap fleet status` prints, asked through `host` (it must succeed).
fn fleet_status_cli(host: &Host) -> String {
    let out = output_within(
        std::process::Command::new(bin()).args([
            "fleet",
            "status",
            "--server",
            &format!("http://127.0.0.1:{}", host.http_port),
            "--token",
            TOKEN,
        ]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

fn mint_domain_token(host: &Host) -> String {
    let (status, body) = host.api("POST", "/v1/domains/localhost/tokens", Some(serde_json::json!({"label": "fleet"})));
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// A change through the API, retried while the node's control plane is
/// not following NATS yet (503) or another node changed the same domain
/// first (409 `ConcurrentChange`). The final answer, and how many tries.
fn change(host: &Host, method: &str, path: &str, body: Option<Value>) -> ((u16, Value), u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tries = 0;
    loop {
        tries += 1;
        let (status, answer) = host.api(method, path, body.clone());
        let retry = (status == 503 && answer["code"] == "ControlPlaneUnavailable")
            || (status == 409 && answer["code"] == "ConcurrentChange");
        if !retry || Instant::now() > deadline {
            return ((status, answer), tries);
        }
        std::thread::sleep(Duration::from_millis(if status == 503 { 200 } else { 5 }));
    }
}

/// How long until `f` holds on every node (panics after 10 s).
fn everywhere(hosts: &[&Host], what: &str, f: impl Fn(&Host) -> bool) -> Duration {
    let started = Instant::now();
    for host in hosts {
        host.wait_for(what, Duration::from_secs(10), || f(host));
    }
    let took = started.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

#[test]
fn a_change_through_any_node_is_in_force_on_every_node() {
    let nats = NatsServer::start();
    let (a, b, c) = (
        fleet_node(&nats.url(), "edge-a", r#"["edge"]"#),
        fleet_node(&nats.url(), "edge-b", r#"["edge"]"#),
        fleet_node(&nats.url(), "edge-c", r#"["edge"]"#),
    );
    let all = [&a, &b, &c];
    let shared = tempfile::tempdir().unwrap();

    // A domain made through edge-a.
    let domain = json!({"storage": {"s": {"type": "local", "path": shared.path().join("tenant")}}});
    let ((status, body), _) = change(&a, "PUT", "/v1/domains/tenant.example.com", Some(domain));
    assert_eq!(status, 201, "{body}");
    let took =
        everywhere(&all, "the domain on every node", |h| h.api("GET", "/v1/domains/tenant.example.com", None).0 == 200);
    assert!(took <= Duration::from_secs(2), "the domain reached every node in {took:?}");

    // A template made through edge-b captures a stream pushed to edge-c:
    // every 10 s of content, where the file's `*` template takes every 5 s.
    let template = json!({"app_name": "cams", "time_interval": 10, "storage": "store",
                          "overwrite_object": "{AppName}/{StreamName}.jpg",
                          "sequence_object": "{AppName}/{StreamName}/{UnixTimestamp}.jpg"});
    let ((status, body), _) = change(&b, "POST", "/v1/domains/localhost/snapshot-configs", Some(template));
    assert_eq!(status, 201, "{body}");
    let took = everywhere(&all, "the template on every node", |h| {
        h.api("GET", "/v1/domains/localhost/snapshot-configs/cams", None).0 == 200
    });
    assert!(took <= Duration::from_secs(2), "the template reached every node in {took:?}");
    let clip = Clip::new(640, 360, 30, 1);
    let out = ffmpeg_push(&clip.flv(), &c.rtmp_url("cams/door"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records = check_stream(&c, "localhost", "cams", "door", &clip, 10);
    assert_eq!(records.iter().filter(|r| r["is_overlay"] == false).count(), 3, "0, 10, 20 s: {records:#?}");
    // Image URLs are signed with the fleet's key: edge-a accepts edge-c's
    // signature (and has no such record: 404), refuses a forged one (403).
    let url = records[0]["url"].as_str().unwrap();
    let path = &url[url.find("/v1/").unwrap()..];
    let (status, body) = c.raw_request(None, "GET", path, None);
    assert_eq!((status, &body[..2]), (200, &[0xff, 0xd8][..]), "edge-c serves its own signed URL");
    let (status, body) = a.raw_request(None, "GET", path, None);
    assert_eq!(status, 404, "edge-a verifies edge-c's signature: {}", String::from_utf8_lossy(&body));
    let forged = format!("{}0", &path[..path.len() - 1]).replace("sig=", "sig=0");
    assert_eq!(a.raw_request(None, "GET", &forged, None).0, 403, "a forged signature");

    // A token minted through edge-c opens edge-a; notify settings (their
    // key sealed with the fleet's key) made through edge-a read on edge-b.
    let ((status, minted), _) =
        change(&c, "POST", "/v1/domains/tenant.example.com/tokens", Some(json!({"label": "fleet"})));
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();
    let took = everywhere(&all, "the token accepted by every node", |h| {
        h.api_as(&token, "GET", "/v1/domains/tenant.example.com/snapshot-configs", None).0 == 200
    });
    assert!(took <= Duration::from_secs(2), "the token reached every node in {took:?}");
    let notify = json!({"notify_url": "https://biz.example.com/hook", "notify_req_auth": "yes", "notify_auth_key": "fleetKey1234567890"});
    let ((status, body), _) = change(&a, "PUT", "/v1/domains/tenant.example.com/notify", Some(notify.clone()));
    assert_eq!(status, 201, "{body}");
    let took = everywhere(&all, "the notify settings on every node", |h| {
        h.api("GET", "/v1/domains/tenant.example.com/notify", None).1["notify_url"] == notify["notify_url"]
    });
    assert!(took <= Duration::from_secs(2), "the notify settings reached every node in {took:?}");

    // A plugin uploaded through edge-a and activated through edge-b names
    // the captures of a stream pushed to edge-c.
    let (status, uploaded) = crate::plugins::upload(&a, crate::plugins::example("date_folders"));
    assert_eq!(status, 201, "{uploaded}");
    let version = uploaded["version"].as_str().unwrap().to_owned();
    let ((status, body), _) = change(&b, "POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None);
    assert_eq!(status, 200, "{body}");
    let took = everywhere(&all, "the plugin active on every node", |h| {
        h.api("GET", "/v1/domains/localhost/plugins", None).1["active"] == version.as_str()
    });
    assert!(took <= Duration::from_secs(2), "the activation reached every node in {took:?}");
    c.wait_for("edge-c using the plugin", Duration::from_secs(10), || {
        c.log().contains("plugin activated on another node is in force here")
    });
    let keys = crate::plugins::push(&c, "dated");
    assert!(keys.iter().all(|k| crate::plugins::is_date_folder_key(k, "dated")), "{keys:?}");

    // Deleted through edge-b: gone everywhere, its token with it.
    let ((status, body), _) = change(&b, "DELETE", "/v1/domains/tenant.example.com", None);
    assert_eq!(status, 200, "{body}");
    let took = everywhere(&all, "the domain gone from every node", |h| {
        h.api("GET", "/v1/domains/tenant.example.com", None).0 == 404
            && h.api_as(&token, "GET", "/v1/whoami", None).0 == 401
    });
    assert!(took <= Duration::from_secs(2), "the deletion reached every node in {took:?}");
}

/// Two nodes mint tokens in one domain at once: each write is a
/// compare-and-set on the domain's revision, the loser retries on 409
/// `ConcurrentChange`, and no token is lost.
#[test]
fn concurrent_changes_through_two_nodes_lose_nothing() {
    let nats = NatsServer::start();
    let (a, b) = (fleet_node(&nats.url(), "edge-a", r#"["edge"]"#), fleet_node(&nats.url(), "edge-b", r#"["edge"]"#));
    // Both following the control plane: a first change through each.
    for (host, label) in [(&a, "warm-a"), (&b, "warm-b")] {
        let ((status, body), _) = change(host, "POST", "/v1/domains/localhost/tokens", Some(json!({"label": label})));
        assert_eq!(status, 201, "{body}");
    }
    a.wait_for("both warm-up tokens on edge-a", Duration::from_secs(10), || tokens(&a).len() == 2);
    let mint = |host: &Host, who: &str| {
        let mut minted = Vec::new();
        let mut retried = 0;
        for i in 0..15 {
            let ((status, body), tries) =
                change(host, "POST", "/v1/domains/localhost/tokens", Some(json!({"label": format!("{who}-{i}")})));
            assert_eq!(status, 201, "{body}");
            retried += tries - 1;
            minted.push(body["token"].as_str().unwrap().to_owned());
        }
        (minted, retried)
    };
    let ((from_a, retried_a), (from_b, retried_b)) = std::thread::scope(|s| {
        let ta = s.spawn(|| mint(&a, "a"));
        let tb = s.spawn(|| mint(&b, "b"));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    eprintln!("409 ConcurrentChange retries: through edge-a {retried_a}, through edge-b {retried_b}");
    for host in [&a, &b] {
        host.wait_for("all 32 tokens listed", Duration::from_secs(10), || tokens(host).len() == 32);
        for token in from_a.iter().chain(&from_b) {
            assert_eq!(host.api_as(token, "GET", "/v1/whoami", None).0, 200, "every minted token opens every node");
        }
    }
}

fn tokens(host: &Host) -> Vec<Value> {
    host.api("GET", "/v1/domains/localhost/tokens", None).1["tokens"].as_array().cloned().unwrap_or_default()
}

/// A node starts from its copy of the control plane when NATS is down,
/// refuses changes meanwhile (nothing made on one node only), and catches
/// up with what changed while it was away once NATS is back.
#[test]
fn a_node_starts_from_its_copy_without_nats_and_catches_up() {
    let mut nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let mut b = fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    let shared = tempfile::tempdir().unwrap();
    let domain = json!({"storage": {"s": {"type": "local", "path": shared.path().join("tenant")}}});
    let ((status, body), _) = change(&a, "PUT", "/v1/domains/tenant.example.com", Some(domain));
    assert_eq!(status, 201, "{body}");
    everywhere(&[&b], "the domain on edge-b", |h| h.api("GET", "/v1/domains/tenant.example.com", None).0 == 200);

    // edge-b away; a template made meanwhile; then NATS goes too.
    assert!(b.stop().is_some_and(|s| s.success()), "edge-b stopped cleanly");
    let template =
        json!({"app_name": "cams", "time_interval": 10, "storage": "s", "overwrite_object": "{StreamName}.jpg"});
    let ((status, body), _) = change(&a, "POST", "/v1/domains/tenant.example.com/snapshot-configs", Some(template));
    assert_eq!(status, 201, "{body}");
    nats.kill();

    // edge-b starts on its copy: the domain it saw is in force, the
    // template it did not see is not, and changes wait for NATS.
    b.spawn();
    assert_eq!(b.api("GET", "/v1/domains/tenant.example.com", None).0, 200, "from the copy");
    assert_eq!(b.api("GET", "/v1/domains/tenant.example.com/snapshot-configs/cams", None).0, 404);
    let (status, body) = b.api("POST", "/v1/domains/tenant.example.com/tokens", Some(json!({"label": "x"})));
    assert_eq!((status, body["code"].as_str()), (503, Some("ControlPlaneUnavailable")), "{body}");
    assert_eq!(
        b.api("GET", "/v1/domains/tenant.example.com/tokens", None).1["tokens"],
        json!([]),
        "nothing made locally"
    );

    // NATS back: edge-b catches up, and changes through it work again.
    nats.restart();
    b.wait_for("edge-b caught up with the template", Duration::from_secs(30), || {
        b.api("GET", "/v1/domains/tenant.example.com/snapshot-configs/cams", None).0 == 200
    });
    let ((status, body), _) = change(&b, "POST", "/v1/domains/tenant.example.com/tokens", Some(json!({"label": "x"})));
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    everywhere(&[&a], "edge-b's token on edge-a", |h| h.api_as(&token, "GET", "/v1/whoami", None).0 == 200);
}

/// The sequential records of a stream as `host` lists them: (id, object, node).
fn listed(host: &Host, stream: &str) -> Vec<(String, String, String)> {
    listed_in(host, "localhost", stream)
}

/// A stream's sequential snapshots as `host` lists them: (id, object, node), sorted.
fn listed_in(host: &Host, domain: &str, stream: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = host
        .snapshots(domain, "live", Some(stream))
        .iter()
        .filter(|r| r["is_overlay"] == false)
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            (s("id"), s("object"), s("node"))
        })
        .collect();
    out.sort();
    out
}

/// Every snapshot two edges store is listed by the index node, with the
/// node that stored it, once; the edges' outboxes drain to 0.
#[test]
fn the_index_node_lists_every_edges_snapshots() {
    let nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let b = fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    let x = fleet_node(&nats.url(), "index-x", r#"["index"]"#);
    let clip = Clip::new(640, 360, 21, 1);
    for (host, stream) in [(&a, "cam1"), (&b, "cam2")] {
        let out = ffmpeg_push(&clip.flv(), &host.rtmp_url(&format!("live/{stream}")), false);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check_stream(host, "localhost", "live", stream, &clip, 5);
    }
    for (host, stream, node) in [(&a, "cam1", "edge-a"), (&b, "cam2", "edge-b")] {
        let own = listed(host, stream);
        assert_eq!(own.len(), 5, "{own:?}");
        assert!(own.iter().all(|(_, _, n)| n == node), "records carry their node: {own:?}");
        x.wait_for(&format!("{stream} on the index node"), Duration::from_secs(15), || listed(&x, stream) == own);
    }
    // An index node takes no publishes.
    let mut p = Publisher::connect(x.rtmp_port, "live").unwrap();
    assert!(!p.publish("cam9").unwrap(), "refused on an index node");
    assert!(p.said("has no \"edge\" role in the fleet"), "saying why");
    // The whole app across edges, in time order, and each edge still answers for its own.
    let all = x.snapshots("localhost", "live", None);
    assert_eq!(all.iter().filter(|r| r["is_overlay"] == false).count(), 10);
    assert_eq!(all.iter().filter(|r| r["is_overlay"] == true).count(), 2, "one overwrite record per stream");
    assert!(listed(&a, "cam2").is_empty() && listed(&b, "cam1").is_empty());
    // An image stored on edge-a's local directory, asked of the index node
    // (with a token, and by the signed URL it lists): redirected to edge-a.
    let item = x.snapshots("localhost", "live", Some("cam1")).into_iter().find(|r| r["is_overlay"] == false).unwrap();
    let object = a.objects("localhost").get(item["object"].as_str().unwrap());
    let by_token = x.raw_request(
        Some(TOKEN),
        "GET",
        &format!("/v1/domains/localhost/snapshots/{}.jpg", item["id"].as_str().unwrap()),
        None,
    );
    assert_eq!(by_token, (200, object.clone()), "the bytes edge-a stored");
    let url = item["url"].as_str().unwrap();
    let signed = x.raw_request(None, "GET", &url[url.find("/v1/").unwrap()..], None);
    assert_eq!(signed, (200, object), "through the index node's signed URL");
    // Deleted through the index node: edge-a deletes its record and object,
    // and neither lists it any more.
    let id = item["id"].as_str().unwrap().to_owned();
    let key = item["object"].as_str().unwrap().to_owned();
    let (status, body) =
        x.api("POST", "/v1/domains/localhost/snapshots/delete", Some(json!({"ids": [id], "remove_file": true})));
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["records_deleted"].as_u64(), body["files_removed"].as_u64()), (Some(1), Some(1)), "{body}");
    assert!(!a.objects("localhost").keys("live/cam1").contains(&key), "the object is gone from edge-a's directory");
    assert!(listed(&a, "cam1").iter().all(|(i, _, _)| *i != id), "edge-a's record is gone");
    assert!(listed(&x, "cam1").iter().all(|(i, _, _)| *i != id), "the index node's copy is gone");
    assert_eq!(listed(&x, "cam1"), listed(&a, "cam1"));
    x.wait_for("outboxes empty, index lag 0", Duration::from_secs(10), || {
        let list = nodes(&x);
        ["edge-a", "edge-b"].iter().all(|id| node(&list, id).is_some_and(|n| n["outbox_depth"] == 0))
            && node(&list, "index-x").is_some_and(|n| n["index_lag"] == 0)
    });
}

/// NATS away while an edge captures: records wait in its outbox (counted
/// in `/readyz`) and reach the index node once NATS is back; the index
/// node SIGKILLed three times while records flow: each listed once.
#[test]
fn records_survive_nats_down_and_index_node_crashes() {
    let mut nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let mut x = fleet_node(&nats.url(), "index-x", r#"["index"]"#);
    a.wait_for("edge-a in the fleet", Duration::from_secs(15), || node(&nodes(&a), "index-x").is_some());
    held_last(&a, "offline");
    nats.kill();
    let clip = Clip::new(640, 360, 21, 1);
    let out = ffmpeg_push(&clip.flv(), &a.rtmp_url("live/offline"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_stream(&a, "localhost", "live", "offline", &clip, 5);
    let own = listed(&a, "offline");
    assert_eq!(own.len(), 5, "{own:?}");
    let ready = a.get_json("/readyz");
    assert_eq!(ready["fleet"]["connected"], false, "{ready}");
    assert!(ready["fleet"]["outbox_depth"].as_u64().unwrap() >= 5, "waiting in the outbox: {ready}");
    nats.restart();
    x.wait_for("the offline captures on the index node", Duration::from_secs(30), || listed(&x, "offline") == own);
    a.wait_for("the outbox drained", Duration::from_secs(10), || a.get_json("/readyz")["fleet"]["outbox_depth"] == 0);

    // Three streams pushed in real time one after another; the index node
    // killed in the middle of each (after its first capture).
    let short = Clip::new(640, 360, 11, 1);
    let mut expected = Vec::new();
    for i in 0..3 {
        let stream = format!("crash{i}");
        let url = a.rtmp_url(&format!("live/{stream}"));
        let flv = short.flv();
        let push = std::thread::spawn(move || ffmpeg_push(&flv, &url, true));
        std::thread::sleep(Duration::from_millis(2500));
        x.kill();
        x.spawn();
        assert!(push.join().unwrap().status.success());
        check_stream(&a, "localhost", "live", &stream, &short, 5);
        let own = listed(&a, &stream);
        assert_eq!(own.len(), 3, "{own:?}");
        expected.push((stream.clone(), own));
    }
    for (stream, own) in &expected {
        x.wait_for(&format!("{stream} on the index node"), Duration::from_secs(30), || listed(&x, stream) == *own);
    }
}

/// The sequential records' `{Sequence}` numbers of `live/{stream}` on a host, in capture order.
fn sequences(host: &Host, stream: &str) -> Vec<u64> {
    let mut records: Vec<Value> =
        host.snapshots("localhost", "live", Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect();
    records.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    records.iter().map(|r| r["sequence"].as_u64().unwrap()).collect()
}

/// A stream pushed to edge-a, then edge-b, then edge-c: `{Sequence}`
/// strictly increasing across the three, every object listed once by the
/// index node; a second publisher on another node refused while one is
/// live; a silent holder's stream taken over after 10 s.
#[test]
fn a_stream_moves_between_edges_and_its_sequence_goes_on() {
    let nats = NatsServer::start();
    let mut a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let b = fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    let c = fleet_node(&nats.url(), "edge-c", r#"["edge"]"#);
    let x = fleet_node(&nats.url(), "index-x", r#"["index"]"#);
    x.wait_for("four nodes", Duration::from_secs(15), || nodes(&x).len() == 4);

    let clip = Clip::new(640, 360, 11, 1);
    let mut all = Vec::new();
    let mut last: Option<u64> = None;
    for host in [&a, &b, &c] {
        let out = ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam1"), false);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check_stream(host, "localhost", "live", "cam1", &clip, 5);
        let seqs = sequences(host, "cam1");
        assert_eq!(seqs.len(), 3, "{seqs:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "increasing on one node: {seqs:?}");
        assert!(last.is_none_or(|l| seqs[0] > l), "{seqs:?} continues past {last:?}");
        last = seqs.last().copied();
        all.extend(listed(host, "cam1"));
    }
    all.sort();
    x.wait_for("every edge's captures listed once by the index node", Duration::from_secs(15), || {
        listed(&x, "cam1") == all
    });

    // One live publisher per stream in the fleet.
    let mut first = Publisher::connect(a.rtmp_port, "live").unwrap();
    assert!(first.publish("dup").unwrap());
    let mut second = Publisher::connect(c.rtmp_port, "live").unwrap();
    assert!(!second.publish("dup").unwrap(), "refused on another node");
    assert!(
        second.said("is already being published by a live session (on node edge-a)"),
        "the refusal names the holder"
    );
    // edge-a dies with the stream: its lease goes silent and edge-c takes it after 10 s.
    a.kill();
    let killed = Instant::now();
    c.wait_for("edge-c taking the silent stream over", Duration::from_secs(30), || {
        Publisher::connect(c.rtmp_port, "live").is_ok_and(|mut p| p.publish("dup").unwrap_or(false))
    });
    assert!(killed.elapsed() >= Duration::from_secs(7), "not before the lease went silent: {:?}", killed.elapsed());
}

/// 20 streams on two edges, pushed in real time for 90 s; NATS killed for
/// 60 s in the middle: every snapshot stored (pictures checked) and every
/// one listed by the index node once NATS is back.
#[test]
fn nats_down_under_twenty_live_streams_loses_no_snapshot() {
    let mut nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let b = fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    let x = fleet_node(&nats.url(), "index-x", r#"["index"]"#);
    x.wait_for("three nodes", Duration::from_secs(15), || nodes(&x).len() == 3);
    let clip = Clip::new(320, 180, 30, 1);
    let pushes: Vec<_> =
        (0..20)
            .map(|i| {
                let host = if i % 2 == 0 { &a } else { &b };
                let url = host.rtmp_url(&format!("live/s{i}"));
                let flv = clip.flv();
                std::thread::spawn(move || {
                    // Three times through the 30 s clip, in real time.
                    let mut cmd = std::process::Command::new("ffmpeg");
                    cmd.args(["-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "2", "-i"])
                        .arg(&flv)
                        .args(["-c", "copy", "-rw_timeout", "10000000", "-f", "flv", &url]);
                    crate::harness::output_within(&mut cmd, Duration::from_secs(150))
                })
            })
            .collect();
    std::thread::sleep(Duration::from_secs(12));
    nats.kill();
    std::thread::sleep(Duration::from_secs(60));
    let depth = |h: &Host| h.get_json("/readyz")["fleet"]["outbox_depth"].as_u64().unwrap();
    assert!(depth(&a) > 0 && depth(&b) > 0, "records wait in the outboxes: {} / {}", depth(&a), depth(&b));
    nats.restart();
    for p in pushes {
        let out = p.join().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    for i in 0..20 {
        let host = if i % 2 == 0 { &a } else { &b };
        let stream = format!("s{i}");
        host.wait_for(&format!("{stream}'s 18 captures"), Duration::from_secs(30), || {
            listed(host, &stream).len() >= 18
        });
        std::thread::sleep(Duration::from_millis(200));
        let own = listed(host, &stream);
        assert!((18..=19).contains(&own.len()), "90 s at one per 5 s: {own:?}");
        for (_, object, _) in &own {
            let pic = crate::media::decode(&host.objects("localhost").get(object));
            assert_eq!((pic.width as u32, pic.height as u32), (320, 180), "{object}");
        }
        x.wait_for(&format!("{stream} on the index node"), Duration::from_secs(60), || listed(&x, &stream) == own);
    }
    for h in [&a, &b] {
        h.wait_for("the outbox drained", Duration::from_secs(10), || depth(h) == 0);
    }
}

/// A node that cannot put in force the plugin activated elsewhere (here:
/// it cannot keep the component, its `data_dir/plugins` broken) keeps the
/// previous policy and says why in the fleet's status.
#[test]
fn a_node_that_cannot_use_an_activated_plugin_says_so() {
    let nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let b = fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    let plugins = b.dir.path().join("data/plugins");
    std::fs::remove_dir_all(&plugins).unwrap();
    std::fs::write(&plugins, b"not a directory").unwrap();
    // The first change through each node waits until both follow the control plane.
    let ((status, body), _) = change(&a, "POST", "/v1/domains/localhost/tokens", Some(json!({"label": "warm"})));
    assert_eq!(status, 201, "{body}");
    everywhere(&[&b], "edge-b following", |h| tokens(h).len() == 1);
    let (status, uploaded) = crate::plugins::upload(&a, crate::plugins::example("date_folders"));
    assert_eq!(status, 201, "{uploaded}");
    let version = uploaded["version"].as_str().unwrap().to_owned();
    let ((status, body), _) = change(&a, "POST", &format!("/v1/domains/localhost/plugins/{version}/activate"), None);
    assert_eq!(status, 200, "{body}");
    a.wait_for("edge-b's problem in the fleet status", Duration::from_secs(10), || {
        node(&nodes(&a), "edge-b")
            .is_some_and(|n| n["plugin_problems"]["localhost"].as_str().is_some_and(|p| p.contains(&version)))
    });
    assert_eq!(node(&nodes(&a), "edge-a").unwrap()["plugin_problems"], json!({}), "edge-a has it in force");
    // edge-b keeps the default policy: its captures are named by the template.
    let keys = crate::plugins::push(&b, "kept");
    assert!(keys.iter().all(|k| !crate::plugins::is_date_folder_key(k, "kept")), "{keys:?}");
    let text = fleet_status_cli(&a);
    assert!(text.contains("edge-b: domain localhost: plugin not in force: version"), "{text}");
}

/// Two index nodes share the fleet by domain, assigned through any node's
/// API: each lists its domains' snapshots and answers 421 for the other's,
/// naming the node that keeps it; a domain added to a node is read there
/// from the stream's start, one removed is no longer answered, and a node
/// whose assignment is cleared keeps every domain again.
#[test]
fn two_index_nodes_share_the_fleet_by_domain() {
    let nats = NatsServer::start();
    let domains = [DomainSpec::new("localhost"), DomainSpec::new("two.example")];
    let start = |id: &str, roles: &str| Host::start_with(&domains, 1, &fleet_section(&nats.url(), id, roles));
    let a = start("edge-a", r#"["edge"]"#);
    let assign = |host: &Host, node: &str, domains: Value| {
        host.wait_for(&format!("{node} assigned {domains}"), Duration::from_secs(15), || {
            let (status, body) = host.api("PUT", &format!("/v1/fleet/index/{node}"), Some(json!({"domains": domains})));
            assert!(status == 200 || status == 503, "{status} {body}");
            status == 200 && body["domains"] == domains
        })
    };
    assign(&a, "index-1", json!(["localhost"]));
    assign(&a, "index-2", json!(["two.example"]));
    for bad in [json!({"domains": []}), json!({"domains": ["no such/name"]}), json!({"domain": ["localhost"]})] {
        let (status, body) = a.api("PUT", "/v1/fleet/index/index-1", Some(bad.clone()));
        assert_eq!(status, 400, "{bad} refused: {body}");
    }
    let (status, body) = a.api("GET", "/v1/fleet/index", None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["assignments"],
        json!([{"node_id": "index-1", "domains": ["localhost"]}, {"node_id": "index-2", "domains": ["two.example"]}])
    );
    let (x1, x2) = (start("index-1", r#"["index"]"#), start("index-2", r#"["index"]"#));

    let clip = Clip::new(640, 360, 21, 1);
    for (domain, stream, path) in
        [("localhost", "cam1", "live/cam1"), ("two.example", "cam2", "live/cam2?vhost=two.example")]
    {
        let out = ffmpeg_push(&clip.flv(), &a.rtmp_url(path), false);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        check_stream(&a, domain, "live", stream, &clip, 5);
    }
    let (own1, own2) = (listed_in(&a, "localhost", "cam1"), listed_in(&a, "two.example", "cam2"));
    assert_eq!((own1.len(), own2.len()), (5, 5), "{own1:?} {own2:?}");
    x1.wait_for("localhost on index-1", Duration::from_secs(15), || listed_in(&x1, "localhost", "cam1") == own1);
    x2.wait_for("two.example on index-2", Duration::from_secs(15), || listed_in(&x2, "two.example", "cam2") == own2);
    let query = |host: &Host, domain: &str| {
        let range = "start_time=2000-01-01T00:00:00Z&end_time=2100-01-01T00:00:00Z";
        host.api("GET", &format!("/v1/domains/{domain}/snapshots?app=live&{range}"), None)
    };
    for (asked, domain, keeper) in [(&x1, "two.example", &x2), (&x2, "localhost", &x1)] {
        let (status, body) = query(asked, domain);
        assert_eq!((status, body["code"].as_str()), (421, Some("NotIndexedHere")), "{body}");
        assert_eq!(body["index_nodes"].as_array().map(Vec::len), Some(1), "{body}");
        let named = &body["index_nodes"][0];
        assert!(named["url"].as_str().unwrap().ends_with(&format!(":{}", keeper.http_port)), "{body}");
        assert!(body["message"].as_str().unwrap().contains(named["node_id"].as_str().unwrap()), "{body}");
    }
    let list = nodes(&a);
    assert_eq!(node(&list, "index-1").unwrap()["index_domains"], json!(["localhost"]));
    assert_eq!(node(&list, "index-2").unwrap()["index_domains"], json!(["two.example"]));
    assert!(node(&list, "edge-a").unwrap().get("index_domains").is_none(), "only index nodes say");
    let printed = fleet_status_cli(&a);
    assert!(printed.contains("index-1: indexes domains localhost"), "{printed}");

    // two.example added to index-1 (through an index node's API): its
    // history is read there, and localhost stays listed once.
    assign(&x2, "index-1", json!(["localhost", "two.example"]));
    x1.wait_for("two.example's history on index-1", Duration::from_secs(20), || {
        query(&x1, "two.example").0 == 200 && listed_in(&x1, "two.example", "cam2") == own2
    });
    assert_eq!(listed_in(&x1, "localhost", "cam1"), own1);
    // index-2 moved to localhost only: two.example is no longer answered there.
    assign(&a, "index-2", json!(["localhost"]));
    x2.wait_for("index-2 keeps localhost only", Duration::from_secs(20), || {
        query(&x2, "two.example").0 == 421 && listed_in(&x2, "localhost", "cam1") == own1
    });
    // Who keeps it comes from heartbeats (every 2 s, and at once after a change).
    x2.wait_for("index-2 names index-1 as the keeper of two.example", Duration::from_secs(5), || {
        let (_, body) = query(&x2, "two.example");
        body["index_nodes"].as_array().is_some_and(|n| n.len() == 1 && n[0]["node_id"] == "index-1")
    });
    // New records follow the new filters.
    let out = ffmpeg_push(&clip.flv(), &a.rtmp_url("live/cam3?vhost=two.example"), false);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_stream(&a, "two.example", "live", "cam3", &clip, 5);
    let own3 = listed_in(&a, "two.example", "cam3");
    x1.wait_for("cam3 on index-1", Duration::from_secs(15), || listed_in(&x1, "two.example", "cam3") == own3);
    // Cleared: index-2 keeps every domain again.
    let (status, body) = a.api("DELETE", "/v1/fleet/index/index-2", None);
    assert_eq!(status, 204, "{body}");
    x2.wait_for("every domain on index-2 again", Duration::from_secs(20), || {
        query(&x2, "two.example").0 == 200
            && listed_in(&x2, "two.example", "cam2") == own2
            && listed_in(&x2, "two.example", "cam3") == own3
            && listed_in(&x2, "localhost", "cam1") == own1
    });
}
