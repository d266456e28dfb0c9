//! No pixel of one stream in another's snapshot (docs/capture.md), even when a
//! publisher sends crafted keyframes into the shared decoder: IDR slices cut
//! short with consistent lengths, and P slices packed around a cut IDR.
//!
//! The decoder pool guards against libav concealing damage with the last
//! picture it decoded (another stream's): it flushes the decoder between
//! streams and drops frames libav marks corrupt. On this machine's libav
//! (FFmpeg 5.1) none of these vectors leaked even without the guard (an IDR
//! leaves no reference picture, so concealment is intra), so these tests
//! check the outcome, not the guard alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgesnap::capture::{CaptureJob, StreamInfo};
use edgesnap::codec::Codec;
use edgesnap::media::{Decoded, PoolOptions};
use edgesnap::metrics::Metrics;

use crate::harness::{DomainSpec, Host};
use crate::media::{
    Picture, Tag, Video, annexb_job, codec_lavfi_flv, decode, frame_tag, gray_textured_flv, nalus, read_flv, solid_flv,
    truncate_idr,
};
use crate::publisher::Publisher;

const RED: [u8; 3] = [224, 32, 32];

fn red_clip() -> Vec<Tag> {
    read_flv(&solid_flv("red", "0xE02020", 640, 360, 3))
}

fn first(tags: &[Tag], pred: impl Fn(&Tag) -> bool) -> Tag {
    tags.iter().find(|t| pred(t)).cloned().unwrap()
}

fn job(session: u64, annexb: Vec<u8>) -> CaptureJob {
    CaptureJob { codec: edgesnap::codec::Codec::H264, ..codec_job(session, annexb) }
}

fn codec_job(session: u64, annexb: Vec<u8>) -> CaptureJob {
    let template = Arc::new(edgesnap::config::Template::plain("local", "x.jpg"));
    CaptureJob {
        info: Arc::new(StreamInfo::new(
            session,
            format!("d{session}"),
            "live".into(),
            "s".into(),
            Some(template.clone()),
        )),
        template,
        waiters: Vec::new(),
        frames: Vec::new(),
        on_grid: true,
        create_timestamp_ms: 1,
        media_ts_ms: 0,
        received: Instant::now(),
        annexb,
        codec: edgesnap::codec::Codec::H264,
    }
}

/// Runs jobs through a one-worker pool; the picture of each, if any.
fn decode_jobs(jobs: Vec<CaptureJob>) -> Vec<Option<Picture>> {
    run_jobs(jobs).into_iter().map(|j| j.map(|j| decode(&j.bytes))).collect()
}

/// Runs jobs through a one-worker pool; the JPEG of each, if any.
fn run_jobs(jobs: Vec<CaptureJob>) -> Vec<Option<edgesnap::media::Image>> {
    let (tx, rx) = crossbeam_channel::bounded(16);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Decoded>(16);
    let n = jobs.len();
    let handles = edgesnap::media::start(PoolOptions { workers: 1 }, rx, out_tx, Arc::new(Metrics::new())).unwrap();
    for j in jobs {
        tx.send(j).unwrap();
    }
    drop(tx);
    let mut out = Vec::new();
    for _ in 0..n {
        let d = out_rx.blocking_recv().unwrap();
        out.push(d.result.ok());
    }
    for h in handles {
        h.join().unwrap();
    }
    out
}

/// Crafted keyframes of a grey (textured) stream: structurally valid
/// (lengths add up, an IDR slice present), with damaged picture data.
fn crafted_grey_jobs() -> Vec<(String, Vec<u8>)> {
    let gray = read_flv(&gray_textured_flv());
    let (cfg, key) = (first(&gray, Tag::is_avc_config), first(&gray, Tag::is_video_keyframe));
    let p_slices: Vec<Vec<u8>> = gray
        .iter()
        .filter(|t| t.kind == 9 && t.data[1] == 1 && t.data[0] >> 4 == 2)
        .flat_map(|t| nalus(t).into_iter().filter(|n| n[0] & 0x1f == 1).map(<[u8]>::to_vec).collect::<Vec<_>>())
        .take(1)
        .collect();
    let mut jobs: Vec<(String, Vec<u8>)> = [0.0, 0.02, 0.1, 0.3, 0.6, 0.9]
        .iter()
        .map(|keep| (format!("IDR slice cut to {keep}"), annexb_job(&cfg, &truncate_idr(&key, *keep))))
        .collect();
    // A P slice first (it would predict from whatever picture the decoder holds), then a cut IDR.
    let mut nals = p_slices.clone();
    nals.extend(nalus(&truncate_idr(&key, 0.02)).into_iter().map(<[u8]>::to_vec));
    jobs.push(("P slice then cut IDR".into(), annexb_job(&cfg, &frame_tag(&key, &nals))));
    // A cut IDR, then a P slice.
    let mut nals: Vec<Vec<u8>> = nalus(&truncate_idr(&key, 0.02)).into_iter().map(<[u8]>::to_vec).collect();
    nals.extend(p_slices);
    jobs.push(("cut IDR then P slice".into(), annexb_job(&cfg, &frame_tag(&key, &nals))));
    jobs
}

