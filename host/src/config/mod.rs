//! The operator's TOML file (docs/configuration.md): a raw, `deny_unknown_fields` form
//! validated into a typed [`Config`]. Every error names the field and the rule.
//!
//! The raw domain, storage, template and notify forms are public: the HTTP
//! API takes the same fields in its JSON bodies, keeps what it makes in redb
//! in this form, and validates it with the same functions (see `tenants`).

pub mod source;
pub mod template;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use source::{RawSource, Source, SourceMode, validate_source};
pub use template::{ImageFormat, RuleError, check_format};

/// A config the host can run with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    /// Limits of every uploaded plugin's calls, unless its domain overrides them.
    pub plugin_limits: PluginLimits,
    pub domains: BTreeMap<String, Domain>,
    /// This node's place in a fleet; absent: a node alone (SPEC §9).
    pub fleet: Option<Fleet>,
}

/// `[fleet]`: the NATS JetStream cluster this node shares with the others,
/// its name there and its roles. Read at start (a SIGHUP does not move a
/// node between fleets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fleet {
    /// The servers to try, from the comma-separated `nats_url`.
    pub nats_urls: Vec<String>,
    pub node_id: String,
    pub edge: bool,
    pub index: bool,
    pub credentials_file: Option<PathBuf>,
}

impl Fleet {
    /// The roles as written in the config, in a fixed order.
    pub fn roles(&self) -> Vec<&'static str> {
        [(self.edge, "edge"), (self.index, "index")].into_iter().filter(|(on, _)| *on).map(|(_, r)| r).collect()
    }
}

/// Limits of one plugin call (docs/plugins.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Wasm fuel (about one unit per instruction).
    pub fuel: u64,
    /// Wall-clock deadline (epoch interruption).
    pub deadline: Duration,
    /// Linear memory of the instance.
    pub memory_bytes: usize,
    /// Placements one naming call may return.
    pub max_placements: usize,
    /// Log lines one call may write (more are dropped).
    pub max_log_lines: u32,
    /// Failed calls in a row after which the active version is demoted.
    pub demote_after: u32,
    /// Bytes (keys and values) the domain's plugin state may hold.
    pub state_quota_bytes: u64,
    /// Plugin versions a domain may keep uploaded.
    pub max_versions: usize,
    /// Bytes all of a domain's uploaded versions may take together.
    pub uploads_bytes: u64,
    /// Plugin CPU time per second the domain's calls may use; `None`: an
    /// equal share of a quarter of the cores among the domains with a plugin.
    pub cpu_ms_per_s: Option<u64>,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            fuel: 20_000_000,
            deadline: Duration::from_millis(200),
            memory_bytes: 16 << 20,
            max_placements: 16,
            max_log_lines: 32,
            demote_after: 5,
            state_quota_bytes: 16 << 20,
            max_versions: 16,
            uploads_bytes: 64 << 20,
            cpu_ms_per_s: None,
        }
    }
}

/// The largest memory limit of a plugin call (the size of an instance slot).
pub const MAX_PLUGIN_MEMORY_MIB: usize = 256;

/// An operator's per-domain changes to the plugin limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginOverrides {
    pub fuel: Option<u64>,
    pub deadline: Option<Duration>,
    pub memory_bytes: Option<usize>,
    pub max_placements: Option<usize>,
    pub max_log_lines: Option<u32>,
    pub demote_after: Option<u32>,
    pub state_quota_bytes: Option<u64>,
    pub max_versions: Option<usize>,
    pub uploads_bytes: Option<u64>,
    pub cpu_ms_per_s: Option<u64>,
}

impl PluginLimits {
    pub fn with(self, o: &PluginOverrides) -> PluginLimits {
        PluginLimits {
            fuel: o.fuel.unwrap_or(self.fuel),
            deadline: o.deadline.unwrap_or(self.deadline),
            memory_bytes: o.memory_bytes.unwrap_or(self.memory_bytes),
            max_placements: o.max_placements.unwrap_or(self.max_placements),
            max_log_lines: o.max_log_lines.unwrap_or(self.max_log_lines),
            demote_after: o.demote_after.unwrap_or(self.demote_after),
            state_quota_bytes: o.state_quota_bytes.unwrap_or(self.state_quota_bytes),
            max_versions: o.max_versions.unwrap_or(self.max_versions),
            uploads_bytes: o.uploads_bytes.unwrap_or(self.uploads_bytes),
            cpu_ms_per_s: o.cpu_ms_per_s.or(self.cpu_ms_per_s),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    pub rtmp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Absolute: a relative `data_dir` is taken from the working directory.
    pub data_dir: PathBuf,
    pub operator_token: TokenSource,
    pub default_domain: Option<String>,
    /// Where API clients reach the HTTP API (signed URLs are made from it);
    /// `None`: `http://` and the address the HTTP listener is bound to.
    pub public_url: Option<String>,
    pub decoder_workers: usize,
    /// Capture jobs waiting for a decoder; when full, a due snapshot is missed.
    pub capture_queue: usize,
    /// Pull sources this node runs at once (each is a receive pipeline);
    /// the rest wait, listed with why.
    pub max_sources: usize,
    /// How long a snapshot's signed image URL stays valid.
    pub url_ttl: Duration,
    /// Whether callbacks may go to loopback, link-local and private addresses.
    pub allow_private_callbacks: bool,
    /// Whether `/metrics` has series per live stream (at most
    /// [`crate::metrics::STREAM_SERIES_MAX`] streams).
    pub stream_metrics: bool,
    /// Whether `/metrics` answers without a token (it names every domain
    /// and plugin version); by default only the operator token reads it.
    pub metrics_public: bool,
    /// HTTP connections open at once; past it, new ones wait.
    pub http_max_connections: usize,
    /// How long a request head may take to arrive (also between keep-alive requests).
    pub http_header_timeout: Duration,
    /// How long a request body may take to arrive (408 past it).
    pub http_body_timeout: Duration,
    pub rtmp_limits: RtmpLimits,
    /// How long a callback is retried before it is kept as failed.
    pub callback_retry_for: Duration,
    /// Callbacks waiting for delivery per domain; more are dropped (counted).
    pub outbox_quota: usize,
    /// Bytes the local spool may hold while storage targets are down.
    pub spool_max_bytes: u64,
    /// The part of the spool one domain may fill, in percent.
    pub spool_domain_share: u8,
    /// How often every record's object is checked (reconcile); `None`: only on demand.
    pub reconcile_every: Option<Duration>,
}

/// What one RTMP peer, or all of them, may hold (docs/configuration.md, Limits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpLimits {
    /// Connections open at once; past it, new ones are closed on accept.
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    pub max_connections_per_ip: usize,
    /// Bytes one connection may hold unparsed or in unfinished messages.
    pub buffer_per_connection: usize,
    /// Bytes all connections together may hold so.
    pub buffer_total: usize,
    /// Values one AMF0 command may decode to.
    pub amf_max_elements: usize,
    /// How deeply AMF0 values may nest.
    pub amf_max_depth: usize,
    /// How long a write to a peer may block before the connection is closed.
    pub write_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    Env(String),
    Inline(String),
}

impl TokenSource {
    /// The token's value, or an error naming what is missing.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        match self {
            TokenSource::Inline(t) => Ok(t.clone()),
            TokenSource::Env(var) => match std::env::var(var) {
                Ok(t) if !t.is_empty() => Ok(t),
                _ => Err(ConfigError::new(
                    "server.operator_token_env",
                    format!("environment variable {var} must be set to the operator token"),
                )),
            },
        }
    }
}

