//! Receiving pull sources (docs/sources.md): one GStreamer pipeline per
//! source that connects, depayloads or demuxes, and parses the video into
//! the form an RTMP publisher sends (a decoder configuration record, then
//! length-prefixed access units), without decoding anything:
//!
//! `urisourcebin uri=… ! parsebin ! h264parse ! video/x-h264,stream-format=avc,alignment=au ! appsink`
//!
//! (`h265parse` and `hvc1` for HEVC). `urisourcebin` picks `rtspsrc`,
//! `srtsrc` or `souphttpsrc` + `hlsdemux` by the URL. The sources stage
//! checks each keyframe and builds the decoder job exactly as ingest does
//! for a push; delta frames are only counted. Audio and other streams end
//! in a `fakesink`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::codec::Codec;

/// How to reach a source.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub url: String,
    /// `user:password`, for RTSP (digest or basic) and HTTP (basic).
    pub credentials: Option<(String, String)>,
    /// RTSP over TCP (interleaved) rather than UDP.
    pub rtsp_tcp: bool,
    /// The jitter buffer's latency (RTSP) or SRT's receive latency.
    pub latency_ms: u32,
}

/// What a receiving pipeline tells the sources stage.
#[derive(Debug)]
pub enum PullEvent {
    /// The video's decoder configuration record (`avcC` or `hvcC`), at the
    /// start and whenever it changes.
    Config { codec: Codec, record: Vec<u8> },
    /// A keyframe's access unit, length-prefixed as the record says, at its
    /// presentation time (ms of the pipeline's running time).
    Keyframe { pts_ms: u32, data: Vec<u8> },
    /// The pipeline stopped: an error (refused, unauthorized, a codec not
    /// supported, ...) or the end of the stream.
    Ended(String),
}

/// Counters a pipeline keeps for every video frame, read by the stage.
#[derive(Debug, Default)]
pub struct PullCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
}

/// A running receive pipeline; stopped when dropped.
pub struct Receiver {
    pipeline: gst::Pipeline,
    pub counters: Arc<PullCounters>,
}

impl Drop for Receiver {
    /// Stops the pipeline off the caller's thread: an RTSP teardown to a
    /// server that went away can take seconds. Drop the events' receiver
    /// first: a streaming thread waiting to send then ends.
    fn drop(&mut self) {
        let pipeline = self.pipeline.clone();
        let stop = move || {
            let _ = pipeline.set_state(gst::State::Null);
        };
        if std::thread::Builder::new().name("pull-stop".into()).spawn(stop.clone()).is_err() {
            stop();
        }
    }
}

/// Events waiting for the stage; past this the pipeline waits.
pub const EVENTS: usize = 16;

