//! Test media: clips made once with ffmpeg/libx264 (HEVC with ffmpeg 9 and
//! libx265), FLV tags, JPEG pixels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::harness::OutputWithin;
use zune_jpeg::JpegDecoder;
use zune_jpeg::zune_core::bytestream::ZCursor;

/// A clip whose picture is flat grey, brighter each second: the level of a
/// snapshot names the second of content it came from.
#[derive(Debug, Clone, Copy)]
pub struct Clip {
    pub width: u32,
    pub height: u32,
    pub seconds: u32,
    pub gop_s: u32,
    pub bframes: bool,
    pub audio: bool,
    /// Frames per second (25 unless set): FLV timestamps are whole ms, so
    /// 30 gives frame steps alternating 33/34 ms.
    pub fps: u32,
    /// H.264 (libx264) unless set; the others are written by ffmpeg 9 as
    /// Enhanced FLV.
    pub codec: Video,
}

/// The codec of a test clip and its encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    H264,
    /// libx265, `hvc1`.
    Hevc,
    /// SVT-AV1, `av01`.
    Av1,
    /// libvpx, `vp09`.
    Vp9,
}

impl Video {
    /// ffmpeg arguments encoding with a keyframe every `gop` frames exactly.
    fn encoder_args(self, gop: u32, bframes: bool) -> Vec<String> {
        let gop = gop.to_string();
        let args: Vec<&str> = match self {
            Video::H264 => vec![
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                &gop,
                "-keyint_min",
                &gop,
                "-sc_threshold",
                "0",
                "-bf",
                if bframes { "2" } else { "0" },
            ],
            Video::Hevc => {
                let bf = if bframes { 2 } else { 0 };
                let params = format!("keyint={gop}:min-keyint={gop}:scenecut=0:bframes={bf}:log-level=error");
                return ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params", &params].map(String::from).to_vec();
            }
            // Hidden frames and reordering are AV1's own: no B-frame switch.
            Video::Av1 => vec!["-c:v", "libsvtav1", "-preset", "12", "-g", &gop, "-svtav1-params", "scd=0:lp=1"],
            Video::Vp9 => {
                vec!["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-g", &gop, "-keyint_min", &gop]
            }
        };
        args.into_iter().map(String::from).collect()
    }

    fn suffix(self) -> &'static str {
        match self {
            Video::H264 => "",
            Video::Hevc => "-hevc",
            Video::Av1 => "-av1",
            Video::Vp9 => "-vp9",
        }
    }
}

/// Grey level of second `s`.
pub fn level(s: u32) -> u32 {
    8 + 8 * s
}

pub const MAX_SECONDS: u32 = 30;

fn fixtures_dir() -> PathBuf {
    let d = std::env::temp_dir().join("edgesnap-it-fixtures");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command that makes `out` once per test run, however many tests ask.
fn make_once(name: &str, make: impl FnOnce(&Path)) -> PathBuf {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let lock = LOCKS.get_or_init(Default::default).lock().unwrap().entry(name.to_owned()).or_default().clone();
    let _held = lock.lock().unwrap();
    let out = fixtures_dir().join(name);
    if !out.exists() {
        let tmp = out.with_extension("part");
        make(&tmp);
        std::fs::rename(&tmp, &out).unwrap();
    }
    out
}

pub fn ffmpeg(args: &[&str]) {
    ffmpeg_with(Path::new("ffmpeg"), args)
}

/// ffmpeg 9 (`scripts/setup.sh` installs it): it writes and publishes
/// Enhanced RTMP, which Debian's ffmpeg 5.1 cannot.
pub fn ffmpeg9() -> PathBuf {
    crate::harness::venv_bin("ffmpeg9")
}

fn ffmpeg_with(program: &Path, args: &[&str]) {
    let out = Command::new(program)
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .output_within(Duration::from_secs(300));
    assert!(out.status.success(), "ffmpeg {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

impl Clip {
    pub fn new(width: u32, height: u32, seconds: u32, gop_s: u32) -> Clip {
        assert!(seconds <= MAX_SECONDS);
        Clip { width, height, seconds, gop_s, bframes: true, audio: false, fps: 25, codec: Video::H264 }
    }

    /// The clip as an FLV file (H.264, and AAC when `audio`).
    pub fn flv(&self) -> PathBuf {
        let name = format!(
            "grey-{}x{}-{}s-gop{}-{}-{}{}{}.flv",
            self.width,
            self.height,
            self.seconds,
            self.gop_s,
            if self.bframes { "bf" } else { "nobf" },
            if self.audio { "aac" } else { "mute" },
            if self.fps == 25 { String::new() } else { format!("-{}fps", self.fps) },
            self.codec.suffix()
        );
        let c = *self;
        make_once(&name, move |out| {
            let mut graph = String::new();
            for s in 0..c.seconds {
                let g = level(s);
                graph += &format!("color=c=0x{g:02x}{g:02x}{g:02x}:s={}x{}:r={}:d=1[c{s}];", c.width, c.height, c.fps);
            }
            for s in 0..c.seconds {
                graph += &format!("[c{s}]");
            }
            graph += &format!("concat=n={}:v=1:a=0,format=yuv420p[v]", c.seconds);
            let mut args: Vec<String> = vec!["-filter_complex".into(), graph];
            if c.audio {
                args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from));
            }
            args.extend(["-map", "[v]"].map(String::from));
            if c.audio {
                args.extend(["-map", "0:a", "-c:a", "aac", "-b:a", "64k", "-shortest"].map(String::from));
            }
            args.extend(c.codec.encoder_args(c.gop_s * c.fps, c.bframes));
            args.extend(["-f", "flv", &out.display().to_string()].map(String::from));
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            if c.codec == Video::H264 { ffmpeg(&refs) } else { ffmpeg_with(&ffmpeg9(), &refs) }
        })
    }

    /// Keyframe times (s) of the clip.
    pub fn keyframes(&self) -> Vec<u32> {
        (0..self.seconds).step_by(self.gop_s as usize).collect()
    }

    /// The seconds docs/capture.md says are snapshotted: the first keyframe, then the
    /// first keyframe at or after each due time of a fixed grid.
    pub fn expected_seconds(&self, interval: u32) -> Vec<u32> {
        let mut out = Vec::new();
        let mut due = 0;
        for k in self.keyframes() {
            if k >= due {
                out.push(k);
                due = (k / interval + 1) * interval;
            }
        }
        out
    }
}

/// A clip of a lavfi `source`, H.264 (GOP 1 s, no B-frames) in FLV.
fn lavfi_flv(name: &str, source: String) -> PathBuf {
    make_once(name, move |out| {
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            &source,
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-f",
            "flv",
            &out.display().to_string(),
        ]);
    })
}

