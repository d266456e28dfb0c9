//! The HTTP admin API (docs/api.md) on hyper. Every route is a row of
//! [`ROUTES`], which the OpenAPI document must match (a unit test checks
//! both ways). Tenant state changes go through `tenants`; snapshot records
//! are read from the index and deleted through it, never written.

mod configs;
mod console;
mod domains;
mod error;
mod fleet;
mod plugins;
mod snapshots;
mod sources;
mod storyboards;
mod streams;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde::de::DeserializeOwned;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::config::Settings;
use crate::index::Index;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::storage::Storage;
use crate::tenants::Tenants;
use crate::tokens::{Role, constant_time_eq};

type Body = Full<Bytes>;

/// Request bodies larger than this are refused (413).
const MAX_BODY: usize = 1 << 20;

/// How much of a refused body is read (and dropped) before the connection closes.
const MAX_DRAIN: usize = 128 << 20;

/// How long a listener waits after a failed accept (out of descriptors)
/// before the next: a full table must not turn the accept loop into a spin.
pub(crate) const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

pub struct Api {
    pub settings: Arc<Settings>,
    pub tenants: Arc<Tenants>,
    pub index: Arc<Index>,
    pub storage: Arc<Storage>,
    pub ingest: Arc<Ingest>,
    /// The pull sources and their state.
    pub sources: Arc<crate::sources::Sources>,
    pub metrics: Arc<Metrics>,
    pub policies: Arc<crate::policy::Policies>,
    pub plugins: Arc<crate::policy::PluginStore>,
    /// HMAC key of signed image URLs.
    pub urls: Arc<crate::urls::UrlSigner>,
    pub notifier: Arc<crate::notify::Notifier>,
    pub spool: Arc<crate::spool::Spool>,
    pub thumbs: crate::thumbs::Thumbs,
    /// This node's fleet membership; None: a node alone.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
    /// The fleet's control plane (shares uploaded plugins); None: a node alone.
    pub control: Option<Arc<crate::fleet::ControlPlane>>,
}

const OPENAPI: &str = include_str!("openapi.json");

/// Ready means serving: a down target degrades (its captures are spooled)
/// but does not stop ingest, so readiness stays 200 and names what is down.
fn readyz(api: &Api) -> serde_json::Value {
    let spool = api.spool.status();
    let mut v = serde_json::json!({
        "ready": true,
        "degraded": !spool.targets_down.is_empty(),
        "targets_down": spool.targets_down,
        "spool": {"bytes": spool.bytes, "max_bytes": spool.max_bytes, "peak_bytes": spool.peak_bytes, "entries": spool.entries},
    });
    if let Some(fleet) = &api.fleet {
        v["fleet"] = serde_json::json!({
            "connected": fleet.connected(),
            "outbox_depth": api.index.fleet_outbox_depth().unwrap_or(0),
            "outbox_dropped": api.index.fleet_outbox_dropped().unwrap_or(0),
        });
    }
    v
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Public,
    /// Any valid token.
    Token,
    /// The operator, or a token of the route's `{domain}`.
    Domain,
    /// The operator only.
    Operator,
    /// A valid signature in the query, or as `Domain`.
    SignedOrDomain,
    /// As `Operator`, or anyone when `server.metrics_public` is set.
    Metrics,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Healthz,
    Readyz,
    Metrics,
    OpenApi,
    Whoami,
    ListDomains,
    PutDomain,
    GetDomain,
    DeleteDomain,
    ListTokens,
    MintToken,
    RevokeToken,
    ListConfigs,
    AddConfig,
    GetConfig,
    UpdateConfig,
    DeleteConfig,
    PutNotify,
    GetNotify,
    DeleteNotify,
    FailedCallbacks,
    ReplayCallbacks,
    QuerySnapshots,
    DeleteSnapshots,
    Reconcile,
    SnapshotImage,
    ListStreams,
    ListSources,
    Frame,
    AddSource,
    GetSource,
    PutSource,
    DeleteSource,
    LatestImage,
    SnapshotNow,
    ListPlugins,
    PluginRuns,
    UploadPlugin,
    ActivatePlugin,
    DeletePlugin,
    Thumbnail,
    StreamNames,
    FleetStatus,
    IndexAssignments,
    AssignIndex,
    UnassignIndex,
    Storyboards,
    StoryboardFile,
}

