//! Pull sources (docs/sources.md): RTSP cameras, SRT feeds and HLS
//! playlists the host connects to itself, captured on the same grid, by
//! the same decoder pool, policy, storage and index as a push.
//!
//! One task per configured source. `media::pull` receives and parses its
//! video (no decoding) into what an RTMP publisher sends: a decoder
//! configuration record and length-prefixed access units. The task claims
//! the stream in ingest's live registry (a push of the same stream is
//! refused while the source is live, and the API lists it with its
//! pushes), checks each keyframe and builds its job with ingest's own code,
//! and offers it to the stream's capture schedule. A source that fails
//! (refused, unauthorized, no video, a codec not supported, the end of its
//! stream) is retried after 1 s, doubling up to 60 s, reset after a minute
//! of video; its state and last error are kept for the API. Sources are
//! started, stopped and replaced as the config in force changes.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{Offer, StreamCapture, StreamInfo};
use crate::config::{Settings, Source, SourceMode};
use crate::ingest::Ingest;
use crate::media::pull::{self, PullEvent, PullOptions};
use crate::stream::StreamKey;

/// No video frame for this long: the source is treated as failed.
const NO_VIDEO: Duration = Duration::from_secs(10);
/// The first configuration must come within this after connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Video for this long resets the backoff.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// In a fleet, how often a node standing by asks for a source's lease again.
const STANDBY_RETRY: Duration = Duration::from_secs(5);

/// Why a connection ended.
enum Ended {
    /// It failed: backed off, counted.
    Failed(String),
    /// Another node of the fleet holds the stream's lease: this one stands by.
    Standby(String),
}

impl From<String> for Ended {
    fn from(why: String) -> Self {
        Ended::Failed(why)
    }
}

impl From<&str> for Ended {
    fn from(why: &str) -> Self {
        Ended::Failed(why.to_owned())
    }
}

/// What a source is doing, as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SourceStatus {
    /// `connecting`, `live`, `idle` (on-demand, between captures),
    /// `backoff`, `standby` (in a fleet, another node captures it) or
    /// `waiting` (past `server.max_sources`, not started).
    pub state: &'static str,
    /// Why the last connection ended, if one did.
    pub last_error: Option<String>,
    /// When the next attempt is made (unix ms), while backing off.
    pub retry_at_ms: Option<u64>,
    /// Connections made since the host started.
    pub connects: u64,
    /// Failures in a row.
    pub failures: u32,
    /// Keyframes captured (queued for the decoders).
    pub captures: u64,
}

impl Default for SourceStatus {
    fn default() -> Self {
        SourceStatus { state: "connecting", last_error: None, retry_at_ms: None, connects: 0, failures: 0, captures: 0 }
    }
}

/// A running source: its config, status and stop signal.
struct Running {
    source: Source,
    status: Arc<Mutex<SourceStatus>>,
    stop: CancellationToken,
}

/// A source as listed: where it pulls from and what it is doing.
#[derive(Debug, Clone)]
pub struct SourceView {
    pub source: Source,
    pub status: SourceStatus,
}

pub struct Sources {
    ingest: Arc<Ingest>,
    settings: Arc<Settings>,
    running: Mutex<HashMap<StreamKey, Running>>,
    /// Sources past `server.max_sources`, not started.
    waiting: Mutex<HashMap<StreamKey, Source>>,
    tasks: TaskTracker,
}

impl Sources {
    pub fn new(ingest: Arc<Ingest>, settings: Arc<Settings>, tasks: TaskTracker) -> Arc<Sources> {
        Arc::new(Sources { ingest, settings, running: Mutex::new(HashMap::new()), waiting: Mutex::default(), tasks })
    }

