//! Snapshot query (DescribeLiveStreamSnapshotInfo), delete
//! (DeleteSnapshotFiles), and images through the host.

use bytes::Bytes;
use chrono::DateTime;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use serde::Deserialize;

use super::{Api, ApiError, Body, Call};
use crate::index::{Query, Record, RecordId};

pub(crate) use crate::iso_ms;

fn parse_time(field: &'static str, v: &str) -> Result<u64, ApiError> {
    let code = if field == "start_time" { "InvalidParameter.StartTime" } else { "InvalidParameter.EndTime" };
    let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
        ApiError::bad(code, format!("{field} must be ISO-8601 UTC like 2026-11-25T08:00:00Z, got {v:?}"))
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| ApiError::bad(code, format!("{field} is before 1970")))
}

pub(super) fn item(api: &Api, r: &Record) -> Value {
    let mut v = api.urls.record_view(r);
    v.insert("id".into(), json!(r.id.to_string()));
    v.insert("storage".into(), json!(r.storage));
    v.insert("thumb_url".into(), json!(api.urls.sign(&format!("/v1/domains/{}/thumbs/{}.jpg", r.domain, r.id))));
    Value::Object(v)
}

pub(super) async fn list(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let mut app = None;
    let mut stream = None;
    let mut start = None;
    let mut end = None;
    let mut limit = 10usize;
    let mut descending = false;
    let mut token = None;
    for (k, v) in call.query_pairs()? {
        match k.as_str() {
            "app" => app = Some(v),
            "stream" => stream = Some(v).filter(|s| !s.is_empty()),
            "start_time" => start = Some(parse_time("start_time", &v)?),
            "end_time" => end = Some(parse_time("end_time", &v)?),
            "limit" => {
                limit = v.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.Limit", format!("limit must be from 1 to 100, got {v:?}"))
                })?
            }
            "order" => descending = super::descending(&v)?,
            "next_token" => token = Some(parse_token(&v)?),
            other => {
                return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {other:?}")));
            }
        }
    }
    let app = app.filter(|a| !a.is_empty()).ok_or_else(|| ApiError::bad("MissingParameter.App", "app is required"))?;
    let mut start_ms = start.ok_or_else(|| ApiError::bad("MissingParameter.StartTime", "start_time is required"))?;
    // A descending page's token carries the window's start: the client passes
    // `next_start_time` back as `start_time` in either order, and a
    // descending page continues below the cursor down to the first start.
    if descending && let Some(Token { floor: Some(floor), .. }) = token {
        start_ms = floor;
    }
    let cursor = token.map(|t| (t.ts, t.id));
    let end_ms = end.ok_or_else(|| ApiError::bad("MissingParameter.EndTime", "end_time is required"))?;
    if end_ms < start_ms {
        return Err(ApiError::bad("InvalidParameter.EndTime", "end_time must not be before start_time"));
    }
    let q = Query { domain: domain.to_owned(), app, stream, start_ms, end_ms, limit, descending, cursor };
    let index = api.index.clone();
    let page = tokio::task::spawn_blocking(move || index.query(&q))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))??;
    let mut body = json!({
        "snapshots": page.records.iter().map(|r| item(api, r)).collect::<Vec<_>>(),
    });
    if let Some((ts, id)) = page.next {
        body["next_start_time"] = json!(iso_ms(ts));
        body["next_token"] = json!(if descending { format!("{ts}-{id}-{start_ms}") } else { format!("{ts}-{id}") });
    }
    Ok(super::json(StatusCode::OK, &body))
}

/// A page cursor: the next item, and for a descending page the window's start.
struct Token {
    ts: u64,
    id: RecordId,
    floor: Option<u64>,
}

fn parse_token(v: &str) -> Result<Token, ApiError> {
    let bad = || ApiError::bad("InvalidParameter.NextToken", "next_token is not one this server issued");
    let mut parts = v.split('-');
    let ts = parts.next().and_then(|t| t.parse().ok()).ok_or_else(bad)?;
    let id = parts.next().and_then(RecordId::parse).ok_or_else(bad)?;
    let floor = parts.next().map(|f| f.parse().map_err(|_| bad())).transpose()?;
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(Token { ts, id, floor })
}

/// Serves a record's object. `changes`: the URL may show another picture
/// later (a stream's latest, an overwrite object), so caches revalidate.
async fn image(api: &Api, r: Record, headers: &hyper::HeaderMap, changes: bool) -> Result<Response<Body>, ApiError> {
    let etag = format!("\"{}-{}\"", r.id, r.create_timestamp_ms);
    let cache = if changes || r.is_overlay { "private, no-cache" } else { "private, max-age=31536000, immutable" };
    if headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
        return Ok(resp);
    }
    if let Some(resp) = to_owner(api, &r, &crate::urls::UrlSigner::image_path(&r)).await? {
        return Ok(resp);
    }
    let target = api.storage.target(&r.domain, &r.storage)?;
    let bytes = target.get(&r.key).await?;
    let media_type = crate::storage::content_type(&bytes);
    let mut resp = Response::new(Full::new(bytes));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(resp)
}

