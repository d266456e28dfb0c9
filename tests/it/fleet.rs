//! The fleet (SPEC §9) with a real nats-server: nodes find each other
//! through their heartbeats, a node without NATS keeps serving, a node alone
//! says it is alone.

use std::time::{Duration, Instant};

use crate::harness::{DomainSpec, Host, NatsCluster, NatsServer, TOKEN, bin, output_within};
use crate::media::{Clip, ffmpeg_push};
use crate::pipeline::check_stream;
use crate::publisher::Publisher;

fn fleet_node(nats: &str, node_id: &str, roles: &str) -> Host {
    Host::start_with(
        &[DomainSpec::new("localhost")],
        1,
        &format!("\n[fleet]\nnats_url = \"{nats}\"\nnode_id = \"{node_id}\"\nroles = {roles}\n"),
    )
}

/// The nodes `host` lists in `GET /v1/fleet`, by node id.
fn nodes(host: &Host) -> Vec<serde_json::Value> {
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
    let out = output_within(
        std::process::Command::new(bin()).args([
            "fleet",
            "status",
            "--server",
            &format!("http://127.0.0.1:{}", a.http_port),
            "--token",
            TOKEN,
        ]),
        Duration::from_secs(20),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
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
    // Both nodes listed, each with a heartbeat younger than 3 s.
    let fresh = |host: &Host| {
        let list = nodes(host);
        list.len() == 2
            && ["edge-a", "edge-b"].iter().all(|id| {
                node(&list, id).is_some_and(|n| n["heartbeat_age_ms"].as_u64().is_some_and(|age| age < 3_000))
            })
    };
    a.wait_for("both nodes in the fleet", Duration::from_secs(30), || fresh(&a));
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
}

#[test]
fn while_nats_is_down_a_node_captures_and_then_rejoins() {
    let mut nats = NatsServer::start();
    let a = fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    a.wait_for("edge-a in the fleet", Duration::from_secs(15), || node(&nodes(&a), "edge-a").is_some());
    nats.kill();
    a.wait_for("503 while NATS is down", Duration::from_secs(15), || a.api("GET", "/v1/fleet", None).0 == 503);
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
    // A port nothing listens on: the node starts, ingests, and answers 503.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let host = fleet_node(&format!("nats://127.0.0.1:{port}"), "edge-d", r#"["edge"]"#);
    let (status, body) = host.api("GET", "/v1/fleet", None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "FleetUnavailable", "{body}");
    let mut publisher = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(publisher.publish("cam1").unwrap(), "ingest does not wait on NATS");

    // And a node alone has no fleet.
    let alone = Host::start(&[DomainSpec::new("localhost")], 1);
    let (status, body) = alone.api("GET", "/v1/fleet", None);
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["code"], "NotInFleet", "{body}");
}

fn mint_domain_token(host: &Host) -> String {
    let (status, body) = host.api("POST", "/v1/domains/localhost/tokens", Some(serde_json::json!({"label": "fleet"})));
    assert_eq!(status, 201, "{body}");
    body["token"].as_str().unwrap().to_owned()
}