/// Where a domain's definition comes from: the file wins for what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    File,
    Api,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::File => "file",
            Origin::Api => "api",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub origin: Origin,
    pub publish_auth: PublishAuth,
    pub storage: BTreeMap<String, StorageTarget>,
    pub templates: Vec<Arc<Template>>,
    pub notify: Option<Notify>,
    /// The operator's changes to this domain's plugin limits.
    pub plugin_limits: PluginOverrides,
    /// Pull sources (docs/sources.md).
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAuth {
    Off,
    /// The reference's URL signing, type A (docs/capture.md).
    TypeA(TypeA),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeA {
    pub primary: Secret,
    pub secondary: Option<Secret>,
    /// An `auth_key` is valid until its timestamp plus this.
    pub ttl: Duration,
}

/// A secret named by reference: read when used, so a rotated file takes
/// effect without a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Secret {
    Env(String),
    File(PathBuf),
}

/// Why a secret (`{ env = … }` or `{ file = … }`) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    Unset(String),
    #[error("environment variable {0} is empty")]
    EmptyVar(String),
    #[error("read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{0} is empty")]
    EmptyFile(String),
}

impl Secret {
    pub fn read(&self) -> Result<String, SecretError> {
        let value = match self {
            Secret::Env(var) => std::env::var(var).map_err(|_| SecretError::Unset(var.clone()))?,
            Secret::File(path) => std::fs::read_to_string(path)
                .map_err(|source| SecretError::Read { path: path.display().to_string(), source })?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        };
        if value.is_empty() {
            return Err(match self {
                Secret::Env(var) => SecretError::EmptyVar(var.clone()),
                Secret::File(path) => SecretError::EmptyFile(path.display().to_string()),
            });
        }
        Ok(value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    Local {
        path: PathBuf,
    },
    S3 {
        endpoint: Option<String>,
        bucket: String,
        region: String,
        prefix: String,
        access_key_id_env: Option<String>,
        secret_access_key_env: Option<String>,
        /// An AWS-style credentials file (`aws_access_key_id = ...`), read when the target is built.
        credentials_file: Option<PathBuf>,
        virtual_hosted_style: bool,
    },
}

/// A snapshot template (docs/templates.md), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub app_name: String,
    pub time_interval_s: u32,
    pub storage: String,
    pub overwrite_object: Option<String>,
    pub sequence_object: Option<String>,
    pub callback: Option<String>,
    pub jpeg_quality: u8,
    /// Scale to this size (0: the source's; one side 0 keeps the aspect).
    pub width: u32,
    pub height: u32,
    /// What the snapshots are stored as.
    pub format: ImageFormat,
    /// Refuse blank keyframes (flat or black) and take the next one within
    /// the interval (docs/templates.md).
    pub skip_blank: bool,
    /// Seconds per live storyboard (0: none; docs/templates.md).
    pub storyboard_s: u32,
    pub origin: Origin,
}

pub const DEFAULT_JPEG_QUALITY: u8 = 85;

impl Template {
    /// A template of every app with the defaults (5 s, JPG at 85, the
    /// source's size, no storyboard, blank keyframes kept) that writes
    /// `overwrite_object` on `storage`: for tools, benchmarks and tests.
    pub fn plain(storage: &str, overwrite_object: &str) -> Template {
        Template {
            app_name: "*".into(),
            time_interval_s: 5,
            storage: storage.into(),
            overwrite_object: Some(overwrite_object.into()),
            sequence_object: None,
            callback: None,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            width: 0,
            height: 0,
            format: ImageFormat::Jpg,
            skip_blank: false,
            storyboard_s: 0,
            origin: Origin::File,
        }
    }
}

/// A domain's snapshot notification settings (docs/api.md, docs/callbacks.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub url: String,
    /// Sign requests with `auth_key`.
    pub auth_key: Option<String>,
}

/// A field that breaks a rule.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ConfigError {
    pub field: String,
    pub rule: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        ConfigError { field: field.into(), rule: rule.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parse config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("config file {path}: {source}")]
    Invalid { path: PathBuf, source: ConfigError },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: path.into(), source })?;
        Config::parse(&text).map_err(|e| match e {
            ParseError::Toml(source) => LoadError::Parse { path: path.into(), source },
            ParseError::Invalid(source) => LoadError::Invalid { path: path.into(), source },
        })
    }

    pub fn parse(text: &str) -> Result<Config, ParseError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ParseError::Toml(Box::new(e)))?;
        raw.validate().map_err(ParseError::Invalid)
    }

    /// The template in force for an app: an exact app name wins over `*`.
    /// The limits of a domain's plugin calls: the defaults with the
    /// domain's overrides.
    pub fn plugin_limits_for(&self, domain: &str) -> PluginLimits {
        match self.domains.get(domain) {
            Some(d) => self.plugin_limits.with(&d.plugin_limits),
            None => self.plugin_limits,
        }
    }

    pub fn template_for(&self, domain: &str, app: &str) -> Option<Arc<Template>> {
        let d = self.domains.get(domain)?;
        d.templates
            .iter()
            .find(|t| t.app_name == app)
            .or_else(|| d.templates.iter().find(|t| t.app_name == "*"))
            .cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{0}")]
    Toml(Box<toml::de::Error>),
    #[error("{0}")]
    Invalid(ConfigError),
}

// ---- the raw forms -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    server: RawServer,
    #[serde(default)]
    plugins: RawPluginLimits,
    #[serde(default)]
    domains: BTreeMap<String, RawDomain>,
    fleet: Option<RawFleet>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    nats_url: String,
    node_id: Option<String>,
    roles: Option<Vec<String>>,
    credentials_file: Option<PathBuf>,
}

