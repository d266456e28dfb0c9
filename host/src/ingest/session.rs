//! One RTMP connection: handshake, commands, and the publish of one stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::amf0::{self, Value};
use super::chunk::{self, ChunkReader, Message, types};
use super::flv::{self, VideoConfig, VideoTag};
use super::{Claim, Ingest, LimitHit, Slot, StreamKey};
use crate::capture::{Offer, StreamCapture, StreamInfo};
use crate::config::RtmpLimits;
use crate::config::template::is_valid_stream_name;

const HANDSHAKE_SIZE: usize = 1536;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that sends nothing at all for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const OUT_CHUNK_SIZE: usize = 4096;
const WINDOW_ACK_SIZE: u32 = 2_500_000;

/// Why a connection was closed (each is logged once, with the peer).
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake: {0}")]
    Handshake(&'static str),
    #[error("rtmp chunk stream: {0}")]
    Chunk(#[from] chunk::ChunkError),
    #[error("amf0 command: {0}")]
    Amf(#[from] amf0::AmfError),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("publish refused: {0}")]
    Refused(String),
    #[error("video: {0}")]
    Video(#[from] flv::FlvError),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("limit {}: {}", .0.0, .0.1)]
    Limit(LimitHit),
}

impl From<LimitHit> for SessionError {
    fn from(hit: LimitHit) -> Self {
        SessionError::Limit(hit)
    }
}

impl SessionError {
    fn reason(&self) -> &'static str {
        match self {
            SessionError::Io(_) => "io",
            SessionError::Handshake(_) => "handshake",
            SessionError::Chunk(_) | SessionError::Amf(_) | SessionError::Protocol(_) => "protocol",
            SessionError::Refused(_) => "refused",
            SessionError::Video(flv::FlvError::Unsupported(_)) => "unsupported_codec",
            SessionError::Video(_) => "malformed_video",
            SessionError::Idle(_) => "idle",
            SessionError::Limit(_) => "limit",
        }
    }
}

struct Publishing {
    claim: Claim,
    /// The stream's fleet lease (None on a node alone), given up on drop.
    _lease: Option<super::Lease>,
    capture: StreamCapture,
    video: Option<VideoConfig>,
    stream_id: u32,
    /// Keyframes this publish queued for a snapshot.
    queued: u64,
    started: std::time::Instant,
    rate: RateWindow,
    gap: FrameGap,
}

/// The shortest step between video frames' timestamps since the last
/// keyframe: the stream's frame duration, measured on its own clock.
#[derive(Default)]
struct FrameGap {
    last: Option<u32>,
    least: Option<u32>,
}

impl FrameGap {
    fn frame(&mut self, ts: u32) {
        if let Some(last) = self.last
            && ts > last
        {
            self.least = Some(self.least.map_or(ts - last, |l| l.min(ts - last)));
        }
        self.last = Some(ts);
    }
}

/// Media bytes and video frames since `start`; published to the stream's
/// stats at a keyframe once [`RATE_WINDOW`] has passed.
struct RateWindow {
    start: std::time::Instant,
    bytes: u64,
    frames: u64,
}

const RATE_WINDOW: Duration = Duration::from_secs(2);

impl Publishing {
    /// Counts one media message (`frame`: a video frame, not a sequence header).
    fn media(&mut self, bytes: usize, frame: bool) {
        self.rate.bytes += bytes as u64;
        self.rate.frames += u64::from(frame);
    }

    /// At a keyframe: publishes the window's bitrate and frame rate once it is long enough.
    fn publish_rates(&mut self) {
        let elapsed = self.rate.start.elapsed();
        if elapsed < RATE_WINDOW {
            return;
        }
        let ms = elapsed.as_millis().max(1) as u64;
        let stats = &self.capture.info().stats;
        stats.bitrate_bps.store(self.rate.bytes * 8 * 1000 / ms, Ordering::Relaxed);
        stats.fps_centi.store(self.rate.frames * 100_000 / ms, Ordering::Relaxed);
        self.rate = RateWindow { start: std::time::Instant::now(), bytes: 0, frames: 0 };
    }

    /// The publish's summary line, at info.
    fn log_end(&self, peer: SocketAddr, session: u64, bytes_received: u64, why: &str) {
        let StreamKey { domain, app, stream } = &self.claim.key;
        tracing::info!(
            %peer, session, %domain, %app, %stream, seconds = self.started.elapsed().as_secs(), bytes_received,
            snapshots_queued = self.queued, "publish ended: {why}"
        );
    }
}

struct Session {
    ingest: Arc<Ingest>,
    slot: Slot,
    limits: RtmpLimits,
    cancel: CancellationToken,
    peer: SocketAddr,
    id: u64,
    reader: ChunkReader,
    out: BytesMut,
    app: Option<String>,
    app_params: Vec<(String, String)>,
    tc_url: Option<String>,
    publishing: Option<Publishing>,
    received: u64,
    acked: u64,
    ack_window: u64,
}

pub(super) async fn serve(
    ingest: Arc<Ingest>,
    slot: Slot,
    limits: RtmpLimits,
    mut socket: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let id = ingest.new_session_id();
    let mut session = Session {
        ingest: ingest.clone(),
        slot,
        limits,
        cancel,
        peer,
        id,
        reader: ChunkReader::new(),
        out: BytesMut::with_capacity(4096),
        app: None,
        app_params: Vec::new(),
        tc_url: None,
        publishing: None,
        received: 0,
        acked: 0,
        ack_window: u64::from(WINDOW_ACK_SIZE),
    };
    match session.run(&mut socket).await {
        Ok(()) => tracing::debug!(%peer, session = id, "rtmp connection closed"),
        Err(SessionError::Limit(LimitHit(limit, detail))) => {
            ingest.metrics.rejected("limit");
            ingest.metrics.limit_hit(limit, format_args!("{peer}: {detail}"));
            tracing::debug!(%peer, session = id, limit, "rtmp connection closed: {detail}");
        }
        Err(e) => {
            ingest.metrics.rejected(e.reason());
            let stream = session.publishing.as_ref().map(|p| p.claim.key.to_string());
            match e {
                SessionError::Io(_) => {
                    tracing::info!(%peer, session = id, stream, error = %e, "rtmp connection closed")
                }
                _ => {
                    tracing::warn!(%peer, session = id, stream, error = %e, "rtmp connection closed on bad input")
                }
            }
        }
    }
    if let Some(p) = &session.publishing {
        p.log_end(peer, id, session.received, "connection closed");
    }
    // Flush any final status the peer should see (best effort).
    if !session.out.is_empty() {
        let _ = tokio::time::timeout(Duration::from_secs(1), socket.write_all(&session.out)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.shutdown()).await;
}

impl Session {
    async fn run(&mut self, socket: &mut TcpStream) -> Result<(), SessionError> {
        let cancel = self.cancel.clone();
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(socket))
            .await
            .map_err(|_| SessionError::Handshake("timed out"))??;
        let mut buf = BytesMut::with_capacity(64 * 1024);
        // Stands in for the eviction token while nothing is published.
        let never = CancellationToken::new();
        loop {
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            let evicted = self.publishing.as_ref().map_or(&never, |p| &p.claim.evicted);
            let n = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                _ = evicted.cancelled() => {
                    let why = self.publishing.as_ref().and_then(|p| p.claim.evict_reason.get().copied());
                    return Err(SessionError::Refused(why.unwrap_or("ended by the host").into()));
                }
                r = tokio::time::timeout(IDLE_TIMEOUT, socket.read_buf(&mut buf)) => match r {
                    Err(_) => return Err(SessionError::Idle(IDLE_TIMEOUT)),
                    Ok(r) => r?,
                },
            };
            if n == 0 {
                return Ok(());
            }
            self.received += n as u64;
            while let Some(msg) = self.reader.read(&mut buf)? {
                if !self.handle(msg).await? {
                    return self.flush(socket).await;
                }
            }
            self.slot.hold(buf.len() + self.reader.buffered(), &self.limits)?;
            if self.received - self.acked >= self.ack_window {
                self.acked = self.received;
                let seq = (self.received & 0xffff_ffff) as u32;
                chunk::write_message(&mut self.out, 2, types::ACK, 0, 0, &seq.to_be_bytes(), OUT_CHUNK_SIZE);
            }
            self.flush(socket).await?;
        }
    }

    /// Writes what is queued for the peer, within `server.rtmp_write_timeout`
    /// (a peer that reads nothing cannot hold the session); gives up at shutdown.
    async fn flush(&mut self, socket: &mut TcpStream) -> Result<(), SessionError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let timeout = self.limits.write_timeout;
        tokio::select! {
            _ = self.cancel.cancelled() => {}
            r = tokio::time::timeout(timeout, socket.write_all(&self.out)) => match r {
                Err(_) => {
                    return Err(LimitHit(
                        "rtmp_write_timeout",
                        format!("the peer took nothing of {} bytes for {timeout:?}", self.out.len()),
                    )
                    .into());
                }
                Ok(r) => r?,
            },
        }
        self.out.clear();
        Ok(())
    }

    /// Handles one message; `Ok(false)` ends the connection cleanly.
    async fn handle(&mut self, msg: Message) -> Result<bool, SessionError> {
        match msg.type_id {
            types::VIDEO => self.on_video(&msg)?,
            types::AUDIO => self.on_audio(&msg),
            types::AGGREGATE => self.on_aggregate(&msg)?,
            types::COMMAND_AMF0 => return self.on_command(&msg.payload, msg.stream_id).await,
            types::COMMAND_AMF3 => {
                return self.on_command(msg.payload.get(1..).unwrap_or_default(), msg.stream_id).await;
            }
            types::SET_CHUNK_SIZE => {
                let size = msg.payload.get(..4).ok_or(SessionError::Protocol("short SetChunkSize".into()))?;
                self.reader.set_chunk_size(u32::from_be_bytes(size.try_into().unwrap()))?;
            }
            types::ABORT => {
                if let Some(csid) = msg.payload.get(..4) {
                    self.reader.abort(u32::from_be_bytes(csid.try_into().unwrap()));
                }
            }
            types::WINDOW_ACK_SIZE => {
                if let Some(w) = msg.payload.get(..4) {
                    self.ack_window = u64::from(u32::from_be_bytes(w.try_into().unwrap()).max(4096));
                }
            }
            types::ACK | types::USER_CONTROL | types::SET_PEER_BANDWIDTH | types::DATA_AMF0 | types::DATA_AMF3 => {}
            other => tracing::debug!(peer = %self.peer, type_id = other, "ignoring rtmp message"),
        }
        Ok(true)
    }

    fn on_aggregate(&mut self, msg: &Message) -> Result<(), SessionError> {
        // A sequence of FLV tags: 11-byte header, body, 4-byte back pointer.
        let p = &msg.payload;
        let mut pos = 0;
        let mut first_ts: Option<u32> = None;
        while pos + 11 <= p.len() {
            let kind = p[pos] & 0x1f;
            let size = u32::from_be_bytes([0, p[pos + 1], p[pos + 2], p[pos + 3]]) as usize;
            let ts = u32::from_be_bytes([p[pos + 7], p[pos + 4], p[pos + 5], p[pos + 6]]);
            let body = pos + 11;
            if body + size + 4 > p.len() {
                return Err(SessionError::Protocol("aggregate message truncated".into()));
            }
            let base = *first_ts.get_or_insert(ts);
            let sub = Message {
                type_id: kind,
                stream_id: msg.stream_id,
                timestamp: msg.timestamp.wrapping_add(ts.wrapping_sub(base)),
                payload: p.slice(body..body + size),
            };
            match kind {
                types::VIDEO => self.on_video(&sub)?,
                types::AUDIO => self.on_audio(&sub),
                _ => {}
            }
            pos = body + size + 4;
        }
        Ok(())
    }

    fn on_audio(&mut self, msg: &Message) {
        if let Some(p) = self.publishing.as_mut() {
            p.claim.touch();
            p.media(msg.payload.len(), false);
        }
    }

    fn on_video(&mut self, msg: &Message) -> Result<(), SessionError> {
        let Some(p) = self.publishing.as_mut() else {
            return Err(SessionError::Protocol("video before publish".into()));
        };
        if msg.stream_id != p.stream_id {
            return Err(SessionError::Protocol(format!(
                "video on stream {} while publishing on {}",
                msg.stream_id, p.stream_id
            )));
        }
        p.claim.touch();
        // A frame unless it is a sequence header, end, metadata or command.
        let frame = flv::is_frame(&msg.payload);
        p.media(msg.payload.len(), frame);
        if frame {
            p.gap.frame(msg.timestamp);
        }
        if msg.payload.is_empty() {
            return Ok(());
        }
        // Delta frames: a few byte reads and two counters, nothing else.
        if flv::is_inter_frame(&msg.payload) {
            return Ok(());
        }
        match flv::parse_video(&msg.payload)? {
            VideoTag::Config(cfg) => {
                if p.video.as_ref().is_some_and(|old| old != &cfg) {
                    tracing::info!(peer = %self.peer, codec = %cfg.codec, "stream sent new parameter sets");
                }
                p.capture.set_codec(cfg.codec);
                p.video = Some(cfg);
            }
            VideoTag::Frame { codec, keyframe: true, data } => {
                tracing::trace!(session = self.id, media_ts = msg.timestamp, bytes = data.len(), "keyframe");
                p.publish_rates();
                if let Some(ms) = p.gap.least.take() {
                    p.capture.frame_ms(ms);
                }
                let capture = &mut p.capture;
                let video = p.video.as_ref();
                let offer = capture.on_keyframe(msg.timestamp, || match video {
                    None => Err(format!("keyframe before the {codec} decoder configuration")),
                    Some(cfg) => flv::keyframe_job(cfg, codec, &data).map_err(|e| e.to_string()),
                });
                match offer {
                    Ok(Offer::Missed) => tracing::warn!(
                        domain = %capture.info().domain, app = %capture.info().app, stream = %capture.info().stream,
                        "capture queue full: snapshot missed"
                    ),
                    Ok(Offer::Queued) => p.queued += 1,
                    Ok(Offer::NotDue) => {}
                    Err(why) => tracing::warn!(
                        domain = %capture.info().domain, app = %capture.info().app, stream = %capture.info().stream,
                        media_ts = msg.timestamp, "due keyframe not decodable, trying the next: {why}"
                    ),
                }
            }
            VideoTag::Frame { keyframe: false, .. } | VideoTag::Ignored => {}
        }
        Ok(())
    }

    async fn on_command(&mut self, payload: &[u8], stream_id: u32) -> Result<bool, SessionError> {
        let budget = amf0::Budget { max_elements: self.limits.amf_max_elements, max_depth: self.limits.amf_max_depth };
        let values = amf0::decode_all(payload, budget).map_err(|e| match e {
            amf0::AmfError::TooMany(_) | amf0::AmfError::TooDeep(_) => LimitHit("rtmp_amf", e.to_string()).into(),
            e => SessionError::Amf(e),
        })?;
        let name =
            values.first().and_then(Value::as_str).ok_or(SessionError::Protocol("command without a name".into()))?;
        let txn = values.get(1).and_then(Value::as_number).unwrap_or(0.0);
        match name {
            "connect" => self.on_connect(txn, values.get(2))?,
            "createStream" => {
                self.send_command(0, &[s("_result"), Value::Number(txn), Value::Null, Value::Number(1.0)]);
            }
            "publish" => {
                let name = values.get(3).and_then(Value::as_str).unwrap_or_default().to_owned();
                if let Err(e) = self.on_publish(&name, stream_id).await {
                    let (code, text) = match &e {
                        SessionError::Refused(t) => ("NetStream.Publish.BadName", t.clone()),
                        other => ("NetStream.Publish.BadName", other.to_string()),
                    };
                    self.send_status(stream_id, "error", code, &text);
                    return Err(e);
                }
            }
            "releaseStream" | "FCPublish" | "_checkbw" | "getStreamLength" => {
                if txn != 0.0 {
                    self.send_command(0, &[s("_result"), Value::Number(txn), Value::Null, Value::Undefined]);
                }
            }
            "FCUnpublish" | "deleteStream" | "closeStream" => {
                if let Some(p) = self.publishing.take() {
                    p.log_end(self.peer, self.id, self.received, name);
                }
            }
            "play" | "play2" => {
                self.send_status(
                    stream_id,
                    "error",
                    "NetStream.Play.Failed",
                    "edgesnap takes publishers only; it serves no viewers",
                );
                return Err(SessionError::Refused("play requested; edgesnap serves no viewers".into()));
            }
            other => tracing::debug!(peer = %self.peer, command = other, "ignoring rtmp command"),
        }
        Ok(true)
    }

    fn on_connect(&mut self, txn: f64, cmd: Option<&Value>) -> Result<(), SessionError> {
        let cmd = cmd.ok_or(SessionError::Protocol("connect without a command object".into()))?;
        let app = cmd.get("app").and_then(Value::as_str).unwrap_or_default();
        // SRS style: rtmp://host/app?vhost=x/stream puts the query in the app.
        let (app, params) = super::split_params(app);
        self.app = Some(app.trim_end_matches('/').to_owned());
        self.app_params = params;
        self.tc_url = cmd.get("tcUrl").and_then(Value::as_str).map(str::to_owned);

        chunk::write_message(
            &mut self.out,
            2,
            types::WINDOW_ACK_SIZE,
            0,
            0,
            &WINDOW_ACK_SIZE.to_be_bytes(),
            OUT_CHUNK_SIZE,
        );
        let mut bw = BytesMut::new();
        bw.put_u32(WINDOW_ACK_SIZE);
        bw.put_u8(2);
        chunk::write_message(&mut self.out, 2, types::SET_PEER_BANDWIDTH, 0, 0, &bw, 128);
        chunk::write_message(
            &mut self.out,
            2,
            types::SET_CHUNK_SIZE,
            0,
            0,
            &(OUT_CHUNK_SIZE as u32).to_be_bytes(),
            128,
        );
        let mut properties = vec![("fmsVer", s("FMS/3,5,7,7009")), ("capabilities", Value::Number(31.0))];
        // Enhanced RTMP: the client names the FourCCs it may send; the
        // answer names those this server ingests ("*": any).
        if let Some(Value::Array(asked)) = cmd.get("fourCcList") {
            let asked: Vec<&str> = asked.iter().filter_map(Value::as_str).collect();
            let taken = flv::FOURCCS.iter().filter(|f| asked.contains(f) || asked.contains(&"*"));
            properties.push(("fourCcList", Value::Array(taken.map(|f| s(f)).collect())));
        }
        self.send_command(
            0,
            &[
                s("_result"),
                Value::Number(txn),
                amf0::object(&properties),
                amf0::object(&[
                    ("level", s("status")),
                    ("code", s("NetConnection.Connect.Success")),
                    ("description", s("Connection succeeded.")),
                    ("objectEncoding", Value::Number(0.0)),
                ]),
            ],
        );
        Ok(())
    }

    async fn on_publish(&mut self, raw_name: &str, stream_id: u32) -> Result<(), SessionError> {
        if self.publishing.is_some() {
            return Err(SessionError::Protocol("second publish on one connection".into()));
        }
        let app = self.app.clone().ok_or(SessionError::Protocol("publish before connect".into()))?;
        let (stream, stream_params) = super::split_params(raw_name);
        let stream = stream.to_owned();
        // Stream parameters override the app's.
        let params: Vec<(String, String)> = self.app_params.iter().cloned().chain(stream_params).collect();
        let param = |k: &str| params.iter().rev().find(|(pk, _)| pk == k).map(|(_, v)| v.as_str());
        if !is_valid_stream_name(&app) {
            return Err(SessionError::Refused(format!(
                "app name {app:?} is invalid (1-255 of letters, digits, '-', '_', '.', not starting with '.')"
            )));
        }
        if !is_valid_stream_name(&stream) {
            return Err(SessionError::Refused(format!(
                "stream name {stream:?} is invalid (1-255 of letters, digits, '-', '_', '.', not starting with '.')"
            )));
        }
        let config = self.ingest.settings.get();
        let domain = super::resolve_domain(&config, param("vhost"), self.tc_url.as_deref())
            .map_err(|e| SessionError::Refused(e.to_string()))?;
        let domain_cfg =
            config.domains.get(&domain).ok_or_else(|| SessionError::Refused(format!("domain {domain:?} is gone")))?;
        super::check_publish_auth(&domain_cfg.publish_auth, &app, &stream, param("auth_key"), crate::unix_ms() / 1000)
            .map_err(|why| SessionError::Refused(format!("publish auth of domain {domain:?}: {why}")))?;
        let template = config.template_for(&domain, &app);
        let interval_s = template.as_ref().map(|t| t.time_interval_s);
        let info = Arc::new(
            StreamInfo::new(self.id, domain.clone(), app.clone(), stream.clone(), template).with_peer(self.peer),
        );
        let capture = StreamCapture::new(info.clone(), self.ingest.queue.clone(), self.ingest.metrics.clone());
        let key = crate::stream::StreamKey::new(&domain, &app, &stream);
        let claim = self.ingest.claim(info).map_err(|e| SessionError::Refused(e.to_string()))?;
        // In a fleet, the stream's lease too (after the local claim: a
        // duplicate here is refused without asking NATS).
        let lease = self.ingest.lease(&key).await.map_err(SessionError::Refused)?;
        match interval_s {
            Some(interval_s) => tracing::info!(
                peer = %self.peer, session = self.id, %domain, %app, %stream, interval_s, "publish started"
            ),
            None => tracing::info!(
                peer = %self.peer, session = self.id, %domain, %app, %stream,
                "publish started; no snapshot template for this app, so no snapshots"
            ),
        }
        self.reader.allow_media();
        self.publishing = Some(Publishing {
            claim,
            _lease: lease,
            capture,
            video: None,
            stream_id,
            queued: 0,
            started: std::time::Instant::now(),
            rate: RateWindow { start: std::time::Instant::now(), bytes: 0, frames: 0 },
            gap: FrameGap::default(),
        });
        let mut begin = BytesMut::new();
        begin.put_u16(0);
        begin.put_u32(stream_id);
        chunk::write_message(&mut self.out, 2, types::USER_CONTROL, 0, 0, &begin, OUT_CHUNK_SIZE);
        self.send_status(stream_id, "status", "NetStream.Publish.Start", &format!("{raw_name} is now published"));
        Ok(())
    }

    fn send_command(&mut self, stream_id: u32, values: &[Value]) {
        let mut payload = BytesMut::new();
        for v in values {
            amf0::encode(&mut payload, v);
        }
        chunk::write_message(&mut self.out, 3, types::COMMAND_AMF0, stream_id, 0, &payload, OUT_CHUNK_SIZE);
    }

    fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.send_command(
            stream_id,
            &[
                s("onStatus"),
                Value::Number(0.0),
                Value::Null,
                amf0::object(&[("level", s(level)), ("code", s(code)), ("description", s(description))]),
            ],
        );
    }
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// The simple handshake: C0+C1 in, S0+S1+S2 out, C2 in.
async fn handshake(socket: &mut TcpStream) -> Result<(), SessionError> {
    let mut c0c1 = vec![0u8; 1 + HANDSHAKE_SIZE];
    socket.read_exact(&mut c0c1).await.map_err(|_| SessionError::Handshake("connection closed during C0/C1"))?;
    if c0c1[0] != 3 {
        return Err(SessionError::Handshake("not RTMP: version byte is not 3"));
    }
    let mut reply = Vec::with_capacity(1 + 2 * HANDSHAKE_SIZE);
    reply.push(3);
    reply.extend_from_slice(&[0u8; 8]); // S1: time, zero
    reply.extend(std::iter::repeat_n(0x5a, HANDSHAKE_SIZE - 8));
    reply.extend_from_slice(&c0c1[1..]); // S2 echoes C1
    socket.write_all(&reply).await?;
    let mut c2 = vec![0u8; HANDSHAKE_SIZE];
    socket.read_exact(&mut c2).await.map_err(|_| SessionError::Handshake("connection closed during C2"))?;
    Ok(())
}
