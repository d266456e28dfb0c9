//! Domains (operator only), domain tokens, and `whoami`. Credentials are
//! shown by reference (the variable or file that holds them), never by value.

use std::collections::BTreeMap;

use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Api, ApiError, Body, Call};
use crate::config::{Domain, PublishAuth, RawDomain, Secret, StorageTarget};
use crate::tokens::Role;

fn secret_view(prefix: &str, s: &Secret, out: &mut serde_json::Map<String, Value>) {
    match s {
        Secret::Env(v) => out.insert(format!("{prefix}_env"), json!(v)),
        Secret::File(p) => out.insert(format!("{prefix}_file"), json!(p)),
    };
}

fn view(api: &Api, d: &Domain) -> Value {
    let publish_auth = match &d.publish_auth {
        PublishAuth::Off => json!("off"),
        PublishAuth::TypeA(a) => {
            let mut m = serde_json::Map::new();
            m.insert("type".into(), json!("a"));
            secret_view("key", &a.primary, &mut m);
            if let Some(s) = &a.secondary {
                secret_view("secondary_key", s, &mut m);
            }
            m.insert("ttl".into(), json!(humantime::format_duration(a.ttl).to_string()));
            Value::Object(m)
        }
    };
    let storage: BTreeMap<&String, Value> = d
        .storage
        .iter()
        .map(|(name, t)| {
            let v = match t {
                StorageTarget::Local { path } => json!({"type": "local", "path": path}),
                StorageTarget::S3 {
                    endpoint,
                    bucket,
                    region,
                    prefix,
                    access_key_id_env,
                    secret_access_key_env,
                    credentials_file,
                    virtual_hosted_style,
                } => json!({
                    "type": "s3",
                    "endpoint": endpoint,
                    "bucket": bucket,
                    "region": region,
                    "prefix": prefix,
                    "access_key_id_env": access_key_id_env,
                    "secret_access_key_env": secret_access_key_env,
                    "credentials_file": credentials_file,
                    "virtual_hosted_style": virtual_hosted_style,
                }),
            };
            (name, v)
        })
        .collect();
    let limits = api.settings.get().plugin_limits_for(&d.name);
    json!({
        "domain": d.name,
        "origin": d.origin.as_str(),
        "publish_auth": publish_auth,
        "storage": storage,
        "snapshot_configs": d.templates.len(),
        "live_streams": api.ingest.live_streams(&d.name).len(),
        "plugin_limits": {
            "fuel": limits.fuel,
            "deadline": humantime::format_duration(limits.deadline).to_string(),
            "memory_mib": limits.memory_bytes >> 20,
            "max_placements": limits.max_placements,
            "max_log_lines": limits.max_log_lines,
            "demote_after": limits.demote_after,
            "state_quota_mib": limits.state_quota_bytes >> 20,
            "max_versions": limits.max_versions,
            "uploads_mib": limits.uploads_bytes >> 20,
            "cpu_ms_per_s": api.policies.cpu_ms_per_s(&limits),
        },
    })
}

pub(super) fn whoami(api: &Api, call: &Call) -> Result<Response<Body>, ApiError> {
    let config = api.settings.get();
    let (role, domains, default): (&str, Vec<&String>, Option<&String>) =
        match call.role.as_ref().expect("whoami needs a token") {
            Role::Operator => ("operator", config.domains.keys().collect(), config.server.default_domain.as_ref()),
            Role::Domain(d) => ("domain", config.domains.keys().filter(|k| *k == d).collect(), Some(d)),
        };
    Ok(super::json(StatusCode::OK, &json!({"role": role, "domains": domains, "default_domain": default})))
}

pub(super) async fn list(api: &Api) -> Result<Response<Body>, ApiError> {
    let config = api.settings.get();
    let domains: Vec<Value> = config.domains.values().map(|d| view(api, d)).collect();
    Ok(super::json(StatusCode::OK, &json!({ "domains": domains })))
}

pub(super) async fn get(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    let config = api.settings.get();
    let mut v = view(api, &config.domains[domain]);
    // One domain's view also shows its notify settings (null when unset).
    v["notify"] = api.tenants.raw_notify(domain).await.map_or(Value::Null, |n| super::configs::notify_view(&n));
    Ok(super::json(StatusCode::OK, &v))
}

