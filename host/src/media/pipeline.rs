//! One decoder worker's pipeline.

use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;

use super::facts::{self, FrameFacts};
use super::range;

use super::{Codec, Image};
use crate::capture::CaptureJob;
use crate::config::{ImageFormat, Template};

/// How long one job may take before the pipeline is considered stuck.
const JOB_TIMEOUT: Duration = Duration::from_secs(10);
const MARKER: &str = "edgesnap-job-done";

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("decoder produced no picture for the keyframe (corrupt or undecodable)")]
    NoPicture,
    #[error("decoder pipeline: {0}")]
    Pipeline(String),
    #[error("decoder did not finish the job within {0:?}; pipeline rebuilt")]
    Timeout(Duration),
}

enum Out {
    Sample { pts: u64, bytes: Bytes, width: u32, height: u32 },
    Facts { pts: u64, facts: FrameFacts },
    Done(u64),
}

pub(super) struct Worker {
    index: usize,
    /// One pipeline per codec and output format this worker has made, H.264
    /// to JPEG first.
    pipelines: Vec<Pipeline>,
    /// Job counter; also the job's PTS in ms.
    next_job: u64,
}

struct Pipeline {
    kind: Kind,
    /// The worker's job number when it was last used.
    last_used: u64,
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    decoder: gst::Element,
    /// The output size the scaler is asked for (`video/x-raw` and no more: the source's).
    size: gst::Element,
    encoder: gst::Element,
    rx: mpsc::Receiver<Out>,
    /// The publish session of the last job this decoder saw.
    last_session: Option<u64>,
    quality: i32,
    /// The (width, height) of the last job's template.
    scale: (u32, u32),
}

/// The caps a template's `width`/`height` ask the scaler for: the source's
/// size when both are 0; one side set, the other follows the picture's
/// aspect (square pixels); both set, exactly that size.
fn size_caps(width: u32, height: u32) -> gst::Caps {
    let mut caps = gst::Caps::builder("video/x-raw");
    if width > 0 {
        caps = caps.field("width", width as i32);
    }
    if height > 0 {
        caps = caps.field("height", height as i32);
    }
    if (width == 0) != (height == 0) {
        caps = caps.field("pixel-aspect-ratio", gst::Fraction::new(1, 1));
    }
    caps.build()
}

/// What a job needs of a pipeline: its codec, its output format and, for
/// WebP, the quality (`webpenc` reads its quality only when it sets itself
/// up, so each WebP quality has its own pipeline; JPEG's is set per job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Kind {
    codec: Codec,
    format: ImageFormat,
    webp_quality: u8,
}

impl Kind {
    fn of(job: &CaptureJob) -> Kind {
        let format = job.template.format;
        let webp_quality = if format == ImageFormat::Webp { job.template.jpeg_quality } else { 0 };
        Kind { codec: job.codec, format, webp_quality }
    }

    /// The encoder element.
    fn encoder(self) -> String {
        match self.format {
            ImageFormat::Jpg => "jpegenc quality=85".into(),
            // speed 1 (libwebp method 1): a 1080p picture in about a third of
            // the default's (4) time for some 14 % more bytes (BENCHMARKS.md).
            ImageFormat::Webp => format!("webpenc quality={} speed=1", self.webp_quality),
        }
    }
}

/// Pipelines a worker keeps at most; the least recently used goes first.
const MAX_PIPELINES: usize = 8;

fn pipeline_err(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Pipeline(format!("{what}: {e}"))
}

/// The segment every decoder sees: keyframes only, drain after each.
fn trickmode(segment: &gst::Segment) -> gst::Event {
    let mut segment = segment.clone();
    segment.set_flags(segment.flags() | gst::SegmentFlags::TRICKMODE_KEY_UNITS);
    gst::event::Segment::new(&segment)
}

