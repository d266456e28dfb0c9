//! Per-stream capture schedule: which keyframes become snapshots (docs/capture.md).
//!
//! Runs inline in the stream's ingest task and does no I/O: it keeps the
//! grid on the media clock and, for a due keyframe, hands one job to the
//! bounded capture queue without ever blocking. A full queue is a missed
//! snapshot, counted.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};

use crate::config::Template;
use crate::index::Record;
use crate::metrics::Metrics;

/// Answers a "snapshot now" request: the records stored, or why not.
pub type Waiter = tokio::sync::oneshot::Sender<Result<Vec<Record>, String>>;

/// Answers a frame request (`frame.jpeg`): the picture, or why not.
pub type FrameWaiter = tokio::sync::oneshot::Sender<Result<Frame, String>>;

/// A decoded keyframe as JPEG, kept per live stream for `frame.jpeg`.
#[derive(Debug, Clone)]
pub struct Frame {
    pub jpeg: bytes::Bytes,
    pub width: u32,
    pub height: u32,
    /// When it was decoded (unix ms).
    pub decoded_ms: u64,
}

/// A live stream as the snapshot path sees it.
#[derive(Debug)]
pub struct StreamInfo {
    /// Unique per publish session; jobs of different sessions never share decoder state.
    pub session: u64,
    pub domain: String,
    pub app: String,
    pub stream: String,
    /// The template in force (None: the app has none, nothing is captured).
    /// Set at publish; changed only by a re-plan the capture applies.
    template: Mutex<Option<Arc<Template>>>,
    pub stats: StreamStats,
    /// The publisher's address (none for streams not from a connection).
    pub peer: Option<std::net::SocketAddr>,
    requests: Requests,
    /// A blank keyframe refused (skip_blank): its media time + 1, or 0. The
    /// next keyframe within the same interval is taken in its place.
    blank_retry: AtomicU64,
    /// The last keyframe decoded to a JPEG (a stored JPEG capture or a
    /// frame request's).
    pub last_frame: Mutex<Option<Frame>>,
    /// Held while one of its snapshots is stored. Holds the create time of
    /// the newest overwrite object stored: decoders may finish a stream's
    /// jobs out of order, and an older capture must not replace a newer one.
    pub order: tokio::sync::Mutex<u64>,
}

/// Requests from the API, applied by the capture at the next keyframe.
#[derive(Debug, Default)]
struct Requests {
    pending: AtomicBool,
    inner: Mutex<RequestsInner>,
}

#[derive(Debug, Default)]
struct RequestsInner {
    replan: Option<Option<Arc<Template>>>,
    waiters: Vec<Waiter>,
    /// Frame requests by the width asked for (0: the source's).
    frames: Vec<(u32, FrameWaiter)>,
}

impl StreamInfo {
    pub fn new(session: u64, domain: String, app: String, stream: String, template: Option<Arc<Template>>) -> Self {
        StreamInfo {
            session,
            domain,
            app,
            stream,
            template: Mutex::new(template),
            stats: StreamStats::default(),
            peer: None,
            requests: Requests::default(),
            blank_retry: AtomicU64::new(0),
            last_frame: Mutex::new(None),
            order: Default::default(),
        }
    }

    /// Tells the capture that a keyframe decoded to a blank picture that
    /// was refused. One taken for the grid at `on_grid` (media time) is
    /// retried: the next keyframe of the same interval is taken instead
    /// (none after it: the grid goes on as it was).
    pub fn refused_blank(&self, on_grid: Option<u32>) {
        self.stats.blank.fetch_add(1, Ordering::Relaxed);
        if let Some(media_ts) = on_grid {
            self.blank_retry.store(u64::from(media_ts) + 1, Ordering::Release);
        }
    }

    /// The codec of the stream's decoder configuration (H.264 until one is seen).
    pub fn codec(&self) -> crate::codec::Codec {
        crate::codec::Codec::ALL[usize::from(self.stats.codec.load(Ordering::Relaxed))]
    }