/// Starts receiving. Events go to `events`; the end is always sent (once).
pub fn open(options: &PullOptions, events: tokio::sync::mpsc::Sender<PullEvent>) -> Result<Receiver, String> {
    super::init().map_err(|e| e.to_string())?;
    let pipeline = gst::Pipeline::new();
    let source = gst::ElementFactory::make("urisourcebin")
        .property("uri", &options.url)
        .build()
        .map_err(|e| format!("urisourcebin: {e}"))?;
    let parse = gst::ElementFactory::make("parsebin").build().map_err(|e| format!("parsebin: {e}"))?;
    pipeline.add_many([&source, &parse]).map_err(|e| e.to_string())?;

    let opts = options.clone();
    source.connect("source-setup", false, move |args| {
        if let Ok(element) = args[1].get::<gst::Element>() {
            configure_source(&element, &opts);
        }
        None
    });
    // MPEG-TS (SRT, HLS): the PES timestamps as they are. Timing by the PCR
    // smooths them against arrival and put the first keyframe ~40 ms late,
    // off the grid of the later ones.
    pipeline.connect("deep-element-added", false, |args| {
        if let Ok(element) = args[2].get::<gst::Element>()
            && element.factory().is_some_and(|f| f.name() == "tsdemux")
        {
            element.set_property("ignore-pcr", true);
        }
        None
    });
    let parse_weak = parse.downgrade();
    source.connect_pad_added(move |_, pad| {
        if let Some(parse) = parse_weak.upgrade()
            && let Some(sink) = parse.static_pad("sink")
            && !sink.is_linked()
            && let Err(e) = pad.link(&sink)
        {
            tracing::debug!(error = ?e, "a second source pad is left unlinked");
        }
    });

    let counters = Arc::new(PullCounters::default());
    let events_end = Arc::new(Mutex::new(Some(events.clone())));
    let video_linked = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pipeline_weak = pipeline.downgrade();
    let (c, ev, linked) = (counters.clone(), events.clone(), video_linked.clone());
    let end = events_end.clone();
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = pipeline_weak.upgrade() else { return };
        let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
        let name = caps.as_ref().and_then(|c| c.structure(0)).map(|s| s.name().to_string()).unwrap_or_default();
        let codec = match name.as_str() {
            "video/x-h264" => Some(Codec::H264),
            "video/x-h265" => Some(Codec::H265),
            _ => None,
        };
        let result = match codec {
            Some(codec) if !linked.swap(true, Ordering::AcqRel) => {
                link_video(&pipeline, pad, codec, c.clone(), ev.clone())
            }
            _ if name.starts_with("video/") && !linked.load(Ordering::Acquire) => {
                send_end(&end, format!("video codec {name} is not supported (H.264 and HEVC are)"));
                Ok(())
            }
            _ => link_fakesink(&pipeline, pad),
        };
        if let Err(e) = result {
            send_end(&end, format!("linking the {name} stream: {e}"));
        }
    });

    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    let end = events_end.clone();
    bus.set_sync_handler(move |_, msg| {
        match msg.view() {
            gst::MessageView::Error(e) => {
                let mut why = e.error().to_string();
                if let Some(debug) = e.debug()
                    && let Some(detail) = http_or_rtsp_status(debug.as_str())
                {
                    why = format!("{why} ({detail})");
                }
                send_end(&end, why);
            }
            gst::MessageView::Eos(_) => send_end(&end, "the source ended the stream".into()),
            _ => {}
        }
        gst::BusSyncReply::Drop
    });
    pipeline.set_state(gst::State::Playing).map_err(|_| "the pipeline does not start".to_string())?;
    Ok(Receiver { pipeline, counters })
}

/// Sends the end once.
fn send_end(end: &Mutex<Option<tokio::sync::mpsc::Sender<PullEvent>>>, why: String) {
    if let Some(tx) = end.lock().unwrap().take() {
        // Blocking is not allowed on a streaming thread; the stage always
        // has room for one more event after it reads, and the end comes last.
        let tx2 = tx.clone();
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(ev)) = tx.try_send(PullEvent::Ended(why)) {
            std::thread::spawn(move || {
                let _ = tx2.blocking_send(ev);
            });
        }
    }
}

/// A status line in GStreamer's debug text of an error, if it names one.
fn http_or_rtsp_status(debug: &str) -> Option<String> {
    ["401", "403", "404", "Unauthorized", "Not Found", "Forbidden"]
        .iter()
        .find(|code| debug.contains(*code))
        .map(|code| format!("status {code}"))
}

/// Sets what the URL cannot say on the element `urisourcebin` made.
fn configure_source(element: &gst::Element, o: &PullOptions) {
    let has = |p: &str| element.find_property(p).is_some();
    if let Some((user, password)) = &o.credentials
        && has("user-id")
    {
        element.set_property("user-id", user);
        element.set_property("user-pw", password);
    }
    if has("protocols") {
        element.set_property_from_str("protocols", if o.rtsp_tcp { "tcp" } else { "udp" });
    }
    if has("latency") {
        // rtspsrc: ms (guint); srtsrc: ms (gint).
        let spec = element.find_property("latency").expect("checked");
        if spec.value_type() == u32::static_type() {
            element.set_property("latency", o.latency_ms);
        } else if spec.value_type() == i32::static_type() {
            element.set_property("latency", o.latency_ms as i32);
        }
    }
    if has("buffer-mode") {
        // The sender's RTP timestamps as they are: the default (slave)
        // smooths them against arrival times, which put the first keyframe
        // ~40 ms late and moved the capture grid off the later ones.
        element.set_property_from_str("buffer-mode", "none");
    }
    if has("tcp-timeout") {
        // µs: a TCP connection that does not answer fails in 10 s.
        element.set_property("tcp-timeout", 10_000_000u64);
    }
}