impl Pipeline {
    fn build(kind: Kind) -> Result<Pipeline, MediaError> {
        let (codec, format) = (kind.codec, kind.format);
        if gst::ElementFactory::find(codec.decoder()).is_none() {
            return Err(MediaError::Pipeline(format!(
                "gstreamer element {} for {codec} is missing (install gstreamer1.0-libav)",
                codec.decoder()
            )));
        }
        // The scaler passes pictures through untouched unless a template asks for a size.
        let desc = format!(
            "appsrc name=src is-live=true format=time do-timestamp=false caps={caps} \
             ! {decoder} name=dec {properties} \
             ! videoscale ! capsfilter name=size caps=video/x-raw \
             ! videoconvert ! video/x-raw,format=I420 ! {encoder} name=enc \
             ! appsink name=sink sync=false async=false enable-last-sample=false max-buffers=4",
            caps = codec.caps(),
            decoder = codec.decoder(),
            properties = codec.decoder_properties(),
            encoder = kind.encoder(),
        );
        let pipeline = gst::parse::launch(&desc)
            .map_err(|e| pipeline_err("build", e))?
            .downcast::<gst::Pipeline>()
            .map_err(|_| MediaError::Pipeline("not a pipeline".into()))?;
        let by_name = |n: &str| pipeline.by_name(n).ok_or_else(|| MediaError::Pipeline(format!("no element {n}")));
        let src = by_name("src")?.downcast::<gst_app::AppSrc>().map_err(|_| MediaError::Pipeline("src".into()))?;
        let sink = by_name("sink")?.downcast::<gst_app::AppSink>().map_err(|_| MediaError::Pipeline("sink".into()))?;
        let decoder = by_name("dec")?;
        let size = by_name("size")?;
        let encoder = by_name("enc")?;

        // No parser: jobs are whole access units with their parameter sets, and
        // a parser would hold the marker event until the next job.
        let src_pad = src.static_pad("src").ok_or_else(|| MediaError::Pipeline("appsrc src pad".into()))?;
        src_pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, |_pad, info| {
            let replacement = match &info.data {
                Some(gst::PadProbeData::Event(ev)) => match ev.view() {
                    gst::EventView::Segment(s) => Some(trickmode(s.segment())),
                    _ => None,
                },
                _ => None,
            };
            if let Some(ev) = replacement {
                info.data = Some(gst::PadProbeData::Event(ev));
            }
            gst::PadProbeReturn::Ok
        });

        // JFIF is full range, WebP's (VP8) limited; H.264 is usually limited
        // range, and videoconvert (1.22) does not rescale between two I420s.
        // Rescale in place when the picture's range is not the encoder's.
        let enc_sink = encoder.static_pad("sink").ok_or_else(|| MediaError::Pipeline("encoder sink pad".into()))?;
        let wants_full = format == ImageFormat::Jpg;
        // The picture's facts for plugins are read here too, in full range.
        let (tx, rx) = mpsc::channel();
        let facts_tx = tx.clone();
        let negotiated = std::sync::Mutex::new(None::<(gst_video::VideoInfo, bool)>);
        enc_sink.add_probe(gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM, move |_pad, info| {
            match info.data.take() {
                Some(gst::PadProbeData::Event(ev)) => {
                    if let gst::EventView::Caps(c) = ev.view() {
                        *negotiated.lock().unwrap() = gst_video::VideoInfo::from_caps(c.caps()).ok().map(|i| {
                            let limited = i.colorimetry().range() != gst_video::VideoColorRange::Range0_255;
                            (i, limited)
                        });
                    }
                    info.data = Some(gst::PadProbeData::Event(ev));
                }
                Some(gst::PadProbeData::Buffer(buffer)) => {
                    let picture_format = negotiated.lock().unwrap().clone();
                    let buffer = match picture_format {
                        Some((vinfo, limited)) => {
                            let buffer = if limited && wants_full { range::to_full(buffer, &vinfo) } else { buffer };
                            let read_limited = limited && !wants_full;
                            if let (Some(pts), Some(f)) = (buffer.pts(), facts::of_frame(&buffer, &vinfo, read_limited))
                            {
                                let _ = facts_tx.send(Out::Facts { pts: pts.mseconds(), facts: f });
                            }
                            if !limited && !wants_full { range::to_limited(buffer, &vinfo) } else { buffer }
                        }
                        None => buffer,
                    };
                    info.data = Some(gst::PadProbeData::Buffer(buffer));
                }
                other => info.data = other,
            }
            gst::PadProbeReturn::Ok
        });

