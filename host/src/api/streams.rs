//! Live streams: the list, and "snapshot now".

use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::snapshots::{iso_ms, item};
use super::{Api, ApiError, Body, Call};

/// "Snapshot now" waits at least this long for a keyframe.
const MIN_WAIT: Duration = Duration::from_secs(10);

pub(super) fn list(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let streams: Vec<Value> = api
        .ingest
        .live_streams(domain)
        .into_iter()
        .map(|s| {
            let since = s.since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let st = &s.info.stats;
            let last = st.last_snapshot_ms.load(Ordering::Relaxed);
            let (w, h) = (st.width.load(Ordering::Relaxed), st.height.load(Ordering::Relaxed));
            let template = s.info.template();
            let latest = api.index.latest(domain, &s.info.app, &s.info.stream).ok().flatten();
            let health = s.info.health(crate::unix_ms());
            let last_keyframe = st.last_keyframe_ms.load(Ordering::Relaxed);
            json!({
                "app": s.info.app,
                "stream": s.info.stream,
                "codec": s.info.codec().id(),
                "width": (w > 0).then_some(w),
                "height": (h > 0).then_some(h),
                "since": iso_ms(since),
                "last_snapshot_time": (last > 0).then(|| iso_ms(last)),
                "snapshots": st.stored.load(Ordering::Relaxed),
                "template": template.as_ref().map(|t| t.app_name.clone()),
                "time_interval": template.as_ref().map(|t| t.time_interval_s),
                "keyframes": st.keyframes.load(Ordering::Relaxed),
                "snapshots_queued": st.queued.load(Ordering::Relaxed),
                "snapshots_missed": st.missed.load(Ordering::Relaxed),
                "snapshots_skipped": st.skipped.load(Ordering::Relaxed),
                "keyframes_rejected": st.rejected.load(Ordering::Relaxed),
                "keyframes_blank": st.blank.load(Ordering::Relaxed),
                "peer": s.info.peer.map(|p| p.to_string()),
                "frame_url": api.urls.sign(&format!(
                    "/v1/domains/{domain}/streams/{}/{}/frame.jpeg", s.info.app, s.info.stream
                )),
                "source": api.sources.get(domain, &s.info.app, &s.info.stream).map(|v| super::sources::view(&v)),
                "bitrate_bps": health.bitrate_bps as u64,
                "fps": health.fps,
                "gop_ms": st.gop_ms.load(Ordering::Relaxed),
                "last_keyframe_age_ms": (last_keyframe > 0).then_some((health.keyframe_age_seconds * 1000.0) as u64),
                "latest": latest.as_ref().map(|r| item(api, r)),
            })
        })
        .collect();
    // Captures of this domain waiting in the spool for a down target.
    let spooled = api.spool.domain_entries(domain);
    // Pull sources that are not live now (connecting, backing off, idle
    // between on-demand captures, standing by, waiting), with their state.
    let live = api.ingest.live_streams(domain);
    let not_live: Vec<Value> = api
        .sources
        .list(domain)
        .iter()
        .filter(|v| !live.iter().any(|s| s.info.app == v.source.app && s.info.stream == v.source.stream))
        .map(super::sources::view)
        .collect();
    Ok(super::json(StatusCode::OK, &json!({ "streams": streams, "spooled": spooled, "sources_not_live": not_live })))
}

/// Oldest a kept frame may be for `frame.jpeg` when the request does not say (s).
const FRAME_MAX_AGE_S: u64 = 5;