/// A clip of one flat colour (isolation tests).
pub fn solid_flv(name: &str, color: &str, width: u32, height: u32, seconds: u32) -> PathBuf {
    lavfi_flv(
        &format!("{name}-{width}x{height}-{seconds}s.flv"),
        format!("color=c={color}:s={width}x{height}:r=25:d={seconds}"),
    )
}

/// A clip of a lavfi `source` in `codec` (ffmpeg 9 but for H.264;
/// Enhanced FLV), a keyframe every second, no B-frames.
pub fn codec_lavfi_flv(name: &str, source: &str, codec: Video) -> PathBuf {
    make_once(&format!("{name}{}.flv", codec.suffix()), move |out| {
        let mut args: Vec<String> = ["-f", "lavfi", "-i", source].map(String::from).to_vec();
        args.extend(codec.encoder_args(25, false));
        args.extend(["-pix_fmt", "yuv420p", "-f", "flv", &out.display().to_string()].map(String::from));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        if codec == Video::H264 { ffmpeg(&refs) } else { ffmpeg_with(&ffmpeg9(), &refs) }
    })
}

/// 20 s of a checkerboard whose level names its second (mean luma
/// 28 + 8 s), except seconds 0-2 and 5-6, which are flat dark grey: what an
/// encoder's start and a camera waking up look like. H.264, GOP 1 s.
pub fn blank_start_flv() -> PathBuf {
    codec_lavfi_flv(
        "blank-start-320x180-20s",
        "nullsrc=s=320x180:r=25:d=20,geq=lum='if(lt(T,3)+between(T,5,6.99),16,\
         8+8*floor(T)+40*mod(floor(X/16)+floor(Y/16),2))':cb=128:cr=128",
        Video::H264,
    )
}

/// A textured clip in shades of grey only.
/// 12 s of ffmpeg's moving test pattern, 320x180, GOP 1 s.
pub fn moving_flv() -> PathBuf {
    lavfi_flv("testsrc2-320x180-12s.flv", "testsrc2=size=320x180:rate=25:duration=12".into())
}

/// ffmpeg's moving test pattern at any size and length, GOP 1 s.
pub fn testsrc_flv(width: u32, height: u32, seconds: u32) -> PathBuf {
    lavfi_flv(
        &format!("testsrc2-{width}x{height}-{seconds}s.flv"),
        format!("testsrc2=size={width}x{height}:rate=25:duration={seconds}"),
    )
}

pub fn gray_textured_flv() -> PathBuf {
    lavfi_flv("graytex-640x360-3s.flv", "testsrc2=size=640x360:rate=25:duration=3,format=gray".into())
}

/// A decoded JPEG: RGB.
pub struct Picture {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
}

pub fn decode(jpg: &[u8]) -> Picture {
    let mut d = JpegDecoder::new(ZCursor::new(jpg));
    let rgb = d.decode().expect("a valid JPEG");
    let (width, height) = d.dimensions().unwrap();
    assert_eq!(rgb.len(), width * height * 3, "RGB output");
    Picture { width, height, rgb }
}

