//! RTMP ingest: accepts publishers, resolves their domain (docs/capture.md), parses
//! FLV video (legacy and Enhanced RTMP) into H.264/HEVC/AV1/VP9 configs and
//! access units, and offers keyframes to the stream's capture schedule. It
//! knows nothing of plugins or storage; due keyframes leave on the bounded
//! capture queue.

mod amf0;
mod chunk;
mod flv;
mod obu;
mod session;
mod vp9;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capture::{CaptureJob, StreamInfo};
use crate::config::{PublishAuth, RtmpLimits, Settings};
use crate::metrics::Metrics;

/// A publisher that has sent no media for this long is dead: a new publish
/// of the same stream takes it over.
pub const DEAD_AFTER: Duration = Duration::from_secs(10);

pub use crate::stream::StreamKey;

/// What the sources stage shares with a push: a configuration record
/// checked as ingest checks one, and keyframes checked and made into jobs
/// by the same code.
pub(crate) use flv::{VideoConfig, keyframe_job, parse_config as video_config};

/// The decoder jobs a publisher's video tag bodies would make of every
/// keyframe, as a session makes them (for tools such as the `floor`
/// benchmark): the codec and the job. Tags that do not parse, and
/// keyframes that do not check, make none.
pub fn keyframe_jobs<'a>(video_tags: impl IntoIterator<Item = &'a [u8]>) -> Vec<(crate::codec::Codec, Vec<u8>)> {
    let mut config = None;
    let mut jobs = Vec::new();
    for tag in video_tags {
        match flv::parse_video(&bytes::Bytes::copy_from_slice(tag)) {
            Ok(flv::VideoTag::Config(c)) => config = Some(c),
            Ok(flv::VideoTag::Frame { codec, keyframe: true, data }) => {
                if let Some(job) = config.as_ref().and_then(|c| flv::keyframe_job(c, codec, &data).ok()) {
                    jobs.push((codec, job));
                }
            }
            _ => {}
        }
    }
    jobs
}

/// What ingest shares between connections.
pub struct Ingest {
    settings: Arc<Settings>,
    queue: Sender<CaptureJob>,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<StreamKey, LiveEntry>>,
    next_session: AtomicU64,
    epoch: Instant,
    /// Open connections: in all, and per peer address.
    connections: Mutex<(usize, HashMap<IpAddr, usize>)>,
    /// Bytes all connections hold unparsed or in unfinished messages.
    buffered: AtomicUsize,
    /// In a fleet, where publishers take their leases (set once at start).
    leases: std::sync::OnceLock<Arc<dyn StreamLeases>>,
}

/// Where a fleet records which node publishes each stream (SPEC §9): a
/// publish takes the stream's lease after its local claim; ingest knows
/// nothing more of it.
pub trait StreamLeases: Send + Sync + 'static {
    /// Takes (or keeps) this node's lease on a stream for a new publisher.
    /// `Err`: why the publish is refused (a live publisher on another
    /// node; a lease that cannot be checked and was not this node's last).
    fn acquire(&self, key: StreamKey) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>>;
    /// The publisher of a stream ended here: its lease is given up.
    fn release(&self, key: StreamKey);
}

/// A stream's lease, given up when the publish ends.
pub(crate) struct Lease {
    leases: Arc<dyn StreamLeases>,
    key: StreamKey,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.leases.release(self.key.clone());
    }
}

/// A connection's share of the limits (`server.rtmp_*`): its place in the
/// connection counts and the bytes it holds. Released when dropped, so a
/// connection that ends in any way (a panic too) gives its share back.
pub(crate) struct Slot {
    ingest: Arc<Ingest>,
    ip: IpAddr,
    held: usize,
}

