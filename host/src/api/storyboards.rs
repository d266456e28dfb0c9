//! Live storyboards (docs/templates.md#storyboards): a stream's list, and
//! their files (WebVTT and sprite sheets) from its template's storage.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Api, ApiError, Body, Call};
use crate::storyboard;

/// The storage target and storyboard period (s, 0: none) of an app's
/// template, for a stream name that can have storyboards.
fn template_of(api: &Api, domain: &str, app: &str, stream: &str) -> Result<(String, u32), ApiError> {
    use crate::config::template::{check_app_name, is_valid_stream_name};
    if app == "*" || check_app_name(app).is_err() || !is_valid_stream_name(stream) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "StreamNotFound", format!("no stream {app:?}/{stream:?}")));
    }
    let t = api.settings.get().template_for(domain, app).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "ConfigNotFound", format!("app {app:?} has no snapshot config"))
    })?;
    Ok((t.storage.clone(), t.storyboard_s))
}

fn file_path(domain: &str, app: &str, stream: &str, file: &str) -> String {
    format!("/v1/domains/{domain}/storyboards/{app}/{stream}/{file}")
}

/// `GET …/streams/{app}/{stream}/storyboards`: every period's WebVTT and
/// sheets found on the template's storage, oldest first, with signed URLs.
pub(super) async fn list(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (app, stream) = (call.params.get("app"), call.params.get("stream"));
    let (storage, period_s) = template_of(api, domain, app, stream)?;
    let dir = storyboard::folder(app, stream);
    let keys = api.storage.target(domain, &storage)?.list(&dir).await?;
    let now = crate::unix_ms();
    let files: Vec<&str> = keys.iter().filter_map(|k| k.strip_prefix(&format!("{dir}/"))).collect();
    let boards: Vec<Value> = files
        .iter()
        .filter_map(|f| f.strip_suffix(".vtt"))
        .filter_map(|p| p.parse::<u64>().ok().map(|start| (p, start)))
        .map(|(p, start)| {
            let sheets: Vec<Value> = files
                .iter()
                .filter(|f| f.strip_prefix(p).is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".jpg")))
                .map(|f| json!({"object": format!("{dir}/{f}"), "url": api.urls.sign(&file_path(domain, app, stream, f))}))
                .collect();
            let end_ms = (period_s > 0).then(|| (start + u64::from(period_s)) * 1000);
            json!({
                "period_start": crate::iso_ms(start * 1000),
                "period_end": end_ms.map(crate::iso_ms),
                "finished": end_ms.map(|e| e <= now),
                "vtt": format!("{dir}/{p}.vtt"),
                "vtt_url": api.urls.sign(&file_path(domain, app, stream, &format!("{p}.vtt"))),
                "sheets": sheets,
            })
        })
        .collect();
    Ok(super::json(StatusCode::OK, &json!({ "storyboards": boards })))
}

/// `GET /v1/domains/{d}/storyboards/{app}/{stream}/{file}`: a WebVTT or a
/// sheet, signed or with a token.
pub(super) async fn file(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (app, stream, file) = (call.params.get("app"), call.params.get("stream"), call.params.get("file"));
    if !storyboard::is_file_name(file) {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "FileNotFound", format!("no storyboard file {file:?}")));
    }
    let (storage, _) = template_of(api, domain, app, stream)?;
    let key = format!("{}/{file}", storyboard::folder(app, stream));
    let bytes: Bytes = api.storage.target(domain, &storage)?.get(&key).await?;
    let media_type = crate::storage::content_type(&bytes);
    let mut resp = Response::new(Full::new(bytes));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(media_type));
    // A period's files change until it ends.
    h.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    Ok(resp)
}