    /// Keeps the running sources those of the config in force until `stop`:
    /// checked every second (a SIGHUP or an API change swaps the config).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut seen: Option<Arc<crate::config::Config>> = None;
        loop {
            let config = self.settings.get();
            if seen.as_ref().is_none_or(|s| !Arc::ptr_eq(s, &config)) {
                self.reconcile(&config);
                seen = Some(config);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        for (_, r) in self.running.lock().unwrap().drain() {
            r.stop.cancel();
        }
    }

    /// Follows the config in force now (after an API change), without
    /// waiting for the next check.
    pub fn refresh(self: &Arc<Self>) {
        self.reconcile(&self.settings.get());
    }

    /// Starts new sources, stops removed ones and restarts changed ones.
    fn reconcile(self: &Arc<Self>, config: &crate::config::Config) {
        let mut wanted: HashMap<StreamKey, Source> = HashMap::new();
        for (domain, d) in &config.domains {
            for s in &d.sources {
                wanted.insert(StreamKey::new(domain, &s.app, &s.stream), s.clone());
            }
        }
        let max = config.server.max_sources;
        let mut running = self.running.lock().unwrap();
        running.retain(|key, r| {
            let keep = wanted.get(key) == Some(&r.source);
            if !keep {
                tracing::info!(domain = %key.domain, app = %key.app, stream = %key.stream, "source removed or changed");
                r.stop.cancel();
            }
            keep
        });
        // Sources past the bound wait (by domain, app, stream: the same ones each time).
        let mut wanted: Vec<(StreamKey, Source)> = wanted.into_iter().collect();
        wanted.sort_by(|a, b| a.0.cmp(&b.0));
        self.waiting.lock().unwrap().clear();
        for (key, source) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            if running.len() >= max {
                tracing::warn!(
                    domain = %key.domain, app = %key.app, stream = %key.stream, max_sources = max,
                    "source not started: this node runs server.max_sources already"
                );
                self.waiting.lock().unwrap().insert(key, source);
                continue;
            }
            let status = Arc::new(Mutex::new(SourceStatus::default()));
            let stop = CancellationToken::new();
            let task = Task {
                ingest: self.ingest.clone(),
                settings: self.settings.clone(),
                key: key.clone(),
                source: source.clone(),
                status: status.clone(),
                stop: stop.clone(),
            };
            tracing::info!(
                domain = %key.domain, app = %key.app, stream = %key.stream, url = %source.url,
                mode = source.mode.as_str(), "source started"
            );
            self.tasks.spawn(task.run());
            running.insert(key, Running { source, status, stop });
        }
    }

    /// A domain's sources with their status, by app and stream.
    pub fn list(&self, domain: &str) -> Vec<SourceView> {
        let running = self.running.lock().unwrap();
        let mut out: Vec<SourceView> = running
            .iter()
            .filter(|(k, _)| k.domain == domain)
            .map(|(_, r)| SourceView { source: r.source.clone(), status: r.status.lock().unwrap().clone() })
            .collect();
        let waiting = self.waiting.lock().unwrap();
        out.extend(waiting.iter().filter(|(k, _)| k.domain == domain).map(|(_, s)| waiting_view(s)));
        out.sort_by(|a, b| (&a.source.app, &a.source.stream).cmp(&(&b.source.app, &b.source.stream)));
        out
    }

    /// The source of a stream, if one feeds it.
    pub fn get(&self, domain: &str, app: &str, stream: &str) -> Option<SourceView> {
        let key = StreamKey::new(domain, app, stream);
        let running = self.running.lock().unwrap();
        match running.get(&key) {
            Some(r) => Some(SourceView { source: r.source.clone(), status: r.status.lock().unwrap().clone() }),
            None => self.waiting.lock().unwrap().get(&key).map(waiting_view),
        }
    }
}

/// A source past `server.max_sources`, as listed.
fn waiting_view(source: &Source) -> SourceView {
    SourceView {
        source: source.clone(),
        status: SourceStatus {
            state: "waiting",
            last_error: Some("not started: this node runs server.max_sources sources already".into()),
            ..SourceStatus::default()
        },
    }
}

/// One source's task.
struct Task {
    ingest: Arc<Ingest>,
    settings: Arc<Settings>,
    key: StreamKey,
    source: Source,
    status: Arc<Mutex<SourceStatus>>,
    stop: CancellationToken,
}

impl Task {
    async fn run(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            let template = self.settings.get().template_for(&self.key.domain, &self.key.app);
            if self.source.mode == SourceMode::OnDemand {
                let Some(template) = template else {
                    self.set_state("idle", Some("the app has no snapshot config".into()));
                    tokio::select! {
                        _ = self.stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => continue,
                    }
                };
                // One keyframe per interval: wait for the next due time (wall clock).
                let interval = Duration::from_secs(u64::from(template.time_interval_s));
                let started = Instant::now();
                let result = self.connect(true).await;
                if self.stop.is_cancelled() {
                    return;
                }
                match result {
                    Ok(()) => {
                        backoff = BACKOFF_MIN;
                        self.set_state("idle", None);
                        let wait = interval.saturating_sub(started.elapsed());
                        tokio::select! {
                            _ = self.stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                    Err(Ended::Failed(why)) => backoff = self.back_off(why, backoff).await,
                    Err(Ended::Standby(why)) => self.stand_by(why).await,
                }
                if self.stop.is_cancelled() {
                    return;
                }
                continue;
            }
            let started = Instant::now();
            let result = self.connect(false).await;
            if self.stop.is_cancelled() {
                return;
            }
            if started.elapsed() >= HEALTHY_AFTER {
                backoff = BACKOFF_MIN;
            }
            match result {
                Err(Ended::Standby(why)) => self.stand_by(why).await,
                Err(Ended::Failed(why)) => backoff = self.back_off(why, backoff).await,
                Ok(()) => backoff = self.back_off("the source ended the stream".into(), backoff).await,
            }
            if self.stop.is_cancelled() {
                return;
            }
        }
    }

    fn set_state(&self, state: &'static str, error: Option<String>) {
        let mut s = self.status.lock().unwrap();
        s.state = state;
        s.retry_at_ms = None;
        if error.is_some() {
            s.last_error = error;
        }
    }

    /// Waits while another node of the fleet captures the source.
    async fn stand_by(&self, why: String) {
        {
            let mut s = self.status.lock().unwrap();
            s.state = "standby";
            s.last_error = Some(why);
            s.retry_at_ms = Some(crate::unix_ms() + STANDBY_RETRY.as_millis() as u64);
        }
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(STANDBY_RETRY) => {}
        }
    }

