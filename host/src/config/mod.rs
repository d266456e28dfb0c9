//! The operator's TOML file (SPEC §8): a raw, `deny_unknown_fields` form
//! validated into a typed [`Config`]. Every error names the field and the rule.

pub mod template;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

/// A config the host can run with.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub domains: BTreeMap<String, Domain>,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub rtmp_listen: SocketAddr,
    pub http_listen: SocketAddr,
    pub data_dir: PathBuf,
    pub operator_token: TokenSource,
    pub default_domain: Option<String>,
    pub public_url: String,
    pub decoder_workers: usize,
    /// Capture jobs waiting for a decoder; when full, a due snapshot is missed.
    pub capture_queue: usize,
    /// How long a snapshot's signed image URL stays valid.
    pub url_ttl: std::time::Duration,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct Domain {
    pub name: String,
    pub publish_auth: PublishAuth,
    pub storage: BTreeMap<String, StorageTarget>,
    pub templates: Vec<Arc<Template>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishAuth {
    Off,
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
        virtual_hosted_style: bool,
    },
}

/// A snapshot template (SPEC §2), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub app_name: String,
    pub time_interval_s: u32,
    pub storage: String,
    pub overwrite_object: Option<String>,
    pub sequence_object: Option<String>,
    pub callback: Option<String>,
    pub jpeg_quality: u8,
}

pub const DEFAULT_JPEG_QUALITY: u8 = 85;

/// A field that breaks a rule.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct ConfigError {
    pub field: String,
    pub rule: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
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

// ---- the raw file --------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    version: u32,
    server: RawServer,
    #[serde(default)]
    domains: BTreeMap<String, RawDomain>,
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
    url_ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDomain {
    #[serde(default)]
    publish_auth: Option<toml::Value>,
    #[serde(default)]
    storage: BTreeMap<String, RawStorage>,
    #[serde(default)]
    snapshot_configs: Vec<RawTemplate>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum RawStorage {
    Local {
        path: PathBuf,
    },
    S3 {
        endpoint: Option<String>,
        bucket: String,
        region: Option<String>,
        #[serde(default)]
        prefix: String,
        access_key_id_env: Option<String>,
        secret_access_key_env: Option<String>,
        #[serde(default)]
        virtual_hosted_style: bool,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    app_name: String,
    time_interval: i64,
    storage: String,
    overwrite_object: Option<String>,
    sequence_object: Option<String>,
    callback: Option<String>,
    width: Option<i64>,
    height: Option<i64>,
    jpeg_quality: Option<i64>,
}

fn socket_addr(field: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        ConfigError::new(field, format!("must be an IP address and port like 127.0.0.1:8080, got {value:?}"))
    })
}