    /// Its health now: bitrate and frame rate over ingest's last window,
    /// GOP length, and the age of its last keyframe (0 before the first).
    pub fn health(&self, now_ms: u64) -> crate::metrics::StreamHealth {
        let st = &self.stats;
        let last_keyframe = st.last_keyframe_ms.load(Ordering::Relaxed);
        crate::metrics::StreamHealth {
            domain: self.domain.clone(),
            app: self.app.clone(),
            stream: self.stream.clone(),
            bitrate_bps: st.bitrate_bps.load(Ordering::Relaxed) as f64,
            fps: st.fps_centi.load(Ordering::Relaxed) as f64 / 100.0,
            gop_seconds: st.gop_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            keyframe_age_seconds: if last_keyframe == 0 {
                0.0
            } else {
                now_ms.saturating_sub(last_keyframe) as f64 / 1000.0
            },
        }
    }

    /// The same stream, published from `peer`.
    pub fn with_peer(self, peer: std::net::SocketAddr) -> Self {
        StreamInfo { peer: Some(peer), ..self }
    }

    /// The template in force.
    pub fn template(&self) -> Option<Arc<Template>> {
        self.template.lock().unwrap().clone()
    }

    /// Asks for a snapshot of the next keyframe (it does not move the grid).
    pub fn request_snapshot(&self, waiter: Waiter) {
        self.requests.inner.lock().unwrap().waiters.push(waiter);
        self.requests.pending.store(true, Ordering::Release);
    }

    /// Asks for the next keyframe decoded to a JPEG `width` wide (0: the
    /// source's width), stored nowhere.
    pub fn request_frame(&self, width: u32, waiter: FrameWaiter) {
        self.requests.inner.lock().unwrap().frames.push((width, waiter));
        self.requests.pending.store(true, Ordering::Release);
    }

    /// Puts a new template in force from the next keyframe, with a new grid.
    pub fn request_replan(&self, template: Option<Arc<Template>>) {
        self.requests.inner.lock().unwrap().replan = Some(template);
        self.requests.pending.store(true, Ordering::Release);
    }
}

/// One keyframe chosen for a snapshot, ready for a decoder.
pub struct CaptureJob {
    pub info: Arc<StreamInfo>,
    /// The template in force when the keyframe was taken.
    pub template: Arc<Template>,
    /// Wall-clock ms at which the keyframe arrived, strictly increasing per stream.
    pub create_timestamp_ms: u64,
    pub media_ts_ms: u32,
    pub received: Instant,
    /// The stream's parameter sets and the keyframe's access unit, Annex-B.
    pub annexb: Vec<u8>,
    /// What `annexb` is coded in.
    pub codec: crate::codec::Codec,
    /// Taken for the grid (false: only for "snapshot now" requests); a
    /// blank one of these is retried at the next keyframe of its interval.
    pub on_grid: bool,
    /// "Snapshot now" requests this capture answers.
    pub waiters: Vec<Waiter>,
    /// Frame requests this job answers. A job with any is decoded for them
    /// only (its template asks for a JPEG of their width) and stored nowhere.
    pub frames: Vec<FrameWaiter>,
}

impl CaptureJob {
    /// Tells every waiter why the capture failed.
    pub fn fail_waiters(&mut self, why: &str) {
        for w in self.waiters.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
        for w in self.frames.drain(..) {
            let _ = w.send(Err(why.to_owned()));
        }
    }
}