impl RawFleet {
    fn validate(self) -> Result<Fleet, ConfigError> {
        let mut nats_urls = Vec::new();
        for part in self.nats_url.split(',').map(str::trim) {
            let ok = url::Url::parse(part)
                .ok()
                .filter(|u| matches!(u.scheme(), "nats" | "tls") && u.host_str().is_some_and(|h| !h.is_empty()));
            if ok.is_none() {
                return Err(ConfigError::new(
                    "fleet.nats_url",
                    format!("must be nats://HOST:PORT or tls://HOST:PORT, comma-separated; got {part:?}"),
                ));
            }
            nats_urls.push(part.to_owned());
        }
        let node_id = match self.node_id {
            Some(id) => id,
            None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).map_err(|e| {
                ConfigError::new("fleet.node_id", format!("not set, and the host name cannot be read: {e}"))
            })?,
        };
        let valid_id = (1..=64).contains(&node_id.len())
            && node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid_id {
            return Err(ConfigError::new(
                "fleet.node_id",
                format!(
                    "must be 1-64 letters, digits, '-' or '_' (it names the node in NATS subjects and keys); got {node_id:?}"
                ),
            ));
        }
        let roles = self.roles.unwrap_or_else(|| vec!["edge".into()]);
        let (mut edge, mut index) = (false, false);
        for r in &roles {
            let seen = match r.as_str() {
                "edge" => std::mem::replace(&mut edge, true),
                "index" => std::mem::replace(&mut index, true),
                _ => {
                    return Err(ConfigError::new(
                        "fleet.roles",
                        format!("each must be \"edge\" or \"index\"; got {r:?}"),
                    ));
                }
            };
            if seen {
                return Err(ConfigError::new("fleet.roles", format!("{r:?} is listed twice")));
            }
        }
        if !edge && !index {
            return Err(ConfigError::new("fleet.roles", "must name at least one role: \"edge\", \"index\" or both"));
        }
        if let Some(f) = &self.credentials_file
            && let Err(e) = std::fs::metadata(f)
        {
            return Err(ConfigError::new("fleet.credentials_file", format!("cannot be read ({}): {e}", f.display())));
        }
        Ok(Fleet { nats_urls, node_id, edge, index, credentials_file: self.credentials_file })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    rtmp_listen: String,
    http_listen: String,
    data_dir: PathBuf,
    operator_token_env: Option<String>,
    operator_token: Option<String>,
    default_domain: Option<String>,
    public_url: Option<String>,
    decoder_workers: Option<i64>,
    capture_queue: Option<i64>,
    max_sources: Option<i64>,
    url_ttl: Option<String>,
    #[serde(default)]
    allow_private_callbacks: bool,
    #[serde(default)]
    stream_metrics: bool,
    #[serde(default)]
    metrics_public: bool,
    http_max_connections: Option<i64>,
    http_header_timeout: Option<String>,
    http_body_timeout: Option<String>,
    rtmp_max_connections: Option<i64>,
    rtmp_max_connections_per_ip: Option<i64>,
    rtmp_buffer_per_connection_mib: Option<i64>,
    rtmp_buffer_total_mib: Option<i64>,
    rtmp_amf_max_elements: Option<i64>,
    rtmp_amf_max_depth: Option<i64>,
    rtmp_write_timeout: Option<String>,
    callback_retry_for: Option<String>,
    outbox_quota: Option<i64>,
    spool_max_mib: Option<i64>,
    spool_domain_share: Option<i64>,
    reconcile_every: Option<String>,
}

/// A domain as written in the file or sent to `PUT /v1/domains/{domain}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDomain {
    /// `"off"` or `{ type = "a", key_env | key_file, secondary_key_env |
    /// secondary_key_file, ttl }`; checked by hand for precise errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_auth: Option<serde_json::Value>,
    #[serde(default)]
    pub storage: BTreeMap<String, RawStorage>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshot_configs: Vec<RawTemplate>,
    /// The operator's changes to the plugin limits for this domain.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "object_only")]
    pub plugin_limits: Option<RawPluginLimits>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<RawSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawStorage {
    Local {
        path: PathBuf,
    },
    S3 {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
        bucket: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        region: Option<String>,
        #[serde(default)]
        prefix: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        access_key_id_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret_access_key_env: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credentials_file: Option<PathBuf>,
        #[serde(default)]
        virtual_hosted_style: bool,
    },
}

/// A snapshot template as written in the file or sent to the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTemplate {
    pub app_name: String,
    pub time_interval: i64,
    pub storage: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite_object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_object: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_quality: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_blank: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storyboard: Option<i64>,
}

/// A domain's notify settings as sent to `PUT /v1/domains/{domain}/notify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub notify_url: String,
    /// `"yes"` or `"no"` (the reference's values); default `"no"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_req_auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_auth_key: Option<String>,
}

fn socket_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(field, format!("must be an IP address and port like 127.0.0.1:8080, got {value:?}"))
    })
}

pub fn is_domain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `path.field`, or `field` at the top level (API bodies).
fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_owned() } else { format!("{path}.{field}") }
}

/// A rule error from the template module, placed at its config path.
fn at(path: &str, e: RuleError) -> ConfigError {
    ConfigError::new(join(path, e.field), e.message)
}