/// `frame.jpeg`: the stream's picture now, as a JPEG stored nowhere. The
/// last decoded keyframe answers at once when it is at most `max_age`
/// seconds old (default 5) and of the `width` asked for; otherwise the
/// next keyframe is decoded for it.
pub(super) async fn frame(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (app, stream) = (call.params.get("app"), call.params.get("stream"));
    let (mut width, mut max_age_s) = (None, FRAME_MAX_AGE_S);
    for (k, v) in call.query_pairs()? {
        match k.as_str() {
            "width" => {
                width = Some(v.parse::<u32>().ok().filter(|w| (16..=4096).contains(w)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.Width", format!("width must be from 16 to 4096, got {v:?}"))
                })?)
            }
            "max_age" => {
                max_age_s = v.parse::<u64>().ok().filter(|a| *a <= 3600).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.MaxAge", format!("max_age must be 0 to 3600 seconds, got {v:?}"))
                })?
            }
            // A signed URL's own parameters.
            "exp" | "sig" => {}
            other => return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {other:?}"))),
        }
    }
    let live = api.ingest.live_stream(domain, app, stream).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "StreamNotLive", format!("stream {app}/{stream} is not live"))
    })?;
    let now = crate::unix_ms();
    let kept = live.info.last_frame.lock().unwrap().clone();
    let fresh =
        kept.filter(|f| now.saturating_sub(f.decoded_ms) <= max_age_s * 1000 && width.is_none_or(|w| w == f.width));
    let frame = match fresh {
        Some(f) => f,
        None => {
            let gop = Duration::from_millis(live.info.stats.gop_ms.load(Ordering::Relaxed));
            let wait = (2 * gop).max(MIN_WAIT);
            let (tx, rx) = tokio::sync::oneshot::channel();
            live.info.request_frame(width.unwrap_or(0), tx);
            drop(live);
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Ok(frame))) => frame,
                Ok(Ok(Err(why))) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "FrameFailed", why)),
                Ok(Err(_)) => {
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "FrameFailed",
                        "the stream ended before its next keyframe",
                    ));
                }
                Err(_) => {
                    return Err(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "FrameTimeout",
                        format!("no keyframe was decoded within {} s", wait.as_secs()),
                    ));
                }
            }
        }
    };
    let age_ms = crate::unix_ms().saturating_sub(frame.decoded_ms);
    let mut resp = Response::new(http_body_util::Full::new(frame.jpeg));
    let h = resp.headers_mut();
    h.insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("image/jpeg"));
    h.insert(hyper::header::CACHE_CONTROL, hyper::header::HeaderValue::from_static("no-store"));
    h.insert("x-frame-age-ms", hyper::header::HeaderValue::from(age_ms));
    h.insert("x-frame-width", hyper::header::HeaderValue::from(frame.width));
    Ok(resp)
}

/// Stream names of an app the index knows (every stream that ever took a
/// snapshot), starting with `prefix`, at most `limit` (50), in name order.
pub(super) fn names(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (mut app, mut prefix, mut limit) = (None, String::new(), 50usize);
    for (k, v) in call.query_pairs()? {
        match k.as_str() {
            "app" => app = Some(v),
            "prefix" => prefix = v,
            "limit" => {
                limit = v.parse().ok().filter(|l| (1..=500).contains(l)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.Limit", format!("limit must be from 1 to 500, got {v:?}"))
                })?
            }
            other => return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {other:?}"))),
        }
    }
    let app = app.filter(|a| !a.is_empty()).ok_or_else(|| ApiError::bad("MissingParameter.App", "app is required"))?;
    let names = api.index.stream_names(domain, &app, &prefix, limit)?;
    Ok(super::json(StatusCode::OK, &json!({ "streams": names })))
}

/// Takes a snapshot of the stream's next keyframe (the grid does not move;
/// it takes a `{Sequence}`) and answers with its records, or 504 after
/// max(2 GOPs, 10 s).
pub(super) async fn snapshot_now(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (app, stream) = (call.params.get("app"), call.params.get("stream"));
    let live = api.ingest.live_stream(domain, app, stream).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "StreamNotLive", format!("stream {app}/{stream} is not being published"))
    })?;
    if live.info.template().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "NoSnapshotConfig",
            format!("app {app:?} has no snapshot config, so nothing names or stores a snapshot"),
        ));
    }
    let gop = Duration::from_millis(live.info.stats.gop_ms.load(Ordering::Relaxed));
    let wait = (2 * gop).max(MIN_WAIT);
    let (tx, rx) = tokio::sync::oneshot::channel();
    live.info.request_snapshot(tx);
    drop(live);
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(Ok(records))) => {
            let items: Vec<Value> = records.iter().map(|r| item(api, r)).collect();
            Ok(super::json(StatusCode::OK, &json!({ "snapshots": items })))
        }
        Ok(Ok(Err(why))) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SnapshotFailed", why)),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SnapshotFailed",
            "the stream ended before its next keyframe",
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "SnapshotTimeout",
            format!("no keyframe was captured within {} s", wait.as_secs()),
        )),
    }
}
