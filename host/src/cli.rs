//! `edgesnap` client subcommands over the HTTP API, for what operators
//! script. Human tables by default, `--json` for scripts. Exit codes: 0 done,
//! 1 the API refused (its error is printed), 2 bad usage, 3 no answer.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

#[derive(Args)]
pub(crate) struct Client {
    /// The host's HTTP API.
    #[arg(long, global = true, env = "EDGESNAP_SERVER", default_value = "http://127.0.0.1:8080")]
    server: String,
    /// Bearer token (operator or domain); default $EDGESNAP_OPERATOR_TOKEN.
    #[arg(long, global = true, env = "EDGESNAP_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum SnapshotsCmd {
    /// List snapshots of a stream, or of a whole app.
    Ls {
        #[arg(long)]
        domain: String,
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
        #[arg(long)]
        domain: String,
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
        #[arg(long)]
        domain: String,
        #[arg(long)]
        app: Option<String>,
    },
    /// Add an app's snapshot config.
    Add {
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        fields: TemplateFields,
        /// Re-plan live streams of the app now (default: from their next publish).
        #[arg(long)]
        apply_now: bool,
    },
    /// Change fields of an app's snapshot config ("-" clears a field).
    Set {
        #[arg(long)]
        domain: String,
        #[command(flatten)]
        fields: TemplateFields,
        #[arg(long)]
        apply_now: bool,
    },
    /// Delete an app's snapshot config.
    Rm {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        app: String,
        #[arg(long)]
        apply_now: bool,
    },
}

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
    /// Overwrite object name template.
    #[arg(long)]
    overwrite: Option<String>,
    /// Sequential object name template.
    #[arg(long)]
    sequence: Option<String>,
    #[arg(long)]
    callback: Option<String>,
    #[arg(long)]
    jpeg_quality: Option<i64>,
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
    /// Create or replace an API-made domain from a JSON file (SPEC §8 fields:
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
pub(crate) enum TokensCmd {
    /// Mint a domain token; it is printed once.
    Mint {
        #[arg(long)]
        domain: String,
        #[arg(long)]
        label: Option<String>,
    },
    Ls {
        #[arg(long)]
        domain: String,
    },
    Revoke {
        #[arg(long)]
        domain: String,
        id: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum StreamsCmd {
    /// Live streams of a domain.
    Ls {
        #[arg(long)]
        domain: String,
    },
    /// Take a snapshot of a live stream's next keyframe now.
    Snap {
        #[arg(long)]
        domain: String,
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
        #[arg(long)]
        domain: String,
    },
    /// Upload a component (a .wasm built for wasm32-wasip2 against wit/).
    Upload {
        #[arg(long)]
        domain: String,
        file: std::path::PathBuf,
        /// Activate it once uploaded.
        #[arg(long)]
        activate: bool,
    },
    /// Put a version (or `default`) in force; an older version is a rollback.
    Activate {
        #[arg(long)]
        domain: String,
        version: String,
    },
    /// Delete an inactive version.
    Rm {
        #[arg(long)]
        domain: String,
        version: String,
    },
}

/// A failed call: printed, then the exit code.
struct Failure(String, u8);

type Outcome = Result<(), Failure>;

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).expect("json serializes")));
        self.call_raw(method, path, body)
    }

    fn call_raw(&self, method: &str, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<Value, Failure> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let url = format!("{}{path}", self.server.trim_end_matches('/'));
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        // The operator's own variable serves on the host itself.
        if let Some(t) = self.token.clone().or_else(|| std::env::var("EDGESNAP_OPERATOR_TOKEN").ok()) {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let result = match body {
            Some((ct, bytes)) => agent.run(req.header("Content-Type", ct).body(bytes).expect("a valid request")),
            None => agent.run(req.body(()).expect("a valid request")),
        };
        let mut resp = result.map_err(|e| Failure(format!("{method} {url}: {e}"), 3))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(json!(text)) };
        if status >= 400 {
            let msg = match (value["code"].as_str(), value["message"].as_str()) {
                (Some(c), Some(m)) => {
                    format!("{status} {c}: {m} (request {})", value["request_id"].as_str().unwrap_or("?"))
                }
                _ => format!("{status}: {text}"),
            };
            return Err(Failure(msg, 1));
        }
        Ok(value)
    }

    fn show(&self, value: &Value, table: impl FnOnce(&Value)) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value).expect("json serializes"));
        } else {
            table(value);
        }
    }

    pub(crate) fn whoami(&self) -> ExitCode {
        finish(self.call("GET", "/v1/whoami", None).map(|v| {
            self.show(&v, |v| {
                println!("role: {}", v["role"].as_str().unwrap_or("?"));
                for d in v["domains"].as_array().into_iter().flatten() {
                    println!("domain: {}", d.as_str().unwrap_or("?"));
                }
            })
        }))
    }

    pub(crate) fn snapshots(&self, cmd: SnapshotsCmd) -> ExitCode {
        finish(match cmd {
            SnapshotsCmd::Ls { domain, app, stream, since, start, end, limit, desc, all } => {
                self.snapshots_ls(&domain, &app, stream.as_deref(), since, start, end, limit, desc, all)
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
                self.call("POST", &format!("/v1/domains/{}/snapshots/delete", enc(&domain)), Some(body)).and_then(|v| {
                    self.show(&v, |v| {
                        for r in v["results"].as_array().into_iter().flatten() {
                            let what = r.get("create_timestamp").map_or_else(|| r["id"].to_string(), |t| t.to_string());
                            println!("{:<34} {}", what.trim_matches('"'), r["status"].as_str().unwrap_or("?"));
                        }
                        println!("deleted: {}  not found: {}", v["success_count"], v["failure_count"]);
                    });
                    if v["failure_count"].as_u64().unwrap_or(0) > 0 {
                        Err(Failure(format!("{} of them were not found", v["failure_count"]), 1))
                    } else {
                        Ok(())
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
            println!(
                "{:<25} {:<20} {:>6} {:<3} {:>8} {:>9}  OBJECT",
                "CREATED", "STREAM", "SEQ", "OVR", "BYTES", "SIZE"
            );
            for s in v["snapshots"].as_array().into_iter().flatten() {
                println!(
                    "{:<25} {:<20} {:>6} {:<3} {:>8} {:>9}  {}",
                    s["create_time"].as_str().unwrap_or(""),
                    s["stream"].as_str().unwrap_or(""),
                    s["sequence"],
                    if s["is_overlay"] == true { "yes" } else { "" },
                    s["size"],
                    format!("{}x{}", s["width"], s["height"]),
                    s["object"].as_str().unwrap_or(""),
                );
            }
            if v.get("next_token").is_some() {
                println!("(more: pass --all)");
            }
        });
        Ok(())
    }

    pub(crate) fn templates(&self, cmd: TemplatesCmd) -> ExitCode {
        let apply = |now: bool| if now { "?apply=immediately" } else { "" };
        finish(match cmd {
            TemplatesCmd::Ls { domain, app } => {
                let mut path = format!("/v1/domains/{}/snapshot-configs?page_size=30", enc(&domain));
                if let Some(a) = app {
                    path += &format!("&app={}", enc(&a));
                }
                // Follow every page.
                let mut items = Vec::new();
                let mut page = 1;
                loop {
                    match self.call("GET", &format!("{path}&page={page}"), None) {
                        Ok(v) => {
                            items.extend(v["snapshot_configs"].as_array().cloned().unwrap_or_default());
                            if page >= v["pages"].as_u64().unwrap_or(0) {
                                break Ok(json!({ "snapshot_configs": items }));
                            }
                            page += 1;
                        }
                        Err(e) => break Err(e),
                    }
                }
                .map(|v| self.show(&v, print_templates))
            }
            TemplatesCmd::Add { domain, fields, apply_now } => self
                .call(
                    "POST",
                    &format!("/v1/domains/{}/snapshot-configs{}", enc(&domain), apply(apply_now)),
                    Some(fields.body()),
                )
                .map(|v| self.show(&v, |v| print_templates(&json!({ "snapshot_configs": [v] })))),
            TemplatesCmd::Set { domain, fields, apply_now } => {
                let mut body = fields.body();
                body.as_object_mut().expect("an object").remove("app_name");
                let path =
                    format!("/v1/domains/{}/snapshot-configs/{}{}", enc(&domain), enc(&fields.app), apply(apply_now));
                self.call("PATCH", &path, Some(body))
                    .map(|v| self.show(&v, |v| print_templates(&json!({ "snapshot_configs": [v] }))))
            }
            TemplatesCmd::Rm { domain, app, apply_now } => self
                .call(
                    "DELETE",
                    &format!("/v1/domains/{}/snapshot-configs/{}{}", enc(&domain), enc(&app), apply(apply_now)),
                    None,
                )
                .map(|v| self.show(&v, |_| println!("deleted the snapshot config of app {app}"))),
        })
    }

    pub(crate) fn domains(&self, cmd: DomainsCmd) -> ExitCode {
        finish(match cmd {
            DomainsCmd::Ls => self.call("GET", "/v1/domains", None).map(|v| {
                self.show(&v, |v| {
                    println!("{:<40} {:<6} {:>8} {:>6}  STORAGE", "DOMAIN", "ORIGIN", "CONFIGS", "LIVE");
                    for d in v["domains"].as_array().into_iter().flatten() {
                        let targets: Vec<&String> =
                            d["storage"].as_object().map(|m| m.keys().collect()).unwrap_or_default();
                        println!(
                            "{:<40} {:<6} {:>8} {:>6}  {}",
                            d["domain"].as_str().unwrap_or(""),
                            d["origin"].as_str().unwrap_or(""),
                            d["snapshot_configs"],
                            d["live_streams"],
                            targets.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                        );
                    }
                })
            }),
            DomainsCmd::Get { domain } => self
                .call("GET", &format!("/v1/domains/{}", enc(&domain)), None)
                .map(|v| println!("{}", serde_json::to_string_pretty(&v).expect("json"))),
            DomainsCmd::Put { domain, file } => std::fs::read(&file)
                .map_err(|e| Failure(format!("read {}: {e}", file.display()), 2))
                .and_then(|b| {
                    serde_json::from_slice::<Value>(&b).map_err(|e| Failure(format!("{}: {e}", file.display()), 2))
                })
                .and_then(|body| self.call("PUT", &format!("/v1/domains/{}", enc(&domain)), Some(body)))
                .map(|v| self.show(&v, |v| println!("domain {} is in force", v["domain"].as_str().unwrap_or("?")))),
            DomainsCmd::Rm { domain, force, remove_files } => self
                .call(
                    "DELETE",
                    &format!("/v1/domains/{}?force={force}&remove_files={remove_files}", enc(&domain)),
                    None,
                )
                .map(|v| {
                    self.show(&v, |v| {
                        println!("deleted {domain}: {} records, {} files", v["records_deleted"], v["files_deleted"])
                    })
                }),
        })
    }

    pub(crate) fn tokens(&self, cmd: TokensCmd) -> ExitCode {
        finish(match cmd {
            TokensCmd::Mint { domain, label } => {
                let body = label.map_or_else(|| json!({}), |l| json!({ "label": l }));
                self.call("POST", &format!("/v1/domains/{}/tokens", enc(&domain)), Some(body)).map(|v| {
                    self.show(&v, |v| {
                        println!("id:    {}", v["id"].as_str().unwrap_or(""));
                        println!("token: {}", v["token"].as_str().unwrap_or(""));
                        println!("(shown once; only its hash is kept)");
                    })
                })
            }
            TokensCmd::Ls { domain } => {
                self.call("GET", &format!("/v1/domains/{}/tokens", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        println!("{:<18} {:<25} LABEL", "ID", "CREATED");
                        for t in v["tokens"].as_array().into_iter().flatten() {
                            println!(
                                "{:<18} {:<25} {}",
                                t["id"].as_str().unwrap_or(""),
                                t["created_time"].as_str().unwrap_or(""),
                                t["label"].as_str().unwrap_or("")
                            );
                        }
                    })
                })
            }
            TokensCmd::Revoke { domain, id } => self
                .call("DELETE", &format!("/v1/domains/{}/tokens/{}", enc(&domain), enc(&id)), None)
                .map(|v| self.show(&v, |_| println!("revoked {id}"))),
        })
    }

    pub(crate) fn streams(&self, cmd: StreamsCmd) -> ExitCode {
        finish(match cmd {
            StreamsCmd::Ls { domain } => {
                self.call("GET", &format!("/v1/domains/{}/streams", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        println!("{:<40} {:>9} {:>9} {:<25} TEMPLATE", "APP/STREAM", "SIZE", "SNAPSHOTS", "LAST");
                        for s in v["streams"].as_array().into_iter().flatten() {
                            println!(
                                "{:<40} {:>9} {:>9} {:<25} {}",
                                format!("{}/{}", s["app"].as_str().unwrap_or(""), s["stream"].as_str().unwrap_or("")),
                                format!("{}x{}", s["width"], s["height"]),
                                s["snapshots"],
                                s["last_snapshot_time"].as_str().unwrap_or("-"),
                                s["template"].as_str().unwrap_or("-"),
                            );
                        }
                    })
                })
            }
            StreamsCmd::Snap { domain, app, stream } => self
                .call(
                    "POST",
                    &format!("/v1/domains/{}/streams/{}/{}/snapshot", enc(&domain), enc(&app), enc(&stream)),
                    None,
                )
                .map(|v| {
                    self.show(&v, |v| {
                        for s in v["snapshots"].as_array().into_iter().flatten() {
                            println!("{}  {}", s["object"].as_str().unwrap_or(""), s["url"].as_str().unwrap_or(""));
                        }
                    })
                }),
        })
    }
}