/// An absolute http(s) URL with a host, written as such (no whitespace).
fn is_http_url(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://"))
        && !s.contains(char::is_whitespace)
        && url::Url::parse(s).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

/// Validates a template against its domain's storage target names.
pub fn validate_template(
    t: &RawTemplate,
    storage: &BTreeMap<String, StorageTarget>,
    domain: &str,
    origin: Origin,
) -> Result<Template, RuleError> {
    template::check_app_name(&t.app_name)?;
    let time_interval_s = template::check_interval(t.time_interval)?;
    if !storage.contains_key(&t.storage) {
        return Err(RuleError {
            code: "InvalidParameter.Storage",
            field: "storage",
            message: format!(
                "names no storage target of domain {domain:?} (has: {})",
                storage.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let format = t.format.as_deref().map_or(Ok(ImageFormat::Jpg), template::check_format)?;
    template::check_modes(t.overwrite_object.as_deref(), t.sequence_object.as_deref())?;
    if let Some(o) = &t.overwrite_object {
        template::check_overwrite_object(o, format)?;
    }
    if let Some(o) = &t.sequence_object {
        template::check_sequence_object(o, format)?;
    }
    if let Some(cb) = &t.callback
        && (!is_http_url(cb) || cb.len() > 2048)
    {
        return Err(RuleError {
            code: "InvalidParameter.Callback",
            field: "callback",
            message: "must be an http:// or https:// URL of at most 2048 bytes".into(),
        });
    }
    let storyboard_s = template::check_storyboard(t.storyboard.unwrap_or(0), time_interval_s)?;
    let width = template::check_side("width", "InvalidParameter.Width", t.width.unwrap_or(0))?;
    let height = template::check_side("height", "InvalidParameter.Height", t.height.unwrap_or(0))?;
    let jpeg_quality = match t.jpeg_quality {
        None => DEFAULT_JPEG_QUALITY,
        Some(q) => template::check_jpeg_quality(q)?,
    };
    Ok(Template {
        app_name: t.app_name.clone(),
        time_interval_s,
        storage: t.storage.clone(),
        overwrite_object: t.overwrite_object.clone(),
        sequence_object: t.sequence_object.clone(),
        callback: t.callback.clone(),
        jpeg_quality,
        width,
        height,
        format,
        skip_blank: t.skip_blank.unwrap_or(false),
        storyboard_s,
        origin,
    })
}

/// Validates notify settings: an http(s) URL; with auth on, a key of 16–32
/// letters and digits.
pub fn validate_notify(n: &RawNotify) -> Result<Notify, RuleError> {
    if !is_http_url(&n.notify_url) || n.notify_url.len() > 2048 {
        return Err(RuleError {
            code: "InvalidParameter.NotifyUrl",
            field: "notify_url",
            message: "must be an http:// or https:// URL of at most 2048 bytes".into(),
        });
    }
    let auth = match n.notify_req_auth.as_deref() {
        None | Some("no") => false,
        Some("yes") => true,
        Some(other) => {
            return Err(RuleError {
                code: "InvalidParameter.NotifyReqAuth",
                field: "notify_req_auth",
                message: format!("must be \"yes\" or \"no\", got {other:?}"),
            });
        }
    };
    let key_ok = |k: &str| (16..=32).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_alphanumeric());
    let auth_key = match (&n.notify_auth_key, auth) {
        (Some(k), _) if !key_ok(k) => {
            return Err(RuleError {
                code: "InvalidParameter.NotifyAuthKey",
                field: "notify_auth_key",
                message: "must be 16-32 letters and digits".into(),
            });
        }
        (None, true) => {
            return Err(RuleError {
                code: "MissingParameter.NotifyAuthKey",
                field: "notify_auth_key",
                message: "is required when notify_req_auth is \"yes\"".into(),
            });
        }
        (Some(_), false) => {
            return Err(RuleError {
                code: "InvalidParameter.NotifyAuthKey",
                field: "notify_auth_key",
                message: "is only allowed when notify_req_auth is \"yes\"".into(),
            });
        }
        (k, true) => k.clone(),
        (None, false) => None,
    };
    Ok(Notify { url: n.notify_url.clone(), auth_key })
}

/// Reads `{prefix}_env` / `{prefix}_file` of a publish-auth table.
fn secret_field(
    table: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    prefix: &str,
) -> Result<Option<Secret>, ConfigError> {
    let env = format!("{prefix}_env");
    let file = format!("{prefix}_file");
    let get = |k: &str| -> Result<Option<String>, ConfigError> {
        match table.get(k) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(ConfigError::new(join(path, k), "must be a non-empty string")),
        }
    };
    let secret = match (get(&env)?, get(&file)?) {
        (Some(_), Some(_)) => return Err(ConfigError::new(join(path, &env), format!("set either {env} or {file}"))),
        (Some(v), None) => Secret::Env(v),
        (None, Some(f)) => Secret::File(PathBuf::from(f)),
        (None, None) => return Ok(None),
    };
    let field = join(path, if matches!(secret, Secret::Env(_)) { &env } else { &file });
    let key = secret.read().map_err(|e| ConfigError::new(&field, e.to_string()))?;
    if key.len() < 16 {
        return Err(ConfigError::new(field, "the key must be at least 16 characters"));
    }
    Ok(Some(secret))
}

fn validate_publish_auth(v: Option<&serde_json::Value>, path: &str) -> Result<PublishAuth, ConfigError> {
    let field = join(path, "publish_auth");
    let table = match v {
        None => return Ok(PublishAuth::Off),
        Some(serde_json::Value::String(s)) if s == "off" => return Ok(PublishAuth::Off),
        Some(serde_json::Value::Object(t)) => t,
        Some(_) => return Err(ConfigError::new(field, "must be \"off\" or a table with type = \"a\"")),
    };
    for k in table.keys() {
        if !["type", "key_env", "key_file", "secondary_key_env", "secondary_key_file", "ttl"].contains(&k.as_str()) {
            return Err(ConfigError::new(join(&field, k), "unknown field"));
        }
    }
    match table.get("type") {
        Some(serde_json::Value::String(t)) if t == "a" => {}
        _ => return Err(ConfigError::new(join(&field, "type"), "must be \"a\" (the reference's URL signing)")),
    }
    let primary = secret_field(table, &field, "key")?
        .ok_or_else(|| ConfigError::new(join(&field, "key_env"), "set key_env or key_file to the private key"))?;
    let secondary = secret_field(table, &field, "secondary_key")?;
    let ttl = match table.get("ttl") {
        None => Duration::from_secs(30 * 60),
        Some(serde_json::Value::String(s)) => humantime::parse_duration(s)
            .ok()
            .filter(|d| (1..=7 * 24 * 3600).contains(&d.as_secs()))
            .ok_or_else(|| ConfigError::new(join(&field, "ttl"), "must be a duration from 1s to 7d like \"30m\""))?,
        Some(_) => return Err(ConfigError::new(join(&field, "ttl"), "must be a duration like \"30m\"")),
    };
    Ok(PublishAuth::TypeA(TypeA { primary, secondary, ttl }))
}

/// Where a target stores, to refuse two domains sharing a location.
pub fn location(t: &StorageTarget) -> String {
    match t {
        StorageTarget::Local { path } => format!("dir:{}", dir_key(path)),
        StorageTarget::S3 { endpoint, bucket, prefix, .. } => {
            let endpoint = endpoint.as_deref().map_or("aws".to_owned(), normal_endpoint);
            let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
            let prefix = if parts.is_empty() { String::new() } else { format!("{}/", parts.join("/")) };
            format!("s3:{endpoint}/{bucket}/{prefix}")
        }
    }
}

/// A directory as [`normal_dir`], ending in one `/` (so `/x/` is not a prefix of `/xy/`).
fn dir_key(path: &Path) -> String {
    let mut d = normal_dir(path).display().to_string();
    if !d.ends_with('/') {
        d.push('/');
    }
    d
}

/// A directory as the filesystem resolves it: absolute, without `.`, `..`
/// or repeated separators, and through the symlinks of the part that exists.
pub fn normal_dir(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let mut lexical = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    // The longest part that exists, with its symlinks resolved, then the rest.
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_owned()),
            None => return lexical,
        }
        existing.pop();
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

/// An S3 endpoint as a server sees it: scheme and host in lower case, no
/// default port, no trailing `/`.
fn normal_endpoint(e: &str) -> String {
    match url::Url::parse(e) {
        // `Url` drops a default port and lowercases scheme and host.
        Ok(u) => u.as_str().trim_end_matches('/').to_owned(),
        Err(_) => e.trim_end_matches('/').to_ascii_lowercase(),
    }
}

/// A local storage target that is `data_dir`, inside it or around it: a
/// tenant's keys would land among the host's own files.
pub fn data_dir_clash(domains: &BTreeMap<String, Domain>, data_dir: &Path) -> Option<(String, String)> {
    let host = dir_key(data_dir);
    for (name, d) in domains {
        for (tname, t) in &d.storage {
            if let StorageTarget::Local { .. } = t {
                let loc = location(t);
                let dir = loc.strip_prefix("dir:").unwrap_or(&loc);
                if dir.starts_with(&host) || host.starts_with(dir) {
                    return Some((name.clone(), tname.clone()));
                }
            }
        }
    }
    None
}

/// Validates a domain: name, publish auth, storage targets, templates.
/// `path` is where it sits in the file (`""` for an API body).
pub fn validate_domain(name: &str, d: &RawDomain, path: &str, origin: Origin) -> Result<Domain, ConfigError> {
    if !is_domain_name(name) {
        return Err(ConfigError::new(
            if path.is_empty() { "domain" } else { path },
            "must be a domain name (letters, digits, '-' and '.')",
        ));
    }
    let publish_auth = validate_publish_auth(d.publish_auth.as_ref(), path)?;
    let mut storage = BTreeMap::new();
    for (tname, t) in &d.storage {
        let tpath = join(path, &format!("storage.{tname}"));
        if !is_target_name(tname) {
            return Err(ConfigError::new(&tpath, "a target name is 1-64 of letters, digits, '-' and '_'"));
        }
        let target = match t.clone() {
            RawStorage::Local { path: p } => {
                if p.as_os_str().is_empty() {
                    return Err(ConfigError::new(join(&tpath, "path"), "must not be empty"));
                }
                StorageTarget::Local { path: p }
            }
            RawStorage::S3 {
                endpoint,
                bucket,
                region,
                prefix,
                access_key_id_env,
                secret_access_key_env,
                credentials_file,
                virtual_hosted_style,
            } => {
                if credentials_file.is_some() && (access_key_id_env.is_some() || secret_access_key_env.is_some()) {
                    return Err(ConfigError::new(
                        join(&tpath, "credentials_file"),
                        "set either credentials_file or access_key_id_env / secret_access_key_env, not both",
                    ));
                }
                if bucket.is_empty() {
                    return Err(ConfigError::new(join(&tpath, "bucket"), "must not be empty"));
                }
                if let Some(e) = &endpoint
                    && !is_http_url(e)
                {
                    return Err(ConfigError::new(join(&tpath, "endpoint"), "must be an http:// or https:// URL"));
                }
                if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
                    return Err(ConfigError::new(join(&tpath, "prefix"), "must be relative, without '..'"));
                }
                StorageTarget::S3 {
                    endpoint,
                    bucket,
                    region: region.unwrap_or_else(|| "us-east-1".into()),
                    prefix: prefix.trim_end_matches('/').to_string(),
                    access_key_id_env,
                    secret_access_key_env,
                    credentials_file,
                    virtual_hosted_style,
                }
            }
        };
        storage.insert(tname.clone(), target);
    }
    let mut templates: Vec<Arc<Template>> = Vec::new();
    for (i, t) in d.snapshot_configs.iter().enumerate() {
        let tpath = join(path, &format!("snapshot_configs[{i}]"));
        if templates.iter().any(|o| o.app_name == t.app_name) {
            return Err(ConfigError::new(
                join(&tpath, "app_name"),
                format!("app {:?} already has a snapshot config in this domain", t.app_name),
            ));
        }
        templates.push(Arc::new(validate_template(t, &storage, name, origin).map_err(|e| at(&tpath, e))?));
    }
    let plugin_limits = match &d.plugin_limits {
        None => PluginOverrides::default(),
        Some(raw) => validate_plugin_limits(raw, &join(path, "plugin_limits"))?,
    };
    let mut sources: Vec<Source> = Vec::new();
    for (i, s) in d.sources.iter().enumerate() {
        let spath = join(path, &format!("sources[{i}]"));
        let source = source::validate_source(s, &spath, origin)?;
        if sources.iter().any(|o| (&o.app, &o.stream) == (&source.app, &source.stream)) {
            return Err(ConfigError::new(
                join(&spath, "stream"),
                format!("{}/{} already has a source in this domain", source.app, source.stream),
            ));
        }
        sources.push(source);
    }
    Ok(Domain { name: name.to_owned(), origin, publish_auth, storage, templates, notify: None, plugin_limits, sources })
}

/// A table written as a table: serde would also take a struct written as an
/// array of its fields, which the file and the API do not.
fn object_only<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::de::Error;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        v @ serde_json::Value::Object(_) => T::deserialize(v).map(Some).map_err(D::Error::custom),
        other => Err(D::Error::custom(format!("expected a table of limits, got {other}"))),
    }
}