impl Op {
    /// Whether the route answers from snapshot records (an index node
    /// answers only for the domains it keeps).
    fn reads_records(self) -> bool {
        matches!(
            self,
            Op::QuerySnapshots
                | Op::DeleteSnapshots
                | Op::SnapshotImage
                | Op::Thumbnail
                | Op::LatestImage
                | Op::StreamNames
        )
    }
}

#[derive(Debug)]
struct RouteDef {
    method: &'static str,
    pattern: &'static str,
    op: Op,
    access: Access,
}

const fn r(method: &'static str, pattern: &'static str, op: Op, access: Access) -> RouteDef {
    RouteDef { method, pattern, op, access }
}

/// Every route. A `{name}` segment captures; `{id}.jpg` captures with a suffix.
const ROUTES: &[RouteDef] = &[
    r("GET", "/healthz", Op::Healthz, Access::Public),
    r("GET", "/readyz", Op::Readyz, Access::Public),
    r("GET", "/metrics", Op::Metrics, Access::Metrics),
    r("GET", "/openapi.json", Op::OpenApi, Access::Public),
    r("GET", "/v1/whoami", Op::Whoami, Access::Token),
    r("GET", "/v1/fleet", Op::FleetStatus, Access::Operator),
    r("GET", "/v1/fleet/index", Op::IndexAssignments, Access::Operator),
    r("PUT", "/v1/fleet/index/{node_id}", Op::AssignIndex, Access::Operator),
    r("DELETE", "/v1/fleet/index/{node_id}", Op::UnassignIndex, Access::Operator),
    r("GET", "/v1/domains", Op::ListDomains, Access::Operator),
    r("PUT", "/v1/domains/{domain}", Op::PutDomain, Access::Operator),
    r("GET", "/v1/domains/{domain}", Op::GetDomain, Access::Domain),
    r("DELETE", "/v1/domains/{domain}", Op::DeleteDomain, Access::Operator),
    r("GET", "/v1/domains/{domain}/tokens", Op::ListTokens, Access::Operator),
    r("POST", "/v1/domains/{domain}/tokens", Op::MintToken, Access::Operator),
    r("DELETE", "/v1/domains/{domain}/tokens/{token_id}", Op::RevokeToken, Access::Operator),
    r("GET", "/v1/domains/{domain}/snapshot-configs", Op::ListConfigs, Access::Domain),
    r("POST", "/v1/domains/{domain}/snapshot-configs", Op::AddConfig, Access::Domain),
    r("GET", "/v1/domains/{domain}/snapshot-configs/{app}", Op::GetConfig, Access::Domain),
    r("PATCH", "/v1/domains/{domain}/snapshot-configs/{app}", Op::UpdateConfig, Access::Domain),
    r("DELETE", "/v1/domains/{domain}/snapshot-configs/{app}", Op::DeleteConfig, Access::Domain),
    r("PUT", "/v1/domains/{domain}/notify", Op::PutNotify, Access::Domain),
    r("GET", "/v1/domains/{domain}/notify", Op::GetNotify, Access::Domain),
    r("DELETE", "/v1/domains/{domain}/notify", Op::DeleteNotify, Access::Domain),
    r("GET", "/v1/domains/{domain}/notify/failed", Op::FailedCallbacks, Access::Domain),
    r("POST", "/v1/domains/{domain}/notify/failed/replay", Op::ReplayCallbacks, Access::Domain),
    r("GET", "/v1/domains/{domain}/snapshots", Op::QuerySnapshots, Access::Domain),
    r("POST", "/v1/domains/{domain}/snapshots/delete", Op::DeleteSnapshots, Access::Domain),
    r("POST", "/v1/domains/{domain}/snapshots/reconcile", Op::Reconcile, Access::Domain),
    r("GET", "/v1/domains/{domain}/snapshots/{id}.jpg", Op::SnapshotImage, Access::SignedOrDomain),
    r("GET", "/v1/domains/{domain}/streams", Op::ListStreams, Access::Domain),
    r("GET", "/v1/domains/{domain}/sources", Op::ListSources, Access::Domain),
    r("POST", "/v1/domains/{domain}/sources", Op::AddSource, Access::Domain),
    r("GET", "/v1/domains/{domain}/sources/{app}/{stream}", Op::GetSource, Access::Domain),
    r("PUT", "/v1/domains/{domain}/sources/{app}/{stream}", Op::PutSource, Access::Domain),
    r("DELETE", "/v1/domains/{domain}/sources/{app}/{stream}", Op::DeleteSource, Access::Domain),
    r("GET", "/v1/domains/{domain}/stream-names", Op::StreamNames, Access::Domain),
    r("GET", "/v1/domains/{domain}/thumbs/{id}.jpg", Op::Thumbnail, Access::SignedOrDomain),
    r("GET", "/v1/domains/{domain}/streams/{app}/{stream}/latest.jpg", Op::LatestImage, Access::Domain),
    r("GET", "/v1/domains/{domain}/streams/{app}/{stream}/frame.jpeg", Op::Frame, Access::SignedOrDomain),
    r("POST", "/v1/domains/{domain}/streams/{app}/{stream}/snapshot", Op::SnapshotNow, Access::Domain),
    r("GET", "/v1/domains/{domain}/streams/{app}/{stream}/storyboards", Op::Storyboards, Access::Domain),
    r("GET", "/v1/domains/{domain}/storyboards/{app}/{stream}/{file}", Op::StoryboardFile, Access::SignedOrDomain),
    r("GET", "/v1/domains/{domain}/plugins", Op::ListPlugins, Access::Domain),
    r("POST", "/v1/domains/{domain}/plugins", Op::UploadPlugin, Access::Domain),
    r("GET", "/v1/domains/{domain}/plugins/runs", Op::PluginRuns, Access::Domain),
    r("POST", "/v1/domains/{domain}/plugins/{version}/activate", Op::ActivatePlugin, Access::Domain),
    r("DELETE", "/v1/domains/{domain}/plugins/{version}", Op::DeletePlugin, Access::Domain),
];

