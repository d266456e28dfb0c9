//! A domain's policy plugins (docs/plugins.md): upload a component, list its
//! versions, activate one (or `default`, the built-in; activating an older
//! one is a rollback), delete an inactive one. A version is the sha256 of
//! its bytes; an upload is accepted only if it compiles as a component of
//! the `policy` world and passes a conformance run under production limits.

use std::sync::Arc;

use hyper::header::CONTENT_TYPE;
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::snapshots::iso_ms;
use super::{Api, ApiError, Body, Call};
use crate::policy::{PluginFileError, PolicyError};
use crate::tenants::PluginDoc;

/// The largest component accepted.
pub(super) const MAX_PLUGIN_BYTES: usize = 8 << 20;

/// What `activate` takes for the built-in policy.
const DEFAULT: &str = "default";

fn is_version(v: &str) -> bool {
    v.len() == 64 && v.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn file_error(e: PluginFileError) -> ApiError {
    match e {
        PluginFileError::Policy(e) => invalid(e),
        e @ PluginFileError::Io { .. } => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string())
        }
    }
}

fn invalid(e: PolicyError) -> ApiError {
    match e {
        PolicyError::Load { .. } => ApiError::bad("InvalidPlugin", e.to_string()),
        _ => ApiError::bad("PluginConformance", e.to_string()),
    }
}

fn view(version: &str, doc: &PluginDoc, active: bool) -> Value {
    json!({
        "version": version,
        "size": doc.size,
        "uploaded_time": iso_ms(doc.uploaded_ms),
        "contract": doc.contract,
        "conformance": {"fuel": doc.fuel, "peak_memory_bytes": doc.peak_memory_bytes},
        "active": active,
        "demoted": doc.demoted.as_ref().map(|d| json!({"time": iso_ms(d.time_ms), "reason": d.reason})),
    })
}

pub(super) async fn upload(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let ct = call.head.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if mime != "application/wasm" && mime != "application/octet-stream" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body must be a component as application/wasm or application/octet-stream, got {ct:?}"),
        ));
    }
    let bytes = call.bytes(MAX_PLUGIN_BYTES).await?;
    let version = hex::encode(Sha256::digest(&bytes));
    if let Err(e) = api.tenants.upload_allowed(domain, &version, bytes.len() as u64).await {
        api.metrics.limit_hit("plugin_uploads", format_args!("domain {domain}: {e}"));
        return Err(e.into());
    }
    let policies = api.plugins.policies().clone();
    let v = version.clone();
    let data = bytes.clone();
    let d = domain.to_owned();
    let (contract, usage) = tokio::task::spawn_blocking(move || {
        let plugin = policies.load(&v, &data)?;
        Ok::<_, PolicyError>((plugin.contract, policies.conformance(&plugin, &d)?))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))?
    .map_err(invalid)?;
    api.plugins.save(&version, &bytes).map_err(file_error)?;
    if let Some(control) = &api.control {
        control.share_plugin(&version, &bytes).await.map_err(crate::tenants::ChangeError::Catalog)?;
    }
    let doc = PluginDoc {
        size: bytes.len() as u64,
        uploaded_ms: crate::unix_ms(),
        fuel: usage.fuel,
        peak_memory_bytes: usage.peak_memory_bytes as u64,
        contract: contract.as_str().to_owned(),
        demoted: None,
    };
    let created = api.tenants.add_plugin(domain, &version, doc.clone()).await.inspect_err(|e| {
        api.metrics.limit_hit("plugin_uploads", format_args!("domain {domain}: {e}"));
    })?;
    let (active, versions) = api.tenants.plugins(domain).await;
    let doc = versions.into_iter().find(|(v, _)| *v == version).map_or(doc, |(_, d)| d);
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(super::json(status, &view(&version, &doc, active.as_deref() == Some(version.as_str()))))
}

pub(super) async fn list(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let (active, versions) = api.tenants.plugins(domain).await;
    let previous = api.tenants.previous_plugin(domain).await;
    let items: Vec<Value> = versions.iter().map(|(v, d)| view(v, d, active.as_deref() == Some(v.as_str()))).collect();
    let limits = api.settings.get().plugin_limits_for(domain);
    let policies = api.policies.clone();
    let d = domain.to_owned();
    let state_bytes = tokio::task::spawn_blocking(move || policies.state_in_use(&d))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()))??;
    Ok(super::json(
        StatusCode::OK,
        &json!({
            "active": active.as_deref().unwrap_or(DEFAULT),
            "previous": previous.as_deref().unwrap_or(DEFAULT),
            "versions": items,
            "state": {"bytes": state_bytes, "quota_bytes": limits.state_quota_bytes},
            "uploads": {
                "versions": versions.len(),
                "bytes": versions.iter().map(|(_, d)| d.size).sum::<u64>(),
                "max_versions": limits.max_versions,
                "quota_bytes": limits.uploads_bytes,
            },
        }),
    ))
}

pub(super) async fn activate(api: &Api, domain: &str, version: &str) -> Result<Response<Body>, ApiError> {
    if version == DEFAULT {
        api.tenants.activate_plugin(domain, None).await?;
        api.policies.activate(domain, None);
    } else {
        if !is_version(version) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "PluginNotFound",
                format!("{version:?} is not a plugin version (64 hex digits) nor \"default\""),
            ));
        }
        let (_, versions) = api.tenants.plugins(domain).await;
        if !versions.iter().any(|(v, _)| v == version) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "PluginNotFound",
                format!("domain {domain:?} has no plugin version {version}"),
            ));
        }
        if let Some(control) = &api.control {
            control.fetch_missing_plugin(version, &api.plugins).await.map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ControlPlaneUnavailable",
                    format!("plugin version {version} is not on this node and cannot be fetched from the fleet: {e}"),
                )
            })?;
        }
        let plugin = api.plugins.compile(version).await.map_err(file_error)?;
        api.tenants.activate_plugin(domain, Some(version)).await?;
        api.policies.activate(domain, Some(Arc::new(plugin)));
    }
    tracing::info!(%domain, %version, "plugin activated");
    Ok(super::json(StatusCode::OK, &json!({ "active": version })))
}

pub(super) async fn delete(api: &Api, domain: &str, version: &str) -> Result<Response<Body>, ApiError> {
    let still_used = api.tenants.delete_plugin(domain, version).await?;
    if !still_used {
        api.plugins.remove(version);
    }
    Ok(super::no_content())
}

/// The domain's recent calls of uploaded plugins (and demotions), newest first.
pub(super) fn runs(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let runs: Vec<Value> = api
        .policies
        .runs(domain)
        .iter()
        .map(|r| {
            json!({
                "time": iso_ms(r.time_ms),
                "version": r.version,
                "call": r.call,
                "app": r.app,
                "stream": r.stream,
                "create_timestamp": r.create_timestamp_ms,
                "sequence": r.sequence,
                "deletion": r.deletion,
                "outcome": r.outcome,
                "error": r.error,
                "placements": r.placements.iter().map(|(k, m)| json!({"key": k, "mode": m})).collect::<Vec<_>>(),
                "logs": r.logs,
                "fuel": r.fuel,
                "peak_memory_bytes": r.peak_memory_bytes,
                "duration_ms": r.duration_ms,
                "cpu_ms": r.cpu_ms,
                "fell_back": r.fell_back,
            })
        })
        .collect();
    Ok(super::json(StatusCode::OK, &json!({ "runs": runs })))
}
