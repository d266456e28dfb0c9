//! Anonymous HTTP clients cannot hold the edge (docs/configuration.md,
//! `http_*` limits): a connection that sends nothing, a request head or body
//! trickled byte by byte, more connections than the cap, and a full
//! descriptor table. Each limit is counted in `edgesnap_limit_hits_total`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{DomainSpec, Host, TOKEN, bin};

/// How long until the server closes `sock` (reads until EOF or reset), at most `within`.
fn closed_after(mut sock: TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match sock.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return None,
            Err(_) => return Some(start.elapsed()),
        }
    }
}

fn limit_hits(host: &Host, limit: &str) -> f64 {
    let (_, body) = host.try_get("/metrics").unwrap();
    let want = format!("edgesnap_limit_hits_total{{limit=\"{limit}\"}} ");
    String::from_utf8(body).unwrap().lines().find_map(|l| l.strip_prefix(&want)?.parse().ok()).unwrap_or(-1.0)
}

#[test]
fn slow_heads_and_bodies_are_cut_off_and_connections_are_capped() {
    let host = Host::start_with(
        &[DomainSpec::new("localhost")],
        1,
        "http_max_connections = 6\nhttp_header_timeout = \"2s\"\nhttp_body_timeout = \"2s\"",
    );
    let connect = || TcpStream::connect(("127.0.0.1", host.http_port)).unwrap();

    // A connection that never sends a byte.
    let idle = closed_after(connect(), Duration::from_secs(10)).expect("an idle connection is closed");
    assert!(idle >= Duration::from_millis(1500) && idle < Duration::from_secs(5), "closed after {idle:?}");

    // A request head trickled a byte every 300 ms.
    let mut slow = connect();
    slow.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
    let reader = slow.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if slow.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let cut = closed_after(reader, Duration::from_secs(10)).expect("a trickled head is cut off");
    assert!(cut < Duration::from_secs(5), "after {cut:?}");
    trickle.join().unwrap();

    // A body that stops arriving: 408, and the connection closes.
    let mut body = connect();
    write!(
        body,
        "POST /v1/domains/localhost/tokens HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    )
    .unwrap();
    body.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5), "after {:?}", started.elapsed());

    // Six connections held open: a seventh waits until they are cut off.
    let held: Vec<TcpStream> = (0..6).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut seventh = connect();
    seventh.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    seventh.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    let mut buf = [0u8; 64];
    let early = seventh.read(&mut buf);
    assert!(early.is_err(), "served while six connections were open: {early:?}");
    seventh.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = String::new();
    seventh.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "served once the held ones were cut off: {answer}");
    drop(held);

    // The six are cut within moments of each other; the seventh may be served after the first.
    host.wait_for("idle, trickled and six held cut off", Duration::from_secs(10), || {
        limit_hits(&host, "http_header_timeout") >= 8.0
    });
    assert_eq!(limit_hits(&host, "http_body_timeout"), 1.0);
    assert!(limit_hits(&host, "http_connections") >= 1.0);
    // Logged once per 10 s, not once per hit (the test takes about 10 s).
    let lines = host.log().lines().filter(|l| l.contains("limit reached") && l.contains("http_header_timeout")).count();
    assert!((1..=2).contains(&lines), "{lines} lines for 8 hits:\n{}", host.log());
}

#[test]
fn a_full_descriptor_table_backs_off_instead_of_spinning() {
    let mut host = Host::start_with(
        &[DomainSpec::new("localhost")],
        1,
        // Idle connections are held until the head timeout, so the table stays full while measured.
        "http_max_connections = 100000\nhttp_header_timeout = \"8s\"",
    );
    // The same binary under a limit of 256 descriptors.
    host.stop();
    let wrapper = host.dir.path().join("edgesnap-256-fds");
    std::fs::write(&wrapper, format!("#!/bin/sh\nulimit -n 256\nexec {} \"$@\"\n", bin())).unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&wrapper).status().unwrap();
    host.bin = wrapper;
    host.spawn();
    let listening: serde_json::Value =
        serde_json::from_slice(&std::fs::read(host.dir.path().join("data/listening.json")).unwrap()).unwrap();
    let pid = listening["pid"].as_u64().unwrap();
    let cpu = || -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };

    // More connections than it has descriptors: the rest wait in the backlog.
    let conns: Vec<TcpStream> = (0..400).map(|_| TcpStream::connect(("127.0.0.1", host.http_port)).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(1));
    let before = cpu();
    std::thread::sleep(Duration::from_secs(3));
    let spent = cpu() - before;
    assert!(spent < 0.5, "{spent:.2} s of CPU in 3 s with its descriptors used up");
    drop(conns);
    host.wait_for("serving again", Duration::from_secs(20), || matches!(host.try_get("/healthz"), Ok((200, _))));
    assert!(limit_hits(&host, "http_accept_errors") >= 1.0, "accepts failed: {}", host.log());
    let lines = host.log().lines().filter(|l| l.contains("limit reached") && l.contains("http_accept_errors")).count();
    assert!(lines <= 2, "logged once per 10 s, not per failure: {lines} lines\n{}", host.log());
}