/// A decoded WebP: RGB.
pub fn decode_webp(webp: &[u8]) -> Picture {
    let mut d = image_webp::WebPDecoder::new(std::io::Cursor::new(webp)).expect("a valid WebP");
    let (w, h) = d.dimensions();
    let mut buf = vec![0; d.output_buffer_size().unwrap()];
    d.read_image(&mut buf).unwrap();
    let rgb = if d.has_alpha() { buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect() } else { buf };
    Picture { width: w as usize, height: h as usize, rgb }
}

impl Picture {
    /// Mean of R, G and B over the central half of the picture.
    pub fn centre_mean(&self) -> [f64; 3] {
        let mut sum = [0f64; 3];
        let mut n = 0f64;
        for y in self.height / 4..self.height * 3 / 4 {
            for x in self.width / 4..self.width * 3 / 4 {
                let i = (y * self.width + x) * 3;
                for (c, s) in sum.iter_mut().enumerate() {
                    *s += f64::from(self.rgb[i + c]);
                }
                n += 1.0;
            }
        }
        sum.map(|s| s / n)
    }

    /// The second of a grey clip this picture shows, if it is one of them.
    pub fn grey_second(&self) -> u32 {
        let [r, g, b] = self.centre_mean();
        assert!((r - g).abs() < 6.0 && (g - b).abs() < 6.0, "not grey: {r:.1} {g:.1} {b:.1}");
        let s = ((g - 8.0) / 8.0).round();
        assert!((g - f64::from(level(s as u32))).abs() < 3.0, "grey {g:.1} is between levels");
        s as u32
    }

    /// The second of [`blank_start_flv`] this picture shows, or `None` for
    /// a flat one.
    pub fn checker_second(&self) -> Option<u32> {
        let [_, g, _] = self.centre_mean();
        let spread = {
            let n = (self.width * self.height) as f64;
            let mean = self.rgb.chunks_exact(3).map(|p| f64::from(p[1])).sum::<f64>() / n;
            (self.rgb.chunks_exact(3).map(|p| (f64::from(p[1]) - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        if spread < 3.0 {
            return None;
        }
        // The clip sets luma (limited range); the JPEG's RGB is full range.
        let y = 16.0 + g * 219.0 / 255.0;
        let s = ((y - 28.0) / 8.0).round();
        assert!((y - (28.0 + 8.0 * s)).abs() < 3.0, "checkerboard luma {y:.1} is between levels");
        Some(s as u32)
    }

    /// The share of pixels within `tol` of `rgb`.
    pub fn share_near(&self, rgb: [u8; 3], tol: i32) -> f64 {
        let n = self.width * self.height;
        let near = self
            .rgb
            .chunks_exact(3)
            .filter(|p| (0..3).all(|c| (i32::from(p[c]) - i32::from(rgb[c])).abs() <= tol))
            .count();
        near as f64 / n as f64
    }
}

pub use edgesnap_testkit::flv::{Tag, annexb_job, frame_tag, nalus};

pub fn read_flv(path: &Path) -> Vec<Tag> {
    edgesnap_testkit::flv::read(path)
}

/// Cuts every IDR slice to `keep` of its bytes, keeping lengths consistent:
/// structurally valid, but the picture's lower part is missing.
pub fn truncate_idr(tag: &Tag, keep: f64) -> Tag {
    let nals: Vec<Vec<u8>> = nalus(tag)
        .into_iter()
        .map(|n| if n[0] & 0x1f == 5 { n[..((n.len() as f64 * keep) as usize).max(8)].to_vec() } else { n.to_vec() })
        .collect();
    frame_tag(tag, &nals)
}

/// Pushes a file with ffmpeg (`-c copy`); `realtime` paces it (-re).
pub fn ffmpeg_push(file: &Path, url: &str, realtime: bool) -> std::process::Output {
    push_with(Path::new("ffmpeg"), file, url, realtime)
}

/// Pushes a file with ffmpeg 9 (Enhanced RTMP for HEVC).
pub fn ffmpeg9_push(file: &Path, url: &str) -> std::process::Output {
    push_with(&ffmpeg9(), file, url, false)
}

fn push_with(program: &Path, file: &Path, url: &str, realtime: bool) -> std::process::Output {
    let mut cmd = Command::new(program);
    cmd.args(["-hide_banner", "-loglevel", "error"]);
    if realtime {
        cmd.arg("-re");
    }
    // A host that stops reading fails the push in 10 s (-rw_timeout, in µs).
    cmd.arg("-i").arg(file).args(["-c", "copy", "-rw_timeout", "10000000", "-f", "flv", url]);
    cmd.output_within(Duration::from_secs(120))
}