/// Plugin limits as written (`[plugins]`, or a domain's `plugin_limits`);
/// every field optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_placements: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_lines: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demote_after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_quota_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_versions: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploads_mib: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms_per_s: Option<i64>,
}

/// Checks plugin limits against the bounds the host can keep (a wasm call
/// is stopped by fuel or the deadline, whichever comes first).
pub fn validate_plugin_limits(raw: &RawPluginLimits, path: &str) -> Result<PluginOverrides, ConfigError> {
    fn within(v: Option<i64>, lo: i64, hi: i64, field: String) -> Result<Option<i64>, ConfigError> {
        match v {
            Some(n) if !(lo..=hi).contains(&n) => {
                Err(ConfigError::new(field, format!("must be from {lo} to {hi}, got {n}")))
            }
            v => Ok(v),
        }
    }
    let deadline = match &raw.deadline {
        None => None,
        Some(t) => {
            let field = join(path, "deadline");
            let d = humantime::parse_duration(t)
                .map_err(|e| ConfigError::new(&field, format!("must be a duration like \"200ms\": {e}")))?;
            if d < Duration::from_millis(10) || d > Duration::from_secs(10) {
                return Err(ConfigError::new(field, "must be from 10ms to 10s"));
            }
            Some(d)
        }
    };
    Ok(PluginOverrides {
        fuel: within(raw.fuel, 100_000, 10_000_000_000, join(path, "fuel"))?.map(|n| n as u64),
        deadline,
        memory_bytes: within(raw.memory_mib, 1, MAX_PLUGIN_MEMORY_MIB as i64, join(path, "memory_mib"))?
            .map(|n| (n as usize) << 20),
        max_placements: within(raw.max_placements, 1, 256, join(path, "max_placements"))?.map(|n| n as usize),
        max_log_lines: within(raw.max_log_lines, 0, 1000, join(path, "max_log_lines"))?.map(|n| n as u32),
        demote_after: within(raw.demote_after, 1, 1_000_000, join(path, "demote_after"))?.map(|n| n as u32),
        state_quota_bytes: within(raw.state_quota_mib, 1, 4096, join(path, "state_quota_mib"))?
            .map(|n| (n as u64) << 20),
        max_versions: within(raw.max_versions, 1, 1000, join(path, "max_versions"))?.map(|n| n as usize),
        uploads_bytes: within(raw.uploads_mib, 8, 65536, join(path, "uploads_mib"))?.map(|n| (n as u64) << 20),
        cpu_ms_per_s: within(raw.cpu_ms_per_s, 1, 64_000, join(path, "cpu_ms_per_s"))?.map(|n| n as u64),
    })
}

