//! The HTTP admin API (SPEC §4) on hyper: health, metrics, the snapshot query
//! and snapshot images. It reads the index and storage; it never writes the
//! index behind the snapshot path's back.

mod error;
mod snapshots;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::config::Settings;
use crate::index::Index;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::storage::Storage;

type Body = Full<Bytes>;

pub struct Api {
    pub settings: Arc<Settings>,
    pub index: Arc<Index>,
    pub storage: Arc<Storage>,
    pub ingest: Arc<Ingest>,
    pub metrics: Arc<Metrics>,
    pub operator_token: String,
    /// HMAC key of signed image URLs.
    pub url_key: Vec<u8>,
}

const OPENAPI: &str = include_str!("openapi.json");

impl Api {
    /// Serves until `cancel`, then lets open requests finish.
    pub async fn run(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let graceful = GracefulShutdown::new();
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (socket, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "http accept failed");
                        continue;
                    }
                },
            };
            let api = self.clone();
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(socket), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "http connection ended");
                }
            });
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => tracing::warn!("http connections still open after 10 s"),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let request_id = format!("{:016x}", rand::random::<u64>());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let result = self.route(req).await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => {
                if e.status().is_server_error() {
                    tracing::error!(%method, %path, %request_id, error = %e.message(), "request failed");
                }
                e.into_response(&request_id)
            }
        };
        resp.headers_mut().insert("x-request-id", HeaderValue::from_str(&request_id).expect("hex is a valid header"));
        resp
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => Ok(text("ok\n", "text/plain")),
            (&Method::GET, ["readyz"]) => Ok(json(StatusCode::OK, &serde_json::json!({"ready": true}))),
            (&Method::GET, ["metrics"]) => Ok(text(&self.metrics.render(), "text/plain; version=0.0.4")),
            (&Method::GET, ["openapi.json"]) => Ok(text(OPENAPI, "application/json")),
            (&Method::GET, ["v1", "whoami"]) => {
                self.authorize(&req, None)?;
                let domains: Vec<String> = self.settings.get().domains.keys().cloned().collect();
                Ok(json(StatusCode::OK, &serde_json::json!({"role": "operator", "domains": domains})))
            }
            (&Method::GET, ["v1", "domains", domain, "snapshots"]) => {
                self.authorize(&req, Some(domain))?;
                snapshots::list(self, domain, req.uri().query().unwrap_or("")).await
            }
            (&Method::GET, ["v1", "domains", domain, "snapshots", file]) if file.ends_with(".jpg") => {
                let id = &file[..file.len() - 4];
                if !self.signature_ok(&path, req.uri().query()) {
                    self.authorize(&req, Some(domain))?;
                }
                snapshots::image_by_id(self, domain, id, &req).await
            }
            (&Method::GET, ["v1", "domains", domain, "streams"]) => {
                self.authorize(&req, Some(domain))?;
                snapshots::live_streams(self, domain)
            }
            (&Method::GET, ["v1", "domains", domain, "streams", app, stream, "latest.jpg"]) => {
                self.authorize(&req, Some(domain))?;
                snapshots::latest_image(self, domain, app, stream, &req).await
            }
            (_, ["healthz" | "readyz" | "metrics" | "openapi.json"])
            | (_, ["v1", "whoami"])
            | (_, ["v1", "domains", _, "snapshots" | "streams", ..]) => Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no route for {method} {path}"))),
        }
    }

    /// Checks the bearer token: the operator token reaches every domain.
    fn authorize(&self, req: &Request<Incoming>, domain: Option<&str>) -> Result<(), ApiError> {
        let token = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "missing Authorization: Bearer token")
            })?;
        if !constant_time_eq(token.as_bytes(), self.operator_token.as_bytes()) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "the token is not valid"));
        }
        if let Some(d) = domain
            && !self.settings.get().domains.contains_key(d)
        {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "DomainNotFound", format!("domain {d:?} does not exist")));
        }
        Ok(())
    }

    /// A signed URL for an image path, valid for the configured TTL.
    pub fn sign(&self, path: &str) -> String {
        let config = self.settings.get();
        let exp = crate::unix_ms() / 1000 + config.server.url_ttl.as_secs();
        let sig = self.signature(path, exp);
        format!("{}{path}?exp={exp}&sig={sig}", config.server.public_url)
    }

    fn signature(&self, path: &str, exp: u64) -> String {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&self.url_key).expect("hmac takes any key length");
        mac.update(format!("{path}?exp={exp}").as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    fn signature_ok(&self, path: &str, query: Option<&str>) -> bool {
        let Some(query) = query else { return false };
        let (mut exp, mut sig) = (None, None);
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = Some(v),
                _ => {}
            }
        }
        match (exp, sig) {
            (Some(exp), Some(sig)) => {
                exp >= crate::unix_ms() / 1000 && constant_time_eq(sig.as_bytes(), self.signature(path, exp).as_bytes())
            }
            _ => false,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(body: &str, content_type: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(serde_json::to_vec(value).expect("json values serialize"))));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
