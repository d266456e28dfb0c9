//! Index sharding (SPEC §9, docs/fleet.md): which domains each index node
//! keeps. The operator assigns them through any node's API; the
//! assignment is one KV value per index node in `EDGESNAP_INDEX`
//! (`{"domains": [...]}`); an index node without one keeps every domain.
//!
//! Invariants:
//! - An index node keeps what its index holds in its own redb (the shard
//!   it applied, with the stream position): its consumer's subject filter
//!   is made from that, never from an assignment it has not applied.
//! - A change is applied in this order, each step safe to repeat after a
//!   crash: the records of domains it no longer keeps are dropped (those
//!   another node stored; an edge keeps its own), then the new shard is
//!   kept, with the position reset to the start of the stream when a
//!   domain was added (their history is read again; a record applied twice
//!   replaces itself), then the consumer is made again with the new filter.
//! - An index-only node asked about a domain it does not keep answers 421
//!   `NotIndexedHere`, naming the index nodes that keep it.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::kv;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::{Fleet, FleetError, REQUEST_TIMEOUT, nats};

/// The KV bucket of index assignments, one key per index node id.
pub const INDEX_BUCKET: &str = "EDGESNAP_INDEX";
/// Most domains one index node may be assigned.
pub const MAX_DOMAINS: usize = 10_000;

/// The domains an index node keeps; None: every domain.
pub type Shard = Option<BTreeSet<String>>;

#[derive(Debug, Serialize, Deserialize)]
struct Assignment {
    domains: BTreeSet<String>,
}

/// A shard as this node keeps it in its index.
pub(super) fn encode(shard: &Shard) -> Vec<u8> {
    serde_json::to_vec(shard).expect("a shard serializes")
}

pub(super) fn decode(bytes: &[u8]) -> Option<Shard> {
    serde_json::from_slice(bytes).ok()
}

/// Whether a shard keeps a domain.
pub(super) fn keeps(shard: &Shard, domain: &str) -> bool {
    shard.as_ref().is_none_or(|d| d.contains(domain))
}

/// Why an assignment is refused.
#[derive(Debug, thiserror::Error)]
pub enum AssignError {
    #[error("domains: {0}")]
    Invalid(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

/// An index node that keeps a domain, and where its API answers.
#[derive(Debug, Clone, Serialize)]
pub struct Keeper {
    pub node_id: String,
    pub url: Option<String>,
}

impl Fleet {
    async fn assignments_bucket(&self) -> Result<&kv::Store, FleetError> {
        let config = kv::Config {
            bucket: INDEX_BUCKET.into(),
            description: "edgesnap: the domains each index node keeps".into(),
            history: 1,
            ..Default::default()
        };
        self.bucket(&self.assignments, config).await
    }

    /// The domains assigned to an index node (None: every domain).
    pub(super) async fn assignment(&self, node: &str) -> Result<Shard, FleetError> {
        let read = async {
            let bytes = self.assignments_bucket().await?.get(node).await.map_err(|e| nats("read an assignment", e))?;
            Ok(bytes.and_then(|b| serde_json::from_slice::<Assignment>(&b).ok()).map(|a| a.domains))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read).await.unwrap_or_else(|_| Err(self.not_connected()))
    }

    /// Every index node with an assignment, by node id.
    pub async fn assignments(&self) -> Result<BTreeMap<String, BTreeSet<String>>, FleetError> {
        let read = async {
            let bucket = self.assignments_bucket().await?;
            let mut keys = bucket.keys().await.map_err(|e| nats("list the assignments", e))?;
            let mut out = BTreeMap::new();
            while let Some(key) = keys.next().await {
                let key = key.map_err(|e| nats("list the assignments", e))?;
                let Some(bytes) = bucket.get(&key).await.map_err(|e| nats("read an assignment", e))? else { continue };
                if let Ok(a) = serde_json::from_slice::<Assignment>(&bytes) {
                    out.insert(key, a.domains);
                }
            }
            Ok(out)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read).await.unwrap_or_else(|_| Err(self.not_connected()))
    }

    /// Assigns domains to an index node (None: every domain again). The
    /// node applies it within about a second while it runs, or when it starts.
    pub async fn assign(&self, node: &str, domains: Option<Vec<String>>) -> Result<Shard, AssignError> {
        let shard = match domains {
            None => None,
            Some(list) => {
                if list.is_empty() {
                    return Err(AssignError::Invalid(
                        "at least one; DELETE the assignment to keep every domain".into(),
                    ));
                }
                if list.len() > MAX_DOMAINS {
                    return Err(AssignError::Invalid(format!("at most {MAX_DOMAINS}; got {}", list.len())));
                }
                if let Some(bad) = list.iter().find(|d| !crate::config::is_domain_name(d)) {
                    return Err(AssignError::Invalid(format!(
                        "{bad:?} is not a domain name (letters, digits, '-' and '.')"
                    )));
                }
                Some(list.into_iter().collect::<BTreeSet<_>>())
            }
        };
        let write = async {
            let bucket = self.assignments_bucket().await?;
            match &shard {
                Some(domains) => {
                    let bytes = serde_json::to_vec(&Assignment { domains: domains.clone() }).expect("serializes");
                    bucket.put(node, bytes.into()).await.map(drop).map_err(|e| nats("assign domains", e))
                }
                None => bucket.delete(node).await.map_err(|e| nats("clear an assignment", e)),
            }
        };
        tokio::time::timeout(REQUEST_TIMEOUT, write).await.unwrap_or_else(|_| Err(self.not_connected()))?;
        Ok(shard)
    }

    /// Whether this node answers for a domain's records: an edge answers
    /// for its own; an index-only node for the domains its shard keeps.
    pub fn answers_for(&self, domain: &str) -> bool {
        self.config.edge || self.records.get().is_none_or(|r| keeps(&r.shard(), domain))
    }

    /// The index nodes (heartbeating, by their applied shards) that keep a domain.
    pub async fn keepers(&self, domain: &str) -> Vec<Keeper> {
        let nodes = self.status().await.unwrap_or_default();
        let here = self.records.get().map(|r| r.shard());
        nodes
            .into_iter()
            .filter(|n| !n.silent && n.entry.roles.iter().any(|r| r == "index"))
            .filter(|n| match &here {
                // This node by what it keeps now, not by its last heartbeat.
                Some(shard) if n.entry.node_id == self.config.node_id => keeps(shard, domain),
                _ => keeps(&n.entry.index_domains, domain),
            })
            .map(|n| Keeper { node_id: n.entry.node_id, url: n.entry.public_url })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_keeps_its_domains_and_none_keeps_all() {
        let some: Shard = Some(["a.com".to_owned()].into());
        assert!(keeps(&some, "a.com") && !keeps(&some, "b.com"));
        assert!(keeps(&None, "b.com"));
        assert_eq!(decode(&encode(&some)), Some(some));
        assert_eq!(decode(&encode(&None)), Some(None));
    }
}
