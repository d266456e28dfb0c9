//! Snapshot query (DescribeLiveStreamSnapshotInfo), images, live streams.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::{Api, ApiError, Body};
use crate::index::{Query, Record, RecordId};

pub(crate) fn iso_ms(ms: u64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn parse_time(field: &'static str, v: &str) -> Result<u64, ApiError> {
    let code = if field == "start_time" { "InvalidParameter.StartTime" } else { "InvalidParameter.EndTime" };
    let t = DateTime::parse_from_rfc3339(v).map_err(|_| {
        ApiError::bad(code, format!("{field} must be ISO-8601 UTC like 2026-11-25T08:00:00Z, got {v:?}"))
    })?;
    u64::try_from(t.timestamp_millis()).map_err(|_| ApiError::bad(code, format!("{field} is before 1970")))
}

fn item(api: &Api, r: &Record) -> Value {
    let path = format!("/v1/domains/{}/snapshots/{}.jpg", r.domain, r.id);
    json!({
        "id": r.id.to_string(),
        "app": r.app,
        "stream": r.stream,
        "create_time": iso_ms(r.create_timestamp_ms),
        "create_timestamp": r.create_timestamp_ms,
        "storage": r.storage,
        "endpoint": r.endpoint,
        "bucket": r.bucket,
        "object": r.key,
        "is_overlay": r.is_overlay,
        "size": r.size,
        "width": r.width,
        "height": r.height,
        "sequence": r.sequence,
        "url": api.sign(&path),
    })
}

pub(super) async fn list(api: &Api, domain: &str, query: &str) -> Result<Response<Body>, ApiError> {
    let mut app = None;
    let mut stream = None;
    let mut start = None;
    let mut end = None;
    let mut limit = 10usize;
    let mut descending = false;
    let mut cursor = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "app" => app = Some(v.into_owned()),
            "stream" => stream = Some(v.into_owned()).filter(|s| !s.is_empty()),
            "start_time" => start = Some(parse_time("start_time", &v)?),
            "end_time" => end = Some(parse_time("end_time", &v)?),
            "limit" => {
                limit = v.parse::<usize>().ok().filter(|l| (1..=100).contains(l)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.Limit", format!("limit must be from 1 to 100, got {v:?}"))
                })?
            }
            "order" => {
                descending = match v.as_ref() {
                    "asc" => false,
                    "desc" => true,
                    _ => {
                        return Err(ApiError::bad(
                            "InvalidParameter.Order",
                            format!("order must be asc or desc, got {v:?}"),
                        ));
                    }
                }
            }
            "next_token" => cursor = Some(parse_token(&v)?),
            other => {
                return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {other:?}")));
            }
        }
    }
    let app = app.ok_or_else(|| ApiError::bad("MissingParameter.App", "app is required"))?;
    let start_ms = start.ok_or_else(|| ApiError::bad("MissingParameter.StartTime", "start_time is required"))?;
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
        body["next_token"] = json!(format!("{ts}-{id}"));
    }
    Ok(super::json(StatusCode::OK, &body))
}

fn parse_token(v: &str) -> Result<(u64, RecordId), ApiError> {
    let bad = || ApiError::bad("InvalidParameter.NextToken", "next_token is not one this server issued");
    let (ts, id) = v.split_once('-').ok_or_else(bad)?;
    Ok((ts.parse().map_err(|_| bad())?, RecordId::parse(id).ok_or_else(bad)?))
}

async fn image(api: &Api, r: Record, req: &Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let etag = format!("\"{}-{}\"", r.id, r.create_timestamp_ms);
    let cache = if r.is_overlay { "private, no-cache" } else { "private, max-age=31536000, immutable" };
    if req.headers().get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp.headers_mut().insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
        return Ok(resp);
    }
    let target = api.storage.target(&r.domain, &r.storage)?;
    let bytes = target.get(&r.key).await?;
    let mut resp = Response::new(Full::new(bytes));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("image/jpeg"));
    h.insert(ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(resp)
}

fn not_found(what: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "SnapshotNotFound", what)
}

pub(super) async fn image_by_id(
    api: &Api,
    domain: &str,
    id: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let rid = RecordId::parse(id).ok_or_else(|| not_found(format!("no snapshot {id:?}")))?;
    let record =
        api.index.get(rid)?.filter(|r| r.domain == domain).ok_or_else(|| not_found(format!("no snapshot {id}")))?;
    image(api, record, req).await
}

pub(super) async fn latest_image(
    api: &Api,
    domain: &str,
    app: &str,
    stream: &str,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let record = api
        .index
        .latest(domain, app, stream)?
        .ok_or_else(|| not_found(format!("stream {app}/{stream} has no snapshot")))?;
    image(api, record, req).await
}

pub(super) fn live_streams(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let streams: Vec<Value> = api
        .ingest
        .live_streams(domain)
        .into_iter()
        .map(|s| {
            let since = s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let has_template = s.info.template.time_interval_s > 0;
            json!({
                "app": s.info.app,
                "stream": s.info.stream,
                "since": iso_ms(since),
                "template": has_template.then(|| s.info.template.app_name.clone()),
                "time_interval": has_template.then_some(s.info.template.time_interval_s),
                "keyframes": s.stats.keyframes.load(Ordering::Relaxed),
                "snapshots_queued": s.stats.queued.load(Ordering::Relaxed),
                "snapshots_missed": s.stats.missed.load(Ordering::Relaxed),
                "keyframes_rejected": s.stats.rejected.load(Ordering::Relaxed),
            })
        })
        .collect();
    Ok(super::json(StatusCode::OK, &json!({ "streams": streams })))
}
