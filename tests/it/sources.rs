//! Pull sources through the real host: RTSP served by GStreamer's RTSP
//! server library (a small script run with Debian's python3), pulled over
//! TCP and UDP, with and without credentials; what they store is checked by
//! its pixels, as for pushes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{DomainSpec, Host};
use crate::media::{Clip, Video, decode};

/// GStreamer's RTSP server on 127.0.0.1 (port 0: the OS picks): prints the bound port,
/// then one line per client that connects. With a user and password,
/// only they may play.
const RTSP_SERVER: &str = r#"
import sys, gi
gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0')
from gi.repository import Gst, GstRtspServer, GLib
Gst.init(None)
launch, user, password, port = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(launch)
factory.set_shared(False)
if user:
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_role_from_structure(Gst.Structure.new_empty("viewer"))
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/cam", factory)
server.connect("client-connected", lambda s, c: print("client", flush=True))
server.attach(None)
print(server.get_bound_port(), flush=True)
GLib.MainLoop().run()
"#;

/// A running RTSP server serving one file at `/cam`, in real time.
pub struct RtspServer {
    child: Child,
    pub port: u16,
    lines: std::sync::mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl RtspServer {
    /// Serves an MPEG-TS file of `codec`, optionally behind basic auth.
    pub fn start(ts: &Path, codec: Video, auth: Option<(&str, &str)>) -> RtspServer {
        RtspServer::start_on(ts, codec, auth, 0)
    }

    /// The same, on a given port (0: the OS picks; else one this test had).
    pub fn start_on(ts: &Path, codec: Video, auth: Option<(&str, &str)>, port: u16) -> RtspServer {
        let (parse, pay) = match codec {
            Video::H264 => ("h264parse", "rtph264pay"),
            _ => ("h265parse", "rtph265pay"),
        };
        let launch = format!(
            "( filesrc location={} ! tsdemux ! {parse} ! {pay} name=pay0 pt=96 config-interval=-1 )",
            ts.display()
        );
        RtspServer::serve(&launch, auth, port)
    }

    /// Serves what a GStreamer launch line makes (its payloader `pay0`).
    pub fn serve(launch: &str, auth: Option<(&str, &str)>, port: u16) -> RtspServer {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("rtsp_server.py");
        std::fs::write(&script, RTSP_SERVER).unwrap();
        let (user, password) = auth.unwrap_or(("", ""));
        // Debian's python3 has the GObject bindings (scripts/setup.sh installs them).
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .args([launch, user, password, &port.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start /usr/bin/python3 with the RTSP server");
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let port = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("the RTSP server prints its port")
            .trim()
            .parse()
            .expect("a port");
        RtspServer { child, port, lines, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    /// Clients that connected so far.
    pub fn clients(&self) -> usize {
        self.lines.try_iter().filter(|l| l == "client").count()
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The clip as MPEG-TS, as a camera's server would stream it.
pub fn ts_of(clip: &Clip) -> PathBuf {
    ts_of_flv(&clip.flv(), clip.codec)
}

/// An FLV test file as MPEG-TS (stream copy).
pub fn ts_of_flv(flv: &Path, codec: Video) -> PathBuf {
    let ts = flv.with_extension("ts");
    if !ts.exists() {
        let tmp = flv.with_extension("ts.part");
        let ffmpeg = if codec == Video::H264 { PathBuf::from("ffmpeg") } else { crate::media::ffmpeg9() };
        let out = Command::new(ffmpeg)
            .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
            .arg(flv)
            .args(["-c", "copy", "-f", "mpegts"])
            .arg(&tmp)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::rename(&tmp, &ts).unwrap();
    }
    ts
}

fn source(url: &str, stream: &str, extra: &str) -> String {
    format!("url = \"{url}\"\napp = \"cams\"\nstream = \"{stream}\"\n{extra}")
}

/// The seconds shown by a stream's stored sequential snapshots, in capture order.
fn seconds(host: &Host, stream: &str) -> Vec<u32> {
    let mut records: Vec<Value> =
        host.snapshots("localhost", "cams", Some(stream)).into_iter().filter(|r| r["is_overlay"] == false).collect();
    records.sort_by_key(|r| r["create_timestamp"].as_u64().unwrap());
    records
        .iter()
        .map(|r| decode(&host.objects("localhost").get(r["object"].as_str().unwrap())).grey_second())
        .collect()
}

fn source_status(host: &Host, stream: &str) -> Value {
    let list = host.get_json("/v1/domains/localhost/sources");
    list["sources"].as_array().unwrap().iter().find(|s| s["stream"] == stream).cloned().unwrap_or(Value::Null)
}

/// RTSP cameras over TCP and over UDP, behind basic auth: each is captured
/// on the grid of its media clock like a push (the due seconds, by their
/// pixels), listed as a live stream with its source; wrong credentials
/// back off with the server's refusal as the error, and harm no other.
#[test]
fn rtsp_sources_over_tcp_and_udp_with_credentials() {
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 11, 1) };
    let server = RtspServer::start(&ts_of(&clip), Video::H264, Some(("viewer", "s3cret")));
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let bad = dir.path().join("bad");
    std::fs::write(&good, "viewer:s3cret\n").unwrap();
    std::fs::write(&bad, "viewer:wrong\n").unwrap();
    let url = server.url();
    let spec = DomainSpec {
        sources: vec![
            source(&url, "tcp", &format!("credentials_file = \"{}\"\ntransport = \"tcp\"", good.display())),
            source(&url, "udp", &format!("credentials_file = \"{}\"\ntransport = \"udp\"", good.display())),
            source(&url, "denied", &format!("credentials_file = \"{}\"", bad.display())),
        ],
        ..DomainSpec::new("localhost")
    };
    let host = Host::start(&[spec], 2);
    let started = Instant::now();
    host.wait_for("both live", Duration::from_secs(30), || {
        let streams = host.get_json("/v1/domains/localhost/streams");
        streams["streams"].as_array().unwrap().iter().filter(|s| s["source"]["state"] == "live").count() == 2
    });
    let streams = host.get_json("/v1/domains/localhost/streams");
    let tcp = streams["streams"].as_array().unwrap().iter().find(|s| s["stream"] == "tcp").unwrap().clone();
    assert_eq!(tcp["codec"], "h264");
    assert_eq!(tcp["source"]["url"], url);
    assert_eq!(tcp["source"]["transport"], "tcp");
    assert_eq!(tcp["source"]["credentials"], true, "named, never shown");
    assert!(!streams.to_string().contains("s3cret"));

    // 11 s of content in real time: 0, 5 and 10 s, by their pixels.
    for stream in ["tcp", "udp"] {
        host.wait_for(&format!("3 snapshots of {stream}"), Duration::from_secs(40), || {
            host.snapshots("localhost", "cams", Some(stream)).iter().filter(|r| r["is_overlay"] == false).count() >= 3
        });
        // The server's file then ends and the source reconnects: the first three are this pass's.
        assert_eq!(seconds(&host, stream)[..3], clip.expected_seconds(5), "{stream}:\n{}", host.log());
    }
    let denied = source_status(&host, "denied");
    assert_eq!(denied["state"], "backoff", "{denied}");
    let error = denied["last_error"].as_str().unwrap();
    assert!(error.contains("401") || error.to_lowercase().contains("unauthorized"), "{error}");
    assert!(denied["failures"].as_u64().unwrap() >= 2, "retried with backoff: {denied}");
    assert!(host.snapshots("localhost", "cams", Some("denied")).is_empty());
    // The streams API lists it too, beside the live ones, with its state.
    let streams = host.get_json("/v1/domains/localhost/streams");
    let not_live = streams["sources_not_live"].as_array().unwrap();
    assert!(
        not_live.iter().any(|s| s["stream"] == "denied" && s["state"] == "backoff" && s["last_error"].is_string()),
        "{streams}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// On-demand: one connection per interval of the template, each passing
/// over its warm-up keyframe and capturing the next (the server starts
/// every client at the file's first second, so each capture shows second
/// 1); and a persistent HEVC camera, captured on its grid.
#[test]
fn on_demand_connects_per_interval_and_hevc_is_pulled() {
    let h264 = Clip { bframes: false, ..Clip::new(320, 180, 11, 1) };
    let hevc = Clip { bframes: false, codec: Video::Hevc, ..Clip::new(320, 180, 11, 1) };
    let cams = RtspServer::start(&ts_of(&h264), Video::H264, None);
    let hevc_cam = RtspServer::start(&ts_of(&hevc), Video::Hevc, None);
    let spec = DomainSpec {
        sources: vec![
            source(&cams.url(), "lazy", "mode = \"on-demand\"\nwarmup_keyframes = 1"),
            source(&hevc_cam.url(), "hevc", ""),
        ],
        ..DomainSpec::new("localhost")
    };
    let host = Host::start(&[spec], 2);
    host.wait_for("3 on-demand captures", Duration::from_secs(40), || {
        host.snapshots("localhost", "cams", Some("lazy")).iter().filter(|r| r["is_overlay"] == false).count() >= 3
    });
    let shown = seconds(&host, "lazy");
    assert!(shown.iter().all(|&s| s == 1), "each capture is the first keyframe after the warm-up: {shown:?}");
    let mut times: Vec<u64> = host
        .snapshots("localhost", "cams", Some("lazy"))
        .iter()
        .filter(|r| r["is_overlay"] == false)
        .map(|r| r["create_timestamp"].as_u64().unwrap())
        .collect();
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((4_000..=7_500).contains(&gap), "a capture per 5 s interval: {times:?}");
    }
    let status = source_status(&host, "lazy");
    let (connects, captures) = (status["connects"].as_u64().unwrap(), status["captures"].as_u64().unwrap());
    assert!(connects >= captures && connects <= captures + 1, "one connection per capture: {status}");
    assert!(cams.clients() as u64 >= captures, "the server saw each connection");
    assert_eq!(status["mode"], "on-demand");

    host.wait_for("3 HEVC snapshots", Duration::from_secs(40), || {
        host.snapshots("localhost", "cams", Some("hevc")).iter().filter(|r| r["is_overlay"] == false).count() >= 3
    });
    assert_eq!(seconds(&host, "hevc")[..3], hevc.expected_seconds(5));
    let streams = host.get_json("/v1/domains/localhost/streams");
    let live: Vec<&Value> = streams["streams"].as_array().unwrap().iter().filter(|s| s["stream"] == "hevc").collect();
    assert!(live.is_empty() || live[0]["codec"] == "hevc", "{streams}");
}

/// Sources through the API: added, listed, replaced and deleted; a bad
/// one is refused naming its field; the file's cannot be changed there.
/// A camera that goes away backs off with its error and is captured
/// again when it comes back on its port.
#[test]
fn sources_through_the_api_and_a_camera_that_comes_back() {
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 11, 1) };
    let ts = ts_of(&clip);
    let cam = RtspServer::start(&ts, Video::H264, None);
    let port = cam.port;
    let spec = DomainSpec { sources: vec![source(&cam.url(), "filed", "")], ..DomainSpec::new("localhost") };
    let host = Host::start(&[spec], 1);

    let (status, v) = host.api(
        "POST",
        "/v1/domains/localhost/sources",
        Some(serde_json::json!({"url": "rtsp://admin:pw@10.0.0.1/x", "app": "cams", "stream": "api"})),
    );
    assert_eq!((status, v["code"].as_str()), (400, Some("InvalidParameter")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("url: must not hold credentials"), "{v}");
    let (status, v) = host.api(
        "POST",
        "/v1/domains/localhost/sources",
        Some(serde_json::json!({"url": cam.url(), "app": "cams", "stream": "api", "mode": "persistent"})),
    );
    assert_eq!(status, 201, "{v}");
    assert_eq!((v["origin"].as_str(), v["url"].as_str()), (Some("api"), Some(cam.url().as_str())));
    let (status, v) = host.api(
        "POST",
        "/v1/domains/localhost/sources",
        Some(serde_json::json!({"url": cam.url(), "app": "cams", "stream": "api"})),
    );
    assert_eq!((status, v["code"].as_str()), (409, Some("SourceAlreadyExists")), "{v}");
    let (status, v) = host.api("DELETE", "/v1/domains/localhost/sources/cams/filed", None);
    assert_eq!((status, v["code"].as_str()), (409, Some("ManagedByConfigFile")), "{v}");
    host.wait_for("the API's source stores", Duration::from_secs(30), || {
        !host.snapshots("localhost", "cams", Some("api")).is_empty()
    });
    assert_eq!(seconds(&host, "api")[0], 0);

    // Replaced: the new definition is in force.
    let (status, v) = host.api(
        "PUT",
        "/v1/domains/localhost/sources/cams/api",
        Some(serde_json::json!({"url": cam.url(), "app": "cams", "stream": "api", "warmup_keyframes": 2})),
    );
    assert_eq!((status, v["warmup_keyframes"].as_u64()), (200, Some(2)), "{v}");
    // Deleted: it stops, and its stream ends.
    assert_eq!(host.api("DELETE", "/v1/domains/localhost/sources/cams/api", None).0, 204);
    assert_eq!(host.api("GET", "/v1/domains/localhost/sources/cams/api", None).0, 404);
    host.wait_for("the deleted source's stream ends", Duration::from_secs(10), || {
        !host.get_json("/v1/domains/localhost/streams")["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stream"] == "api")
    });

    // The camera goes away: the file's source backs off with the error.
    drop(cam);
    host.wait_for("backoff", Duration::from_secs(30), || source_status(&host, "filed")["state"] == "backoff");
    let before = host.snapshots("localhost", "cams", Some("filed")).len();
    // And comes back on its port: captured again.
    let _cam = RtspServer::start_on(&ts, Video::H264, None, port);
    host.wait_for("captured again", Duration::from_secs(90), || {
        host.snapshots("localhost", "cams", Some("filed")).len() > before
    });
    let status = source_status(&host, "filed");
    assert!(status["last_error"].is_string(), "the error is kept: {status}");
}

/// UDP ports a process has bound (from /proc: its socket inodes in
/// /proc/net/udp), to read back where a server listens.
fn udp_ports_of(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| l.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port = u16::from_str_radix(cols.get(1)?.split(':').nth(1)?, 16).ok()?;
            inodes.contains(&cols.get(9)?.to_string()).then_some(port)
        })
        .collect()
}

/// An SRT feed (ffmpeg as the listener, in real time) and an HLS playlist
/// (segments written by ffmpeg, served over HTTP, read faster than real
/// time): each captured on the grid of its media clock, by its pixels.
#[test]
fn srt_and_hls_sources_are_captured_like_pushes() {
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 11, 1) };
    let ts = ts_of(&clip);
    // SRT: ffmpeg refuses port 0 for a listener, so a port the OS gave a
    // probe socket is tried, and another if ffmpeg cannot bind it.
    let (srt, srt_port) = crate::harness::start_on_free_port(
        "ffmpeg as an SRT listener",
        |port| {
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-re", "-i"])
                .arg(&ts)
                .args(["-c", "copy", "-f", "mpegts", &format!("srt://127.0.0.1:{port}?mode=listener")])
                .stdin(Stdio::null())
                .spawn()
                .unwrap()
        },
        |_| true,
    );
    let mut srt = KillOnDrop(srt);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !udp_ports_of(srt.0.id()).contains(&srt_port) {
        assert!(Instant::now() < deadline, "ffmpeg did not listen on {srt_port}");
        assert!(srt.0.try_wait().unwrap().is_none(), "ffmpeg exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    // HLS: a VOD playlist of 2 s segments, served by python's http.server on a port the OS picks.
    let hls = tempfile::tempdir().unwrap();
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(&ts)
        .args(["-c", "copy", "-f", "hls", "-hls_time", "2", "-hls_list_size", "0", "-hls_playlist_type", "vod"])
        .arg(hls.path().join("index.m3u8"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut http = KillOnDrop(
        Command::new("python3")
            .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory"])
            .arg(hls.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut first = String::new();
    let stdout = http.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout).read_line(&mut first).unwrap();
        first
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !reader.is_finished() {
        assert!(Instant::now() < deadline, "http.server did not say its port");
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = reader.join().unwrap();
    let http_port: u16 =
        line.split(" port ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();

    let spec = DomainSpec {
        sources: vec![
            source(&format!("srt://127.0.0.1:{srt_port}"), "srt", ""),
            source(&format!("http://127.0.0.1:{http_port}/index.m3u8"), "hls", ""),
        ],
        ..DomainSpec::new("localhost")
    };
    let host = Host::start(&[spec], 2);
    for stream in ["srt", "hls"] {
        host.wait_for(&format!("3 snapshots of {stream}"), Duration::from_secs(40), || {
            host.snapshots("localhost", "cams", Some(stream)).iter().filter(|r| r["is_overlay"] == false).count() >= 3
        });
        assert_eq!(seconds(&host, stream)[..3], clip.expected_seconds(5), "{stream}:\n{}", host.log());
    }
    drop(srt.0.kill());
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET …/frame.jpeg` as a player or a camera page calls it: status, the
/// frame's age and width (headers), and the JPEG.
fn frame(url: &str) -> (u16, u64, u32, Vec<u8>) {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut resp = agent.get(url).call().unwrap();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (age, width) = (header("x-frame-age-ms").unwrap_or(0), header("x-frame-width").unwrap_or(0) as u32);
    let status = resp.status().as_u16();
    (status, age, width, resp.body_mut().read_to_vec().unwrap())
}

/// frame.jpeg of a live camera (its signed URL from the streams API, no
/// token): a fresh kept frame answers at once (the same picture again,
/// older); `max_age=0` waits for the next keyframe and shows it; `width`
/// scales it; a request without a token or signature is refused.
#[test]
fn frame_jpeg_answers_from_the_last_keyframe_or_waits_for_the_next() {
    let clip = Clip { bframes: false, ..Clip::new(640, 360, 30, 1) };
    let cam = RtspServer::start(&ts_of(&clip), Video::H264, None);
    let spec = DomainSpec { sources: vec![source(&cam.url(), "cam", "")], ..DomainSpec::new("localhost") };
    let host = Host::start(&[spec], 2);
    host.wait_for("the first snapshot", Duration::from_secs(30), || {
        !host.snapshots("localhost", "cams", Some("cam")).is_empty()
    });
    let streams = host.get_json("/v1/domains/localhost/streams");
    let url = streams["streams"][0]["frame_url"].as_str().unwrap().to_owned();
    assert!(url.contains("/streams/cams/cam/frame.jpeg?") && url.contains("sig="), "{url}");

    // Kept: the last decoded keyframe, the same picture twice, older the second time.
    let (status, age1, width, first) = frame(&url);
    assert_eq!((status, width), (200, 640));
    let (_, age2, _, again) = frame(&url);
    assert_eq!(first, again, "answered from the kept frame");
    assert!(age2 >= age1, "{age1} then {age2}");
    let kept = decode(&first).grey_second();
    let newest = seconds(&host, "cam").into_iter().max().unwrap();
    assert!(kept <= newest && newest - kept <= 5, "the last stored capture's picture: {kept} (stored up to {newest})");

    // Not older than 0 s: the next keyframe, decoded for this request.
    let (status, age, _, next) = frame(&format!("{url}&max_age=0"));
    assert_eq!(status, 200);
    let next = decode(&next);
    assert!(next.grey_second() > kept, "the next keyframe ({}) is after the kept one ({kept})", next.grey_second());
    assert!(age < 1000, "decoded for this request: {age} ms old");
    let stored = seconds(&host, "cam").len();

    // Scaled, and nothing of it stored.
    let (status, _, width, small) = frame(&format!("{url}&width=160"));
    assert_eq!((status, width), (200, 160));
    let small = decode(&small);
    assert_eq!((small.width, small.height), (160, 90));
    assert!(small.grey_second() >= next.grey_second());
    assert!(seconds(&host, "cam").len() <= stored + 1, "frames are not stored (a grid capture may land meanwhile)");

    let path = url.split("127.0.0.1").nth(1).and_then(|r| r.split_once('/')).map(|(_, p)| format!("/{p}")).unwrap();
    let bare = path.split('?').next().unwrap();
    assert_eq!(host.raw_request(None, "GET", bare, None).0, 401);
    let (status, bytes) = host.raw_request(Some(crate::harness::TOKEN), "GET", &format!("{bare}?width=15"), None);
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
}

/// In a fleet, a source added through one node is captured by exactly one
/// edge (the stream's lease, taken before connecting); the other stands
/// by, and takes it over when the capturing node dies.
#[test]
fn in_a_fleet_one_edge_captures_a_source_and_another_takes_it_over() {
    let nats = crate::harness::NatsServer::start();
    let a = crate::fleet::fleet_node(&nats.url(), "edge-a", r#"["edge"]"#);
    let b = crate::fleet::fleet_node(&nats.url(), "edge-b", r#"["edge"]"#);
    a.wait_for("two nodes", Duration::from_secs(15), || crate::fleet::nodes(&a).len() == 2);
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 30, 1) };
    let cam = RtspServer::start(&ts_of(&clip), Video::H264, None);
    let (status, v) = a.api(
        "POST",
        "/v1/domains/localhost/sources",
        Some(serde_json::json!({"url": cam.url(), "app": "cams", "stream": "door"})),
    );
    assert_eq!(status, 201, "{v}");
    let state = |h: &Host| source_status(h, "door")["state"].as_str().unwrap_or("").to_owned();
    a.wait_for("one edge live, the other standing by", Duration::from_secs(30), || {
        let (sa, sb) = (state(&a), state(&b));
        (sa == "live" && sb == "standby") || (sa == "standby" && sb == "live")
    });
    let (mut live, standby) = if state(&a) == "live" { (a, b) } else { (b, a) };
    let waiting = source_status(&standby, "door");
    assert!(waiting["last_error"].as_str().unwrap().contains("edge-"), "names the holder: {waiting}");
    assert_eq!(waiting["connects"], 0, "a node standing by does not connect: {waiting}");
    assert!(cam.clients() >= 1);
    // The capturing node dies: its lease goes silent and the other takes the source.
    live.kill();
    standby.wait_for("the other edge capturing", Duration::from_secs(40), || state(&standby) == "live");
    standby.wait_for("a snapshot on the other edge", Duration::from_secs(20), || {
        !standby.snapshots("localhost", "cams", Some("door")).is_empty()
    });
}

/// `server.max_sources` bounds the receive pipelines a node runs: a source
/// past it waits, listed with why, and starts when another is deleted.
#[test]
fn sources_past_max_sources_wait_until_there_is_room() {
    let host = Host::start_with(&[DomainSpec::new("localhost")], 1, "max_sources = 1");
    // Nothing listens on port 9: a started source backs off; that is enough here.
    for stream in ["one", "two"] {
        let body = serde_json::json!({"url": format!("rtsp://127.0.0.1:9/{stream}"), "app": "cams", "stream": stream});
        assert_eq!(host.api("POST", "/v1/domains/localhost/sources", Some(body)).0, 201);
    }
    let two = source_status(&host, "two");
    assert_eq!(two["state"], "waiting", "{two}");
    assert!(two["last_error"].as_str().unwrap().contains("server.max_sources"), "{two}");
    assert_eq!(two["connects"], 0);
    host.wait_for("the first one tried", Duration::from_secs(20), || {
        source_status(&host, "one")["connects"].as_u64() >= Some(1)
    });
    assert_eq!(host.api("DELETE", "/v1/domains/localhost/sources/cams/one", None).0, 204);
    host.wait_for("the second one started", Duration::from_secs(20), || {
        source_status(&host, "two")["connects"].as_u64() >= Some(1)
    });
}

/// A camera sending a codec that is not supported (VP8) fails its source
/// with an error naming it, backs off, and does not disturb a good camera
/// beside it.
#[test]
fn a_camera_of_an_unsupported_codec_fails_naming_it() {
    let vp8 = RtspServer::serve(
        "( videotestsrc is-live=true ! video/x-raw,width=320,height=180,framerate=25/1 ! vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96 )",
        None,
        0,
    );
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 11, 1) };
    let good = RtspServer::start(&ts_of(&clip), Video::H264, None);
    let spec = DomainSpec {
        sources: vec![source(&vp8.url(), "vp8", ""), source(&good.url(), "good", "")],
        ..DomainSpec::new("localhost")
    };
    let host = Host::start(&[spec], 1);
    host.wait_for("the VP8 camera refused", Duration::from_secs(30), || {
        source_status(&host, "vp8")["last_error"].as_str().is_some_and(|e| e.contains("video/x-vp8"))
    });
    let status = source_status(&host, "vp8");
    assert!(status["last_error"].as_str().unwrap().contains("is not supported (H.264 and HEVC are)"), "{status}");
    host.wait_for("the good camera's 3 snapshots", Duration::from_secs(40), || {
        host.snapshots("localhost", "cams", Some("good")).iter().filter(|r| r["is_overlay"] == false).count() >= 3
    });
    assert_eq!(seconds(&host, "good")[..3], clip.expected_seconds(5));
    assert!(host.snapshots("localhost", "cams", Some("vp8")).is_empty());
}

/// On demand with the template's skip_blank: a camera waking up dark (the
/// clip is flat for its first 3 s, and every connection starts it again)
/// stays connected past its blank keyframes and stores the first picture
/// that is not blank, once per interval.
#[test]
fn on_demand_passes_over_blank_keyframes_of_a_waking_camera() {
    let cam = RtspServer::start(&ts_of_flv(&crate::media::blank_start_flv(), Video::H264), Video::H264, None);
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let tpl = serde_json::json!({"app_name": "cams", "time_interval": 5, "storage": "store", "skip_blank": true,
        "sequence_object": "{AppName}/{StreamName}/{UnixTimestampMs}.jpg"});
    assert_eq!(host.api("POST", "/v1/domains/localhost/snapshot-configs", Some(tpl)).0, 201);
    let body = serde_json::json!({"url": cam.url(), "app": "cams", "stream": "dawn", "mode": "on-demand"});
    assert_eq!(host.api("POST", "/v1/domains/localhost/sources", Some(body)).0, 201);
    host.wait_for("2 on-demand captures", Duration::from_secs(40), || {
        host.snapshots("localhost", "cams", Some("dawn")).len() >= 2
    });
    for r in host.snapshots("localhost", "cams", Some("dawn")) {
        let pic = decode(&host.objects("localhost").get(r["object"].as_str().unwrap()));
        assert_eq!(pic.checker_second(), Some(3), "the first keyframe that is not blank");
    }
    let status = source_status(&host, "dawn");
    assert!(status["captures"].as_u64().unwrap() >= 6, "three keyframes a connection: {status}");
}