/// A limit a connection reached: the `limit_hits` label and what happened.
#[derive(Debug)]
pub(crate) struct LimitHit(pub(crate) &'static str, pub(crate) String);

impl Slot {
    /// Records that the connection now holds `bytes`; an error when that is
    /// over its own budget or takes all connections over theirs.
    pub(crate) fn hold(&mut self, bytes: usize, limits: &RtmpLimits) -> Result<(), LimitHit> {
        let total = &self.ingest.buffered;
        if bytes > self.held {
            let now = total.fetch_add(bytes - self.held, Ordering::Relaxed) + (bytes - self.held);
            self.held = bytes;
            if bytes > limits.buffer_per_connection {
                return Err(LimitHit(
                    "rtmp_buffer_per_connection",
                    format!("a connection holds {bytes} bytes unparsed, over {}", limits.buffer_per_connection),
                ));
            }
            if now > limits.buffer_total {
                return Err(LimitHit(
                    "rtmp_buffer_total",
                    format!("connections hold {now} bytes unparsed, over {}", limits.buffer_total),
                ));
            }
        } else {
            total.fetch_sub(self.held - bytes, Ordering::Relaxed);
            self.held = bytes;
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.ingest.buffered.fetch_sub(self.held, Ordering::Relaxed);
        let mut conns = self.ingest.connections.lock().unwrap();
        conns.0 -= 1;
        if let Some(n) = conns.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                conns.1.remove(&self.ip);
            }
        }
        self.ingest.metrics.rtmp_connections.dec();
    }
}

struct LiveEntry {
    session: u64,
    /// Ms since `Ingest::epoch` of the last media message.
    last_media: Arc<AtomicU64>,
    /// Cancelled when the host ends the session; why, in `evict_reason`.
    evict: CancellationToken,
    evict_reason: Arc<std::sync::OnceLock<&'static str>>,
    info: Arc<StreamInfo>,
    since: SystemTime,
}

/// A live stream, as the API lists it.
#[derive(Debug, Clone)]
pub struct LiveStream {
    pub info: Arc<StreamInfo>,
    pub since: SystemTime,
}

/// Why a publish was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("stream {0} is already being published by a live session")]
    Duplicate(StreamKey),
}

/// A held claim on a live stream; released when dropped.
pub(crate) struct Claim {
    ingest: Arc<Ingest>,
    key: StreamKey,
    session: u64,
    pub(crate) last_media: Arc<AtomicU64>,
    pub(crate) evicted: CancellationToken,
    pub(crate) evict_reason: Arc<std::sync::OnceLock<&'static str>>,
}

impl LiveEntry {
    fn end(&self, reason: &'static str) {
        let _ = self.evict_reason.set(reason);
        self.evict.cancel();
    }
}

impl Claim {
    pub(crate) fn touch(&self) {
        self.last_media.store(self.ingest.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut live = self.ingest.live.lock().unwrap();
        if live.get(&self.key).is_some_and(|e| e.session == self.session) {
            live.remove(&self.key);
            self.ingest.metrics.live_streams.dec();
        }
    }
}

impl Ingest {
    pub fn new(settings: Arc<Settings>, queue: Sender<CaptureJob>, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Ingest {
            settings,
            queue,
            metrics,
            live: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            epoch: Instant::now(),
            connections: Mutex::new((0, HashMap::new())),
            buffered: AtomicUsize::new(0),
            leases: std::sync::OnceLock::new(),
        })
    }

    /// Makes publishes take fleet leases (set once, before ingest runs).
    pub fn use_leases(&self, leases: Arc<dyn StreamLeases>) {
        let _ = self.leases.set(leases);
    }

    /// Takes the fleet lease of a stream (a node alone needs none).
    pub(crate) async fn lease(&self, key: &StreamKey) -> Result<Option<Lease>, String> {
        let Some(leases) = self.leases.get() else { return Ok(None) };
        leases.acquire(key.clone()).await?;
        Ok(Some(Lease { leases: leases.clone(), key: key.clone() }))
    }

    /// Ends the local publisher of a stream (its fleet lease went to another node).
    pub fn end_stream(&self, key: &StreamKey, reason: &'static str) -> bool {
        match self.live.lock().unwrap().get(key) {
            Some(e) => {
                e.end(reason);
                true
            }
            None => false,
        }
    }