fn is_target_name(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Two domains may not share a storage location, nor may one's lie inside
/// another's. Returns the first clash as (domain, target, other domain).
pub fn find_overlap(domains: &BTreeMap<String, Domain>) -> Option<(String, String, String)> {
    let mut claimed: Vec<(String, &str)> = Vec::new(); // (location, owner)
    for (name, d) in domains {
        for (tname, t) in &d.storage {
            let loc = location(t);
            for (other, owner) in &claimed {
                if *owner != name.as_str() && (loc.starts_with(other.as_str()) || other.starts_with(&loc)) {
                    return Some((name.clone(), tname.clone(), (*owner).to_owned()));
                }
            }
            claimed.push((loc, name));
        }
    }
    None
}

/// A target of `domain` that overlaps another domain's: (target, other domain).
pub fn overlap_of(domains: &BTreeMap<String, Domain>, domain: &str) -> Option<(String, String)> {
    let mine = domains.get(domain)?;
    for (tname, t) in &mine.storage {
        let loc = location(t);
        for (other, d) in domains.iter().filter(|(o, _)| o.as_str() != domain) {
            for ot in d.storage.values() {
                let oloc = location(ot);
                if loc.starts_with(&oloc) || oloc.starts_with(&loc) {
                    return Some((tname.clone(), other.clone()));
                }
            }
        }
    }
    None
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        if self.version != 1 {
            return Err(ConfigError::new("version", format!("must be 1, got {}", self.version)));
        }
        let fleet = self.fleet.map(RawFleet::validate).transpose()?;
        let s = self.server;
        let rtmp_listen = socket_addr("server.rtmp_listen", &s.rtmp_listen)?;
        let http_listen = socket_addr("server.http_listen", &s.http_listen)?;
        let operator_token = match (s.operator_token_env, s.operator_token) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "server.operator_token",
                    "set either operator_token_env or operator_token, not both",
                ));
            }
            (None, Some(t)) if t.len() < 16 => {
                return Err(ConfigError::new("server.operator_token", "must be at least 16 characters"));
            }
            (None, Some(t)) => TokenSource::Inline(t),
            (Some(var), None) => TokenSource::Env(var),
            (None, None) => TokenSource::Env("EDGESNAP_OPERATOR_TOKEN".into()),
        };
        // An optional integer key: its default, or a value within lo..=hi.
        let count = |field: &str, v: Option<i64>, default: usize, lo: i64, hi: i64| match v {
            None => Ok(default),
            Some(n) if (lo..=hi).contains(&n) => Ok(n as usize),
            Some(n) => Err(ConfigError::new(field, format!("must be from {lo} to {hi}, got {n}"))),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let decoder_workers = count("server.decoder_workers", s.decoder_workers, cores, 1, 64)?;
        let capture_queue = count("server.capture_queue", s.capture_queue, 1024, 1, 1_000_000)?;
        let max_sources = count("server.max_sources", s.max_sources, 500, 0, 100_000)?;
        let url_ttl = match s.url_ttl {
            None => Duration::from_secs(24 * 3600),
            Some(t) => humantime::parse_duration(&t)
                .map_err(|e| ConfigError::new("server.url_ttl", format!("must be a duration like \"24h\": {e}")))?,
        };
        let http_max_connections = count("server.http_max_connections", s.http_max_connections, 1024, 1, 1_000_000)?;
        let bounded = |field: &str, v: Option<String>, default: u64, max: u64| -> Result<Duration, ConfigError> {
            let Some(t) = v else { return Ok(Duration::from_secs(default)) };
            let d = humantime::parse_duration(&t)
                .map_err(|e| ConfigError::new(field, format!("must be a duration like \"10s\": {e}")))?;
            if d < Duration::from_secs(1) || d > Duration::from_secs(max) {
                return Err(ConfigError::new(
                    field,
                    format!("must be from 1s to {}", humantime::format_duration(Duration::from_secs(max))),
                ));
            }
            Ok(d)
        };
        let http_header_timeout = bounded("server.http_header_timeout", s.http_header_timeout, 10, 300)?;
        let http_body_timeout = bounded("server.http_body_timeout", s.http_body_timeout, 30, 600)?;
        let rtmp_limits = RtmpLimits {
            max_connections: count("server.rtmp_max_connections", s.rtmp_max_connections, 4096, 1, 1_000_000)?,
            max_connections_per_ip: count(
                "server.rtmp_max_connections_per_ip",
                s.rtmp_max_connections_per_ip,
                256,
                1,
                1_000_000,
            )?,
            buffer_per_connection: count(
                "server.rtmp_buffer_per_connection_mib",
                s.rtmp_buffer_per_connection_mib,
                16,
                9,
                1024,
            )? << 20,
            buffer_total: count("server.rtmp_buffer_total_mib", s.rtmp_buffer_total_mib, 1024, 16, 1 << 20)? << 20,
            amf_max_elements: count("server.rtmp_amf_max_elements", s.rtmp_amf_max_elements, 1024, 64, 1 << 20)?,
            amf_max_depth: count("server.rtmp_amf_max_depth", s.rtmp_amf_max_depth, 16, 2, 64)?,
            write_timeout: bounded("server.rtmp_write_timeout", s.rtmp_write_timeout, 10, 300)?,
        };
        let callback_retry_for = match s.callback_retry_for {
            None => Duration::from_secs(24 * 3600),
            Some(t) => {
                let d = humantime::parse_duration(&t).map_err(|e| {
                    ConfigError::new("server.callback_retry_for", format!("must be a duration like \"24h\": {e}"))
                })?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(30 * 24 * 3600) {
                    return Err(ConfigError::new("server.callback_retry_for", "must be from 1s to 30d"));
                }
                d
            }
        };
        let outbox_quota = count("server.outbox_quota", s.outbox_quota, 100_000, 1, 10_000_000)?;
        let spool_max_bytes = (count("server.spool_max_mib", s.spool_max_mib, 1024, 1, 1 << 20)? as u64) << 20;
        let spool_domain_share = match s.spool_domain_share {
            None => 50,
            Some(n) if (1..=100).contains(&n) => n as u8,
            Some(n) => {
                return Err(ConfigError::new(
                    "server.spool_domain_share",
                    format!("must be a percentage from 1 to 100, got {n}"),
                ));
            }
        };
        let reconcile_every = match s.reconcile_every.as_deref() {
            None => Some(Duration::from_secs(24 * 3600)),
            Some("off") => None,
            Some(t) => {
                let d = humantime::parse_duration(t).map_err(|e| {
                    ConfigError::new(
                        "server.reconcile_every",
                        format!("must be \"off\" or a duration like \"24h\": {e}"),
                    )
                })?;
                if d < Duration::from_secs(60) {
                    return Err(ConfigError::new("server.reconcile_every", "must be at least 1m (or \"off\")"));
                }
                Some(d)
            }
        };
        let public_url = match s.public_url {
            None => None,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                Some(u.trim_end_matches('/').to_string())
            }
            Some(_) => return Err(ConfigError::new("server.public_url", "must start with http:// or https://")),
        };

        let mut domains = BTreeMap::new();
        for (name, d) in &self.domains {
            let path = format!("domains.\"{name}\"");
            domains.insert(name.clone(), validate_domain(name, d, &path, Origin::File)?);
        }
        if let Some((domain, target)) = data_dir_clash(&domains, &s.data_dir) {
            return Err(ConfigError::new(
                format!("domains.\"{domain}\".storage.{target}.path"),
                "is server.data_dir, inside it or around it; a domain's snapshots must be stored apart from the host's own files",
            ));
        }
        if let Some((domain, target, owner)) = find_overlap(&domains) {
            return Err(ConfigError::new(
                format!("domains.\"{domain}\".storage.{target}"),
                format!(
                    "overlaps a storage target of domain {owner:?}; domains may not share a bucket + prefix or a directory"
                ),
            ));
        }
        if let Some(d) = &s.default_domain
            && !domains.contains_key(d)
        {
            return Err(ConfigError::new("server.default_domain", format!("names no configured domain: {d:?}")));
        }
        let plugin_limits = PluginLimits::default().with(&validate_plugin_limits(&self.plugins, "plugins")?);
        Ok(Config {
            plugin_limits,
            server: Server {
                rtmp_listen,
                http_listen,
                data_dir: std::path::absolute(&s.data_dir)
                    .map_err(|e| ConfigError::new("server.data_dir", format!("cannot be made absolute: {e}")))?,
                operator_token,
                default_domain: s.default_domain,
                public_url,
                decoder_workers,
                capture_queue,
                max_sources,
                url_ttl,
                allow_private_callbacks: s.allow_private_callbacks,
                stream_metrics: s.stream_metrics,
                metrics_public: s.metrics_public,
                http_max_connections,
                http_header_timeout,
                http_body_timeout,
                rtmp_limits,
                callback_retry_for,
                outbox_quota,
                spool_max_bytes,
                spool_domain_share,
                reconcile_every,
            },
            domains,
            fleet,
        })
    }
}

