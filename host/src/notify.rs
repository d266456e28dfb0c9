//! Callbacks (docs/callbacks.md): each stored or deleted snapshot becomes one
//! delivery per callback URL (the template's `callback` and the domain's
//! `notify_url`, one delivery when both name the same URL), put in the
//! durable outbox in redb in the same transaction as the records it tells
//! of. A worker POSTs them (5 s timeout), at least once, with exponential
//! backoff for `server.callback_retry_for` (24 h), then keeps them as failed
//! for inspection and replay. Signed with the domain's notify key when it
//! has one: the reference's `ALI-LIVE-TIMESTAMP` / `ALI-LIVE-SIGNATURE` and
//! `X-Edgesnap-Signature` over the body.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use hmac::Mac;
use md5::Digest;
use serde_json::json;
use tokio::sync::Notify as Wake;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Settings};
use crate::index::{Delivery, Index, OutboxChange, Record};
use crate::metrics::Metrics;
use crate::urls::UrlSigner;

/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Deliveries sent at once.
const CONCURRENCY: usize = 16;
/// Deliveries taken from the outbox per round.
const ROUND: usize = 256;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

pub const SNAPSHOT: &str = "live_snapshot";
pub const DELETED: &str = "live_snapshot_deleted";

pub struct Notifier {
    index: Arc<Index>,
    settings: Arc<Settings>,
    urls: Arc<UrlSigner>,
    metrics: Arc<Metrics>,
    client: reqwest::Client,
    wake: Wake,
    /// Deliveries waiting per domain, against `server.outbox_quota`.
    pending: Mutex<HashMap<String, usize>>,
}