        let samples = tx.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let (width, height) = sample
                        .caps()
                        .and_then(|c| c.structure(0))
                        .map(|s| (s.get::<i32>("width").unwrap_or(0), s.get::<i32>("height").unwrap_or(0)))
                        .unwrap_or((0, 0));
                    let buffer = sample.buffer_owned().ok_or(gst::FlowError::Error)?;
                    let pts = buffer.pts().map_or(u64::MAX, |t| t.mseconds());
                    let mapped = buffer.into_mapped_buffer_readable().map_err(|_| gst::FlowError::Error)?;
                    let _ = samples.send(Out::Sample {
                        pts,
                        bytes: Bytes::from_owner(mapped),
                        width: width as u32,
                        height: height as u32,
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        // The marker is caught where it enters the decoder: the chain runs on
        // one streaming thread with no queues and the decoder drains after
        // every keyframe, so by then the job's picture has reached the appsink.
        let dec_sink = decoder.static_pad("sink").ok_or_else(|| MediaError::Pipeline("decoder sink pad".into()))?;
        dec_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_pad, info| {
            if let Some(gst::PadProbeData::Event(ev)) = &info.data
                && ev.type_() == gst::EventType::CustomDownstream
                && let Some(s) = ev.structure()
                && s.name() == MARKER
            {
                let _ = tx.send(Out::Done(s.get::<u64>("job").unwrap_or(u64::MAX)));
                return gst::PadProbeReturn::Handled;
            }
            gst::PadProbeReturn::Ok
        });
        // A flush between streams is for the decoder's reference pictures
        // only: nothing after it holds a picture across jobs, and flushing
        // the encoder too would make it set itself up again every job.
        let dec_src = decoder.static_pad("src").ok_or_else(|| MediaError::Pipeline("decoder src pad".into()))?;
        dec_src.add_probe(gst::PadProbeType::EVENT_FLUSH, |_pad, info| match &info.data {
            Some(gst::PadProbeData::Event(ev))
                if matches!(ev.type_(), gst::EventType::FlushStart | gst::EventType::FlushStop) =>
            {
                info.data = None;
                gst::PadProbeReturn::Handled
            }
            _ => gst::PadProbeReturn::Ok,
        });
        pipeline.set_state(gst::State::Playing).map_err(|e| pipeline_err("start", e))?;
        Ok(Pipeline {
            kind,
            last_used: 0,
            pipeline,
            src,
            decoder,
            size,
            encoder,
            rx,
            last_session: None,
            quality: 85,
            scale: (0, 0),
        })
    }

    /// Forgets every picture the decoder holds: flush, then a fresh segment.
    fn flush_decoder(&self) -> Result<(), MediaError> {
        let pad = self.decoder.static_pad("sink").ok_or_else(|| MediaError::Pipeline("decoder sink pad".into()))?;
        let segment = pad.sticky_event::<gst::event::Segment>(0).map(|s| s.segment().clone());
        pad.send_event(gst::event::FlushStart::new());
        pad.send_event(gst::event::FlushStop::new(false));
        if let Some(segment) = segment {
            pad.send_event(trickmode(&segment));
        }
        Ok(())
    }