impl Client {
    pub(crate) fn plugins(&self, cmd: PluginsCmd) -> ExitCode {
        let print_version = |v: &Value| {
            println!(
                "{}  {:>8} bytes  fuel {:>10}  peak memory {:>9}  {}{}",
                v["version"].as_str().unwrap_or(""),
                v["size"],
                v["conformance"]["fuel"],
                v["conformance"]["peak_memory_bytes"],
                v["uploaded_time"].as_str().unwrap_or(""),
                if v["active"] == true { "  ACTIVE" } else { "" }
            );
            if let Some(reason) = v["demoted"]["reason"].as_str() {
                println!("    demoted {}: {reason}", v["demoted"]["time"].as_str().unwrap_or(""));
            }
        };
        finish(match cmd {
            PluginsCmd::Ls { domain } => {
                self.call("GET", &format!("/v1/domains/{}/plugins", enc(&domain)), None).map(|v| {
                    self.show(&v, |v| {
                        println!("active: {}", v["active"].as_str().unwrap_or("?"));
                        println!("previous: {}", v["previous"].as_str().unwrap_or("?"));
                        v["versions"].as_array().into_iter().flatten().for_each(print_version);
                    })
                })
            }
            PluginsCmd::Upload { domain, file, activate } => std::fs::read(&file)
                .map_err(|e| Failure(format!("read {}: {e}", file.display()), 2))
                .and_then(|bytes| {
                    self.call_raw(
                        "POST",
                        &format!("/v1/domains/{}/plugins", enc(&domain)),
                        Some(("application/wasm", bytes)),
                    )
                })
                .and_then(|v| {
                    if activate {
                        let version = v["version"].as_str().unwrap_or_default();
                        self.call("POST", &format!("/v1/domains/{}/plugins/{version}/activate", enc(&domain)), None)?;
                    }
                    self.show(&v, print_version);
                    Ok(())
                }),
            PluginsCmd::Activate { domain, version } => self
                .call("POST", &format!("/v1/domains/{}/plugins/{}/activate", enc(&domain), enc(&version)), None)
                .map(|v| self.show(&v, |v| println!("active: {}", v["active"].as_str().unwrap_or("?")))),
            PluginsCmd::Rm { domain, version } => self
                .call("DELETE", &format!("/v1/domains/{}/plugins/{}", enc(&domain), enc(&version)), None)
                .map(|v| self.show(&v, |_| println!("deleted {version}"))),
        })
    }
}

fn print_templates(v: &Value) {
    println!("{:<20} {:>8} {:<10} {:<5} {:<36} SEQUENCE", "APP", "INTERVAL", "STORAGE", "FROM", "OVERWRITE");
    for t in v["snapshot_configs"].as_array().into_iter().flatten() {
        println!(
            "{:<20} {:>8} {:<10} {:<5} {:<36} {}",
            t["app_name"].as_str().unwrap_or(""),
            t["time_interval"],
            t["storage"].as_str().unwrap_or(""),
            t["origin"].as_str().unwrap_or(""),
            t["overwrite_object"].as_str().unwrap_or("-"),
            t["sequence_object"].as_str().unwrap_or("-"),
        );
    }
}

/// Percent-encodes a path segment or query value.
fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

fn finish(outcome: Outcome) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("edgesnap: {msg}");
            ExitCode::from(code)
        }
    }
}