impl Notifier {
    pub fn new(
        index: Arc<Index>,
        settings: Arc<Settings>,
        urls: Arc<UrlSigner>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Notifier>, crate::index::IndexError> {
        let allow = settings.clone();
        let resolver = CheckedResolver {
            allow_private: Arc::new(move || allow.get().server.allow_private_callbacks),
            lookup: Arc::new(|host: String| Box::pin(system_lookup(host))),
        };
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("edgesnap/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client with default TLS roots");
        let pending = Mutex::new(index.outbox_pending()?);
        Ok(Arc::new(Notifier { index, settings, urls, metrics, client, wake: Wake::new(), pending }))
    }

    /// The deliveries telling of `records` (`event`: [`SNAPSHOT`] or
    /// [`DELETED`]) as `config` says, counted against the domains' quotas:
    /// past a domain's quota they are dropped, counted and logged.
    pub fn events(&self, config: &Config, records: &[Record], event: &'static str) -> Vec<Delivery> {
        let mut out = Vec::new();
        for r in records {
            let Some(domain) = config.domains.get(&r.domain) else { continue };
            let template = config.template_for(&r.domain, &r.app);
            let mut urls: Vec<&str> = Vec::with_capacity(2);
            if let Some(cb) = template.as_ref().and_then(|t| t.callback.as_deref()) {
                urls.push(cb);
            }
            if let Some(n) = &domain.notify
                && !urls.contains(&n.url.as_str())
            {
                urls.push(&n.url);
            }
            if urls.is_empty() {
                continue;
            }
            let body = self.body(r, event);
            for url in urls {
                if !self.admit(&r.domain, config.server.outbox_quota) {
                    self.metrics.callback(&r.domain, "dropped");
                    tracing::warn!(domain = %r.domain, %url, "the domain's callback outbox is full; event dropped");
                    continue;
                }
                out.push(Delivery {
                    domain: r.domain.clone(),
                    url: url.to_owned(),
                    event: event.to_owned(),
                    record_id: r.id.to_string(),
                    body: body.clone(),
                    created_ms: crate::unix_ms(),
                    attempts: 0,
                    last_error: None,
                });
            }
        }
        out
    }

    /// The callbacks of records about to be stored or deleted, made when the
    /// index commits them (with their final ids) under the config in force now.
    pub fn events_of(self: &Arc<Self>, event: &'static str) -> crate::index::RecordEvents {
        let (this, config) = (self.clone(), self.settings.get());
        Box::new(move |r| this.events(&config, std::slice::from_ref(r), event))
    }

    /// Wakes the worker: deliveries were committed.
    pub fn poke(&self) {
        self.wake.notify_one();
    }

    /// Failed deliveries were put back in the outbox.
    pub fn requeued(&self, domain: &str, n: usize) {
        *self.pending.lock().unwrap().entry(domain.to_owned()).or_default() += n;
        self.poke();
    }

    fn admit(&self, domain: &str, quota: usize) -> bool {
        let mut pending = self.pending.lock().unwrap();
        let n = pending.entry(domain.to_owned()).or_default();
        if *n >= quota {
            return false;
        }
        *n += 1;
        true
    }

    fn settled(&self, domain: &str) {
        if let Some(n) = self.pending.lock().unwrap().get_mut(domain) {
            *n = n.saturating_sub(1);
        }
    }

    /// A delivery's JSON body (docs/callbacks.md); `id` is the idempotency key.
    fn body(&self, r: &Record, event: &str) -> String {
        // An overwrite record keeps its id as its object is replaced: each
        // replacement is its own event.
        let id = match (event, r.is_overlay) {
            (DELETED, _) => format!("{}-deleted", r.id),
            (_, true) => format!("{}-{}", r.id, r.create_timestamp_ms),
            (_, false) => r.id.to_string(),
        };
        let mut v = self.urls.record_view(r);
        v.insert("event".into(), json!(event));
        v.insert("id".into(), json!(id));
        v.insert("domain".into(), json!(r.domain));
        serde_json::Value::Object(v).to_string()
    }

    /// Delivers until `cancel`; what is not delivered stays in the outbox.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let (due, next) = match self.index.outbox_due(crate::unix_ms(), ROUND) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "reading the callback outbox failed");
                    (Vec::new(), Some(crate::unix_ms() + 1000))
                }
            };
            self.metrics.outbox_pending.set(self.pending.lock().unwrap().values().sum::<usize>() as i64);
            if due.is_empty() {
                let wait = next.map_or(Duration::from_secs(60), |t| {
                    Duration::from_millis(t.saturating_sub(crate::unix_ms()).clamp(10, 60_000))
                });
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
            let config = self.settings.get();
            let changes: Vec<OutboxChange> = futures::stream::iter(due)
                .map(|(key, d)| {
                    let config = config.clone();
                    let this = self.clone();
                    async move {
                        let result = this.send(&config, &d).await;
                        this.outcome(&config, key, d, result)
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            crate::failpoint!("notify-after-send");
            if let Err(e) = self.index.outbox_apply(changes).await {
                tracing::error!(error = %e, "recording callback deliveries failed; they will be sent again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// What a delivery attempt means for the outbox.
    fn outcome(
        &self,
        config: &Config,
        key: (u64, u128),
        mut d: Delivery,
        result: Result<(), SendError>,
    ) -> OutboxChange {
        let domain = d.domain.clone();
        match result {
            Ok(()) => {
                self.metrics.callback(&domain, "delivered");
                self.settled(&domain);
                OutboxChange::Delivered(key)
            }
            Err(e) => {
                d.attempts += 1;
                d.last_error = Some(e.to_string());
                let backoff = Duration::from_secs(1 << d.attempts.min(12)).min(MAX_BACKOFF);
                let jitter = rand::random_range(0.75..1.0);
                let due = crate::unix_ms() + (backoff.as_millis() as f64 * jitter) as u64;
                let give_up = d.created_ms + config.server.callback_retry_for.as_millis() as u64;
                if due > give_up || e.is_refusal() {
                    tracing::warn!(%domain, url = %d.url, attempts = d.attempts, error = %e, "callback failed; kept for replay");
                    self.metrics.callback(&domain, "failed");
                    self.settled(&domain);
                    OutboxChange::Failed(key, d)
                } else {
                    tracing::debug!(%domain, url = %d.url, attempts = d.attempts, error = %e, "callback not delivered; retried");
                    self.metrics.callback(&domain, "retried");
                    OutboxChange::Retry(key, due, d)
                }
            }
        }
    }

    /// One POST; Ok on a 2xx answer. A host name is resolved once, by the
    /// client's [`CheckedResolver`], which drops private addresses: what
    /// was checked is what is connected to. An IP literal is checked here.
    async fn send(&self, config: &Config, d: &Delivery) -> Result<(), SendError> {
        let url = reqwest::Url::parse(&d.url).map_err(|e| SendError::Refused(e.to_string()))?;
        let host = url.host_str().ok_or_else(|| SendError::Refused("no host".into()))?.to_owned();
        if !config.server.allow_private_callbacks
            && let Some(why) = private_literal(url.as_str())
        {
            return Err(SendError::Refused(why));
        }
        let mut req = self.client.post(url.clone()).header("content-type", "application/json");
        let key = config.domains.get(&d.domain).and_then(|dom| dom.notify.as_ref()).and_then(|n| n.auth_key.clone());
        if let Some(key) = key {
            let ts = crate::unix_ms() / 1000;
            let authority = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            for (name, value) in signature_headers(&authority, ts, &key, &d.body) {
                req = req.header(name, value);
            }
        }
        let resp = req.body(d.body.clone()).send().await.map_err(|e| send_error(&e))?;
        if resp.status().is_success() { Ok(()) } else { Err(SendError::Status(resp.status())) }
    }
}

/// The signature headers of a body sent to `authority` (host[:port]) at
/// `ts` (unix s) with a domain's notify key.
pub fn signature_headers(authority: &str, ts: u64, key: &str, body: &str) -> [(&'static str, String); 3] {
    let md5 = hex::encode(md5::Md5::digest(format!("{authority}|{ts}|{key}").as_bytes()));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("hmac takes any key length");
    mac.update(format!("{ts}.{body}").as_bytes());
    [
        ("ALI-LIVE-TIMESTAMP", ts.to_string()),
        ("ALI-LIVE-SIGNATURE", md5),
        ("X-Edgesnap-Signature", format!("t={ts},v1={}", hex::encode(mac.finalize().into_bytes()))),
    ]
}

/// Why a URL names a private address outright (`localhost` or an IP
/// literal), if it does.
pub fn private_literal(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let ip: IpAddr = match url.host()? {
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") || d.ends_with(".localhost") => {
            return Some(format!("{d} is a loopback name; the operator may allow it (server.allow_private_callbacks)"));
        }
        url::Host::Domain(_) => return None,
        url::Host::Ipv4(v4) => IpAddr::V4(v4),
        url::Host::Ipv6(v6) => IpAddr::V6(v6),
    };
    is_private(&ip).then(|| {
        format!("{ip} is a loopback, link-local or private address; the operator may allow it (server.allow_private_callbacks)")
    })
}

/// Why a callback could not be sent, with the causes reqwest wraps (a
/// refusal by the resolver reads as itself).
fn send_error(e: &reqwest::Error) -> SendError {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Refused>() {
            return SendError::Resolved(Refused(r.0.clone()));
        }
        source = s.source();
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out = format!("{out}: {s}");
        source = s.source();
    }
    SendError::Transport(out)
}

/// Why one delivery attempt failed. A refusal is final (the delivery is
/// kept for replay at once); the others are retried.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("refused: {0}")]
    Refused(String),
    /// The resolver found only addresses edgesnap may not call.
    #[error(transparent)]
    Resolved(Refused),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
    /// reqwest's error and its causes, on one line.
    #[error("{0}")]
    Transport(String),
}

impl SendError {
    fn is_refusal(&self) -> bool {
        matches!(self, SendError::Refused(_) | SendError::Resolved(_))
    }
}

/// A callback host that resolves to no address edgesnap may call. The
/// addresses are not shown: the failed-callbacks list would otherwise tell
/// a tenant what internal names resolve to.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused: {0} resolves only to loopback, link-local, private or reserved addresses (server.allow_private_callbacks)"
)]
struct Refused(String);

type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> + Send + Sync,
>;

/// The callback client's resolver: looks a host up and keeps only the
/// addresses a callback may go to, unless the operator allows private ones.
/// The client connects to what this returns, so a name that answers a
/// public address to a check and a private one to the connection (DNS
/// rebinding) has nothing to slip through.
struct CheckedResolver {
    allow_private: Arc<dyn Fn() -> bool + Send + Sync>,
    lookup: Lookup,
}

async fn system_lookup(host: String) -> std::io::Result<Vec<IpAddr>> {
    Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect())
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let allow = (self.allow_private)();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let ips = lookup.await?;
            let kept: Vec<SocketAddr> =
                ips.into_iter().filter(|ip| allow || !is_private(ip)).map(|ip| SocketAddr::new(ip, 0)).collect();
            if kept.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Loopback, link-local, private, shared (CGNAT), benchmarking, reserved,
/// unspecified, unique-local, site-local, multicast; IPv6 forms that carry
/// an IPv4 address (mapped, compatible, NAT64, 6to4) count as private.
fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0 // 0.0.0.0/8: "this network"
                || a == 100 && (64..128).contains(&b) // 100.64.0.0/10: shared (CGNAT)
                || a == 198 && (b & 0xfe) == 18 // 198.18.0.0/15: benchmarking
                || a == 192 && b == 0 && c == 0 // 192.0.0.0/24: protocol assignments
                || a >= 240 // 240.0.0.0/4: reserved
        }
        IpAddr::V6(v6) => {
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7: unique local
                || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10: link-local
                || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10: site-local
                || seg[0] == 0x2002 // 2002::/16: 6to4
                || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] // 64:ff9b::/96: NAT64
                || seg[..3] == [0x64, 0xff9b, 1] // 64:ff9b:1::/48: local NAT64
                || seg[..6] == [0, 0, 0, 0, 0, 0] // ::a.b.c.d: IPv4-compatible
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(&IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.4",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.1.2.3",
            "198.18.0.1",
            "198.19.255.255",
            "192.0.0.8",
            "240.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b::808:808",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "fec0::1",
            "::127.0.0.1",
            "::10.0.0.1",
        ] {
            assert!(is_private(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "203.0.113.9", "198.20.0.1", "2001:4860:4860::8888", "::ffff:8.8.8.8"] {
            assert!(!is_private(&ip.parse().unwrap()), "{ip}");
        }
    }

    /// A resolver that answers `first` to its first lookup and `then` to
    /// every later one, and counts them.
    fn fickle(first: IpAddr, then: IpAddr, allow: bool) -> (CheckedResolver, Arc<std::sync::atomic::AtomicUsize>) {
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = n.clone();
        let resolver = CheckedResolver {
            allow_private: Arc::new(move || allow),
            lookup: Arc::new(move |_| {
                let k = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Box::pin(async move { Ok(vec![if k == 0 { first } else { then }]) })
            }),
        };
        (resolver, n)
    }

    #[tokio::test]
    async fn a_rebinding_name_never_reaches_a_private_address() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A server on loopback that counts the requests it gets.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        let client = |r: CheckedResolver| {
            reqwest::Client::builder()
                .dns_resolver(r)
                .connect_timeout(Duration::from_millis(300))
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap()
        };
        let url = format!("http://rebind.example:{port}/cb");
        // Public to the first lookup (TEST-NET-1: nothing answers), loopback after.
        let public: IpAddr = "192.0.2.1".parse().unwrap();
        let (resolver, lookups) = fickle(public, "127.0.0.1".parse().unwrap(), false);
        let c = client(resolver);
        let first = c.post(&url).send().await.unwrap_err();
        assert!(!send_error(&first).is_refusal(), "the public answer is tried: {}", send_error(&first));
        let second = c.post(&url).send().await.unwrap_err();
        let why = send_error(&second);
        assert!(why.is_refusal(), "{why}");
        let why = why.to_string();
        assert!(why.starts_with("refused: rebind.example resolves only to"), "{why}");
        assert!(!why.contains("127.0.0.1"), "the address is not shown: {why}");
        assert_eq!(lookups.load(std::sync::atomic::Ordering::SeqCst), 2, "one lookup per connection, none besides");
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 0, "the loopback server was never reached");
        // The operator allows private callbacks: the same name reaches it.
        let (resolver, _) = fickle("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap(), true);
        assert!(client(resolver).post(&url).send().await.unwrap().status().is_success());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn signatures_follow_the_reference_and_cover_the_body() {
        let h = signature_headers("biz.example.com:8080", 1_764_057_600, "0123456789abcdef", "{\"a\":1}");
        assert_eq!(h[0], ("ALI-LIVE-TIMESTAMP", "1764057600".to_string()));
        let md5 = hex::encode(md5::Md5::digest(b"biz.example.com:8080|1764057600|0123456789abcdef"));
        assert_eq!(h[1].1, md5);
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"0123456789abcdef").unwrap();
        mac.update(b"1764057600.{\"a\":1}");
        assert_eq!(h[2].1, format!("t=1764057600,v1={}", hex::encode(mac.finalize().into_bytes())));
    }
}
