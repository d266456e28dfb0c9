//! Pull sources (docs/sources.md): an RTSP camera, an SRT feed or an HLS
//! playlist that the host connects to and captures as if it were pushed.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::is_valid_stream_name;
use super::{ConfigError, Origin, Secret, join};

/// A source as written in the file (`[[domains."d".sources]]`) or sent to the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    pub url: String,
    pub app: String,
    pub stream: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The variable holding `user:password` (never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_env: Option<String>,
    /// A file holding `user:password` (never returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// RTSP only: `tcp` (interleaved, the default) or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
    /// Keyframes passed over after each connect (a camera waking up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_keyframes: Option<i64>,
    /// The receive latency (RTSP jitter buffer, SRT), ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMode {
    /// Connected all the time; snapshots on the grid like a push.
    Persistent,
    /// Connected at each due time for one keyframe, then closed.
    OnDemand,
}

impl SourceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceMode::Persistent => "persistent",
            SourceMode::OnDemand => "on-demand",
        }
    }
}

/// A source, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub url: String,
    pub app: String,
    pub stream: String,
    pub mode: SourceMode,
    pub credentials: Option<Secret>,
    pub rtsp_tcp: bool,
    pub warmup_keyframes: u32,
    pub latency: Duration,
    /// Where it was defined: the file's can only be changed there.
    pub origin: Origin,
}

impl Source {
    /// The URL's scheme.
    pub fn scheme(&self) -> &str {
        self.url.split_once("://").map_or("", |(s, _)| s)
    }
}

/// The most keyframes a warm-up may pass over.
pub const MAX_WARMUP_KEYFRAMES: i64 = 10;

/// Checks a source; `path` names it in errors (`domains."d".sources[0]`).
pub fn validate_source(s: &RawSource, path: &str, origin: Origin) -> Result<Source, ConfigError> {
    let field = |f: &str| join(path, f);
    let url = url::Url::parse(&s.url).map_err(|e| ConfigError::new(field("url"), format!("is not a URL: {e}")))?;
    let scheme = url.scheme();
    let hls = matches!(scheme, "http" | "https");
    if !matches!(scheme, "rtsp" | "rtsps" | "srt") && !hls {
        return Err(ConfigError::new(
            field("url"),
            format!("must be rtsp://, rtsps://, srt:// or http(s)://….m3u8, got {scheme}://"),
        ));
    }
    if hls && !url.path().ends_with(".m3u8") {
        return Err(ConfigError::new(field("url"), "an http(s) source must be an HLS playlist (…/name.m3u8)"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(field("url"), "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            field("url"),
            "must not hold credentials; name them with credentials_env or credentials_file",
        ));
    }
    for (name, value) in [("app", &s.app), ("stream", &s.stream)] {
        if !is_valid_stream_name(value) {
            return Err(ConfigError::new(
                field(name),
                "must be 1-255 of letters, digits, '-', '_', '.', not starting with '.'",
            ));
        }
    }
    let mode = match s.mode.as_deref() {
        None | Some("persistent") => SourceMode::Persistent,
        Some("on-demand") => SourceMode::OnDemand,
        Some(other) => {
            return Err(ConfigError::new(field("mode"), format!("must be persistent or on-demand, got {other:?}")));
        }
    };
    let credentials = match (&s.credentials_env, &s.credentials_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                field("credentials_file"),
                "set either credentials_env or credentials_file, not both",
            ));
        }
        (Some(var), None) if var.is_empty() => {
            return Err(ConfigError::new(field("credentials_env"), "must name a variable"));
        }
        (Some(var), None) => Some(Secret::Env(var.clone())),
        (None, Some(file)) => Some(Secret::File(file.clone())),
        (None, None) => None,
    };
    let rtsp_tcp = match s.transport.as_deref() {
        Some(_) if !scheme.starts_with("rtsp") => {
            return Err(ConfigError::new(field("transport"), "is for rtsp:// and rtsps:// sources only"));
        }
        None | Some("tcp") => true,
        Some("udp") if scheme == "rtsps" => {
            return Err(ConfigError::new(field("transport"), "rtsps:// runs over tcp only"));
        }
        Some("udp") => false,
        Some(other) => return Err(ConfigError::new(field("transport"), format!("must be tcp or udp, got {other:?}"))),
    };
    let warmup_keyframes = match s.warmup_keyframes {
        None => 0,
        Some(n @ 0..=MAX_WARMUP_KEYFRAMES) => n as u32,
        Some(n) => {
            return Err(ConfigError::new(
                field("warmup_keyframes"),
                format!("must be from 0 to {MAX_WARMUP_KEYFRAMES}, got {n}"),
            ));
        }
    };
    let latency = match s.latency_ms {
        None => Duration::from_millis(200),
        Some(ms @ 0..=10_000) => Duration::from_millis(ms as u64),
        Some(ms) => return Err(ConfigError::new(field("latency_ms"), format!("must be from 0 to 10000, got {ms}"))),
    };
    Ok(Source {
        url: s.url.clone(),
        app: s.app.clone(),
        stream: s.stream.clone(),
        mode,
        credentials,
        rtsp_tcp,
        warmup_keyframes,
        latency,
        origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawSource {
        RawSource {
            url: url.into(),
            app: "cams".into(),
            stream: "door".into(),
            mode: None,
            credentials_env: None,
            credentials_file: None,
            transport: None,
            warmup_keyframes: None,
            latency_ms: None,
        }
    }

    #[test]
    fn sources_are_checked_field_by_field() {
        let ok = validate_source(&raw("rtsp://10.0.0.7:554/stream1"), "s", Origin::File).unwrap();
        assert_eq!((ok.mode, ok.rtsp_tcp, ok.warmup_keyframes, ok.scheme()), (SourceMode::Persistent, true, 0, "rtsp"));
        assert!(validate_source(&raw("srt://127.0.0.1:9000?mode=caller"), "s", Origin::File).is_ok());
        assert!(validate_source(&raw("https://cdn.example/live/index.m3u8"), "s", Origin::File).is_ok());
        let err = |s: RawSource| validate_source(&s, "s", Origin::File).unwrap_err().to_string();
        assert!(err(raw("ftp://x/y")).starts_with("s.url: must be rtsp://"), "{}", err(raw("ftp://x/y")));
        assert!(err(raw("http://x/y.mp4")).contains("HLS playlist"));
        assert!(err(raw("rtsp://admin:secret@10.0.0.7/s")).contains("must not hold credentials"));
        assert!(err(RawSource { app: ".x".into(), ..raw("rtsp://h/s") }).starts_with("s.app: "));
        assert!(err(RawSource { mode: Some("lazy".into()), ..raw("rtsp://h/s") }).starts_with("s.mode: "));
        assert!(err(RawSource { transport: Some("udp".into()), ..raw("srt://h:1") }).contains("rtsp"));
        assert!(err(RawSource { warmup_keyframes: Some(11), ..raw("rtsp://h/s") }).starts_with("s.warmup_keyframes"));
        let both =
            RawSource { credentials_env: Some("A".into()), credentials_file: Some("/f".into()), ..raw("rtsp://h/s") };
        assert!(err(both).contains("not both"));
        let udp = validate_source(&RawSource { transport: Some("udp".into()), ..raw("rtsp://h/s") }, "s", Origin::File)
            .unwrap();
        assert!(!udp.rtsp_tcp);
    }
}
