//! The release artifacts as an operator gets them: `scripts/dist.sh`
//! packages the tested binary; the .deb depends on the runtime packages
//! (never -dev) that provide every library the binary links and every
//! GStreamer element it builds; unpacked into a scratch root, its binary
//! checks the packaged config and serves a push; its systemd unit verifies.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{DomainSpec, Host, OutputWithin, bin};
use crate::media::{Clip, decode, ffmpeg_push};

fn run(cmd: &mut Command) -> String {
    let out = cmd.output_within(Duration::from_secs(300));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The Debian package that owns a file. With merged /usr, dpkg knows a
/// library by the path its package installed: `/lib/…` or `/usr/lib/…`.
fn owner(path: &str) -> String {
    let other = match path.strip_prefix("/usr") {
        Some(rest) => rest.to_owned(),
        None => format!("/usr{path}"),
    };
    for p in [path, &other] {
        let out = Command::new("dpkg").args(["-S", p]).output_within(Duration::from_secs(60));
        if out.status.success() {
            let said = String::from_utf8(out.stdout).unwrap();
            return said.split(':').next().unwrap().trim().to_owned();
        }
    }
    panic!("no package owns {path} (nor {other})");
}

#[test]
fn the_deb_installs_a_binary_that_checks_its_config_and_serves() {
    let out = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    run(Command::new("bash").arg(repo.join("scripts/dist.sh")).arg(bin()).arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    assert!(out.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".tar.gz")));

    // Depends: runtime packages only, and every one the binary needs.
    let depends = run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Depends"));
    let depends: BTreeSet<String> =
        depends.split(',').map(|d| d.split_whitespace().next().unwrap().to_owned()).collect();
    assert!(depends.iter().all(|d| !d.ends_with("-dev")), "{depends:?}");
    let root = out.path().join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let packaged = root.join("usr/bin/edgesnap");
    let size = std::fs::metadata(&packaged).unwrap().len();
    assert!(size < std::fs::metadata(bin()).unwrap().len() / 2, "stripped: {size} bytes");
    // Each library the binary links directly (NEEDED), by the package that owns it.
    let needed: Vec<String> = run(Command::new("readelf").arg("-d").arg(&packaged))
        .lines()
        .filter_map(|l| Some(l.split_once("Shared library: [")?.1.trim_end_matches(']').to_owned()))
        .collect();
    assert!(needed.iter().any(|n| n.starts_with("libgstreamer-1.0")), "{needed:?}");
    let ldd = run(Command::new("ldd").arg(&packaged));
    for lib in &needed {
        // `name => /path (addr)`, or `/path (addr)` for the dynamic loader.
        let path = ldd
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.split_whitespace().next().is_some_and(|first| first == lib || first.ends_with(&format!("/{lib}")))
            })
            .find_map(|l| l.split_once("=> ").map_or(l, |(_, p)| p).split(' ').next())
            .unwrap_or_else(|| panic!("{lib} not found by ldd:\n{ldd}"));
        let real = std::fs::canonicalize(path).unwrap();
        let package = owner(real.to_str().unwrap());
        let package = package.split(':').next().unwrap();
        assert!(depends.contains(package), "{lib} ({package}) is not in Depends {depends:?}");
    }
    // Each GStreamer element the decoder pool and the pull sources build, by
    // the package of its plugin (WebP, AV1, the parsers, SRT and HLS are in
    // plugins-bad).
    let elements = [
        "appsrc",
        "appsink",
        "videoconvert",
        "videoscale",
        "jpegenc",
        "webpenc",
        "avdec_h264",
        "avdec_h265",
        "avdec_vp9",
        "av1dec",
        "urisourcebin",
        "parsebin",
        "rtspsrc",
        "srtsrc",
        "hlsdemux",
        "h264parse",
        "h265parse",
    ];
    for element in elements {
        let info = run(Command::new("gst-inspect-1.0").arg(element));
        let file = info.lines().find_map(|l| l.trim().strip_prefix("Filename")).unwrap().trim().to_owned();
        let package = owner(&file);
        let package = package.split(':').next().unwrap();
        assert!(depends.contains(package), "{element} ({package}) is not in Depends {depends:?}");
    }

    // The packaged config is valid; the unit file verifies.
    let ok = run(Command::new(&packaged).arg("check-config").arg(root.join("etc/edgesnap/edgesnap.toml")));
    assert!(ok.contains("ok (1 domains)"), "{ok}");
    // systemd checks the unit's directives and that its commands exist: the
    // binary is where the package would put it, here under the scratch root.
    let unit = std::fs::read_to_string(root.join("lib/systemd/system/edgesnap.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/edgesnap serve --config /etc/edgesnap/edgesnap.toml"), "{unit}");
    let units = out.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let checked = units.join("edgesnap.service");
    std::fs::write(&checked, unit.replace("/usr/bin/edgesnap", packaged.to_str().unwrap())).unwrap();
    let verify = Command::new("systemd-analyze").arg("verify").arg(&checked).output_within(Duration::from_secs(60));
    let said = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && !said.contains("edgesnap.service"), "systemd-analyze verify:\n{said}");

    // The unpacked binary serves a push.
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    host.stop();
    host.bin = packaged;
    host.spawn();
    let clip = Clip { bframes: false, ..Clip::new(320, 180, 6, 1) };
    assert!(ffmpeg_push(&clip.flv(), &host.rtmp_url("live/cam"), false).status.success());
    // Both captures (seconds 0 and 5) recorded: a capture's objects are stored before its records.
    let sequential =
        || host.snapshots("localhost", "live", Some("cam")).iter().filter(|r| r["is_overlay"] == false).count();
    host.wait_for("both captures", Duration::from_secs(30), || sequential() == clip.expected_seconds(5).len());
    let jpg = host.objects("localhost").get("live/cam.jpg");
    assert_eq!(decode(&jpg).grey_second(), 5, "the newest capture, second 5");
}
