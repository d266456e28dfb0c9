//! Snapshot templates (Add/Update/Delete/DescribeLiveAppSnapshotConfig) and
//! a domain's notify settings.

use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use super::{Api, ApiError, Body, Call};
use crate::config::{RawNotify, RawTemplate, Template};

pub(super) fn view(t: &Template) -> Value {
    json!({
        "app_name": t.app_name,
        "time_interval": t.time_interval_s,
        "storage": t.storage,
        "overwrite_object": t.overwrite_object,
        "sequence_object": t.sequence_object,
        "callback": t.callback,
        "jpeg_quality": t.jpeg_quality,
        "width": t.width,
        "height": t.height,
        "format": t.format.as_str(),
        "skip_blank": t.skip_blank,
        "storyboard": t.storyboard_s,
        "origin": t.origin.as_str(),
    })
}

/// `?apply=immediately` re-plans live streams now; otherwise from their next publish.
fn apply_now(call: &Call) -> Result<bool, ApiError> {
    let mut now = false;
    for (k, v) in call.query_pairs()? {
        match (k.as_str(), v.as_str()) {
            ("apply", "immediately") => now = true,
            ("apply", "next_publish") => now = false,
            ("apply", _) => {
                return Err(ApiError::bad(
                    "InvalidParameter.Apply",
                    format!("apply must be immediately or next_publish, got {v:?}"),
                ));
            }
            _ => return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {k:?}"))),
        }
    }
    Ok(now)
}

fn replanned(api: &Api, domain: &str, app: &str, now: bool) -> usize {
    if now { api.ingest.replan(domain, app) } else { 0 }
}

pub(super) fn list(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (mut page, mut page_size, mut desc, mut app) = (1usize, 10usize, false, None);
    for (k, v) in call.query_pairs()? {
        match k.as_str() {
            "page" => {
                page = v.parse().ok().filter(|p| (1..=100_000).contains(p)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.Page", format!("page must be from 1 to 100000, got {v:?}"))
                })?
            }
            "page_size" => {
                page_size = v.parse().ok().filter(|p| (5..=30).contains(p)).ok_or_else(|| {
                    ApiError::bad("InvalidParameter.PageSize", format!("page_size must be from 5 to 30, got {v:?}"))
                })?
            }
            "order" => desc = super::descending(&v)?,
            "app" => app = Some(v).filter(|a| !a.is_empty()),
            _ => return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {k:?}"))),
        }
    }
    let config = api.settings.get();
    let d = &config.domains[domain];
    let mut all: Vec<&Template> =
        d.templates.iter().map(|t| t.as_ref()).filter(|t| app.as_ref().is_none_or(|a| &t.app_name == a)).collect();
    if desc {
        all.reverse();
    }
    let total = all.len();
    let items: Vec<Value> = all.iter().skip((page - 1) * page_size).take(page_size).map(|t| view(t)).collect();
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "page": page,
            "page_size": page_size,
            "order": if desc { "desc" } else { "asc" },
            "total": total,
            "pages": total.div_ceil(page_size),
            "snapshot_configs": items,
        }),
    ))
}

pub(super) fn get(api: &Api, domain: &str, app: &str) -> Result<Response<Body>, ApiError> {
    let config = api.settings.get();
    let t = config.domains[domain].templates.iter().find(|t| t.app_name == app).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "ConfigNotFound", format!("app {app:?} has no snapshot config"))
    })?;
    Ok(super::json(StatusCode::OK, &view(t)))
}

pub(super) async fn add(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let now = apply_now(call)?;
    let raw: RawTemplate = call.json().await?;
    let t = api.tenants.add_template(domain, raw).await?;
    let mut body = view(&t);
    body["replanned_streams"] = json!(replanned(api, domain, &t.app_name, now));
    Ok(super::json(StatusCode::CREATED, &body))
}

pub(super) async fn update(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let now = apply_now(call)?;
    let app = call.params.get("app").to_owned();
    let patch: serde_json::Map<String, Value> = call.json().await?;
    let t = api.tenants.update_template(domain, &app, patch).await?;
    let mut body = view(&t);
    body["replanned_streams"] = json!(replanned(api, domain, &app, now));
    Ok(super::json(StatusCode::OK, &body))
}

pub(super) async fn delete(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let now = apply_now(call)?;
    let app = call.params.get("app");
    api.tenants.delete_template(domain, app).await?;
    replanned(api, domain, app, now);
    Ok(super::no_content())
}

pub(super) fn notify_view(n: &RawNotify) -> Value {
    json!({
        "notify_url": n.notify_url,
        "notify_req_auth": n.notify_req_auth.as_deref().unwrap_or("no"),
        "notify_auth_key_set": n.notify_auth_key.is_some(),
    })
}

pub(super) async fn put_notify(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let raw: RawNotify = call.json().await?;
    let created = api.tenants.put_notify(domain, raw.clone()).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(super::json(status, &notify_view(&raw)))
}

pub(super) async fn get_notify(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let raw = api.tenants.raw_notify(domain).await.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "NotifyConfigNotFound", format!("domain {domain:?} has no notify config"))
    })?;
    Ok(super::json(StatusCode::OK, &notify_view(&raw)))
}

/// Callbacks given up on after `server.callback_retry_for`, oldest first.
pub(super) fn failed_callbacks(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let failed: Vec<Value> = api
        .index
        .outbox_failed(domain)?
        .into_iter()
        .map(|(id, d)| {
            json!({
                "id": format!("{id:032x}"),
                "event": d.event,
                "record_id": d.record_id,
                "url": d.url,
                "attempts": d.attempts,
                "last_error": d.last_error,
                "created_time": crate::iso_ms(d.created_ms),
            })
        })
        .collect();
    Ok(super::json(StatusCode::OK, &json!({ "failed": failed })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(default)]
    ids: Option<Vec<String>>,
}

/// Puts failed callbacks (all, or those named) back in the outbox.
pub(super) async fn replay_callbacks(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let body: ReplayBody = call.json().await?;
    let ids = match body.ids {
        None => None,
        Some(ids) => Some(
            ids.iter()
                .map(|i| {
                    (i.len() == 32).then(|| u128::from_str_radix(i, 16).ok()).flatten().ok_or_else(|| {
                        ApiError::bad("InvalidParameter.Ids", format!("{i:?} is not a delivery id (32 hex digits)"))
                    })
                })
                .collect::<Result<Vec<u128>, ApiError>>()?,
        ),
    };
    let replayed = api.index.outbox_replay(domain.to_owned(), ids).await?;
    api.notifier.requeued(domain, replayed);
    Ok(super::json(StatusCode::OK, &json!({ "replayed": replayed })))
}

pub(super) async fn delete_notify(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    api.tenants.delete_notify(domain).await?;
    Ok(super::no_content())
}