/// Counters of one stream, readable by the API while it is live.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub keyframes: AtomicU64,
    pub queued: AtomicU64,
    pub missed: AtomicU64,
    /// Keyframes that were due but not decodable (no IDR, bad lengths, no config).
    pub rejected: AtomicU64,
    /// Captures skipped because their target was down and the spool full.
    pub skipped: AtomicU64,
    /// Blank keyframes refused (skip_blank).
    pub blank: AtomicU64,
    /// [`crate::codec::Codec::index`] of the stream's codec.
    pub codec: AtomicU8,
    /// Media ms between the last two keyframes.
    pub gop_ms: AtomicU64,
    /// Captures stored, and the newest one's time and size.
    pub stored: AtomicU64,
    pub last_snapshot_ms: AtomicU64,
    pub width: AtomicU32,
    pub height: AtomicU32,
    /// Health, for the streams API and per-stream metrics: when the last
    /// keyframe arrived (unix ms), and the media bitrate (bits/s) and video
    /// frame rate (frames per 100 s) over the last window ingest measured.
    pub last_keyframe_ms: AtomicU64,
    pub bitrate_bps: AtomicU64,
    pub fps_centi: AtomicU64,
}

/// The fixed grid of due times on the media clock.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval_ms: u64,
    next_due: Option<u64>,
    last_ts: Option<u32>,
    /// How early a keyframe may be and still count as at its due time:
    /// timestamp jitter (SPEC §3), half a frame, within [`EARLY_MS`].
    early_ms: u64,
}

/// The least and most a keyframe may be early and count as on time (ms).
pub const EARLY_MS: (u64, u64) = (20, 100);

impl Schedule {
    pub fn new(interval_s: u32) -> Self {
        Schedule { interval_ms: u64::from(interval_s) * 1000, next_due: None, last_ts: None, early_ms: EARLY_MS.0 }
    }

    /// Tells the frame duration measured on the stream (ms): a keyframe up
    /// to half of it before its due time counts as at it.
    pub fn frame_ms(&mut self, ms: u32) {
        self.early_ms = (u64::from(ms) / 2).clamp(EARLY_MS.0, EARLY_MS.1);
    }

    /// Sees a keyframe at media time `ts` (ms); true if it is due. A jump
    /// backwards (encoder restart, the 32-bit wrap) or forwards by more than
    /// max(60 s, 10 intervals) restarts the grid at this keyframe.
    pub fn is_due(&mut self, ts: u32) -> bool {
        if let Some(last) = self.last_ts {
            let limit = (10 * self.interval_ms).max(60_000);
            if ts < last || u64::from(ts - last) > limit {
                self.next_due = None;
            }
        }
        self.last_ts = Some(ts);
        self.next_due.is_none_or(|due| u64::from(ts) + self.early_ms >= due)
    }

    /// Whether a keyframe at `ts` is in the interval whose capture was the
    /// keyframe at `taken` (no later one has been taken since).
    pub fn in_slot_of(&self, taken: u32, ts: u32) -> bool {
        let (taken, ts) = (u64::from(taken), u64::from(ts));
        self.next_due.is_some_and(|due| ts > taken && ts < due && taken + self.early_ms + self.interval_ms >= due)
    }

    /// Records that the keyframe at `ts` was taken: the next due time is the
    /// first grid point after it (a late keyframe does not shift the grid,
    /// nor does one a little early).
    pub fn taken(&mut self, ts: u32) {
        let ts = u64::from(ts);
        let i = self.interval_ms;
        self.next_due = Some(match self.next_due {
            None => ts + i,
            Some(due) if ts + self.early_ms >= due => due + (ts.saturating_sub(due) / i + 1) * i,
            Some(due) => due,
        });
    }
}

/// What became of a keyframe offered to the capture stage.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    NotDue,
    Queued,
    /// Due, but the capture queue was full.
    Missed,
}

/// The capture state of one publishing stream.
pub struct StreamCapture {
    info: Arc<StreamInfo>,
    template: Option<Arc<Template>>,
    schedule: Schedule,
    last_create_ms: u64,
    last_keyframe: Option<u32>,
    /// The frame duration last measured (kept across a re-plan).
    frame_ms: Option<u32>,
    queue: Sender<CaptureJob>,
    metrics: Arc<Metrics>,
}