/// In a fleet, a snapshot another node stored on its local directory is
/// read there: a redirect to that node with a URL signed by the fleet's
/// key (None: this node reads it).
async fn to_owner(api: &Api, r: &Record, path: &str) -> Result<Option<Response<Body>>, ApiError> {
    let Some(fleet) = &api.fleet else { return Ok(None) };
    if r.node.is_empty() || r.node == fleet.node_id() || !r.bucket.is_empty() {
        return Ok(None);
    }
    let base = fleet.public_url_of(&r.node).await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NodeUnavailable",
            format!(
                "snapshot {} is on node {:?}'s local directory, and that node is not answering in the fleet",
                r.id, r.node
            ),
        )
    })?;
    let location = HeaderValue::from_str(&api.urls.sign_at(&base, path))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?;
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::TEMPORARY_REDIRECT;
    resp.headers_mut().insert(hyper::header::LOCATION, location);
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(Some(resp))
}

/// A snapshot scaled down to fit 320x180, for the console (cached); one
/// that fits already (a template that scales) is served as it is, unread.
pub(super) async fn thumbnail(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let id = call.params.get("id");
    let rid = RecordId::parse(id).ok_or_else(|| not_found(format!("no snapshot {id:?}")))?;
    let r = api.index.get(rid)?.filter(|r| r.domain == domain).ok_or_else(|| not_found(format!("no snapshot {id}")))?;
    if let Some(resp) = to_owner(api, &r, &format!("/v1/domains/{}/thumbs/{}.jpg", r.domain, r.id)).await? {
        return Ok(resp);
    }
    let etag = format!("\"t-{}-{}\"", r.id, r.create_timestamp_ms);
    if call.head.headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        return Ok(resp);
    }
    let thumb = match api.thumbs.get(r.id.0, r.create_timestamp_ms) {
        Some(t) => t,
        None => {
            let picture = api.storage.target(&r.domain, &r.storage)?.get(&r.key).await?;
            let fits = crate::thumbs::fits(r.width as usize, r.height as usize);
            let t =
                tokio::task::spawn_blocking(move || if fits { Ok(picture) } else { crate::thumbs::scale(&picture) })
                    .await
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?
                    .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "ThumbnailFailed", e.to_string()))?;
            api.thumbs.put(r.id.0, r.create_timestamp_ms, t.clone());
            t
        }
    };
    let cache = if r.is_overlay { "private, no-cache" } else { "private, max-age=31536000, immutable" };
    let media_type = crate::storage::content_type(&thumb);
    let mut resp = Response::new(Full::new(thumb));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(resp)
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "SnapshotNotFound", what)
}

pub(super) async fn image_by_id(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let id = call.params.get("id");
    let rid = RecordId::parse(id).ok_or_else(|| not_found(format!("no snapshot {id:?}")))?;
    let record =
        api.index.get(rid)?.filter(|r| r.domain == domain).ok_or_else(|| not_found(format!("no snapshot {id}")))?;
    image(api, record, &call.head.headers, false).await
}

pub(super) async fn latest_image(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (app, stream) = (call.params.get("app"), call.params.get("stream"));
    let record = api
        .index
        .latest(domain, app, stream)?
        .ok_or_else(|| not_found(format!("stream {app}/{stream} has no snapshot")))?;
    image(api, record, &call.head.headers, true).await
}

/// Drops the domain's records whose objects were removed outside edgesnap.
pub(super) async fn reconcile(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let found = crate::retention::reconcile(&api.index, &api.storage, &api.notifier, domain)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?;
    Ok(super::json(StatusCode::OK, &json!({"checked": found.checked, "removed": found.removed})))
}

/// Most items one delete may name (the reference's limit).
const MAX_DELETE: usize = 200;

/// The fields are optional but, when given, never null: the document says
/// strings and arrays, and a null must not pass for "absent" (which of
/// `create_timestamps` and `ids` is given decides what is deleted).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteBody {
    #[serde(default, deserialize_with = "given")]
    app: Option<String>,
    #[serde(default, deserialize_with = "given")]
    stream: Option<String>,
    #[serde(default, deserialize_with = "given")]
    create_timestamps: Option<Vec<u64>>,
    #[serde(default, deserialize_with = "given")]
    ids: Option<Vec<String>>,
    #[serde(default)]
    remove_file: bool,
}