/// Path parameters of a matched route.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(&'static str, String)>);

impl Params {
    fn get(&self, name: &str) -> &str {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap_or_default()
    }
}

/// Matches one pattern against a path; percent-decoded captures.
fn match_pattern(pattern: &'static str, path: &str) -> Option<Params> {
    let pats: Vec<&'static str> = pattern.trim_start_matches('/').split('/').collect();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if pats.len() != segs.len() {
        return None;
    }
    let mut params = Params::default();
    for (p, s) in pats.iter().zip(&segs) {
        match p.strip_prefix('{').and_then(|p| p.split_once('}')) {
            Some((name, suffix)) => {
                let value = s.strip_suffix(suffix)?;
                let value = percent_decode(value)?;
                if value.is_empty() {
                    return None;
                }
                params.0.push((name, value));
            }
            None if p == s => {}
            None => return None,
        }
    }
    Some(params)
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The route for a request, or 404 / 405.
fn find_route(method: &Method, path: &str) -> Result<(&'static RouteDef, Params), ApiError> {
    let mut allowed = Vec::new();
    for def in ROUTES {
        if let Some(params) = match_pattern(def.pattern, path) {
            if def.method == method.as_str() {
                return Ok((def, params));
            }
            allowed.push(def.method);
        }
    }
    if allowed.is_empty() {
        Err(ApiError::new(StatusCode::NOT_FOUND, "NotFound", format!("no route for {method} {path}")))
    } else {
        Err(ApiError::method_not_allowed(
            format!("{method} is not allowed on {path}; allowed: {}", allowed.join(", ")),
            &allowed,
        ))
    }
}

