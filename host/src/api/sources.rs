//! A domain's pull sources (docs/sources.md): list with their state, add,
//! read, replace and delete the API's own (the file's are changed there).

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::snapshots::iso_ms;
use super::{Api, ApiError, Body, Call};
use crate::config::RawSource;
use crate::sources::SourceView;

/// A source as the API shows it: never its credentials, only whether it
/// names some.
pub(super) fn view(v: &SourceView) -> Value {
    let (s, st) = (&v.source, &v.status);
    json!({
        "app": s.app,
        "stream": s.stream,
        "url": s.url,
        "mode": s.mode.as_str(),
        "transport": s.scheme().starts_with("rtsp").then_some(if s.rtsp_tcp { "tcp" } else { "udp" }),
        "credentials": s.credentials.is_some(),
        "warmup_keyframes": s.warmup_keyframes,
        "latency_ms": s.latency.as_millis() as u64,
        "origin": s.origin.as_str(),
        "state": st.state,
        "last_error": st.last_error,
        "retry_time": st.retry_at_ms.map(iso_ms),
        "connects": st.connects,
        "failures": st.failures,
        "captures": st.captures,
    })
}

pub(super) fn list(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let items: Vec<Value> = api.sources.list(domain).iter().map(view).collect();
    Ok(super::json(StatusCode::OK, &json!({ "sources": items })))
}

fn found(api: &Api, domain: &str, app: &str, stream: &str) -> Result<SourceView, ApiError> {
    api.sources.get(domain, app, stream).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "SourceNotFound",
            format!("domain {domain:?} has no source for {app}/{stream}"),
        )
    })
}

pub(super) fn get(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let v = found(api, domain, call.params.get("app"), call.params.get("stream"))?;
    Ok(super::json(StatusCode::OK, &view(&v)))
}

pub(super) async fn add(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let raw: RawSource = call.json().await?;
    api.tenants.put_source(domain, raw.clone(), false).await?;
    api.sources.refresh();
    Ok(super::json(StatusCode::CREATED, &view(&found(api, domain, &raw.app, &raw.stream)?)))
}

pub(super) async fn put(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let (app, stream) = (call.params.get("app").to_owned(), call.params.get("stream").to_owned());
    let raw: RawSource = call.json().await?;
    if (raw.app.as_str(), raw.stream.as_str()) != (app.as_str(), stream.as_str()) {
        return Err(ApiError::bad(
            "InvalidParameter.Stream",
            format!("the body names {}/{}, the path {app}/{stream}", raw.app, raw.stream),
        ));
    }
    let created = api.tenants.put_source(domain, raw, true).await?;
    api.sources.refresh();
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(super::json(status, &view(&found(api, domain, &app, &stream)?)))
}

pub(super) async fn delete(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    api.tenants.delete_source(domain, call.params.get("app"), call.params.get("stream")).await?;
    api.sources.refresh();
    Ok(super::no_content())
}