impl StreamCapture {
    pub fn new(info: Arc<StreamInfo>, queue: Sender<CaptureJob>, metrics: Arc<Metrics>) -> Self {
        let template = info.template();
        let schedule = Schedule::new(template.as_ref().map_or(MAX_INTERVAL, |t| t.time_interval_s));
        StreamCapture {
            info,
            template,
            schedule,
            last_create_ms: 0,
            last_keyframe: None,
            frame_ms: None,
            queue,
            metrics,
        }
    }

    pub fn info(&self) -> &Arc<StreamInfo> {
        &self.info
    }

    /// Tells the codec of the stream's decoder configuration (its jobs' codec).
    pub fn set_codec(&mut self, codec: crate::codec::Codec) {
        self.info.stats.codec.store(codec.index(), Ordering::Relaxed);
    }

    /// Tells the stream's frame duration, as ingest measured it (ms).
    pub fn frame_ms(&mut self, ms: u32) {
        self.frame_ms = Some(ms);
        self.schedule.frame_ms(ms);
    }

    /// Applies the API's requests; returns the snapshot-now waiters and the frame requests.
    fn take_requests(&mut self) -> (Vec<Waiter>, Vec<(u32, FrameWaiter)>) {
        if !self.info.requests.pending.swap(false, Ordering::Acquire) {
            return (Vec::new(), Vec::new());
        }
        let mut inner = self.info.requests.inner.lock().unwrap();
        if let Some(template) = inner.replan.take() {
            tracing::info!(
                domain = %self.info.domain, app = %self.info.app, stream = %self.info.stream,
                interval_s = template.as_ref().map(|t| t.time_interval_s), "snapshot config re-planned"
            );
            self.schedule = Schedule::new(template.as_ref().map_or(MAX_INTERVAL, |t| t.time_interval_s));
            if let Some(ms) = self.frame_ms {
                self.schedule.frame_ms(ms);
            }
            self.template = template.clone();
            *self.info.template.lock().unwrap() = template;
        }
        (std::mem::take(&mut inner.waiters), std::mem::take(&mut inner.frames))
    }

    /// Puts requests back for the next keyframe.
    fn defer(&self, waiters: Vec<Waiter>, frames: Vec<(u32, FrameWaiter)>) {
        if !waiters.is_empty() || !frames.is_empty() {
            let mut inner = self.info.requests.inner.lock().unwrap();
            inner.waiters.extend(waiters);
            inner.frames.extend(frames);
            self.info.requests.pending.store(true, Ordering::Release);
        }
    }

    /// Offers a keyframe at media time `ts`. Only when it is due (or a
    /// snapshot was asked for) is `build` called to check it and make the
    /// decoder job; if that fails, the grid stays and the next keyframe is tried.
    pub fn on_keyframe<E>(&mut self, ts: u32, build: impl FnOnce() -> Result<Vec<u8>, E>) -> Result<Offer, E> {
        let stats = &self.info.stats;
        stats.keyframes.fetch_add(1, Ordering::Relaxed);
        stats.last_keyframe_ms.store(crate::unix_ms(), Ordering::Relaxed);
        if let Some(last) = self.last_keyframe
            && ts > last
            && ts - last < 60_000
        {
            stats.gop_ms.store(u64::from(ts - last), Ordering::Relaxed);
        }
        self.last_keyframe = Some(ts);
        let (mut waiters, frames) = self.take_requests();
        let template = self.template.clone();
        let (due, retry) = match &template {
            Some(_) => {
                let due = self.schedule.is_due(ts);
                // After a blank capture of the current interval, the next keyframe in it.
                let blank = self.info.blank_retry.load(Ordering::Acquire);
                (due, !due && blank > 0 && self.schedule.in_slot_of((blank - 1) as u32, ts))
            }
            None => {
                for w in waiters.drain(..) {
                    let _ = w.send(Err("the app has no snapshot config".into()));
                }
                (false, false)
            }
        };
        if !due && !retry && waiters.is_empty() && frames.is_empty() {
            return Ok(Offer::NotDue);
        }
        let annexb = match build() {
            Ok(job) => job,
            Err(e) => {
                self.info.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.defer(waiters, frames);
                return Err(e);
            }
        };
        if !frames.is_empty() {
            // A frame needs no template: it is stored nowhere.
            let plain;
            let base = match &template {
                Some(t) => t.as_ref(),
                None => {
                    plain = Template::plain("", "");
                    &plain
                }
            };
            self.send_frames(base, ts, &annexb, frames);
        }
        let Some(template) = template.filter(|_| due || retry || !waiters.is_empty()) else {
            return Ok(Offer::NotDue);
        };
        if due {
            self.schedule.taken(ts);
        }
        if due || retry {
            self.info.blank_retry.store(0, Ordering::Release);
        }
        let job = CaptureJob { on_grid: due || retry, waiters, ..self.job(template, ts, annexb) };
        let stats = &self.info.stats;
        match self.queue.try_send(job) {
            Ok(()) => {
                stats.queued.fetch_add(1, Ordering::Relaxed);
                self.metrics.snapshots_queued.inc();
                Ok(Offer::Queued)
            }
            Err(TrySendError::Full(mut job) | TrySendError::Disconnected(mut job)) => {
                job.fail_waiters("the capture queue is full");
                stats.missed.fetch_add(1, Ordering::Relaxed);
                self.metrics.snapshots_missed.inc();
                Ok(Offer::Missed)
            }
        }
    }
}