    /// A place for a new connection from `ip`, unless that takes the
    /// connections over `server.rtmp_max_connections` or `_per_ip`.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &RtmpLimits) -> Result<Slot, LimitHit> {
        let mut conns = self.connections.lock().unwrap();
        let (total, per_ip) = &mut *conns;
        if *total >= limits.max_connections {
            return Err(LimitHit(
                "rtmp_connections",
                format!("{total} connections are open (server.rtmp_max_connections); refused {ip}"),
            ));
        }
        let from_ip = per_ip.entry(ip).or_insert(0);
        if *from_ip >= limits.max_connections_per_ip {
            return Err(LimitHit(
                "rtmp_connections_per_ip",
                format!("{ip} has {from_ip} connections open (server.rtmp_max_connections_per_ip)"),
            ));
        }
        *from_ip += 1;
        *total += 1;
        self.metrics.rtmp_connections.inc();
        Ok(Slot { ingest: self.clone(), ip, held: 0 })
    }

    /// Accepts connections until `cancel`; each runs in its own tracked task.
    pub async fn run(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken, tracker: TaskTracker) {
        loop {
            let (socket, peer) = tokio::select! {
                _ = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        self.metrics.limit_hit("rtmp_accept_errors", format_args!("accept failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let limits = self.settings.get().server.rtmp_limits.clone();
            let slot = match self.admit(peer.ip(), &limits) {
                Ok(slot) => slot,
                Err(LimitHit(limit, detail)) => {
                    // Dropped unread: closed at once.
                    self.metrics.rejected("limit");
                    self.metrics.limit_hit(limit, format_args!("{detail}"));
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            let ingest = self.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                session::serve(ingest, slot, limits, socket, peer, cancel).await;
            });
        }
    }

    /// The capture queue's send side, for streams not from a connection.
    pub(crate) fn capture_queue(&self) -> Sender<CaptureJob> {
        self.queue.clone()
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn new_session_id(&self) -> u64 {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Claims a stream for a new publisher: refused while another session
    /// sends media; a session silent for [`DEAD_AFTER`] is taken over.
    pub(crate) fn claim(self: &Arc<Self>, info: Arc<StreamInfo>) -> Result<Claim, Refusal> {
        let key = StreamKey::new(&info.domain, &info.app, &info.stream);
        let now = self.epoch.elapsed().as_millis() as u64;
        let mut live = self.live.lock().unwrap();
        if let Some(old) = live.get(&key) {
            let silent = now.saturating_sub(old.last_media.load(Ordering::Relaxed));
            if silent < DEAD_AFTER.as_millis() as u64 {
                return Err(Refusal::Duplicate(key));
            }
            tracing::info!(
                domain = %key.domain, app = %key.app, stream = %key.stream,
                old_session = old.session, new_session = info.session, silent_ms = silent,
                "publisher silent too long; new publish takes the stream over"
            );
            old.end("taken over by a new publisher after 10 s without media");
        } else {
            self.metrics.live_streams.inc();
        }
        let last_media = Arc::new(AtomicU64::new(now));
        let evict = CancellationToken::new();
        let evict_reason: Arc<std::sync::OnceLock<&'static str>> = Arc::default();
        live.insert(
            key.clone(),
            LiveEntry {
                session: info.session,
                last_media: last_media.clone(),
                evict: evict.clone(),
                evict_reason: evict_reason.clone(),
                info: info.clone(),
                since: SystemTime::now(),
            },
        );
        Ok(Claim { ingest: self.clone(), key, session: info.session, last_media, evicted: evict, evict_reason })
    }

    /// The live streams of a domain.
    pub fn live_streams(&self, domain: &str) -> Vec<LiveStream> {
        let live = self.live.lock().unwrap();
        let mut out: Vec<LiveStream> = live
            .iter()
            .filter(|(k, _)| k.domain == domain)
            .map(|(_, e)| LiveStream { info: e.info.clone(), since: e.since })
            .collect();
        out.sort_by(|a, b| (&a.info.app, &a.info.stream).cmp(&(&b.info.app, &b.info.stream)));
        out
    }

    /// One live stream.
    pub fn live_stream(&self, domain: &str, app: &str, stream: &str) -> Option<LiveStream> {
        let live = self.live.lock().unwrap();
        live.get(&StreamKey::new(domain, app, stream)).map(|e| LiveStream { info: e.info.clone(), since: e.since })
    }

    /// Re-plans the live streams of an app (or every app, for `*`) with the
    /// templates now in force (`?apply=immediately`). Returns how many.
    pub fn replan(&self, domain: &str, app: &str) -> usize {
        let config = self.settings.get();
        let live = self.live.lock().unwrap();
        let mut n = 0;
        for (k, e) in live.iter() {
            if k.domain == domain && (app == "*" || k.app == app) {
                e.info.request_replan(config.template_for(&k.domain, &k.app));
                n += 1;
            }
        }
        n
    }

    /// Ends every publisher of a domain (the domain is being deleted).
    pub fn disconnect_domain(&self, domain: &str) -> usize {
        let live = self.live.lock().unwrap();
        let mut n = 0;
        for (k, e) in live.iter() {
            if k.domain == domain {
                e.end("its domain was deleted");
                n += 1;
            }
        }
        n
    }
}

/// Publish auth (docs/capture.md): `auth_key={timestamp}-{rand}-{uid}-{md5hash}`
/// with md5hash = md5("/{app}/{stream}-{timestamp}-{rand}-{uid}-{key}"),
/// valid until timestamp + ttl, against the primary or the secondary key.
pub(crate) fn check_publish_auth(
    auth: &PublishAuth,
    app: &str,
    stream: &str,
    auth_key: Option<&str>,
    now_s: u64,
) -> Result<(), AuthError> {
    use md5::{Digest, Md5};
    let PublishAuth::TypeA(a) = auth else { return Ok(()) };
    let auth_key = auth_key.ok_or(AuthError::Missing)?;
    let parts: Vec<&str> = auth_key.splitn(4, '-').collect();
    let [timestamp, rand, uid, hash] = parts.as_slice() else {
        return Err(AuthError::Malformed);
    };
    let ts: u64 = timestamp.parse().map_err(|_| AuthError::Timestamp)?;
    if now_s > ts.saturating_add(a.ttl.as_secs()) {
        return Err(AuthError::Expired);
    }
    let expected = |key: &str| hex::encode(Md5::digest(format!("/{app}/{stream}-{timestamp}-{rand}-{uid}-{key}")));
    for secret in std::iter::once(&a.primary).chain(a.secondary.as_ref()) {
        match secret.read() {
            Ok(key) if crate::tokens::constant_time_eq(expected(&key).as_bytes(), hash.as_bytes()) => return Ok(()),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "publish auth key cannot be read"),
        }
    }
    Err(AuthError::Mismatch)
}

/// Why a publish's `auth_key` is refused (docs/capture.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("auth_key is missing")]
    Missing,
    #[error("auth_key must be {{timestamp}}-{{rand}}-{{uid}}-{{md5hash}}")]
    Malformed,
    #[error("auth_key timestamp is not a unix time")]
    Timestamp,
    #[error("auth_key has expired")]
    Expired,
    #[error("auth_key signature does not match")]
    Mismatch,
}

/// Why a publish names no configured domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoDomain {
    #[error("vhost {0:?} names no configured domain")]
    UnknownVhost(String),
    #[error("no domain: no vhost parameter, tcUrl host {0:?} is not configured, and no default_domain")]
    NoDefault(String),
}

/// The query parameters of an ingest URL part (`name?k=v&k2=v2`): the name
/// and its parameters.
pub(crate) fn split_params(s: &str) -> (&str, Vec<(String, String)>) {
    match s.split_once('?') {
        None => (s, Vec::new()),
        Some((name, query)) => {
            let params = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (p.to_owned(), String::new()),
                })
                .collect();
            (name, params)
        }
    }
}

