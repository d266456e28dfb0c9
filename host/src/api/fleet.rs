//! `GET /v1/fleet` and the index assignments (`/v1/fleet/index`): what the
//! fleet's heartbeats tell, and which domains each index node keeps.

use hyper::{Response, StatusCode};
use serde::Deserialize;

use super::{Api, ApiError, Body, Call, json, no_content};
use crate::fleet::{AssignError, Fleet};

fn member(api: &Api) -> Result<&Fleet, ApiError> {
    api.fleet.as_deref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "NotInFleet", "this node has no [fleet] section: it runs alone")
    })
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "FleetUnavailable", e.to_string())
}

/// `GET /v1/fleet`: the fleet's nodes as their heartbeats tell them.
pub(super) async fn status(api: &Api) -> Result<Response<Body>, ApiError> {
    let fleet = member(api)?;
    let nodes = fleet.status().await.map_err(unavailable)?;
    let nodes: Vec<serde_json::Value> = nodes
        .into_iter()
        .map(|n| {
            let mut v = serde_json::json!({
                "node_id": n.entry.node_id,
                "roles": n.entry.roles,
                "version": n.entry.version,
                "started_time": crate::iso_ms(n.entry.started_ms),
                "last_heartbeat_time": crate::iso_ms(n.entry.heartbeat_ms),
                "heartbeat_age_ms": n.heartbeat_age_ms,
                "silent": n.silent,
                "live_streams": n.entry.live_streams,
                "plugin_problems": n.entry.plugin_problems,
                "outbox_depth": n.entry.outbox_depth,
                "index_lag": n.entry.index_lag,
            });
            if n.entry.roles.iter().any(|r| r == "index") {
                v["index_domains"] = serde_json::json!(n.entry.index_domains);
            }
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"node_id": fleet.node_id(), "roles": fleet.roles(), "nodes": nodes})))
}

/// `GET /v1/fleet/index`: every index node's assigned domains.
pub(super) async fn assignments(api: &Api) -> Result<Response<Body>, ApiError> {
    let all = member(api)?.assignments().await.map_err(unavailable)?;
    let list: Vec<_> =
        all.into_iter().map(|(node_id, domains)| serde_json::json!({"node_id": node_id, "domains": domains})).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"assignments": list})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Assign {
    domains: Vec<String>,
}

fn node_id(node: &str) -> Result<(), ApiError> {
    let valid =
        (1..=64).contains(&node.len()) && node.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad("InvalidParameter", format!("node_id: 1-64 letters, digits, '-' or '_'; got {node:?}")))
    }
}

fn refused(e: AssignError) -> ApiError {
    match e {
        AssignError::Invalid(_) => ApiError::bad("InvalidParameter", e.to_string()),
        AssignError::Fleet(e) => unavailable(e),
    }
}

/// `PUT /v1/fleet/index/{node_id}`: the domains that index node keeps.
pub(super) async fn assign(api: &Api, node: &str, call: &mut Call) -> Result<Response<Body>, ApiError> {
    let fleet = member(api)?;
    node_id(node)?;
    let body: Assign = call.json().await?;
    let shard = fleet.assign(node, Some(body.domains)).await.map_err(refused)?;
    Ok(json(StatusCode::OK, &serde_json::json!({"node_id": node, "domains": shard})))
}

/// `DELETE /v1/fleet/index/{node_id}`: that index node keeps every domain again.
pub(super) async fn unassign(api: &Api, node: &str) -> Result<Response<Body>, ApiError> {
    let fleet = member(api)?;
    node_id(node)?;
    fleet.assign(node, None).await.map_err(refused)?;
    Ok(no_content())
}

/// The answer of an index-only node asked about a domain it does not keep:
/// 421, naming the index nodes that keep it.
pub(super) async fn not_kept_here(fleet: &Fleet, domain: &str) -> ApiError {
    let keepers = fleet.keepers(domain).await;
    let named: Vec<String> = keepers
        .iter()
        .map(|k| match &k.url {
            Some(url) => format!("{} ({url})", k.node_id),
            None => k.node_id.clone(),
        })
        .collect();
    let ask =
        if named.is_empty() { "no index node keeps it now".to_owned() } else { format!("ask {}", named.join(", ")) };
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "NotIndexedHere",
        format!("index node {} does not keep domain {domain:?}: {ask}", fleet.node_id()),
    )
    .with("index_nodes", serde_json::json!(keepers))
}