fn is_domain_name(name: &str) -> bool {
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

/// A rule error from the template module, placed at its config path.
fn at(path: &str, e: template::RuleError) -> ConfigError {
    ConfigError::new(format!("{path}.{}", e.field), e.message)
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        if self.version != 1 {
            return Err(ConfigError::new("version", format!("must be 1, got {}", self.version)));
        }
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
        let decoder_workers = match s.decoder_workers {
            None => std::thread::available_parallelism().map_or(2, |n| n.get()),
            Some(n) if (1..=64).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::new("server.decoder_workers", format!("must be from 1 to 64, got {n}")));
            }
        };
        let capture_queue = match s.capture_queue {
            None => 1024,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::new("server.capture_queue", format!("must be from 1 to 1000000, got {n}")));
            }
        };
        let url_ttl = match s.url_ttl {
            None => std::time::Duration::from_secs(24 * 3600),
            Some(t) => humantime::parse_duration(&t)
                .map_err(|e| ConfigError::new("server.url_ttl", format!("must be a duration like \"24h\": {e}")))?,
        };
        let public_url = s.public_url.unwrap_or_else(|| format!("http://{http_listen}"));
        if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
            return Err(ConfigError::new("server.public_url", "must start with http:// or https://"));
        }
        let public_url = public_url.trim_end_matches('/').to_string();

        let mut domains = BTreeMap::new();
        let mut claimed: Vec<(String, String)> = Vec::new(); // (location, owner)
        for (name, d) in self.domains {
            let path = format!("domains.\"{name}\"");
            if !is_domain_name(&name) {
                return Err(ConfigError::new(&path, "must be a domain name (letters, digits, '-' and '.')"));
            }
            let publish_auth = match d.publish_auth {
                None => PublishAuth::Off,
                Some(toml::Value::String(s)) if s == "off" => PublishAuth::Off,
                Some(_) => {
                    return Err(ConfigError::new(
                        format!("{path}.publish_auth"),
                        "only \"off\" is supported in this version (type \"a\" URL signing is not implemented yet)",
                    ));
                }
            };
            let mut storage = BTreeMap::new();
            for (tname, t) in d.storage {
                let tpath = format!("{path}.storage.{tname}");
                let (target, location) = match t {
                    RawStorage::Local { path: p } => {
                        if p.as_os_str().is_empty() {
                            return Err(ConfigError::new(format!("{tpath}.path"), "must not be empty"));
                        }
                        let abs = if p.is_absolute() {
                            p.clone()
                        } else {
                            std::env::current_dir().map(|c| c.join(&p)).unwrap_or(p.clone())
                        };
                        let loc = format!("dir:{}/", abs.display());
                        (StorageTarget::Local { path: p }, loc)
                    }
                    RawStorage::S3 {
                        endpoint,
                        bucket,
                        region,
                        prefix,
                        access_key_id_env,
                        secret_access_key_env,
                        virtual_hosted_style,
                    } => {
                        if bucket.is_empty() {
                            return Err(ConfigError::new(format!("{tpath}.bucket"), "must not be empty"));
                        }
                        if prefix.starts_with('/') || prefix.split('/').any(|s| s == "..") {
                            return Err(ConfigError::new(format!("{tpath}.prefix"), "must be relative, without '..'"));
                        }
                        let prefix = prefix.trim_end_matches('/').to_string();
                        let loc = format!("s3:{}/{bucket}/{prefix}/", endpoint.as_deref().unwrap_or("aws"));
                        (
                            StorageTarget::S3 {
                                endpoint,
                                bucket,
                                region: region.unwrap_or_else(|| "us-east-1".into()),
                                prefix,
                                access_key_id_env,
                                secret_access_key_env,
                                virtual_hosted_style,
                            },
                            loc,
                        )
                    }
                };
                // Two domains may not share a location, nor may one's lie inside another's.
                for (other, owner) in &claimed {
                    if owner != &name && (location.starts_with(other.as_str()) || other.starts_with(&location)) {
                        return Err(ConfigError::new(
                            tpath,
                            format!(
                                "overlaps a storage target of domain {owner:?}; domains may not share a bucket + prefix or a directory"
                            ),
                        ));
                    }
                }
                claimed.push((location, name.clone()));
                storage.insert(tname, target);
            }
            let mut templates: Vec<Arc<Template>> = Vec::new();
            for (i, t) in d.snapshot_configs.into_iter().enumerate() {
                let tpath = format!("{path}.snapshot_configs[{i}]");
                template::check_app_name(&t.app_name).map_err(|e| at(&tpath, e))?;
                if templates.iter().any(|o| o.app_name == t.app_name) {
                    return Err(ConfigError::new(
                        format!("{tpath}.app_name"),
                        format!("app {:?} already has a snapshot config in this domain", t.app_name),
                    ));
                }
                let time_interval_s = template::check_interval(t.time_interval).map_err(|e| at(&tpath, e))?;
                if !storage.contains_key(&t.storage) {
                    return Err(ConfigError::new(
                        format!("{tpath}.storage"),
                        format!(
                            "names no storage target of domain {name:?} (has: {})",
                            storage.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                template::check_modes(t.overwrite_object.as_deref(), t.sequence_object.as_deref())
                    .map_err(|e| at(&tpath, e))?;
                if let Some(o) = &t.overwrite_object {
                    template::check_overwrite_object(o).map_err(|e| at(&tpath, e))?;
                }
                if let Some(o) = &t.sequence_object {
                    template::check_sequence_object(o).map_err(|e| at(&tpath, e))?;
                }
                if let Some(cb) = &t.callback
                    && !(cb.starts_with("http://") || cb.starts_with("https://"))
                {
                    return Err(ConfigError::new(format!("{tpath}.callback"), "must be an http:// or https:// URL"));
                }
                for (field, v) in [("width", t.width), ("height", t.height)] {
                    if v.is_some_and(|v| v != 0) {
                        return Err(ConfigError::new(
                            format!("{tpath}.{field}"),
                            "scaling is not implemented yet; leave it out or set 0 (source size)",
                        ));
                    }
                }
                let jpeg_quality = match t.jpeg_quality {
                    None => DEFAULT_JPEG_QUALITY,
                    Some(q) => template::check_jpeg_quality(q).map_err(|e| at(&tpath, e))?,
                };
                templates.push(Arc::new(Template {
                    app_name: t.app_name,
                    time_interval_s,
                    storage: t.storage,
                    overwrite_object: t.overwrite_object,
                    sequence_object: t.sequence_object,
                    callback: t.callback,
                    jpeg_quality,
                }));
            }
            domains.insert(name.clone(), Domain { name, publish_auth, storage, templates });
        }
        if let Some(d) = &s.default_domain
            && !domains.contains_key(d)
        {
            return Err(ConfigError::new("server.default_domain", format!("names no configured domain: {d:?}")));
        }
        Ok(Config {
            server: Server {
                rtmp_listen,
                http_listen,
                data_dir: s.data_dir,
                operator_token,
                default_domain: s.default_domain,
                public_url,
                decoder_workers,
                capture_queue,
                url_ttl,
            },
            domains,
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
path = "./data/snapshots"
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
        assert_eq!(c.server.public_url, "http://127.0.0.1:8080");
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
            "{BASE}\n[domains.\"other.example\".storage.local]\ntype = \"local\"\npath = \"./data/snapshots/other\"\n"
        );
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("domains.\"other.example\".storage.local: overlaps a storage target of domain \"localhost\""),
            "{e}"
        );
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