impl StreamCapture {
    /// A job of this stream's keyframe at media time `ts`, answering no
    /// request yet; its create time is after every earlier job's.
    fn job(&mut self, template: Arc<Template>, ts: u32, annexb: Vec<u8>) -> CaptureJob {
        let create = crate::unix_ms().max(self.last_create_ms + 1);
        self.last_create_ms = create;
        CaptureJob {
            info: self.info.clone(),
            template,
            create_timestamp_ms: create,
            media_ts_ms: ts,
            received: Instant::now(),
            annexb,
            codec: self.info.codec(),
            on_grid: false,
            waiters: Vec::new(),
            frames: Vec::new(),
        }
    }

    /// Queues one job per width asked for: the keyframe decoded to a JPEG
    /// for the frame requests only (a full queue fails them, as it would a
    /// snapshot).
    fn send_frames(&mut self, template: &Template, ts: u32, annexb: &[u8], mut frames: Vec<(u32, FrameWaiter)>) {
        frames.sort_by_key(|(w, _)| *w);
        while let Some(&(width, _)) = frames.first() {
            let n = frames.iter().take_while(|(w, _)| *w == width).count();
            let waiters: Vec<FrameWaiter> = frames.drain(..n).map(|(_, w)| w).collect();
            let template = Arc::new(Template {
                format: crate::config::ImageFormat::Jpg,
                width,
                height: 0,
                jpeg_quality: crate::config::DEFAULT_JPEG_QUALITY,
                skip_blank: false,
                storyboard_s: 0,
                ..template.clone()
            });
            let job = CaptureJob { frames: waiters, ..self.job(template, ts, annexb.to_vec()) };
            if let Err(TrySendError::Full(mut job) | TrySendError::Disconnected(mut job)) = self.queue.try_send(job) {
                job.fail_waiters("the capture queue is full");
            }
        }
    }
}

