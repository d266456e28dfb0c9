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
use std::net::IpAddr;
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
        let client = reqwest::Client::builder()
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
    fn outcome(&self, config: &Config, key: (u64, u128), mut d: Delivery, result: Result<(), String>) -> OutboxChange {
        let domain = d.domain.clone();
        match result {
            Ok(()) => {
                self.metrics.callback(&domain, "delivered");
                self.settled(&domain);
                OutboxChange::Delivered(key)
            }
            Err(e) => {
                d.attempts += 1;
                d.last_error = Some(e.clone());
                let backoff = Duration::from_secs(1 << d.attempts.min(12)).min(MAX_BACKOFF);
                let jitter = rand::random_range(0.75..1.0);
                let due = crate::unix_ms() + (backoff.as_millis() as f64 * jitter) as u64;
                let give_up = d.created_ms + config.server.callback_retry_for.as_millis() as u64;
                if due > give_up || e.starts_with("refused:") {
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

    /// One POST; Ok on a 2xx answer.
    async fn send(&self, config: &Config, d: &Delivery) -> Result<(), String> {
        let url = reqwest::Url::parse(&d.url).map_err(|e| format!("refused: {e}"))?;
        let host = url.host_str().ok_or("refused: no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        if !config.server.allow_private_callbacks {
            let addrs: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| format!("resolve {host}: {e}"))?
                .map(|a| a.ip())
                .collect();
            if let Some(ip) = addrs.iter().find(|ip| is_private(ip)) {
                return Err(format!(
                    "refused: {host} is {ip}, a loopback, link-local or private address (server.allow_private_callbacks)"
                ));
            }
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
        let resp = req.body(d.body.clone()).send().await.map_err(|e| format!("{e}"))?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("answered {}", resp.status())) }
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

/// Loopback, link-local, private, unspecified, unique-local or multicast.
fn is_private(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1])
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xfe00) == 0xfc00
                || (v6.segments()[0] & 0xffc0) == 0xfe80
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
        ] {
            assert!(is_private(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "203.0.113.9", "2001:4860:4860::8888"] {
            assert!(!is_private(&ip.parse().unwrap()), "{ip}");
        }
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