fn link_fakesink(pipeline: &gst::Pipeline, pad: &gst::Pad) -> Result<(), String> {
    let sink = gst::ElementFactory::make("fakesink").property("async", false).build().map_err(|e| e.to_string())?;
    pipeline.add(&sink).map_err(|e| e.to_string())?;
    sink.sync_state_with_parent().map_err(|e| e.to_string())?;
    pad.link(&sink.static_pad("sink").expect("fakesink has a sink pad")).map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// `parser ! capsfilter(length-prefixed, whole access units) ! appsink`.
fn link_video(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    codec: Codec,
    counters: Arc<PullCounters>,
    events: tokio::sync::mpsc::Sender<PullEvent>,
) -> Result<(), String> {
    let (parser, caps) = match codec {
        Codec::H264 => ("h264parse", "video/x-h264,stream-format=avc,alignment=au"),
        _ => ("h265parse", "video/x-h265,stream-format=hvc1,alignment=au"),
    };
    let parse = gst::ElementFactory::make(parser).build().map_err(|e| format!("{parser}: {e}"))?;
    let filter = gst::ElementFactory::make("capsfilter")
        .property("caps", caps.parse::<gst::Caps>().map_err(|e| format!("caps {caps}: {e}"))?)
        .build()
        .map_err(|e| e.to_string())?;
    let sink = gst_app::AppSink::builder().sync(false).max_buffers(4).build();
    pipeline.add_many([&parse, &filter, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    gst::Element::link_many([&parse, &filter, sink.upcast_ref()]).map_err(|e| e.to_string())?;
    let mut record: Option<Vec<u8>> = None;
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                let Some(buffer) = sample.buffer() else { return Ok(gst::FlowSuccess::Ok) };
                counters.frames.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(buffer.size() as u64, Ordering::Relaxed);
                if buffer.flags().contains(gst::BufferFlags::DELTA_UNIT) {
                    return Ok(gst::FlowSuccess::Ok);
                }
                let codec_data = sample
                    .caps()
                    .and_then(|c| c.structure(0))
                    .and_then(|s| s.get::<gst::Buffer>("codec_data").ok())
                    .and_then(|b| b.map_readable().ok().map(|m| m.to_vec()));
                if let Some(rec) = codec_data
                    && record.as_ref() != Some(&rec)
                {
                    record = Some(rec.clone());
                    // A configuration is never dropped: a keyframe after it
                    // would be checked against the old one.
                    if events.blocking_send(PullEvent::Config { codec, record: rec }).is_err() {
                        return Err(gst::FlowError::Flushing);
                    }
                }
                let Some(pts) = buffer.pts() else { return Ok(gst::FlowSuccess::Ok) };
                let Ok(map) = buffer.map_readable() else { return Ok(gst::FlowSuccess::Ok) };
                let pts_ms = (pts.mseconds() & u64::from(u32::MAX)) as u32;
                // Waits while the stage is behind (an HLS playlist is read
                // faster than real time): back-pressure, not a lost keyframe.
                match events.blocking_send(PullEvent::Keyframe { pts_ms, data: map.to_vec() }) {
                    Err(_) => Err(gst::FlowError::Flushing),
                    Ok(()) => Ok(gst::FlowSuccess::Ok),
                }
            })
            .build(),
    );
    for e in [&parse, &filter, sink.upcast_ref()] {
        e.sync_state_with_parent().map_err(|e| e.to_string())?;
    }
    pad.link(&parse.static_pad("sink").expect("a parser has a sink pad")).map_err(|e| format!("{e:?}"))?;
    Ok(())
}