/// The grid of a stream without a template: it never comes due.
const MAX_INTERVAL: u32 = u32::MAX / 1000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds keyframe times; returns the ones taken.
    fn taken(interval_s: u32, keyframes: &[u32]) -> Vec<u32> {
        let mut s = Schedule::new(interval_s);
        keyframes
            .iter()
            .copied()
            .filter(|&ts| {
                let due = s.is_due(ts);
                if due {
                    s.taken(ts);
                }
                due
            })
            .collect()
    }

    #[test]
    fn one_per_interval_on_a_fixed_grid() {
        let gop1: Vec<u32> = (0..=30).map(|s| s * 1000).collect();
        assert_eq!(taken(5, &gop1), vec![0, 5000, 10000, 15000, 20000, 25000, 30000]);
        // GOP 4 s: first keyframe at or after each due time; the grid does not shift.
        let gop4: Vec<u32> = (0..=7).map(|s| s * 4000).collect();
        assert_eq!(taken(5, &gop4), vec![0, 8000, 12000, 16000, 20000, 28000]);
        // Offset start and jittered keyframes: 21 ms early is early, 1 ms is on time.
        assert_eq!(taken(5, &[700, 2700, 4700, 5679, 5701, 10650, 10699]), vec![700, 5701, 10699]);
    }

    /// The GStreamer/librtmp push of issue 18: the first keyframe 3 ms off
    /// the lattice of the later ones (GOP 2 s) must not cost a GOP at 10, 20 and 30 s.
    #[test]
    fn a_keyframe_a_few_ms_early_is_on_time() {
        let keyframes: Vec<u32> = std::iter::once(3).chain((1..=18).map(|k| k * 2000)).collect();
        assert_eq!(taken(5, &keyframes), vec![3, 6000, 10_000, 16_000, 20_000, 26_000, 30_000, 36_000]);
    }

    /// A blank capture's retry: keyframes after it and before the next due
    /// time are in its interval; none once a later one has been taken.
    #[test]
    fn the_interval_of_a_taken_keyframe() {
        let mut s = Schedule::new(5);
        s.is_due(0);
        s.taken(0);
        assert!(s.in_slot_of(0, 1000) && s.in_slot_of(0, 4900));
        assert!(!s.in_slot_of(0, 0) && !s.in_slot_of(0, 5000));
        // Taken 20 ms early (jitter): the interval is still the one it opened.
        s.is_due(4980);
        s.taken(4980);
        assert!(s.in_slot_of(4980, 6000));
        assert!(!s.in_slot_of(0, 6000), "a later keyframe was taken since");
    }

    #[test]
    fn how_early_follows_the_measured_frame_duration() {
        let mut s = Schedule::new(5);
        assert!(s.is_due(0));
        s.taken(0);
        // Unknown or 33/34 ms frames: 20 ms.
        assert!(!s.is_due(4979) && s.is_due(4980));
        for (frame, early) in [(33, 20), (40, 20), (100, 50), (1000, 100)] {
            let mut s = Schedule::new(5);
            s.frame_ms(frame);
            s.is_due(0);
            s.taken(0);
            assert!(!s.is_due(5000 - early - 1), "{frame} ms frames");
            assert!(s.is_due(5000 - early), "{frame} ms frames");
            // Taken early, the grid stays: the next is due at 10 s.
            s.taken(5000 - early);
            assert!(!s.is_due(9000) && s.is_due(10_000));
        }
    }

    #[test]
    fn gop_longer_than_interval_takes_every_keyframe() {
        let gop7: Vec<u32> = (0..5).map(|s| s * 7000).collect();
        assert_eq!(taken(5, &gop7), gop7);
    }

    #[test]
    fn discontinuities_restart_the_grid() {
        // Encoder restart: media time goes back to 0.
        assert_eq!(taken(5, &[0, 1000, 5000, 6000, 0, 1000, 5000]), vec![0, 5000, 0, 5000]);
        // A forward jump past max(60 s, 10 intervals).
        assert_eq!(taken(5, &[0, 1000, 2000, 70_000, 71_000, 75_000]), vec![0, 70_000, 75_000]);
        // A forward jump within it keeps the grid.
        assert_eq!(taken(5, &[0, 1000, 32_000, 33_000, 35_000]), vec![0, 32_000, 35_000]);
        // The 32-bit wrap.
        assert_eq!(taken(5, &[u32::MAX - 2000, u32::MAX - 1000, 500, 1500, 5500]), vec![u32::MAX - 2000, 500, 5500]);
    }

    #[test]
    fn full_queue_is_a_miss_and_create_times_increase() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let info = Arc::new(StreamInfo::new(1, "d".into(), "a".into(), "s".into(), Some(template(5))));
        let mut c = StreamCapture::new(info, tx, Arc::new(Metrics::new()));
        let ok = || Ok::<_, ()>(vec![1]);
        assert_eq!(c.on_keyframe(0, ok), Ok(Offer::Queued));
        assert_eq!(c.on_keyframe(1000, ok), Ok(Offer::NotDue));
        assert_eq!(c.on_keyframe(5000, ok), Ok(Offer::Missed));
        assert_eq!(c.on_keyframe(6000, ok), Ok(Offer::NotDue));
        // A failed build leaves the grid: the next keyframe is tried.
        assert_eq!(c.on_keyframe(10_000, || Err::<Vec<u8>, ()>(())), Err(()));
        let first = rx.recv().unwrap();
        assert_eq!(c.on_keyframe(11_000, ok), Ok(Offer::Queued));
        let second = rx.recv().unwrap();
        assert!(second.create_timestamp_ms > first.create_timestamp_ms);
        assert_eq!(second.media_ts_ms, 11_000);
        assert_eq!(c.info().stats.missed.load(Ordering::Relaxed), 1);
        assert_eq!(c.info().stats.rejected.load(Ordering::Relaxed), 1);
    }

    fn template(interval_s: u32) -> Arc<Template> {
        Arc::new(Template {
            app_name: "*".into(),
            time_interval_s: interval_s,
            storage: "local".into(),
            overwrite_object: Some("x.jpg".into()),
            sequence_object: None,
            callback: None,
            jpeg_quality: 85,
            width: 0,
            height: 0,
            format: Default::default(),
            skip_blank: false,
            storyboard_s: 0,
            origin: crate::config::Origin::File,
        })
    }

    #[test]
    fn snapshot_now_keeps_the_grid_and_replan_restarts_it() {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let info = Arc::new(StreamInfo::new(1, "d".into(), "a".into(), "s".into(), Some(template(10))));
        let mut c = StreamCapture::new(info.clone(), tx, Arc::new(Metrics::new()));
        let ok = || Ok::<_, ()>(vec![1]);
        assert_eq!(c.on_keyframe(0, ok), Ok(Offer::Queued));
        let (w, mut answer) = tokio::sync::oneshot::channel();
        info.request_snapshot(w);
        // Not due, but asked for: taken, with the waiter on the job.
        assert_eq!(c.on_keyframe(2000, ok), Ok(Offer::Queued));
        let mut job = rx.try_recv().and_then(|_| rx.try_recv()).unwrap();
        assert_eq!((job.media_ts_ms, job.waiters.len()), (2000, 1));
        job.fail_waiters("test");
        assert_eq!(answer.try_recv().unwrap(), Err("test".to_string()));
        // The grid did not move: 10 s is still the next due time.
        assert_eq!(c.on_keyframe(8000, ok), Ok(Offer::NotDue));
        assert_eq!(c.on_keyframe(10_000, ok), Ok(Offer::Queued));
        // A re-plan to 5 s applies at the next keyframe, which starts the new grid.
        info.request_replan(Some(template(5)));
        assert_eq!(c.on_keyframe(12_000, ok), Ok(Offer::Queued));
        assert_eq!(info.template().unwrap().time_interval_s, 5);
        assert_eq!(c.on_keyframe(16_000, ok), Ok(Offer::NotDue));
        assert_eq!(c.on_keyframe(17_000, ok), Ok(Offer::Queued));
        // No template: nothing is captured and a request is answered with why.
        info.request_replan(None);
        let (w, mut answer) = tokio::sync::oneshot::channel();
        info.request_snapshot(w);
        assert_eq!(c.on_keyframe(30_000, ok), Ok(Offer::NotDue));
        assert!(answer.try_recv().unwrap().is_err());
    }
}