#[test]
fn frame_facts_describe_the_picture() {
    let red = red_clip();
    let red_job = annexb_job(&first(&red, Tag::is_avc_config), &first(&red, Tag::is_video_keyframe));
    let grey = read_flv(&gray_textured_flv());
    let grey_job = annexb_job(&first(&grey, Tag::is_avc_config), &first(&grey, Tag::is_video_keyframe));
    let out = run_jobs(vec![job(1, red_job.clone()), job(2, grey_job), job(3, red_job)]);
    let facts: Vec<_> = out.iter().map(|j| j.as_ref().expect("a picture").facts).collect();
    // Red (224, 32, 32): luma 0.299 R + 0.587 G + 0.114 B = 89; flat, so no cell is above the mean.
    assert!((86..=92).contains(&facts[0].mean_luma), "{:?}", facts[0]);
    assert_eq!(facts[0].ahash, 0);
    // A textured picture has bright and dark cells; the same picture twice, the same facts.
    assert_ne!(facts[1].ahash, 0);
    assert_ne!(facts[1].ahash, u64::MAX);
    assert_eq!(facts[2], facts[0]);
}

#[test]
fn crafted_keyframes_after_another_stream_show_none_of_its_pixels() {
    let red = red_clip();
    let red_job = annexb_job(&first(&red, Tag::is_avc_config), &first(&red, Tag::is_video_keyframe));
    let mut checked = 0;
    for (what, crafted) in crafted_grey_jobs() {
        // One decoder: the red stream's keyframe, then the crafted one of another stream.
        let pics = decode_jobs(vec![job(1, red_job.clone()), job(2, crafted)]);
        assert!(pics[0].as_ref().expect("the red keyframe decodes").share_near(RED, 40) > 0.95, "red stream is red");
        if let Some(p) = &pics[1] {
            let share = p.share_near(RED, 40);
            assert!(share < 0.001, "{what}: {share:.4} of the picture is the other stream's red");
            checked += 1;
        }
    }
    // Concealed pictures come out for these: the check above is not vacuous.
    assert!(checked >= 6, "only {checked} crafted keyframes produced a picture to check");
}

/// A clip's first keyframe as its decoder job, made by ingest's own parser.
fn first_keyframe(path: &std::path::Path, codec: Codec) -> Vec<u8> {
    let tags = read_flv(path);
    let jobs = edgesnap::ingest::keyframe_jobs(tags.iter().filter(|t| t.kind == 9).map(|t| t.data.as_slice()));
    let (got, job) = jobs.into_iter().next().expect("a keyframe");
    assert_eq!(got, codec);
    job
}

/// `job` with its picture data cut to `keep` of its bytes, still well
/// formed: HEVC's last NAL unit (the IRAP slice) is cut; AV1's last OBU
/// (the frame) loses its size field, which the last OBU of a temporal unit
/// may (it runs to the end); a VP9 frame's size is the buffer's.
fn cut_picture(codec: Codec, job: &[u8], keep: f64) -> Vec<u8> {
    let from = match codec {
        Codec::H265 => job.windows(4).rposition(|w| w == [0, 0, 0, 1]).unwrap() + 4,
        Codec::Av1 => {
            // The OBUs: delimiter, sequence header, then the frame; walk their sizes.
            let mut at = 0;
            loop {
                let (header, ext) = (job[at], usize::from(job[at] & 0x04 != 0));
                let (mut size, mut len) = (0usize, 0);
                while job[at + 1 + ext + len] & 0x80 != 0 {
                    size |= usize::from(job[at + 1 + ext + len] & 0x7f) << (7 * len);
                    len += 1;
                }
                size |= usize::from(job[at + 1 + ext + len]) << (7 * len);
                let end = at + 1 + ext + len + 1 + size;
                if (header >> 3) & 0x0f == 6 {
                    let mut out = job[..at].to_vec();
                    out.push(header & !0x02);
                    out.extend_from_slice(&job[at + 1..at + 1 + ext]);
                    let payload = &job[at + 1 + ext + len + 1..end];
                    out.extend_from_slice(&payload[..((payload.len() as f64 * keep) as usize).max(4)]);
                    return out;
                }
                at = end;
            }
        }
        _ => 0,
    };
    let cut = from + ((job.len() - from) as f64 * keep) as usize;
    job[..cut.max(from + 8)].to_vec()
}

fn codec_job_of(codec: Codec, session: u64, annexb: Vec<u8>) -> CaptureJob {
    CaptureJob { codec, ..codec_job(session, annexb) }
}