/// What a handler gets.
pub(crate) struct Call {
    pub head: hyper::http::request::Parts,
    body: Option<Incoming>,
    /// How long the whole body may take to arrive (`server.http_body_timeout`).
    body_timeout: std::time::Duration,
    pub params: Params,
    pub role: Option<Role>,
}

impl Call {
    pub(crate) fn query(&self) -> &str {
        self.head.uri.query().unwrap_or("")
    }

    /// Query parameters, each name at most once.
    pub(crate) fn query_pairs(&self) -> Result<Vec<(String, String)>, ApiError> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in form_urlencoded::parse(self.query().as_bytes()) {
            if out.iter().any(|(o, _)| *o == k) {
                return Err(ApiError::bad("InvalidParameter", format!("query parameter {k:?} is given twice")));
            }
            out.push((k.into_owned(), v.into_owned()));
        }
        Ok(out)
    }

    /// The body, at most `limit` bytes (413 beyond). A body over the limit
    /// is still read to its end (up to [`MAX_DRAIN`]) before the 413 is
    /// sent, so a client that writes its whole request before reading the
    /// answer gets the 413 rather than a broken connection.
    pub(crate) async fn bytes(&mut self, limit: usize) -> Result<Bytes, ApiError> {
        let mut body = self.body.take().ok_or_else(|| ApiError::bad("InvalidBody", "the body was already read"))?;
        let mut buf = bytes::BytesMut::new();
        let mut total = 0usize;
        let deadline = tokio::time::Instant::now() + self.body_timeout;
        loop {
            let Ok(frame) = tokio::time::timeout_at(deadline, body.frame()).await else {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "RequestTimeout",
                    format!("the body did not arrive within {:?}", self.body_timeout),
                ));
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|e| ApiError::bad("InvalidBody", format!("reading the body failed: {e}")))?;
            let Ok(data) = frame.into_data() else { continue };
            total += data.len();
            if total <= limit {
                buf.extend_from_slice(&data);
            } else if total > MAX_DRAIN {
                break;
            }
        }
        if total > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PayloadTooLarge",
                format!("the body is over {limit} bytes"),
            ));
        }
        Ok(buf.freeze())
    }

    /// A JSON body: `application/json`, at most [`MAX_BODY`] bytes, and
    /// (through the types' `deny_unknown_fields`) no unknown fields.
    pub(crate) async fn json<T: DeserializeOwned>(&mut self) -> Result<T, ApiError> {
        let ct = self.head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let mime = ct.split(';').next().unwrap_or("").trim();
        if !mime.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body must be application/json, got {:?}", if ct.is_empty() { "nothing" } else { ct }),
            ));
        }
        let bytes = self.bytes(MAX_BODY).await?;
        // serde accepts a struct written as an array of its fields; the API does not.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::bad("InvalidBody", "the body must be a JSON object"));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." || path.is_empty() {
                ApiError::bad("InvalidBody", format!("the body: {inner}"))
            } else {
                ApiError::bad("InvalidBody", format!("the body: {path}: {inner}"))
            }
        })
    }
}