pub(super) async fn put(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let raw: RawDomain = call.json().await?;
    let created = api.tenants.put_domain(domain, raw).await?;
    let config = api.settings.get();
    let d = config.domains.get(domain).ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "DomainShadowed", format!("domain {domain:?} is not in force"))
    })?;
    Ok(super::json(if created { StatusCode::CREATED } else { StatusCode::OK }, &view(api, d)))
}

/// `DELETE /v1/domains/{domain}?force=&remove_files=`: refused while
/// streams are live unless forced; objects stay unless `remove_files`.
pub(super) async fn delete(api: &Api, domain: &str, call: &Call) -> Result<Response<Body>, ApiError> {
    let (mut force, mut remove_files) = (false, false);
    for (k, v) in call.query_pairs()? {
        match k.as_str() {
            "force" => force = super::flag("force", &v)?,
            "remove_files" => remove_files = super::flag("remove_files", &v)?,
            _ => return Err(ApiError::bad("InvalidParameter", format!("unknown query parameter {k:?}"))),
        }
    }
    let config = api.settings.get();
    let d = config.domains.get(domain).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "DomainNotFound", format!("domain {domain:?} does not exist"))
    })?;
    let live = api.ingest.live_streams(domain).len();
    if live > 0 && !force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "StreamsLive",
            format!("domain {domain:?} has {live} live streams; pass force=true to disconnect them"),
        ));
    }
    // The targets, kept before the domain (and so its targets) go away.
    let mut targets = BTreeMap::new();
    for name in d.storage.keys() {
        targets.insert(name.clone(), api.storage.target(domain, name)?);
    }
    api.tenants.delete_domain(domain).await?;
    api.policies.activate(domain, None);
    let disconnected = api.ingest.disconnect_domain(domain);
    let (mut records, mut files) = (0u64, 0u64);
    loop {
        let ids = api.index.domain_record_ids(domain, 1000)?;
        if ids.is_empty() {
            break;
        }
        let removed = api.index.delete(ids, remove_files).await?;
        records += removed.len() as u64;
        if remove_files {
            files += crate::retention::remove_objects(&api.index, &removed, |_, s| {
                targets.get(s).cloned().ok_or_else(|| crate::storage::StorageError::NoTarget {
                    domain: domain.to_owned(),
                    target: s.to_owned(),
                })
            })
            .await;
        }
    }
    tracing::info!(%domain, records, files, disconnected, "domain deleted");
    Ok(super::json(
        StatusCode::OK,
        &json!({"domain": domain, "records_deleted": records, "files_deleted": files, "streams_disconnected": disconnected}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    #[serde(default)]
    label: Option<String>,
}

fn token_view(t: &crate::tenants::TokenInfo) -> Value {
    json!({"id": t.id, "label": t.label, "created_time": super::snapshots::iso_ms(t.created_ms)})
}

pub(super) async fn list_tokens(api: &Api, domain: &str) -> Result<Response<Body>, ApiError> {
    if !api.settings.get().domains.contains_key(domain) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "DomainNotFound",
            format!("domain {domain:?} does not exist"),
        ));
    }
    let tokens: Vec<Value> = api.tenants.tokens(domain).await.iter().map(token_view).collect();
    Ok(super::json(StatusCode::OK, &json!({ "tokens": tokens })))
}

pub(super) async fn mint_token(api: &Api, domain: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let body: MintBody = call.json().await?;
    if body.label.as_ref().is_some_and(|l| l.chars().count() > 200) {
        return Err(ApiError::bad("InvalidParameter.Label", "label must be at most 200 characters"));
    }
    let (info, token) = api.tenants.mint_token(domain, body.label).await?;
    let mut v = token_view(&info);
    v["token"] = json!(token);
    v["domain"] = json!(domain);
    Ok(super::json(StatusCode::CREATED, &v))
}

pub(super) async fn revoke_token(api: &Api, domain: &str, id: &str) -> Result<Response<Body>, ApiError> {
    api.tenants.revoke_token(domain, id).await?;
    Ok(super::no_content())
}
