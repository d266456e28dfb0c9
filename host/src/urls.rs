//! Signed image URLs: `{public_url}/v1/domains/{d}/snapshots/{id}.jpg?exp=&sig=`,
//! valid for `url_ttl` without a token. Used by the API and the callbacks.

use std::sync::Arc;

use hmac::Mac;
use sha2::Sha256;

use crate::config::Settings;
use crate::index::Record;

pub struct UrlSigner {
    settings: Arc<Settings>,
    /// Swapped whole when a fleet's key replaces the node's own.
    key: std::sync::RwLock<Vec<u8>>,
    /// `http://` and the HTTP listener's bound address: the public URL when
    /// the config sets none.
    bound_url: String,
}

impl UrlSigner {
    pub fn new(settings: Arc<Settings>, key: Vec<u8>, http: std::net::SocketAddr) -> UrlSigner {
        UrlSigner { settings, key: std::sync::RwLock::new(key), bound_url: format!("http://{http}") }
    }

    /// Signs and verifies with `key` from now on (a fleet's, shared by
    /// every node). Returns whether it differs from the key in use.
    pub fn set_key(&self, key: Vec<u8>) -> bool {
        let mut current = self.key.write().unwrap();
        let changed = *current != key;
        *current = key;
        changed
    }

    /// A record's image path under the API.
    pub fn image_path(r: &Record) -> String {
        format!("/v1/domains/{}/snapshots/{}.jpg", r.domain, r.id)
    }

    /// A signed absolute URL for a path, valid for the configured TTL.
    pub fn sign(&self, path: &str) -> String {
        self.sign_at(&self.base(), path)
    }

    /// Where this host's API answers: `server.public_url`, or the bound address.
    pub fn base(&self) -> String {
        self.settings.get().server.public_url.clone().unwrap_or_else(|| self.bound_url.clone())
    }

    /// A signed URL for a path under another host's base (a fleet's node:
    /// the key is the fleet's, so that node accepts it).
    pub fn sign_at(&self, base: &str, path: &str) -> String {
        let exp = crate::unix_ms() / 1000 + self.settings.get().server.url_ttl.as_secs();
        let sig = self.signature(path, exp);
        format!("{base}{path}?exp={exp}&sig={sig}")
    }

    /// A record as the API and the callbacks show it: its fields and a
    /// signed URL of its image. Callers add what is theirs (`id`, `event`, ...).
    pub fn record_view(&self, r: &Record) -> serde_json::Map<String, serde_json::Value> {
        let serde_json::Value::Object(mut map) = serde_json::json!({
            "app": r.app,
            "stream": r.stream,
            "create_time": crate::iso_ms(r.create_timestamp_ms),
            "create_timestamp": r.create_timestamp_ms,
            "endpoint": r.endpoint,
            "bucket": r.bucket,
            "object": r.key,
            "is_overlay": r.is_overlay,
            "size": r.size,
            "width": r.width,
            "height": r.height,
            "sequence": r.sequence,
            "url": self.sign(&Self::image_path(r)),
        }) else {
            unreachable!("an object literal")
        };
        if !r.node.is_empty() {
            map.insert("node".into(), r.node.clone().into());
        }
        map
    }

    /// The signature of a path valid until `exp` (unix s).
    pub fn signature(&self, path: &str, exp: u64) -> String {
        let mut mac =
            hmac::Hmac::<Sha256>::new_from_slice(&self.key.read().unwrap()).expect("hmac takes any key length");
        mac.update(format!("{path}?exp={exp}").as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}