impl Api {
    /// Serves until `cancel`, then lets open requests finish. HTTP/1.1 only,
    /// within the limits of docs/configuration.md: at most
    /// `http_max_connections` open (past it, new connections wait in the
    /// kernel's backlog), a request head within `http_header_timeout` (also
    /// between keep-alive requests), a failed accept (out of descriptors)
    /// backed off for 100 ms. A limit hit is counted and logged once per 10 s.
    pub async fn run(self: Arc<Self>, listener: TcpListener, cancel: CancellationToken) {
        let server = self.settings.get().server.clone();
        let graceful = GracefulShutdown::new();
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(server.http_header_timeout);
        let permits = Arc::new(tokio::sync::Semaphore::new(server.http_max_connections));
        loop {
            let permit = match permits.clone().try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    self.metrics.limit_hit(
                        "http_connections",
                        format_args!("{} connections open; new ones wait", server.http_max_connections),
                    );
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                    }
                }
            };
            let (socket, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        self.metrics.limit_hit("http_accept_errors", format_args!("accept failed: {e}"));
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                },
            };
            let api = self.clone();
            let service = service_fn(move |req| {
                let api = api.clone();
                async move { Ok::<_, Infallible>(api.handle(req).await) }
            });
            let conn = graceful.watch(http.serve_connection(TokioIo::new(socket), service));
            let metrics = self.metrics.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match conn.await {
                    Err(e) if e.is_timeout() => metrics.limit_hit(
                        "http_header_timeout",
                        format_args!("a request head took over {:?}", server.http_header_timeout),
                    ),
                    Err(e) => tracing::debug!(error = %e, "http connection ended"),
                    Ok(()) => {}
                }
            });
        }
        tokio::select! {
            _ = graceful.shutdown() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => tracing::warn!("http connections still open after 10 s"),
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let request_id = format!("{:016x}", rand::random::<u64>());
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if method == Method::GET && (path == "/console" || path.starts_with("/console/")) {
            return console::serve(&path);
        }
        let (pattern, result) = match find_route(&method, &path) {
            Ok((def, params)) => (def.pattern, self.dispatch(def, params, req).await),
            Err(e) => ("(unmatched)", Err(e)),
        };
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
        if resp.status() == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still be on its way: end the connection.
            resp.headers_mut().insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            self.metrics.limit_hit("http_body_timeout", format_args!("{method} {path}: the body was too slow"));
        }
        let status = resp.status().as_u16();
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.http(method.as_str(), pattern, status, seconds);
        if pattern != "/metrics" && pattern != "/healthz" {
            tracing::debug!(%request_id, %method, %path, status, ms = seconds * 1000.0, "http");
        }
        resp
    }

    async fn dispatch(
        &self,
        def: &'static RouteDef,
        params: Params,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, ApiError> {
        let domain = params.get("domain").to_owned();
        let role = match def.access {
            Access::Public => None,
            Access::Metrics if self.settings.get().server.metrics_public => None,
            Access::SignedOrDomain if has_signature(req.uri().query()) => {
                if !self.signature_ok(req.uri().path(), req.uri().query()) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "SignatureInvalid",
                        "the URL signature is invalid or has expired",
                    ));
                }
                None
            }
            _ => Some(self.authenticate(&req)?),
        };
        if let Some(role) = &role {
            match def.access {
                Access::Operator | Access::Metrics if *role != Role::Operator => {
                    return Err(forbidden("only the operator token may do this"));
                }
                Access::Domain | Access::SignedOrDomain if !role.may(&domain) => {
                    return Err(forbidden(&format!("this token may not reach domain {domain:?}")));
                }
                _ => {}
            }
        }
        if matches!(def.access, Access::Domain | Access::SignedOrDomain)
            && !self.settings.get().domains.contains_key(&domain)
        {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "DomainNotFound",
                format!("domain {domain:?} does not exist"),
            ));
        }
        if let Some(fleet) = &self.fleet
            && def.op.reads_records()
            && !fleet.answers_for(&domain)
        {
            return Err(fleet::not_kept_here(fleet, &domain).await);
        }
        let (head, body) = req.into_parts();
        let body_timeout = self.settings.get().server.http_body_timeout;
        let mut call = Call { head, body: Some(body), body_timeout, params, role };
        let d = domain.as_str();
        match def.op {
            Op::Healthz => Ok(text("ok\n", "text/plain")),
            Op::Readyz => Ok(json(StatusCode::OK, &readyz(self))),
            Op::Metrics => Ok(metrics(self, &call)),
            Op::OpenApi => Ok(text(OPENAPI, "application/json")),
            Op::Whoami => domains::whoami(self, &call),
            Op::FleetStatus => fleet::status(self).await,
            Op::IndexAssignments => fleet::assignments(self).await,
            Op::AssignIndex => fleet::assign(self, call.params.get("node_id").to_owned().as_str(), &mut call).await,
            Op::UnassignIndex => fleet::unassign(self, call.params.get("node_id")).await,
            Op::ListDomains => domains::list(self).await,
            Op::PutDomain => domains::put(self, d, &mut call).await,
            Op::GetDomain => domains::get(self, d).await,
            Op::DeleteDomain => domains::delete(self, d, &call).await,
            Op::ListTokens => domains::list_tokens(self, d).await,
            Op::MintToken => domains::mint_token(self, d, &mut call).await,
            Op::RevokeToken => domains::revoke_token(self, d, call.params.get("token_id")).await,
            Op::ListConfigs => configs::list(self, d, &call),
            Op::AddConfig => configs::add(self, d, &mut call).await,
            Op::GetConfig => configs::get(self, d, call.params.get("app")),
            Op::UpdateConfig => configs::update(self, d, &mut call).await,
            Op::DeleteConfig => configs::delete(self, d, &call).await,
            Op::PutNotify => configs::put_notify(self, d, &mut call).await,
            Op::GetNotify => configs::get_notify(self, d).await,
            Op::DeleteNotify => configs::delete_notify(self, d).await,
            Op::FailedCallbacks => configs::failed_callbacks(self, d),
            Op::Reconcile => snapshots::reconcile(self, d).await,
            Op::ReplayCallbacks => configs::replay_callbacks(self, d, &mut call).await,
            Op::QuerySnapshots => snapshots::list(self, d, &call).await,
            Op::DeleteSnapshots => snapshots::delete(self, d, &mut call).await,
            Op::SnapshotImage => snapshots::image_by_id(self, d, &call).await,
            Op::ListStreams => streams::list(self, d),
            Op::ListSources => sources::list(self, d),
            Op::AddSource => sources::add(self, d, &mut call).await,
            Op::GetSource => sources::get(self, d, &call),
            Op::PutSource => sources::put(self, d, &mut call).await,
            Op::DeleteSource => sources::delete(self, d, &call).await,
            Op::StreamNames => streams::names(self, d, &call),
            Op::Thumbnail => snapshots::thumbnail(self, d, &call).await,
            Op::LatestImage => snapshots::latest_image(self, d, &call).await,
            Op::Frame => streams::frame(self, d, &call).await,
            Op::Storyboards => storyboards::list(self, d, &call).await,
            Op::StoryboardFile => storyboards::file(self, d, &call).await,
            Op::SnapshotNow => streams::snapshot_now(self, d, &call).await,
            Op::ListPlugins => plugins::list(self, d).await,
            Op::UploadPlugin => plugins::upload(self, d, &mut call).await,
            Op::PluginRuns => plugins::runs(self, d),
            Op::ActivatePlugin => plugins::activate(self, d, call.params.get("version")).await,
            Op::DeletePlugin => plugins::delete(self, d, call.params.get("version")).await,
        }
    }

    /// The role of the request's bearer token.
    fn authenticate(&self, req: &Request<Incoming>) -> Result<Role, ApiError> {
        let token = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "missing Authorization: Bearer token")
            })?;
        self.tenants
            .authenticate(token.trim())
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", "the token is not valid"))
    }

    /// A signed URL for an image path, valid for the configured TTL.
    pub fn sign(&self, path: &str) -> String {
        self.urls.sign(path)
    }

    fn signature(&self, path: &str, exp: u64) -> String {
        self.urls.signature(path, exp)
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

fn has_signature(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|p| p.starts_with("sig=") || p.starts_with("exp=")))
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
}

