//! `edgesnap` client subcommands over the HTTP API, for what operators
//! script. Aligned tables by default, `--json` for scripts (errors too, as
//! `{"error": {...}}` on stderr). Exit codes: 0 done, 1 the API refused (its
//! error is printed once), 2 bad usage, 3 no answer. `--domain` defaults to
//! the token's domain, or the server's default domain. A closed stdout
//! (`| head`) ends the command quietly.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use comfy_table::{CellAlignment, Table};
use serde_json::{Value, json};

/// Writes a line to stdout; a reader that went away (`| head`) ends the
/// process quietly with success, as it would have for a shell tool.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::emit(&format!($($arg)*))
    };
}

pub(crate) fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("edgesnap: write to stdout: {e}");
        std::process::exit(1);
    }
}

/// An aligned table with a header row and no borders; `right` lists the
/// columns whose values are numbers.
fn table(header: &[&str], right: &[usize], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING).set_header(header.to_vec());
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 2));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines().map(|l| l.trim_end().to_owned()).collect::<Vec<_>>().join("\n")
}

/// A JSON value as a table cell: strings bare, null as "-".
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Args)]
pub(crate) struct Client {
    /// The host's HTTP API.
    #[arg(long, global = true, env = "EDGESNAP_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token (operator or domain); default $EDGESNAP_OPERATOR_TOKEN.
    #[arg(long, global = true, env = "EDGESNAP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table (and errors as JSON).
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum SnapshotsCmd {
    /// List snapshots of a stream, or of a whole app.
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: String,
        #[arg(long)]
        stream: Option<String>,
        /// How far back, e.g. 1h, 30m, 2d (default 1d); or --start/--end.
        #[arg(long, conflicts_with_all = ["start", "end"])]
        since: Option<humantime::Duration>,
        /// ISO-8601 UTC, e.g. 2026-11-25T08:00:00Z.
        #[arg(long)]
        start: Option<String>,
        #[arg(long)]
        end: Option<String>,
        /// Items per page (1-100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Follow every page, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Delete snapshots by create timestamp (ms) of one stream, or by id.
    Rm {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        stream: Option<String>,
        #[arg(long = "ts", num_args = 1..)]
        timestamps: Vec<u64>,
        #[arg(long = "id", num_args = 1..)]
        ids: Vec<String>,
        /// Delete the objects from storage too.
        #[arg(long)]
        remove_file: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum TemplatesCmd {
    /// A domain's snapshot configs.
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: Option<String>,
    },
    /// Add an app's snapshot config.
    Add {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        fields: TemplateFields,
        /// Re-plan live streams of the app now (default: from their next publish).
        #[arg(long)]
        apply_now: bool,
    },
    /// Change fields of an app's snapshot config ("-" clears a field).
    Set {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[command(flatten)]
        fields: TemplateFields,
        #[arg(long)]
        apply_now: bool,
    },
    /// Delete an app's snapshot config.
    Rm {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: String,
        #[arg(long)]
        apply_now: bool,
    },
}

/// A snapshot template's fields; their rules: docs/templates.md.
#[derive(Args)]
pub(crate) struct TemplateFields {
    /// App name, or * for every app of the domain.
    #[arg(long)]
    app: String,
    /// Seconds between snapshots (5-3600).
    #[arg(long)]
    interval: Option<i64>,
    /// Storage target name.
    #[arg(long)]
    storage: Option<String>,
    /// Overwrite object name template, e.g. {AppName}/{StreamName}.jpg (docs/templates.md).
    #[arg(long)]
    overwrite: Option<String>,
    /// Sequential object name template, e.g. {AppName}/{StreamName}/{UnixTimestamp}.jpg (docs/templates.md).
    #[arg(long)]
    sequence: Option<String>,
    #[arg(long)]
    callback: Option<String>,
    #[arg(long)]
    jpeg_quality: Option<i64>,
    /// Scale to this width (0: the source's; with --height 0, keeping the aspect).
    #[arg(long)]
    width: Option<i64>,
    /// Scale to this height (0: the source's; with --width 0, keeping the aspect).
    #[arg(long)]
    height: Option<i64>,
    /// jpg (default) or webp; object names end in .jpg or .webp accordingly.
    #[arg(long)]
    format: Option<String>,
    /// Refuse blank (flat or black) keyframes and take the next one within the interval.
    #[arg(long)]
    skip_blank: Option<bool>,
    /// Seconds per live storyboard (sprite sheets + WebVTT; 0: none).
    #[arg(long)]
    storyboard: Option<i64>,
}

impl TemplateFields {
    fn body(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("app_name".into(), json!(self.app));
        let text = |v: &Option<String>| v.as_ref().map(|s| json!(s));
        for (k, v) in [
            ("time_interval", self.interval.map(|i| json!(i))),
            ("storage", text(&self.storage)),
            ("overwrite_object", text(&self.overwrite)),
            ("sequence_object", text(&self.sequence)),
            ("callback", text(&self.callback)),
            ("jpeg_quality", self.jpeg_quality.map(|q| json!(q))),
            ("width", self.width.map(|w| json!(w))),
            ("height", self.height.map(|h| json!(h))),
            ("format", text(&self.format)),
            ("skip_blank", self.skip_blank.map(|b| json!(b))),
            ("storyboard", self.storyboard.map(|s| json!(s))),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        Value::Object(m)
    }
}

#[derive(Subcommand)]
pub(crate) enum DomainsCmd {
    /// Every domain (operator).
    Ls,
    /// One domain.
    Get { domain: String },
    /// Create or replace an API-made domain from a JSON file (docs/api.md fields:
    /// publish_auth, storage).
    Put {
        domain: String,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    /// Delete an API-made domain.
    Rm {
        domain: String,
        /// Disconnect its live streams.
        #[arg(long)]
        force: bool,
        /// Delete its objects from storage too.
        #[arg(long)]
        remove_files: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum FleetCmd {
    /// The fleet's nodes: roles, last heartbeat, live streams (operator).
    Status,
}

/// A JSON list of roles as `edge,index`.
fn roles(v: &Value) -> String {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(",")
}

#[derive(Subcommand)]
pub(crate) enum TokensCmd {
    /// Mint a domain token; it is printed once.
    Mint {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        label: Option<String>,
    },
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
    },
    Revoke {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum StreamsCmd {
    /// Live streams of a domain.
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Take a snapshot of a live stream's next keyframe now.
    Snap {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: String,
        #[arg(long)]
        stream: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum SourcesCmd {
    /// A domain's pull sources and what each is doing.
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Add a pull source (docs/sources.md), or replace the API's one of this app and stream.
    Add {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        /// rtsp://, rtsps://, srt:// or http(s)://…/name.m3u8 (no credentials in it).
        #[arg(long)]
        url: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        stream: String,
        /// persistent (default) or on-demand.
        #[arg(long)]
        mode: Option<String>,
        /// A variable holding user:password.
        #[arg(long)]
        credentials_env: Option<String>,
        /// A file holding user:password.
        #[arg(long)]
        credentials_file: Option<std::path::PathBuf>,
        /// RTSP: tcp (default) or udp.
        #[arg(long)]
        transport: Option<String>,
        /// Keyframes passed over after each connect (0-10).
        #[arg(long)]
        warmup_keyframes: Option<i64>,
        /// Replace the API's source of this app and stream if there is one.
        #[arg(long)]
        replace: bool,
    },
    /// Delete the API's source of an app and stream.
    Rm {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        #[arg(long)]
        app: String,
        #[arg(long)]
        stream: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum PluginsCmd {
    /// A domain's plugin versions and the active one.
    Ls {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Upload a component (a .wasm built for wasm32-wasip2 against wit/).
    Upload {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        file: std::path::PathBuf,
        /// Activate it once uploaded.
        #[arg(long)]
        activate: bool,
    },
    /// Put a version (or `default`) in force; an older version is a rollback.
    Activate {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        version: String,
    },
    /// Delete an inactive version.
    Rm {
        /// Default: the token's domain, or the server's default domain.
        #[arg(long)]
        domain: Option<String>,
        version: String,
    },
}

/// A failed call: what to print, the exit code, and the API's error body
/// when it answered one.
struct Failure {
    message: String,
    exit: u8,
    api: Option<Value>,
}

impl Failure {
    fn new(message: impl Into<String>, exit: u8) -> Failure {
        Failure { message: message.into(), exit, api: None }
    }
}

type Outcome = Result<(), Failure>;

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).expect("json serializes")));
        self.call_raw(method, path, body)
    }

    fn call_raw(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Failure::new(format!("set up the HTTP client: {e}"), 3))?;
        let method_ = reqwest::Method::from_bytes(method.as_bytes()).expect("the CLI's methods are valid");
        let mut req = client.request(method_, &url);
        // The operator's own variable serves on the host itself.
        if let Some(t) = self.token.clone().or_else(|| std::env::var("EDGESNAP_OPERATOR_TOKEN").ok()) {
            req = req.bearer_auth(t);
        }
        if let Some((ct, bytes)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, ct).body(bytes);
        }
        let resp = req.send().map_err(|e| Failure::new(format!("{method} {url}: no answer: {}", root_cause(&e)), 3))?;
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(json!(text)) };
        if status >= 400 {
            let message = match (value["code"].as_str(), value["message"].as_str()) {
                (Some(c), Some(m)) => {
                    format!("{status} {c}: {m} (request {})", value["request_id"].as_str().unwrap_or("?"))
                }
                _ => format!("{status}: {text}"),
            };
            let mut api = if value.is_object() { value } else { json!({ "message": text }) };
            api["status"] = json!(status);
            return Err(Failure { message, exit: 1, api: Some(api) });
        }
        Ok(value)
    }

    /// The domain a subcommand works on: the one given, else the token's
    /// own, else the server's default domain.
    fn domain(&self, given: Option<String>) -> Result<String, Failure> {
        if let Some(d) = given {
            return Ok(d);
        }
        let who = self.call("GET", "/v1/whoami", None)?;
        who["default_domain"].as_str().map(String::from).ok_or_else(|| {
            Failure::new("--domain is needed: the server has no default domain and the token names none", 2)
        })
    }

    fn finish(&self, outcome: Outcome) -> ExitCode {
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => {
                if self.json {
                    let error = f.api.unwrap_or_else(|| json!({ "message": f.message }));
                    eprintln!("{}", json!({ "error": error }));
                } else {
                    eprintln!("edgesnap: {}", f.message);
                }
                ExitCode::from(f.exit)
            }
        }
    }

    fn show(&self, value: &Value, table: impl FnOnce(&Value)) {
        if self.json {
            outln!("{}", serde_json::to_string_pretty(value).expect("json serializes"));
        } else {
            table(value);
        }
    }

    pub(crate) fn whoami(&self) -> ExitCode {
        self.finish(self.call("GET", "/v1/whoami", None).map(|v| {
            self.show(&v, |v| {
                outln!("role: {}", cell(&v["role"]));
                outln!("default domain: {}", cell(&v["default_domain"]));
                for d in v["domains"].as_array().into_iter().flatten() {
                    outln!("domain: {}", cell(d));
                }
            })
        }))
    }

    pub(crate) fn fleet(&self, cmd: FleetCmd) -> ExitCode {
        match cmd {
            FleetCmd::Status => self.finish(self.call("GET", "/v1/fleet", None).map(|v| {
                self.show(&v, |v| {
                    outln!("asked: {} ({})", cell(&v["node_id"]), roles(&v["roles"]));
                    let rows = v["nodes"].as_array().into_iter().flatten().map(|n| {
                        let age = n["heartbeat_age_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                        vec![
                            cell(&n["node_id"]),
                            roles(&n["roles"]),
                            format!("{age:.1} s ago"),
                            if n["silent"] == true { "silent".into() } else { "alive".into() },
                            cell(&n["live_streams"]),
                            cell(&n["outbox_depth"]),
                            if n["index_lag"].is_null() { "-".into() } else { cell(&n["index_lag"]) },
                            cell(&n["version"]),
                            cell(&n["started_time"]),
                        ]
                    });
                    let header = [
                        "NODE",
                        "ROLES",
                        "LAST HEARTBEAT",
                        "STATE",
                        "LIVE STREAMS",
                        "OUTBOX",
                        "INDEX LAG",
                        "VERSION",
                        "STARTED",
                    ];
                    outln!("{}", table(&header, &[4, 5, 6], rows));
                    for n in v["nodes"].as_array().into_iter().flatten() {
                        if let Some(domains) = n["index_domains"].as_array() {
                            let list: Vec<String> = domains.iter().map(cell).collect();
                            outln!("{}: indexes domains {}", cell(&n["node_id"]), list.join(", "));
                        } else if n.get("index_domains").is_some() {
                            outln!("{}: indexes every domain", cell(&n["node_id"]));
                        }
                        for (domain, why) in n["plugin_problems"].as_object().into_iter().flatten() {
                            outln!("{}: domain {domain}: plugin not in force: {}", cell(&n["node_id"]), cell(why));
                        }
                    }
                })
            })),
        }
    }

    pub(crate) fn snapshots(&self, cmd: SnapshotsCmd) -> ExitCode {
        self.finish(match cmd {
            SnapshotsCmd::Ls { domain, app, stream, since, start, end, limit, desc, all } => {
                self.domain(domain).and_then(|domain| {
                    self.snapshots_ls(&domain, &app, stream.as_deref(), since, start, end, limit, desc, all)
                })
            }
            SnapshotsCmd::Rm { domain, app, stream, timestamps, ids, remove_file } => {
                let mut body = json!({"remove_file": remove_file});
                if let Some(a) = app {
                    body["app"] = json!(a);
                }
                if let Some(s) = stream {
                    body["stream"] = json!(s);
                }
                if !timestamps.is_empty() {
                    body["create_timestamps"] = json!(timestamps);
                }
                if !ids.is_empty() {
                    body["ids"] = json!(ids);
                }
                self.domain(domain)
                    .and_then(|d| self.call("POST", &format!("/v1/domains/{}/snapshots/delete", enc(&d)), Some(body)))
                    .and_then(|v| {
                        self.show(&v, |v| {
                            let rows = v["results"].as_array().into_iter().flatten().map(|r| {
                                let what = r.get("create_timestamp").unwrap_or(&r["id"]);
                                vec![cell(what), cell(&r["status"])]
                            });
                            outln!("{}", table(&["SNAPSHOT", "RESULT"], &[], rows));
                            outln!("deleted: {}  not found: {}", v["success_count"], v["failure_count"]);
                        });
                        match v["failure_count"].as_u64().unwrap_or(0) {
                            0 => Ok(()),
                            n => Err(Failure::new(format!("{n} of them were not found"), 1)),
                        }
                    })
            }
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn snapshots_ls(
        &self,
        domain: &str,
        app: &str,
        stream: Option<&str>,
        since: Option<humantime::Duration>,
        start: Option<String>,
        end: Option<String>,
        limit: u32,
        desc: bool,
        all: bool,
    ) -> Outcome {
        let now = chrono::Utc::now();
        let iso = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let since = since.map_or(Duration::from_secs(86_400), Into::into);
        let start = start.unwrap_or_else(|| iso(now - chrono::Duration::from_std(since).unwrap_or_default()));
        let end = end.unwrap_or_else(|| iso(now));
        let mut query = vec![("app", app.to_owned()), ("start_time", start), ("end_time", end)];
        query.push(("limit", limit.to_string()));
        if let Some(s) = stream {
            query.push(("stream", s.to_owned()));
        }
        if desc {
            query.push(("order", "desc".into()));
        }
        let mut items = Vec::new();
        let mut token: Option<String> = None;
        let last = loop {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &query {
                q.append_pair(k, v);
            }
            if let Some(t) = &token {
                q.append_pair("next_token", t);
            }
            let page = self.call("GET", &format!("/v1/domains/{}/snapshots?{}", enc(domain), q.finish()), None)?;
            items.extend(page["snapshots"].as_array().cloned().unwrap_or_default());
            token = page["next_token"].as_str().map(String::from);
            if !all || token.is_none() {
                break page;
            }
        };
        let mut out = json!({ "snapshots": items });
        if !all && let Some(t) = last.get("next_token") {
            out["next_token"] = t.clone();
            out["next_start_time"] = last["next_start_time"].clone();
        }
        self.show(&out, |v| {
            // ID and TIMESTAMP (ms) are what `snapshots rm --id` and `--ts` take.
            let rows = v["snapshots"].as_array().into_iter().flatten().map(|s| {
                vec![
                    cell(&s["id"]),
                    cell(&s["create_timestamp"]),
                    cell(&s["create_time"]),
                    cell(&s["stream"]),
                    cell(&s["sequence"]),
                    if s["is_overlay"] == true { "yes".into() } else { String::new() },
                    cell(&s["size"]),
                    format!("{}x{}", s["width"], s["height"]),
                    cell(&s["object"]),
                ]
            });
            let header = ["ID", "TIMESTAMP", "CREATED", "STREAM", "SEQ", "OVR", "BYTES", "SIZE", "OBJECT"];
            outln!("{}", table(&header, &[1, 4, 6, 7], rows));
            if v.get("next_token").is_some() {
                outln!("(more: pass --all)");
            }
        });
        Ok(())
    }

    pub(crate) fn templates(&self, cmd: TemplatesCmd) -> ExitCode {
        let apply = |now: bool| if now { "?apply=immediately" } else { "" };
        let one = |v: &Value| self.show(v, |v| print_templates(&json!({ "snapshot_configs": [v] })));
        self.finish(match cmd {
            TemplatesCmd::Ls { domain, app } => self.domain(domain).and_then(|domain| {
                let mut path = format!("/v1/domains/{}/snapshot-configs?page_size=30", enc(&domain));
                if let Some(a) = app {
                    path += &format!("&app={}", enc(&a));
                }
                // Follow every page.
                let mut items = Vec::new();
                for page in 1.. {
                    let v = self.call("GET", &format!("{path}&page={page}"), None)?;
                    items.extend(v["snapshot_configs"].as_array().cloned().unwrap_or_default());
                    if page >= v["pages"].as_u64().unwrap_or(0) {
                        break;
                    }
                }
                self.show(&json!({ "snapshot_configs": items }), print_templates);
                Ok(())
            }),
            TemplatesCmd::Add { domain, fields, apply_now } => self.domain(domain).and_then(|domain| {
                let path = format!("/v1/domains/{}/snapshot-configs{}", enc(&domain), apply(apply_now));
                self.call("POST", &path, Some(fields.body())).map(|v| one(&v))
            }),
            TemplatesCmd::Set { domain, fields, apply_now } => self.domain(domain).and_then(|domain| {
                let mut body = fields.body();
                body.as_object_mut().expect("an object").remove("app_name");
                let path =
                    format!("/v1/domains/{}/snapshot-configs/{}{}", enc(&domain), enc(&fields.app), apply(apply_now));
                self.call("PATCH", &path, Some(body)).map(|v| one(&v))
            }),
            TemplatesCmd::Rm { domain, app, apply_now } => self.domain(domain).and_then(|domain| {
                let path = format!("/v1/domains/{}/snapshot-configs/{}{}", enc(&domain), enc(&app), apply(apply_now));
                self.call("DELETE", &path, None)
                    .map(|v| self.show(&v, |_| outln!("deleted the snapshot config of app {app}")))
            }),
        })
    }

    pub(crate) fn domains(&self, cmd: DomainsCmd) -> ExitCode {
        self.finish(match cmd {
            DomainsCmd::Ls => self.call("GET", "/v1/domains", None).map(|v| {
                self.show(&v, |v| {
                    let rows = v["domains"].as_array().into_iter().flatten().map(|d| {
                        let targets: Vec<&str> = d["storage"]
                            .as_object()
                            .map(|m| m.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        vec![
                            cell(&d["domain"]),
                            cell(&d["origin"]),
                            cell(&d["snapshot_configs"]),
                            cell(&d["live_streams"]),
                            targets.join(", "),
                        ]
                    });
                    outln!("{}", table(&["DOMAIN", "ORIGIN", "CONFIGS", "LIVE", "STORAGE"], &[2, 3], rows));
                })
            }),
            DomainsCmd::Get { domain } => self
                .call("GET", &format!("/v1/domains/{}", enc(&domain)), None)
                .map(|v| outln!("{}", serde_json::to_string_pretty(&v).expect("json"))),
            DomainsCmd::Put { domain, file } => std::fs::read(&file)
                .map_err(|e| Failure::new(format!("read {}: {e}", file.display()), 2))
                .and_then(|b| {
                    serde_json::from_slice::<Value>(&b).map_err(|e| Failure::new(format!("{}: {e}", file.display()), 2))
                })
                .and_then(|body| self.call("PUT", &format!("/v1/domains/{}", enc(&domain)), Some(body)))
                .map(|v| self.show(&v, |v| outln!("domain {} is in force", cell(&v["domain"])))),
            DomainsCmd::Rm { domain, force, remove_files } => self
                .call(
                    "DELETE",
                    &format!("/v1/domains/{}?force={force}&remove_files={remove_files}", enc(&domain)),
                    None,
                )
                .map(|v| {
                    self.show(&v, |v| {
                        outln!("deleted {domain}: {} records, {} files", v["records_deleted"], v["files_deleted"])
                    })
                }),
        })
    }

    pub(crate) fn tokens(&self, cmd: TokensCmd) -> ExitCode {
        self.finish(match cmd {
            TokensCmd::Mint { domain, label } => self.domain(domain).and_then(|domain| {
                let body = label.map_or_else(|| json!({}), |l| json!({ "label": l }));
                self.call("POST", &format!("/v1/domains/{}/tokens", enc(&domain)), Some(body)).map(|v| {
                    self.show(&v, |v| {
                        outln!("id:    {}", cell(&v["id"]));
                        outln!("token: {}", cell(&v["token"]));
                        outln!("(shown once; only its hash is kept)");
                    })
                })
            }),
            TokensCmd::Ls { domain } => self.domain(domain).and_then(|domain| {
                self.call("GET", &format!("/v1/domains/{}/tokens", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        let rows = v["tokens"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|t| vec![cell(&t["id"]), cell(&t["created_time"]), cell(&t["label"])]);
                        outln!("{}", table(&["ID", "CREATED", "LABEL"], &[], rows));
                    })
                })
            }),
            TokensCmd::Revoke { domain, id } => self.domain(domain).and_then(|domain| {
                self.call("DELETE", &format!("/v1/domains/{}/tokens/{}", enc(&domain), enc(&id)), None)
                    .map(|v| self.show(&v, |_| outln!("revoked {id}")))
            }),
        })
    }

    pub(crate) fn streams(&self, cmd: StreamsCmd) -> ExitCode {
        self.finish(match cmd {
            StreamsCmd::Ls { domain } => self.domain(domain).and_then(|domain| {
                self.call("GET", &format!("/v1/domains/{}/streams", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        let rows = v["streams"].as_array().into_iter().flatten().map(|s| {
                            let kbps = s["bitrate_bps"].as_u64().unwrap_or(0) / 1000;
                            let gop = s["gop_ms"].as_u64().unwrap_or(0) as f64 / 1000.0;
                            vec![
                                format!("{}/{}", cell(&s["app"]), cell(&s["stream"])),
                                format!("{}x{}", s["width"], s["height"]),
                                kbps.to_string(),
                                format!("{:.0}", s["fps"].as_f64().unwrap_or(0.0)),
                                format!("{gop:.1}"),
                                cell(&s["snapshots"]),
                                cell(&s["last_snapshot_time"]),
                                cell(&s["template"]),
                                cell(&s["peer"]),
                            ]
                        });
                        let header =
                            ["APP/STREAM", "SIZE", "KBIT/S", "FPS", "GOP S", "SNAPSHOTS", "LAST", "TEMPLATE", "PEER"];
                        outln!("{}", table(&header, &[1, 2, 3, 4, 5], rows));
                    })
                })
            }),
            StreamsCmd::Snap { domain, app, stream } => self.domain(domain).and_then(|domain| {
                let path = format!("/v1/domains/{}/streams/{}/{}/snapshot", enc(&domain), enc(&app), enc(&stream));
                self.call("POST", &path, None).map(|v| {
                    self.show(&v, |v| {
                        let rows = v["snapshots"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| vec![cell(&s["object"]), cell(&s["url"])]);
                        outln!("{}", table(&["OBJECT", "URL"], &[], rows));
                    })
                })
            }),
        })
    }

    pub(crate) fn sources(&self, cmd: SourcesCmd) -> ExitCode {
        let show_list = |sources: &[&Value]| {
            let rows = sources.iter().map(|s| {
                vec![
                    format!("{}/{}", cell(&s["app"]), cell(&s["stream"])),
                    cell(&s["url"]),
                    cell(&s["mode"]),
                    cell(&s["state"]),
                    cell(&s["captures"]),
                    cell(&s["failures"]),
                    cell(&s["last_error"]),
                ]
            });
            let header = ["APP/STREAM", "URL", "MODE", "STATE", "CAPTURES", "FAILURES", "LAST ERROR"];
            outln!("{}", table(&header, &[4, 5], rows));
        };
        self.finish(match cmd {
            SourcesCmd::Ls { domain } => self.domain(domain).and_then(|domain| {
                self.call("GET", &format!("/v1/domains/{}/sources", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| show_list(&v["sources"].as_array().into_iter().flatten().collect::<Vec<_>>()))
                })
            }),
            SourcesCmd::Add {
                domain,
                url,
                app,
                stream,
                mode,
                credentials_env,
                credentials_file,
                transport,
                warmup_keyframes,
                replace,
            } => self.domain(domain).and_then(|domain| {
                let mut body = json!({"url": url, "app": app, "stream": stream});
                let fields = [
                    ("mode", mode.map(Value::from)),
                    ("credentials_env", credentials_env.map(Value::from)),
                    ("credentials_file", credentials_file.map(|f| Value::from(f.display().to_string()))),
                    ("transport", transport.map(Value::from)),
                    ("warmup_keyframes", warmup_keyframes.map(Value::from)),
                ];
                for (k, v) in fields {
                    if let Some(v) = v {
                        body[k] = v;
                    }
                }
                let (method, path) = if replace {
                    ("PUT", format!("/v1/domains/{}/sources/{}/{}", enc(&domain), enc(&app), enc(&stream)))
                } else {
                    ("POST", format!("/v1/domains/{}/sources", enc(&domain)))
                };
                self.call(method, &path, Some(body)).map(|v| self.show(&v, |v| show_list(&[v])))
            }),
            SourcesCmd::Rm { domain, app, stream } => self.domain(domain).and_then(|domain| {
                let path = format!("/v1/domains/{}/sources/{}/{}", enc(&domain), enc(&app), enc(&stream));
                self.call("DELETE", &path, None).map(|v| self.show(&v, |_| outln!("deleted {app}/{stream}")))
            }),
        })
    }

    pub(crate) fn plugins(&self, cmd: PluginsCmd) -> ExitCode {
        let versions = |versions: &[&Value]| {
            let rows = versions.iter().map(|v| {
                vec![
                    cell(&v["version"]),
                    cell(&v["size"]),
                    cell(&v["conformance"]["fuel"]),
                    cell(&v["conformance"]["peak_memory_bytes"]),
                    cell(&v["uploaded_time"]),
                    if v["active"] == true { "yes".into() } else { String::new() },
                ]
            });
            outln!("{}", table(&["VERSION", "BYTES", "FUEL", "PEAK MEMORY", "UPLOADED", "ACTIVE"], &[1, 2, 3], rows));
            for v in versions {
                if let Some(reason) = v["demoted"]["reason"].as_str() {
                    outln!("{} demoted {}: {reason}", cell(&v["version"]), cell(&v["demoted"]["time"]));
                }
            }
        };
        self.finish(match cmd {
            PluginsCmd::Ls { domain } => self.domain(domain).and_then(|domain| {
                self.call("GET", &format!("/v1/domains/{}/plugins", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        outln!("active: {}", cell(&v["active"]));
                        outln!("previous: {}", cell(&v["previous"]));
                        versions(&v["versions"].as_array().into_iter().flatten().collect::<Vec<_>>());
                    })
                })
            }),
            PluginsCmd::Upload { domain, file, activate } => self.domain(domain).and_then(|domain| {
                let bytes =
                    std::fs::read(&file).map_err(|e| Failure::new(format!("read {}: {e}", file.display()), 2))?;
                let path = format!("/v1/domains/{}/plugins", enc(&domain));
                let v = self.call_raw("POST", &path, Some(("application/wasm", bytes)))?;
                if activate {
                    let version = v["version"].as_str().unwrap_or_default();
                    self.call("POST", &format!("/v1/domains/{}/plugins/{version}/activate", enc(&domain)), None)?;
                }
                self.show(&v, |v| versions(&[v]));
                Ok(())
            }),
            PluginsCmd::Activate { domain, version } => self.domain(domain).and_then(|domain| {
                self.call("POST", &format!("/v1/domains/{}/plugins/{}/activate", enc(&domain), enc(&version)), None)
                    .map(|v| self.show(&v, |v| outln!("active: {}", cell(&v["active"]))))
            }),
            PluginsCmd::Rm { domain, version } => self.domain(domain).and_then(|domain| {
                self.call("DELETE", &format!("/v1/domains/{}/plugins/{}", enc(&domain), enc(&version)), None)
                    .map(|v| self.show(&v, |_| outln!("deleted {version}")))
            }),
        })
    }
}

fn print_templates(v: &Value) {
    let rows = v["snapshot_configs"].as_array().into_iter().flatten().map(|t| {
        vec![
            cell(&t["app_name"]),
            cell(&t["time_interval"]),
            cell(&t["storage"]),
            cell(&t["origin"]),
            cell(&t["overwrite_object"]),
            cell(&t["sequence_object"]),
        ]
    });
    outln!("{}", table(&["APP", "INTERVAL", "STORAGE", "FROM", "OVERWRITE", "SEQUENCE"], &[1], rows));
}

/// The innermost cause of an error: reqwest's own message repeats its
/// sources' text, so only the root is worth printing.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut e = e;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}