    /// The first bus error, if any.
    fn bus_error(&self) -> Option<String> {
        let bus = self.pipeline.bus()?;
        while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
            if let gst::MessageView::Error(e) = msg.view() {
                return Some(format!("{} ({:?})", e.error(), e.debug()));
            }
        }
        None
    }

    fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Worker {
    pub(super) fn new(index: usize) -> Result<Worker, MediaError> {
        let h264 = Kind { codec: Codec::H264, format: ImageFormat::Jpg, webp_quality: 0 };
        Ok(Worker { index, pipelines: vec![Pipeline::build(h264)?], next_job: 1 })
    }

    pub(super) fn decode(&mut self, job: &mut CaptureJob) -> Result<Image, MediaError> {
        let kind = Kind::of(job);
        let at = match self.pipelines.iter().position(|p| p.kind == kind) {
            Some(at) => at,
            None => {
                if self.pipelines.len() >= MAX_PIPELINES
                    && let Some(lru) =
                        self.pipelines.iter().enumerate().min_by_key(|(_, p)| p.last_used).map(|(i, _)| i)
                {
                    self.pipelines.swap_remove(lru).stop();
                }
                self.pipelines.push(Pipeline::build(kind)?);
                self.pipelines.len() - 1
            }
        };
        let p = &mut self.pipelines[at];
        if job.codec.fresh_decoder_per_stream() && p.last_session.is_some_and(|s| s != job.info.session) {
            p.stop();
            *p = Pipeline::build(kind)?;
        }
        let id = self.next_job;
        self.next_job += 1;
        self.pipelines[at].last_used = id;
        let result = self.pipelines[at].decode(self.index, id, job);
        if matches!(result, Err(MediaError::Timeout(_) | MediaError::Pipeline(_))) {
            tracing::warn!(worker = self.index, codec = %job.codec, "rebuilding decoder pipeline");
            self.pipelines[at].stop();
            self.pipelines[at] = Pipeline::build(kind)?;
        }
        result
    }

    pub(super) fn stop(&self) {
        for p in &self.pipelines {
            p.stop();
        }
    }
}

impl Pipeline {
    /// Sets the JPEG encoder's quality and the scaler's size to the
    /// template's, when they changed: a new size is negotiated at the next
    /// picture. (A WebP pipeline's quality is its kind's.)
    fn configure(&mut self, template: &Template) {
        let quality = i32::from(template.jpeg_quality);
        if self.kind.format == ImageFormat::Jpg && quality != self.quality {
            self.encoder.set_property("quality", quality);
            self.quality = quality;
        }
        let scale = (template.width, template.height);
        if scale != self.scale {
            self.size.set_property("caps", size_caps(scale.0, scale.1));
            self.scale = scale;
        }
    }

    /// Decodes one job (`id`: its number, also its PTS in ms) into a picture.
    fn decode(&mut self, worker: usize, id: u64, job: &mut CaptureJob) -> Result<Image, MediaError> {
        if self.last_session.is_some_and(|s| s != job.info.session) {
            self.flush_decoder()?;
        }
        self.last_session = Some(job.info.session);
        self.configure(&job.template);
        let mut buffer = gst::Buffer::from_mut_slice(std::mem::take(&mut job.annexb));
        {
            let b = buffer.get_mut().expect("new buffer is writable");
            let pts = gst::ClockTime::from_mseconds(id);
            b.set_pts(pts);
            b.set_dts(pts);
        }
        self.src.push_buffer(buffer).map_err(|e| pipeline_err("push", e))?;
        let marker = gst::event::CustomDownstream::new(gst::Structure::builder(MARKER).field("job", id).build());
        if !self.src.send_event(marker) {
            return Err(MediaError::Pipeline("marker event refused".into()));
        }
        let deadline = std::time::Instant::now() + JOB_TIMEOUT;
        let mut picture = None;
        let mut facts = None;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Out::Sample { pts, bytes, width, height }) if pts == id => {
                    picture = Some(Image { bytes, width, height, facts: facts.unwrap_or_default() });
                }
                Ok(Out::Facts { pts, facts: f }) if pts == id => facts = Some(f),
                Ok(Out::Facts { .. }) => {}
                Ok(Out::Sample { pts, .. }) => {
                    tracing::debug!(worker, pts, job = id, "dropping a picture of an earlier job");
                }
                Ok(Out::Done(done)) if done == id => break,
                Ok(Out::Done(_)) => {}
                Err(_) => {
                    if let Some(e) = self.bus_error() {
                        return Err(MediaError::Pipeline(e));
                    }
                    return Err(MediaError::Timeout(JOB_TIMEOUT));
                }
            }
        }
        if let Some(e) = self.bus_error() {
            return Err(MediaError::Pipeline(e));
        }
        picture.ok_or(MediaError::NoPicture)
    }
}