    /// Records a failure and waits `backoff` (or until stopped); returns the next backoff.
    async fn back_off(&self, why: String, backoff: Duration) -> Duration {
        let k = &self.key;
        tracing::warn!(
            domain = %k.domain, app = %k.app, stream = %k.stream, url = %self.source.url,
            retry_in_s = backoff.as_secs(), "source failed: {why}"
        );
        {
            let mut s = self.status.lock().unwrap();
            s.state = "backoff";
            s.failures += 1;
            s.last_error = Some(why);
            s.retry_at_ms = Some(crate::unix_ms() + backoff.as_millis() as u64);
        }
        tokio::select! {
            _ = self.stop.cancelled() => {}
            _ = tokio::time::sleep(backoff) => {}
        }
        (backoff * 2).min(BACKOFF_MAX)
    }

    /// One connection: receives until it fails, ends or is stopped (Ok
    /// when stopped), or, with `once`, until one keyframe was captured.
    async fn connect(&self, once: bool) -> Result<(), Ended> {
        // In a fleet one node captures a source: it takes the stream's lease
        // before connecting; the others stand by and ask again.
        let mut lease = Some(self.ingest.lease(&self.key).await.map_err(Ended::Standby)?);
        self.set_state("connecting", None);
        self.status.lock().unwrap().connects += 1;
        let credentials = match &self.source.credentials {
            None => None,
            Some(secret) => {
                let value = secret.read().map_err(|e| format!("credentials: {e}"))?;
                let (user, password) = value.split_once(':').ok_or("credentials: not of the form user:password")?;
                Some((user.to_owned(), password.to_owned()))
            }
        };
        let options = PullOptions {
            url: self.source.url.clone(),
            credentials,
            rtsp_tcp: self.source.rtsp_tcp,
            latency_ms: self.source.latency.as_millis() as u32,
        };
        let (tx, events) = tokio::sync::mpsc::channel(pull::EVENTS);
        let receiver = tokio::task::spawn_blocking(move || pull::open(&options, tx))
            .await
            .map_err(|e| format!("open the receiver: {e}"))??;
        // The events' receiver drops before the pipeline stops (field order).
        let mut conn = Connection { events, receiver };
        let connected = Instant::now();
        let mut live: Option<Live> = None;
        let mut config: Option<crate::ingest::VideoConfig> = None;
        let mut warmup = self.source.warmup_keyframes;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let (mut frames_seen, mut last_frame) = (0u64, Instant::now());
        let mut rate_start = (Instant::now(), 0u64, 0u64);
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    let frames = conn.receiver.counters.frames.load(Ordering::Relaxed);
                    if frames != frames_seen {
                        frames_seen = frames;
                        last_frame = Instant::now();
                        if let Some(l) = &live {
                            l.claim.touch();
                        }
                    } else if live.is_some() && last_frame.elapsed() >= NO_VIDEO {
                        return Err(format!("no video for {} s", NO_VIDEO.as_secs()).into());
                    }
                    if live.is_none() && connected.elapsed() >= CONNECT_TIMEOUT {
                        return Err(format!("no video within {} s of connecting", CONNECT_TIMEOUT.as_secs()).into());
                    }
                    continue;
                }
                event = conn.events.recv() => event,
            };
            match event {
                None => return Err("the receiver stopped".into()),
                Some(PullEvent::Ended(why)) => return Err(why.into()),
                Some(PullEvent::Config { codec, record }) => {
                    let cfg = crate::ingest::video_config(codec, &record)
                        .map_err(|e| format!("the source's {codec} configuration: {e}"))?;
                    if live.is_none() {
                        live = Some(self.go_live(lease.take().flatten())?);
                    }
                    if let Some(l) = live.as_mut() {
                        l.capture.set_codec(cfg.codec);
                    }
                    config = Some(cfg);
                }
                Some(PullEvent::Keyframe { pts_ms, data }) => {
                    let (Some(l), Some(cfg)) = (live.as_mut(), config.as_ref()) else { continue };
                    l.claim.touch();
                    // Rates over at least 2 s, published at a keyframe as ingest does.
                    let elapsed = rate_start.0.elapsed();
                    if elapsed >= Duration::from_secs(2) {
                        let (frames, bytes) = (
                            conn.receiver.counters.frames.load(Ordering::Relaxed),
                            conn.receiver.counters.bytes.load(Ordering::Relaxed),
                        );
                        let ms = elapsed.as_millis().max(1) as u64;
                        let stats = &l.capture.info().stats;
                        let fps_centi = (frames - rate_start.1) * 100_000 / ms;
                        stats.bitrate_bps.store((bytes - rate_start.2) * 8 * 1000 / ms, Ordering::Relaxed);
                        stats.fps_centi.store(fps_centi, Ordering::Relaxed);
                        if let Some(ms) = 100_000u64.checked_div(fps_centi) {
                            l.capture.frame_ms(ms as u32);
                        }
                        rate_start = (Instant::now(), frames, bytes);
                    }
                    if warmup > 0 {
                        warmup -= 1;
                        continue;
                    }
                    // On demand, each keyframe is asked for until one is stored:
                    // one the template refuses as blank is followed by the next.
                    let (tx, stored) = tokio::sync::oneshot::channel();
                    if once {
                        l.capture.info().request_snapshot(tx);
                    }
                    let offer = l.capture.on_keyframe(pts_ms, || {
                        crate::ingest::keyframe_job(cfg, cfg.codec, &data).map_err(|e| e.to_string())
                    });
                    let k = &self.key;
                    match offer {
                        Ok(Offer::Queued) => {
                            self.status.lock().unwrap().captures += 1;
                            if once {
                                match tokio::time::timeout(CONNECT_TIMEOUT, stored).await {
                                    Ok(Ok(Ok(_))) => return Ok(()),
                                    Ok(Ok(Err(why))) if why.contains("blank") => {
                                        tracing::debug!(
                                            domain = %k.domain, app = %k.app, stream = %k.stream,
                                            "blank keyframe refused: taking the next"
                                        );
                                    }
                                    Ok(Ok(Err(why))) => return Err(format!("the capture failed: {why}").into()),
                                    Ok(Err(_)) | Err(_) => return Err("the capture was not stored in time".into()),
                                }
                            }
                        }
                        Ok(Offer::Missed) => tracing::warn!(
                            domain = %k.domain, app = %k.app, stream = %k.stream, "capture queue full: snapshot missed"
                        ),
                        Ok(Offer::NotDue) => {}
                        Err(why) => tracing::warn!(
                            domain = %k.domain, app = %k.app, stream = %k.stream, media_ts = pts_ms,
                            "due keyframe not decodable, trying the next: {why}"
                        ),
                    }
                }
            }
        }
    }

    /// Claims the stream with a new session and capture schedule (holding
    /// its fleet lease, taken before connecting).
    fn go_live(&self, lease: Option<crate::ingest::Lease>) -> Result<Live, String> {
        let k = &self.key;
        let template = self.settings.get().template_for(&k.domain, &k.app);
        let info = Arc::new(StreamInfo::new(
            self.ingest.new_session_id(),
            k.domain.clone(),
            k.app.clone(),
            k.stream.clone(),
            template,
        ));
        let capture = StreamCapture::new(info.clone(), self.ingest.capture_queue(), self.ingest.metrics().clone());
        let claim = self.ingest.claim(info).map_err(|e| e.to_string())?;
        tracing::info!(domain = %k.domain, app = %k.app, stream = %k.stream, "source live");
        self.set_state("live", None);
        Ok(Live { claim, _lease: lease, capture })
    }
}

/// A connection's two ends, dropped in this order: a streaming thread
/// waiting to send an event ends before the pipeline is stopped.
struct Connection {
    events: tokio::sync::mpsc::Receiver<PullEvent>,
    receiver: pull::Receiver,
}

/// A source's stream while it is live.
struct Live {
    claim: crate::ingest::Claim,
    /// In a fleet, the stream's lease (SPEC §9), given up when it ends.
    _lease: Option<crate::ingest::Lease>,
    capture: StreamCapture,
}