/// The config in force, swappable as a whole (SIGHUP re-reads the file).
pub struct Settings {
    current: std::sync::RwLock<Arc<Config>>,
}

impl Settings {
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Settings { current: std::sync::RwLock::new(Arc::new(config)) })
    }

    pub fn get(&self) -> Arc<Config> {
        self.current.read().unwrap().clone()
    }

    /// Puts a new config in force; what already holds the old one keeps it.
    pub fn set(&self, config: Config) {
        *self.current.write().unwrap() = Arc::new(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
version = 1
[server]
rtmp_listen = "127.0.0.1:1935"
http_listen = "127.0.0.1:8080"
data_dir = "./data"
operator_token = "0123456789abcdef"
default_domain = "localhost"
[domains."localhost".storage.local]
type = "local"
path = "./snapshots"
[[domains."localhost".snapshot_configs]]
app_name = "*"
time_interval = 5
storage = "local"
overwrite_object = "{AppName}/{StreamName}.jpg"
sequence_object = "{AppName}/{StreamName}/{UnixTimestamp}.jpg"
"#;

    /// Parses BASE with `from` replaced by `to`; returns the error text or "ok".
    fn check(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "{from:?} not in BASE");
        match Config::parse(&BASE.replacen(from, to, 1)) {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn base_is_valid() {
        let c = Config::parse(BASE).unwrap();
        let t = c.template_for("localhost", "live").unwrap();
        assert_eq!(t.time_interval_s, 5);
        assert_eq!(c.server.public_url, None, "taken from the bound HTTP address");
    }

    #[test]
    fn plugin_limits_defaults_and_per_domain_overrides() {
        let c = Config::parse(BASE).unwrap();
        assert_eq!(c.plugin_limits_for("localhost"), PluginLimits::default());
        let text = BASE.replace(
            "[domains.\"localhost\".storage.local]",
            "[plugins]\nfuel = 5000000\ndeadline = \"50ms\"\n\
             [domains.\"localhost\".plugin_limits]\nmemory_mib = 32\ndemote_after = 100\n\
             [domains.\"localhost\".storage.local]",
        );
        let c = Config::parse(&text).unwrap();
        let l = c.plugin_limits_for("localhost");
        assert_eq!(
            (l.fuel, l.deadline, l.memory_bytes, l.demote_after),
            (5_000_000, Duration::from_millis(50), 32 << 20, 100)
        );
        assert_eq!(c.plugin_limits_for("other").memory_bytes, 16 << 20, "the defaults for a domain without overrides");
        let at = "[domains.\"localhost\".storage.local]";
        for (add, want) in [
            ("[plugins]\nfuel = 10", "plugins.fuel: must be from 100000 to 10000000000, got 10"),
            ("[plugins]\ndeadline = \"1h\"", "plugins.deadline: must be from 10ms to 10s"),
            ("[plugins]\ndeadline = \"soon\"", "plugins.deadline: must be a duration"),
            ("[plugins]\ncpu = 1", "unknown field `cpu`"),
            (
                "[domains.\"localhost\".plugin_limits]\nmemory_mib = 0",
                "domains.\"localhost\".plugin_limits.memory_mib: must be from 1 to 256, got 0",
            ),
            (
                "[domains.\"localhost\".plugin_limits]\nmax_placements = 1000",
                "plugin_limits.max_placements: must be from 1 to 256",
            ),
        ] {
            let got = match Config::parse(&BASE.replace(at, &format!("{add}\n{at}"))) {
                Ok(_) => "ok".to_string(),
                Err(e) => e.to_string(),
            };
            assert!(got.contains(want), "{add}: {got}");
        }
    }

    #[test]
    fn errors_name_field_and_rule() {
        for (from, to, want) in [
            ("version = 1", "version = 2", "version: must be 1"),
            (
                "time_interval = 5",
                "time_interval = 4",
                "domains.\"localhost\".snapshot_configs[0].time_interval: must be an integer from 5 to 3600",
            ),
            ("time_interval = 5", "time_interval = 3601", "time_interval: must be an integer from 5 to 3600"),
            ("app_name = \"*\"", "app_name = \"-x\"", "snapshot_configs[0].app_name: must not start with"),
            ("storage = \"local\"\n", "storage = \"nope\"\n", "snapshot_configs[0].storage: names no storage target"),
            ("{AppName}/{StreamName}.jpg\"", "{AppName}/{StreamName}.png\"", "overwrite_object: must end in .jpg"),
            (
                "{AppName}/{StreamName}/{UnixTimestamp}.jpg",
                "{AppName}/{StreamName}/x.jpg",
                "sequence_object: must contain {UnixTimestamp}",
            ),
            ("rtmp_listen = \"127.0.0.1:1935\"", "rtmp_listen = \"nope\"", "server.rtmp_listen: must be an IP address"),
            (
                "default_domain = \"localhost\"",
                "default_domain = \"other\"",
                "server.default_domain: names no configured domain",
            ),
            ("data_dir = \"./data\"", "data_dir = \"./data\"\nbogus = 1", "unknown field `bogus`"),
            ("type = \"local\"", "type = \"ftp\"", "unknown variant `ftp`"),
            (
                "data_dir = \"./data\"",
                "data_dir = \"./data\"\nhttp_max_connections = 0",
                "server.http_max_connections: must be from 1 to 1000000, got 0",
            ),
            (
                "data_dir = \"./data\"",
                "data_dir = \"./data\"\nhttp_header_timeout = \"500ms\"",
                "server.http_header_timeout: must be from 1s to 5m",
            ),
            (
                "data_dir = \"./data\"",
                "data_dir = \"./data\"\nhttp_body_timeout = \"soon\"",
                "server.http_body_timeout: must be a duration like \"10s\"",
            ),
            (
                "operator_token = \"0123456789abcdef\"",
                "operator_token = \"short\"",
                "server.operator_token: must be at least 16",
            ),
        ] {
            let got = check(from, to);
            assert!(got.contains(want), "{from:?} -> {to:?}: got {got:?}, want it to contain {want:?}");
        }
    }

    #[test]
    fn fleet_section() {
        assert_eq!(Config::parse(BASE).unwrap().fleet, None, "a node alone without [fleet]");
        let with = |section: &str| Config::parse(&format!("{BASE}\n[fleet]\n{section}\n"));
        let f = with("nats_url = \"nats://10.0.0.1:4222, nats://10.0.0.2:4222\"\nnode_id = \"edge-a\"\nroles = [\"edge\", \"index\"]")
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(f.nats_urls, ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]);
        assert_eq!((f.node_id.as_str(), f.roles()), ("edge-a", vec!["edge", "index"]));
        let f = with("nats_url = \"nats://127.0.0.1:4222\"").unwrap().fleet.unwrap();
        assert_eq!(f.roles(), ["edge"], "the default role");
        assert!(!f.node_id.is_empty(), "the host name by default");
        for (section, want) in [
            ("nats_url = \"http://x:4222\"", "fleet.nats_url: must be nats://HOST:PORT"),
            ("nats_url = \"nats://a:1,\"", "fleet.nats_url: must be nats://HOST:PORT"),
            ("nats_url = \"nats://a:1\"\nnode_id = \"edge.a\"", "fleet.node_id: must be 1-64 letters"),
            ("nats_url = \"nats://a:1\"\nroles = []", "fleet.roles: must name at least one role"),
            ("nats_url = \"nats://a:1\"\nroles = [\"edge\", \"edge\"]", "fleet.roles: \"edge\" is listed twice"),
            ("nats_url = \"nats://a:1\"\nroles = [\"ingest\"]", "fleet.roles: each must be \"edge\" or \"index\""),
            (
                "nats_url = \"nats://a:1\"\ncredentials_file = \"/nonexistent/n.creds\"",
                "fleet.credentials_file: cannot be read",
            ),
            ("nats_url = \"nats://a:1\"\nnode = \"x\"", "unknown field `node`"),
            ("node_id = \"x\"", "missing field `nats_url`"),
        ] {
            let e = with(section).unwrap_err().to_string();
            assert!(e.contains(want), "{section}: {e}");
        }
    }

    #[test]
    fn both_modes_missing() {
        let text = BASE
            .replace("overwrite_object = \"{AppName}/{StreamName}.jpg\"\n", "")
            .replace("sequence_object = \"{AppName}/{StreamName}/{UnixTimestamp}.jpg\"\n", "");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains("at least one of overwrite_object and sequence_object"), "{e}");
    }

    #[test]
    fn domains_may_not_share_a_directory() {
        let text = format!(
            "{BASE}\n[domains.\"other.example\".storage.local]\ntype = \"local\"\npath = \"./snapshots/other\"\n"
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("domains.\"other.example\".storage.local: overlaps a storage target of domain \"localhost\""),
            "{e}"
        );
    }

    /// Two domains' targets, as TOML bodies, and whether they may coexist.
    fn clash(a: &str, b: &str) -> Option<String> {
        let text = format!(
            "version = 1\n[server]\nrtmp_listen = \"127.0.0.1:1935\"\nhttp_listen = \"127.0.0.1:8080\"\n\
             data_dir = \"/srv/edgesnap-data\"\noperator_token = \"0123456789abcdef\"\n\
             [domains.\"a.example\".storage.t]\n{a}\n[domains.\"b.example\".storage.t]\n{b}\n"
        );
        Config::parse(&text).err().map(|e| e.to_string())
    }

    #[test]
    fn overlapping_targets_are_found_in_every_spelling() {
        let local = |p: &str| format!("type = \"local\"\npath = \"{p}\"");
        let s3 = |endpoint: &str, bucket: &str, prefix: &str| {
            format!(
                "type = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nprefix = \"{prefix}\"\n\
                 access_key_id_env = \"K\"\nsecret_access_key_env = \"K\""
            )
        };
        for (a, b) in [
            (local("/x"), local("/./x/b")),
            (local("/x"), local("/y/../x")),
            (local("/x"), local("//x")),
            (local("/x/"), local("/x/./")),
            (s3("http://s3.local:9000", "bkt", ""), s3("http://s3.local:9000", "bkt", "tenant-b")),
            (s3("http://s3.local:9000", "bkt", "p"), s3("http://S3.local:9000/", "bkt", "p//q/")),
            (s3("https://s3.local", "bkt", "p"), s3("https://s3.local:443", "bkt", "p")),
        ] {
            let e = clash(&a, &b).unwrap_or_else(|| panic!("{a} and {b} overlap"));
            assert!(e.contains("overlaps a storage target"), "{e}");
        }
        for (a, b) in [
            (local("/x"), local("/xy")),
            (s3("http://s3.local:9000", "bkt", "p"), s3("http://s3.local:9000", "bkt", "q")),
            (s3("http://s3.local:9000", "bkt", "p"), s3("http://s3.local:9001", "bkt", "p")),
        ] {
            assert_eq!(clash(&a, &b), None, "{a} and {b} are apart");
        }
        // data_dir itself, a folder inside it, a folder around it.
        for p in ["/srv/edgesnap-data", "/srv/edgesnap-data/snapshots", "/srv/./edgesnap-data/../", "/"] {
            let e = clash(&local(p), &local("/elsewhere")).unwrap_or_else(|| panic!("{p} is refused"));
            assert!(e.contains("storage.t.path: is server.data_dir, inside it or around it"), "{p}: {e}");
        }
    }

    #[test]
    fn exact_app_wins_over_star() {
        let text = format!(
            "{BASE}\n[[domains.\"localhost\".snapshot_configs]]\napp_name = \"live\"\ntime_interval = 60\nstorage = \"local\"\noverwrite_object = \"x.jpg\"\n"
        );
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.template_for("localhost", "live").unwrap().time_interval_s, 60);
        assert_eq!(c.template_for("localhost", "other").unwrap().time_interval_s, 5);
        assert!(c.template_for("nope", "live").is_none());
    }
}
