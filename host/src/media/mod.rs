//! The decoder pool (docs/capture.md): a few long-lived GStreamer pipelines, shared by
//! all streams, each turning one keyframe job into one JPEG.
//!
//! `appsrc ! avdec_h264 ! videoscale ! capsfilter ! videoconvert ! jpegenc ! appsink`
//! (`avdec_h265` for HEVC, ...; `webpenc` for WebP templates), fed one buffer per job (the stream's parameter sets + the
//! keyframe's access unit, Annex-B). A probe
//! marks the segment TRICKMODE_KEY_UNITS so the decoder drains after every
//! keyframe (no lag), and a serialized marker event after each job tells
//! when the job is done, picture or not. Memory does not grow with the number
//! of streams: only the pool's pipelines hold decoder state.
//!
//! Isolation: libav conceals a damaged picture with the last picture it
//! decoded, which in a shared pool may be another stream's. Before a job of a
//! different publish session, the worker flushes the decoder so nothing of the
//! previous stream remains, and corrupted pictures are discarded.

mod facts;
mod pipeline;
pub mod pull;
mod range;

pub use crate::codec::Codec;
pub use facts::FrameFacts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Receiver;
use tokio::sync::mpsc;

use crate::capture::CaptureJob;
use crate::metrics::Metrics;

pub use pipeline::MediaError;

/// A decoded snapshot, encoded in its template's format at its size.
pub struct Image {
    /// JPEG or WebP.
    pub bytes: Bytes,
    pub width: u32,
    pub height: u32,
    /// Facts about the picture for policy plugins.
    pub facts: FrameFacts,
}

/// A job's outcome, handed to the snapshot path.
pub struct Decoded {
    pub job: CaptureJob,
    pub result: Result<Image, MediaError>,
    pub decode_time: Duration,
}

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub workers: usize,
}

/// Initialises GStreamer and checks the elements the pool needs.
pub fn init() -> Result<(), MediaError> {
    gstreamer::init().map_err(|e| MediaError::Pipeline(format!("gstreamer init: {e}")))?;
    for name in ["appsrc", "avdec_h264", "videoconvert", "jpegenc", "appsink"] {
        if gstreamer::ElementFactory::find(name).is_none() {
            return Err(MediaError::Pipeline(format!(
                "gstreamer element {name} is missing (install gstreamer1.0-plugins-base/-good/-bad and gstreamer1.0-libav)"
            )));
        }
    }
    Ok(())
}

/// Starts the pool's worker threads. They take jobs from `jobs` until it is
/// closed and empty, and send each outcome on `out`.
pub fn start(
    options: PoolOptions,
    jobs: Receiver<CaptureJob>,
    out: mpsc::Sender<Decoded>,
    metrics: Arc<Metrics>,
) -> Result<Vec<std::thread::JoinHandle<()>>, MediaError> {
    init()?;
    let mut handles = Vec::new();
    for i in 0..options.workers {
        let mut worker = pipeline::Worker::new(i)?;
        let jobs = jobs.clone();
        let out = out.clone();
        let metrics = metrics.clone();
        let handle = std::thread::Builder::new()
            .name(format!("decoder-{i}"))
            .spawn(move || {
                while let Ok(mut job) = jobs.recv() {
                    let started = Instant::now();
                    let result = worker.decode(&mut job);
                    let decode_time = started.elapsed();
                    metrics.stage("decode", decode_time.as_secs_f64());
                    if let Err(e) = &result {
                        metrics.failed("decode");
                        tracing::warn!(
                            domain = %job.info.domain, app = %job.info.app, stream = %job.info.stream,
                            error = %e, "keyframe produced no snapshot"
                        );
                    }
                    if out.blocking_send(Decoded { job, result, decode_time }).is_err() {
                        break;
                    }
                }
                worker.stop();
            })
            .map_err(|e| MediaError::Pipeline(format!("spawn decoder thread: {e}")))?;
        handles.push(handle);
    }
    Ok(handles)
}