/// The same for HEVC, AV1 and VP9, each of which has its own pipeline in
/// each worker: the red stream's keyframe, then another stream's keyframe
/// with its picture data cut short (still well formed).
#[test]
fn crafted_keyframes_of_every_codec_after_another_stream_show_none_of_its_pixels() {
    for (codec, video, least) in
        [(Codec::H265, Video::Hevc, 3), (Codec::Av1, Video::Av1, 0), (Codec::Vp9, Video::Vp9, 1)]
    {
        let red =
            first_keyframe(&codec_lavfi_flv("red-640x360-2s", "color=c=0xE02020:s=640x360:r=25:d=2", video), codec);
        let grey = first_keyframe(
            &codec_lavfi_flv("graytex-640x360-2s", "testsrc2=size=640x360:rate=25:duration=2,format=gray", video),
            codec,
        );
        let intact = decode_jobs(vec![codec_job_of(codec, 1, red.clone()), codec_job_of(codec, 2, grey.clone())]);
        assert!(
            intact[1].as_ref().is_some_and(|p| p.share_near(RED, 40) < 0.001),
            "the intact {codec} keyframe decodes"
        );
        let mut checked = 0;
        let cuts = [0.0, 0.02, 0.1, 0.3, 0.6, 0.9].map(|keep| (keep, cut_picture(codec, &grey, keep)));
        // The same lengths with the picture's tail overwritten: nothing for a decoder to notice but the content.
        let zeroed = [0.1, 0.5, 0.9].map(|keep| {
            let mut job = grey.clone();
            let from = cut_picture(codec, &grey, keep).len();
            job[from..].fill(0);
            (keep, job)
        });
        // Or a few bytes flipped there.
        let flipped = [0.3, 0.6, 0.9].map(|keep| {
            let mut job = grey.clone();
            let from = cut_picture(codec, &grey, keep).len();
            for b in &mut job[from..(from + 16).min(grey.len())] {
                *b ^= 0x5a;
            }
            (keep, job)
        });
        for (keep, crafted) in cuts.into_iter().chain(zeroed).chain(flipped) {
            let pics = decode_jobs(vec![codec_job_of(codec, 1, red.clone()), codec_job_of(codec, 2, crafted)]);
            let red_pic = pics[0].as_ref().unwrap_or_else(|| panic!("the red {codec} keyframe decodes"));
            assert!(red_pic.share_near(RED, 40) > 0.95, "red stream is red");
            if let Some(p) = &pics[1] {
                let share = p.share_near(RED, 40);
                assert!(
                    share < 0.001,
                    "{codec} keyframe cut to {keep}: {share:.4} of the picture is the other stream's red"
                );
                checked += 1;
            }
        }
        eprintln!("{codec}: {checked} of 12 crafted keyframes gave a picture");
        // The check above is not vacuous: decoders output some cut keyframes.
        assert!(checked >= least, "only {checked} cut {codec} keyframes produced a picture to check");
    }
}

#[test]
fn end_to_end_crafted_stream_after_another_domain_gets_none_of_its_pixels() {
    let host = Host::start(&[DomainSpec::new("a.example.com"), DomainSpec::new("b.example.com")], 1);
    let (red, grey) = (red_clip(), read_flv(&gray_textured_flv()));
    // Domain a's red stream, then right after it domain b's crafted stream, on one decoder.
    let mut a = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(a.publish("red?vhost=a.example.com").unwrap());
    let mut b = Publisher::connect(host.rtmp_port, "live").unwrap();
    assert!(b.publish("crafted?vhost=b.example.com").unwrap());
    for t in red.iter().filter(|t| t.kind == 9 && t.ts < 1000) {
        a.send(t, t.ts).unwrap();
    }
    for t in grey.iter().filter(|t| t.kind == 9) {
        let t = if t.is_video_keyframe() { truncate_idr(t, 0.3) } else { t.clone() };
        b.send(&t, t.ts).unwrap();
    }
    host.wait_for("the red snapshot", Duration::from_secs(20), || {
        !host.snapshots("a.example.com", "live", Some("red")).is_empty()
    });
    // Give the crafted keyframes (0 s, and the grid's) time to go through.
    std::thread::sleep(Duration::from_secs(2));
    let red_recs = host.snapshots("a.example.com", "live", Some("red"));
    let jpg = host.objects("a.example.com").get(red_recs[0]["object"].as_str().unwrap());
    assert!(decode(&jpg).share_near(RED, 40) > 0.95);
    let crafted = host.snapshots("b.example.com", "live", Some("crafted"));
    assert!(!crafted.is_empty(), "the crafted stream's concealed keyframe is a snapshot to check");
    for r in crafted {
        let jpg = host.objects("b.example.com").get(r["object"].as_str().unwrap());
        let share = decode(&jpg).share_near(RED, 40);
        assert!(share < 0.001, "{}: {share:.4} of its pixels are the other domain's red", r["object"]);
    }
}