/// Domain resolution (docs/capture.md), first match wins: the `vhost` parameter; the
/// host of `tcUrl` when it names a configured domain; the default domain.
pub(crate) fn resolve_domain(
    config: &crate::config::Config,
    vhost: Option<&str>,
    tc_url: Option<&str>,
) -> Result<String, NoDomain> {
    if let Some(v) = vhost {
        return if config.domains.contains_key(v) {
            Ok(v.to_owned())
        } else {
            Err(NoDomain::UnknownVhost(v.to_owned()))
        };
    }
    if let Some(host) = tc_url.and_then(tc_url_host)
        && config.domains.contains_key(host)
    {
        return Ok(host.to_owned());
    }
    config
        .server
        .default_domain
        .clone()
        .ok_or_else(|| NoDomain::NoDefault(tc_url.and_then(tc_url_host).unwrap_or("").to_owned()))
}

/// `rtmp://host[:port]/app...` → `host`.
fn tc_url_host(tc_url: &str) -> Option<&str> {
    let rest = tc_url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = if authority.starts_with('[') {
        authority.split_once(']').map(|(h, _)| &h[1..])?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params() {
        assert_eq!(split_params("cam1"), ("cam1", vec![]));
        assert_eq!(
            split_params("cam1?vhost=a.com&auth_key=1-2-3-x&flag"),
            (
                "cam1",
                vec![
                    ("vhost".into(), "a.com".into()),
                    ("auth_key".into(), "1-2-3-x".into()),
                    ("flag".into(), "".into())
                ]
            )
        );
    }

    #[test]
    fn tc_url_hosts() {
        assert_eq!(tc_url_host("rtmp://push.example.com/live"), Some("push.example.com"));
        assert_eq!(tc_url_host("rtmp://push.example.com:1935/live?x=1"), Some("push.example.com"));
        assert_eq!(tc_url_host("rtmp://127.0.0.1:1935"), Some("127.0.0.1"));
        assert_eq!(tc_url_host("rtmp://[::1]:1935/live"), Some("::1"));
        assert_eq!(tc_url_host("nonsense"), None);
    }

    #[test]
    fn publish_auth_type_a() {
        use crate::config::{Secret, TypeA};
        let dir = tempfile::tempdir().unwrap();
        let (k1, k2) = (dir.path().join("k1"), dir.path().join("k2"));
        std::fs::write(&k1, "primarykey0123456\n").unwrap();
        std::fs::write(&k2, "secondarykey01234").unwrap();
        let auth = PublishAuth::TypeA(TypeA {
            primary: Secret::File(k1),
            secondary: Some(Secret::File(k2)),
            ttl: Duration::from_secs(1800),
        });
        let sign = |key: &str, ts: u64| {
            use md5::{Digest, Md5};
            let h = hex::encode(Md5::digest(format!("/live/cam1-{ts}-0-0-{key}")));
            format!("{ts}-0-0-{h}")
        };
        let now = 1_700_000_000;
        let check = |k: &str, now| check_publish_auth(&auth, "live", "cam1", Some(k), now);
        assert_eq!(check(&sign("primarykey0123456", now), now), Ok(()));
        assert_eq!(check(&sign("secondarykey01234", now - 100), now), Ok(()));
        assert_eq!(check(&sign("primarykey0123456", now - 1800), now), Ok(()));
        assert_eq!(check(&sign("primarykey0123456", now - 1801), now), Err(AuthError::Expired));
        assert!(check(&sign("wrongkey000000000", now), now).is_err());
        assert!(check_publish_auth(&auth, "live", "cam2", Some(&sign("primarykey0123456", now)), now).is_err());
        assert!(check_publish_auth(&auth, "live", "cam1", None, now).is_err());
        assert!(check("garbage", now).is_err());
        assert_eq!(check_publish_auth(&PublishAuth::Off, "live", "cam1", None, now), Ok(()));
    }

    #[test]
    fn domain_resolution() {
        let text = r#"
version = 1
[server]
rtmp_listen = "127.0.0.1:1935"
http_listen = "127.0.0.1:8080"
data_dir = "./data"
default_domain = "localhost"
[domains."localhost"]
[domains."push.example.com"]
"#;
        let mut c = crate::config::Config::parse(text).unwrap();
        let r = |v: Option<&str>, t: Option<&str>, c: &crate::config::Config| resolve_domain(c, v, t);
        assert_eq!(r(Some("push.example.com"), Some("rtmp://localhost/live"), &c), Ok("push.example.com".into()));
        assert!(r(Some("nope.example.com"), None, &c).is_err());
        assert_eq!(r(None, Some("rtmp://push.example.com:1935/live"), &c), Ok("push.example.com".into()));
        assert_eq!(r(None, Some("rtmp://127.0.0.1:1935/live"), &c), Ok("localhost".into()));
        c.server.default_domain = None;
        assert!(r(None, Some("rtmp://127.0.0.1:1935/live"), &c).is_err());
    }
}