/// A field that is absent is `None` (by `default`); one that is there must
/// be a value of its type, `null` included in what it refuses.
fn given<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// DeleteSnapshotFiles: 1–200 create timestamps of one stream, or ids.
/// Records go first (with tombstones when files are removed), then the
/// objects; a crash between leaves tombstones that the next start clears.
pub(super) async fn delete(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let body: DeleteBody = call.json().await?;
    enum Item {
        Ts(u64),
        Id(String),
    }
    let items: Vec<Item> = match (&body.create_timestamps, &body.ids) {
        (Some(ts), None) => ts.iter().map(|t| Item::Ts(*t)).collect(),
        (None, Some(ids)) => ids.iter().map(|i| Item::Id(i.clone())).collect(),
        _ => {
            return Err(ApiError::bad(
                "InvalidParameter.CreateTimestampList",
                "give exactly one of create_timestamps and ids",
            ));
        }
    };
    if items.is_empty() || items.len() > MAX_DELETE {
        return Err(ApiError::bad(
            "InvalidParameter.CreateTimestampList",
            format!("name 1 to {MAX_DELETE} snapshots, got {}", items.len()),
        ));
    }
    let app = body.app.as_deref().filter(|a| !a.is_empty());
    let stream = body.stream.as_deref().filter(|s| !s.is_empty());
    let (app, stream) = match (body.create_timestamps.is_some(), app, stream) {
        (true, Some(a), Some(s)) => (Some(a), Some(s)),
        (true, None, _) => return Err(ApiError::bad("MissingParameter.App", "app is required with create_timestamps")),
        (true, _, None) => {
            return Err(ApiError::bad("MissingParameter.Stream", "stream is required with create_timestamps"));
        }
        (false, a, s) => (a, s),
    };
    // Find each item's records, in one read transaction.
    let found: Vec<Vec<Record>> = match &body.create_timestamps {
        Some(stamps) => api.index.records_at(domain, app.unwrap_or(""), stream.unwrap_or(""), stamps)?,
        None => {
            let ids: Vec<Option<RecordId>> =
                items.iter().map(|i| if let Item::Id(id) = i { RecordId::parse(id) } else { None }).collect();
            let valid: Vec<RecordId> = ids.iter().flatten().copied().collect();
            let mut got = api.index.get_many(&valid)?.into_iter();
            ids.iter()
                .map(|id| {
                    id.and_then(|_| got.next().flatten())
                        .filter(|r| {
                            r.domain == domain && app.is_none_or(|a| r.app == a) && stream.is_none_or(|s| r.stream == s)
                        })
                        .into_iter()
                        .collect()
                })
                .collect()
        }
    };
    let mut ids: Vec<RecordId> = found.iter().flatten().map(|r| r.id).collect();
    ids.sort();
    ids.dedup();
    let all: Vec<Record> = found.iter().flatten().cloned().collect();
    let index = api.index.clone();
    tokio::task::spawn_blocking(move || index.prefetch_for_delete(&all))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?;
    // In a fleet, records other edges stored are deleted by them (their
    // objects may be on a directory only they reach); this node drops its
    // copies once they have.
    let (mut elsewhere_records, mut elsewhere_files) = (0u64, 0u64);
    if let Some(fleet) = &api.fleet {
        let mut by_node: std::collections::BTreeMap<String, Vec<RecordId>> = Default::default();
        for r in found.iter().flatten() {
            if !r.node.is_empty() && r.node != fleet.node_id() {
                by_node.entry(r.node.clone()).or_default().push(r.id);
            }
        }
        for (node, theirs) in by_node {
            let done = fleet.delete_on(&node, domain, &theirs, body.remove_file).await.map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "NodeUnavailable",
                    format!("snapshots stored by node {node:?} are deleted by it, and it did not answer: {e}"),
                )
            })?;
            elsewhere_records += done.0;
            elsewhere_files += done.1;
            api.index.delete(theirs.clone(), false).await?;
            ids.retain(|id| !theirs.contains(id));
        }
    }
    let (removed, files_removed) =
        crate::retention::delete_records(&api.index, &api.notifier, &api.storage, ids, body.remove_file).await?;
    let files_removed = files_removed + elsewhere_files;
    let mut results = Vec::with_capacity(items.len());
    let mut ok = 0usize;
    for (item, records) in items.iter().zip(&found) {
        let status = if records.is_empty() { "FileNotFound" } else { "OK" };
        ok += usize::from(!records.is_empty());
        results.push(match item {
            Item::Ts(ts) => json!({"create_timestamp": ts, "status": status}),
            Item::Id(id) => json!({"id": id, "status": status}),
        });
    }
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "success_count": ok,
            "failure_count": items.len() - ok,
            "records_deleted": removed.len() as u64 + elsewhere_records,
            "files_removed": files_removed,
            "results": results,
        }),
    ))
}