/// `/metrics` in the format the scraper asks for: OpenMetrics when its
/// `Accept` names it (Prometheus does), else the text format 0.0.4.
fn metrics(api: &Api, call: &Call) -> Response<Body> {
    let config = api.settings.get();
    let mut streams = Vec::new();
    for domain in config.domains.keys() {
        api.metrics.domain_series(domain);
        if config.server.stream_metrics {
            let now = crate::unix_ms();
            streams.extend(api.ingest.live_streams(domain).iter().map(|s| s.info.health(now)));
        }
    }
    api.metrics.set_streams(&streams);
    let accept = call.head.headers.get(hyper::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        text(&api.metrics.render_openmetrics(), crate::metrics::OPENMETRICS)
    } else {
        text(&api.metrics.render_text(), crate::metrics::TEXT_004)
    }
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

pub(crate) fn no_content() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// `order`: `asc` (false) or `desc` (true).
pub(crate) fn descending(v: &str) -> Result<bool, ApiError> {
    match v {
        "asc" => Ok(false),
        "desc" => Ok(true),
        _ => Err(ApiError::bad("InvalidParameter.Order", format!("order must be asc or desc, got {v:?}"))),
    }
}

/// A boolean query flag: `true` / `false`.
pub(crate) fn flag(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ApiError::bad("InvalidParameter", format!("{name} must be true or false, got {v:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_matches_the_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                if ["get", "put", "post", "patch", "delete"].contains(&method.as_str()) {
                    documented.push((method.to_uppercase(), path.clone()));
                }
            }
        }
        let mut served: Vec<(String, String)> =
            ROUTES.iter().map(|d| (d.method.to_owned(), d.pattern.to_owned())).collect();
        documented.sort();
        served.sort();
        let missing: Vec<_> = served.iter().filter(|r| !documented.contains(r)).collect();
        let extra: Vec<_> = documented.iter().filter(|r| !served.contains(r)).collect();
        assert!(missing.is_empty(), "routes missing from openapi.json: {missing:?}");
        assert!(extra.is_empty(), "openapi.json names routes that do not exist: {extra:?}");
        // Each operation's id is its router op's name (lower camel case), and
        // it has one tag of those the document declares.
        let tags: Vec<&str> = doc["tags"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        for d in ROUTES {
            let o = &doc["paths"][d.pattern][d.method.to_lowercase()];
            let name = format!("{:?}", d.op);
            let id = name[..1].to_lowercase() + &name[1..];
            assert_eq!(o["operationId"], id.as_str(), "{} {}", d.method, d.pattern);
            let own = o["tags"].as_array().unwrap_or_else(|| panic!("{} {} has no tags", d.method, d.pattern));
            assert!(own.len() == 1 && tags.contains(&own[0].as_str().unwrap()), "{} {}: {own:?}", d.method, d.pattern);
        }
    }

    #[test]
    fn routes_match() {
        let (def, p) = find_route(&Method::GET, "/v1/domains/a.com/snapshots/00ff.jpg").unwrap();
        assert_eq!((def.op, p.get("domain"), p.get("id")), (Op::SnapshotImage, "a.com", "00ff"));
        let (def, _) = find_route(&Method::POST, "/v1/domains/a.com/snapshots/delete").unwrap();
        assert_eq!(def.op, Op::DeleteSnapshots);
        let (def, p) = find_route(&Method::POST, "/v1/domains/a.com/streams/live/cam%201/snapshot").unwrap();
        assert_eq!((def.op, p.get("stream")), (Op::SnapshotNow, "cam 1"));
        assert_eq!(find_route(&Method::PUT, "/v1/whoami").unwrap_err().status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(find_route(&Method::GET, "/v1/nope").unwrap_err().status(), StatusCode::NOT_FOUND);
        assert_eq!(
            find_route(&Method::GET, "/v1/domains/a.com/snapshots/.jpg").unwrap_err().status(),
            StatusCode::NOT_FOUND
        );
    }
}
