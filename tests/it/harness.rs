//! Starting the host and talking to it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "it-operator-token-0123456789";

/// Runs a command to its end within `deadline`, capturing its output. A
/// command still running then is killed and the test fails naming it: a
/// bug costs seconds, never a stalled suite.
pub fn output_within(cmd: &mut Command, deadline: Duration) -> std::process::Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {what}: {e}"));
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_within(&mut child, deadline).unwrap_or_else(|| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {deadline:?}; killed");
    });
    std::process::Output { status, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
}

/// [`output_within`] as a method: `Command::new(..).args(..).output_within(d)`.
pub trait OutputWithin {
    fn output_within(&mut self, deadline: Duration) -> std::process::Output;
}

impl OutputWithin for Command {
    fn output_within(&mut self, deadline: Duration) -> std::process::Output {
        output_within(self, deadline)
    }
}

/// Waits for a child to exit, at most `deadline`; `None` if it still runs.
pub fn wait_within(child: &mut Child, deadline: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a server that is told its port on its command line, on a port
/// that was free a moment ago. Another listener may take the port in that
/// moment: `ready` then never holds, or the server exits, and a new port is
/// tried. For programs that cannot listen on port 0 and report it.
pub fn start_on_free_port(
    what: &str,
    mut spawn: impl FnMut(u16) -> Child,
    mut ready: impl FnMut(u16) -> bool,
) -> (Child, u16) {
    for _ in 0..5 {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = spawn(port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ready(port) {
                return (child, port);
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!("{what} did not start on port {port}; trying another");
    }
    panic!("{what} did not start on any of 5 ports");
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_edgesnap")
}

/// One storage-backed domain of a generated config.
pub struct DomainSpec {
    pub name: &'static str,
    pub interval: u32,
    pub overwrite: Option<&'static str>,
    pub sequence: Option<&'static str>,
    /// An S3 target on this server instead of a local directory.
    pub s3: Option<(u16, &'static str)>,
    /// The S3 target's credentials from an AWS-style file instead of env variables.
    pub s3_credentials_file: bool,
    /// The `publish_auth` value, as TOML.
    pub publish_auth: Option<String>,
    /// The body of `[domains."name".plugin_limits]`, as TOML.
    pub plugin_limits: Option<&'static str>,
    /// Pull sources: the body of each `[[domains."name".sources]]`, as TOML.
    pub sources: Vec<String>,
}

impl DomainSpec {
    pub fn new(name: &'static str) -> Self {
        DomainSpec {
            name,
            interval: 5,
            overwrite: Some("{AppName}/{StreamName}.jpg"),
            sequence: Some("{AppName}/{StreamName}/{UnixTimestamp}.jpg"),
            s3: None,
            s3_credentials_file: false,
            publish_auth: None,
            plugin_limits: None,
            sources: Vec::new(),
        }
    }
}

/// Where a domain's objects are, to read them back.
pub enum Objects {
    Dir(PathBuf),
    S3 { port: u16, bucket: String },
}

impl Objects {
    /// For a local directory, whether two keys name one file (one inode);
    /// `None` for S3.
    pub fn same_file(&self, a: &str, b: &str) -> Option<bool> {
        use std::os::unix::fs::MetadataExt;
        match self {
            Objects::Dir(dir) => {
                let (a, b) = (std::fs::metadata(dir.join(a)).unwrap(), std::fs::metadata(dir.join(b)).unwrap());
                Some((a.dev(), a.ino()) == (b.dev(), b.ino()))
            }
            Objects::S3 { .. } => None,
        }
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        match self {
            Objects::Dir(d) => std::fs::read(d.join(key)).unwrap_or_else(|e| panic!("read {key}: {e}")),
            Objects::S3 { port, bucket } => {
                let store = s3_client(*port, bucket);
                block_on(async move {
                    use object_store::ObjectStoreExt;
                    let path = object_store::path::Path::from(key);
                    store.get(&path).await.unwrap_or_else(|e| panic!("get {key}: {e}")).bytes().await.unwrap().to_vec()
                })
            }
        }
    }

    pub fn delete(&self, key: &str) {
        match self {
            Objects::Dir(d) => std::fs::remove_file(d.join(key)).unwrap(),
            Objects::S3 { port, bucket } => {
                let store = s3_client(*port, bucket);
                let path = object_store::path::Path::from(key);
                block_on(async move {
                    use object_store::ObjectStoreExt;
                    store.delete(&path).await.unwrap()
                })
            }
        }
    }

    /// Every key under `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Objects::Dir(d) => files(d).into_iter().filter(|f| f.starts_with(prefix)).collect(),
            Objects::S3 { port, bucket } => {
                let store = s3_client(*port, bucket);
                let prefix = prefix.to_owned();
                let mut keys: Vec<String> = block_on(async move {
                    use futures::TryStreamExt;
                    use object_store::ObjectStore;
                    store.list(None).map_ok(|m| m.location.to_string()).try_collect::<Vec<_>>().await.unwrap()
                });
                keys.retain(|k| k.starts_with(&prefix));
                keys.sort();
                keys
            }
        }
    }
}

/// A tool `scripts/setup.sh` installs into the cache's venv.
pub fn venv_bin(name: &str) -> PathBuf {
    let cache = std::env::var("EDGESNAP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/edgesnap"));
    cache.join("venv/bin").join(name)
}

fn s3_client(port: u16, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::new()
        .with_endpoint(format!("http://127.0.0.1:{port}"))
        .with_allow_http(true)
        .with_bucket_name(bucket)
        .with_region("us-east-1")
        .with_access_key_id("testing")
        .with_secret_access_key("testing")
        .build()
        .unwrap()
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// moto's S3-compatible server on a free loopback port, with one bucket.
pub struct S3Server {
    pub port: u16,
    child: Child,
}

impl S3Server {
    pub fn start(bucket: &str) -> S3Server {
        let moto = venv_bin("moto_server");
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
        let (child, port) = start_on_free_port(
            "moto",
            |port| {
                Command::new(&moto)
                    .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("start {} (scripts/setup.sh installs it): {e}", moto.display()))
            },
            // moto answers a bucket's creation; another server on the port would not.
            |port| agent.put(&format!("http://127.0.0.1:{port}/{bucket}")).send_empty().is_ok(),
        );
        S3Server { port, child }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nats-server with JetStream on a loopback port it picks itself (`-p -1`),
/// read back from the ports file it writes; stopped when dropped.
pub struct NatsServer {
    pub port: u16,
    /// Its HTTP monitoring port (`/jsz`).
    pub monitor_port: u16,
    child: Child,
    dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        NatsServer::try_start(&[]).expect("nats-server started")
    }

    /// A server with `extra` arguments; None if it exits before it listens.
    pub fn try_start(extra: &[String]) -> Option<NatsServer> {
        NatsServer::spawn(tempfile::tempdir().unwrap(), "-1", extra)
    }

    /// Starts the killed server again on its port, with what it stored.
    pub fn restart(&mut self) {
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let again = NatsServer::spawn(dir, &self.port.to_string(), &self.extra.clone())
            .unwrap_or_else(|| panic!("nats-server did not start again on port {}", self.port));
        *self = again;
    }

    fn spawn(dir: tempfile::TempDir, port: &str, extra: &[String]) -> Option<NatsServer> {
        let bin = venv_bin("nats-server");
        let mut child = Command::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", port, "--http_port", "-1"])
            .args(extra)
            .arg("-sd")
            .arg(dir.path().join("js"))
            .arg("--ports_file_dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (scripts/setup.sh installs it): {e}", bin.display()));
        let ports = dir.path().join(format!("nats-server_{}.ports", child.id()));
        let deadline = Instant::now() + Duration::from_secs(20);
        // {"nats": ["nats://127.0.0.1:P"], "monitoring": ["http://127.0.0.1:M"]}
        let port_of = |v: &serde_json::Value, what: &str| {
            v[what].as_array()?.first()?.as_str()?.rsplit(':').next()?.parse::<u16>().ok()
        };
        let (port, monitor_port) = loop {
            let written = std::fs::read(&ports).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            if let Some((p, m)) = written.and_then(|v| Some((port_of(&v, "nats")?, port_of(&v, "monitoring")?))) {
                break (p, m);
            }
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "nats-server wrote no ports file within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        Some(NatsServer { port, monitor_port, child, dir, extra: extra.to_vec() })
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

/// Three nats-servers with JetStream as one cluster on loopback. Client
/// ports are picked by each server (`-p -1`) and read back; the route ports
/// must be known to all three before they start, so they are ports that
/// were free a moment ago, and a cluster whose servers do not all come up
/// is started again on others.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    pub fn start() -> NatsCluster {
        for _ in 0..3 {
            let routes: Vec<u16> =
                (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()).collect();
            let all = routes.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",");
            let servers: Vec<Option<NatsServer>> = routes
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let args = [
                        "--server_name".to_string(),
                        format!("it-{i}"),
                        "--cluster_name".into(),
                        "edgesnap-it".into(),
                        "--cluster".into(),
                        format!("nats://127.0.0.1:{p}"),
                        "--routes".into(),
                        all.clone(),
                    ];
                    NatsServer::try_start(&args)
                })
                .collect();
            if servers.iter().all(Option::is_some) {
                return NatsCluster { servers: servers.into_iter().flatten().collect() };
            }
            eprintln!("a NATS cluster server did not start on its route port; trying other ports");
        }
        panic!("no NATS cluster came up on three tries");
    }

    /// The index of the server leading the JetStream stream `name` (a KV
    /// bucket `B` is the stream `KV_B`), from the servers' `/jsz`.
    pub fn stream_leader(&self, name: &str) -> Option<usize> {
        let stream = self.stream_detail(name)?;
        stream["cluster"]["leader"].as_str()?.strip_prefix("it-").and_then(|i| i.parse().ok())
    }

    /// On how many servers a JetStream stream is kept.
    pub fn stream_replicas(&self, name: &str) -> Option<u64> {
        self.stream_detail(name)?["config"]["num_replicas"].as_u64()
    }

    /// A stream's details as a live server's `/jsz` reports them.
    fn stream_detail(&self, name: &str) -> Option<serde_json::Value> {
        let agent = ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().new_agent();
        for s in &self.servers {
            let url = format!("http://127.0.0.1:{}/jsz?streams=true&config=true", s.monitor_port);
            let Ok(mut r) = agent.get(&url).call() else { continue };
            let Ok(text) = r.body_mut().read_to_string() else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
            for account in v["account_details"].as_array().into_iter().flatten() {
                for stream in account["stream_detail"].as_array().into_iter().flatten() {
                    if stream["name"] == name && stream["cluster"]["leader"].is_string() {
                        return Some(stream.clone());
                    }
                }
            }
        }
        None
    }

    /// Every server's client URL, comma-separated (a `[fleet] nats_url`).
    pub fn urls(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running host; stopped with SIGTERM when dropped. Its config says port 0:
/// each start's ports are read back from what the host announces.
pub struct Host {
    pub dir: tempfile::TempDir,
    /// The ports of the current (or last) start.
    pub rtmp_port: u16,
    pub http_port: u16,
    child: Option<Child>,
    pub config_path: PathBuf,
    objects: Vec<(String, Objects)>,
    /// The binary the next start runs, and extra environment for it.
    pub bin: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Host {
    /// Starts a host serving `domains`; the first is the default domain.
    pub fn start(domains: &[DomainSpec], decoder_workers: usize) -> Host {
        Host::start_with(domains, decoder_workers, "")
    }

    /// [`Host::start`] with more `[server]` lines.
    pub fn start_with(domains: &[DomainSpec], decoder_workers: usize, server_extra: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "version = 1\n[server]\nrtmp_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\n\
             data_dir = \"./data\"\noperator_token = \"{TOKEN}\"\ndefault_domain = \"{default}\"\n\
             decoder_workers = {decoder_workers}\n{server_extra}\n",
            default = domains[0].name,
        );
        let mut objects = Vec::new();
        for d in domains {
            if let Some(auth) = &d.publish_auth {
                config += &format!("[domains.\"{n}\"]\npublish_auth = {auth}\n", n = d.name);
            }
            if let Some(limits) = d.plugin_limits {
                config += &format!("[domains.\"{n}\".plugin_limits]\n{limits}\n", n = d.name);
            }
            for source in &d.sources {
                config += &format!("[[domains.\"{n}\".sources]]\n{source}\n", n = d.name);
            }
            match d.s3 {
                None => {
                    let p = dir.path().join("objects").join(d.name);
                    config += &format!(
                        "[domains.\"{n}\".storage.store]\ntype = \"local\"\npath = \"{p}\"\n",
                        n = d.name,
                        p = p.display()
                    );
                    objects.push((d.name.to_owned(), Objects::Dir(p)));
                }
                Some((port, bucket)) => {
                    let credentials = if d.s3_credentials_file {
                        let file = dir.path().join("s3-credentials");
                        std::fs::write(
                            &file,
                            "[default]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
                        )
                        .unwrap();
                        format!("credentials_file = \"{}\"\n", file.display())
                    } else {
                        "access_key_id_env = \"EDGESNAP_IT_S3_KEY\"\nsecret_access_key_env = \"EDGESNAP_IT_S3_SECRET\"\n".into()
                    };
                    config += &format!(
                        "[domains.\"{n}\".storage.store]\ntype = \"s3\"\nendpoint = \"http://127.0.0.1:{port}\"\n\
                         bucket = \"{bucket}\"\nregion = \"us-east-1\"\n{credentials}",
                        n = d.name
                    );
                    objects.push((d.name.to_owned(), Objects::S3 { port, bucket: bucket.to_owned() }));
                }
            }
            config += &format!(
                "[[domains.\"{n}\".snapshot_configs]]\napp_name = \"*\"\ntime_interval = {i}\nstorage = \"store\"\n",
                n = d.name,
                i = d.interval,
            );
            if let Some(o) = d.overwrite {
                config += &format!("overwrite_object = \"{o}\"\n");
            }
            if let Some(s) = d.sequence {
                config += &format!("sequence_object = \"{s}\"\n");
            }
        }
        let config_path = dir.path().join("edgesnap.toml");
        std::fs::write(&config_path, config).unwrap();
        let mut host = Host {
            dir,
            rtmp_port: 0,
            http_port: 0,
            child: None,
            config_path,
            objects,
            bin: PathBuf::from(bin()),
            env: Vec::new(),
        };
        host.spawn();
        host
    }

    /// Starts the host (again) on the same config and data. It runs in the
    /// test's directory, its `data_dir` relative as in the example config.
    /// Ready when it has announced its bound ports (`data/listening.json`
    /// with its pid) and answers `/healthz` there.
    pub fn spawn(&mut self) {
        let pid = self.spawn_unchecked();
        let listening = self.dir.path().join("data/listening.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some((rtmp, http)) = announced(&listening, pid) {
                (self.rtmp_port, self.http_port) = (rtmp, http);
                if let Ok((200, _)) = self.try_get("/healthz") {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("edgesnap exited at start ({status}):\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("edgesnap did not become healthy:\n{}", self.log());
    }

    /// Starts the host process without waiting for it to serve (one that is
    /// expected to abort at a fail point during recovery); its pid.
    pub fn spawn_unchecked(&mut self) -> u32 {
        let _ = std::fs::remove_file(self.dir.path().join("data/listening.json"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        // No NO_COLOR: a log that is not a terminal has no colour by itself.
        let child = Command::new(&self.bin)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info,edgesnap=debug")
            .env("EDGESNAP_IT_S3_KEY", "testing")
            .env("EDGESNAP_IT_S3_SECRET", "testing")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start edgesnap");
        let pid = child.id();
        self.child = Some(child);
        pid
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("edgesnap.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn rtmp_url(&self, path: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{path}", self.rtmp_port)
    }

    /// A domain's storage target, to read objects back.
    pub fn objects(&self, domain: &str) -> &Objects {
        &self.objects.iter().find(|(d, _)| d == domain).expect("a configured domain").1
    }

    /// Stops the host and starts it again on the same config and data.
    pub fn restart(&mut self) {
        let status = self.stop().expect("host was running");
        assert!(status.success(), "graceful stop exits 0: {status}\n{}", self.log());
        assert!(!self.log().contains("index still shared"), "redb was closed cleanly:\n{}", self.log());
        self.spawn();
    }

    /// Sends SIGHUP: the host re-reads its config file.
    pub fn reload(&self) {
        let pid = self.child.as_ref().expect("host is running").id();
        let status = Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// A request with the operator token and a JSON body (if any); the
    /// status and the JSON answer (`null` when the answer is empty).
    pub fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        self.api_as(TOKEN, method, path, body)
    }

    pub fn api_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let (status, bytes) = self.raw_request(Some(token), method, path, body);
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {path}: answer is not JSON ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        (status, value)
    }

    /// Any request: token, method, path, and a body with its content type.
    pub fn raw_request(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> (u16, Vec<u8>) {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let result = match body {
            Some((ct, bytes)) => agent.run(req.header("Content-Type", ct).body(bytes).unwrap()),
            None => agent.run(req.body(()).unwrap()),
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let bytes = resp.body_mut().with_config().limit(64 << 20).read_to_vec().unwrap();
        (status, bytes)
    }

    pub fn try_get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .new_agent();
        let mut resp = agent
            .get(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .header("Authorization", &format!("Bearer {TOKEN}"))
            .call()
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec().map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.try_get(path).unwrap();
        assert_eq!(status, 200, "GET {path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Every snapshot record of a stream (or app), paging through the API.
    pub fn snapshots(&self, domain: &str, app: &str, stream: Option<&str>) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "/v1/domains/{domain}/snapshots?app={app}&start_time=2000-01-01T00:00:00Z&end_time=2100-01-01T00:00:00Z&limit=100"
            );
            if let Some(s) = stream {
                path += &format!("&stream={s}");
            }
            if let Some(t) = &token {
                path += &format!("&next_token={t}");
            }
            let page = self.get_json(&path);
            out.extend(page["snapshots"].as_array().unwrap().iter().cloned());
            match page.get("next_token").and_then(|t| t.as_str()) {
                Some(t) => token = Some(t.to_owned()),
                None => return out,
            }
        }
    }

    /// Waits until `f` holds, or panics with the host's log.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; host log:\n{}", self.log());
    }

    /// The value of one series of `/metrics` (exact name and labels), or -1 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.try_get("/metrics").unwrap();
        let want = format!("{series} ");
        String::from_utf8(body).unwrap().lines().find_map(|l| l.strip_prefix(&want)?.parse().ok()).unwrap_or(-1.0)
    }

    /// How often a limit was hit (`edgesnap_limit_hits_total{limit}`).
    pub fn limit_hits(&self, limit: &str) -> f64 {
        self.metric(&format!("edgesnap_limit_hits_total{{limit=\"{limit}\"}}"))
    }

    /// The running host's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("host is running").id()
    }

    /// The running host's resident memory, in MiB.
    pub fn rss_mib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        kb / 1024
    }

    /// Kills the host with SIGKILL (no shutdown at all) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the host to exit by itself (a fail point aborting it).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("host is running");
        match wait_within(child, timeout) {
            Some(s) => {
                self.child = None;
                s
            }
            None => panic!("host did not exit within {timeout:?}:\n{}", self.log()),
        }
    }

    /// Stops with SIGTERM and waits; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        if let Some(s) = wait_within(&mut child, Duration::from_secs(20)) {
            return Some(s);
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

/// The RTMP and HTTP ports in a host's `listening.json`, once the process
/// `pid` has written it.
fn announced(path: &Path, pid: u32) -> Option<(u16, u16)> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    if v["pid"].as_u64()? != u64::from(pid) {
        return None;
    }
    let port = |k: &str| v[k].as_str()?.parse::<std::net::SocketAddr>().ok().map(|a| a.port());
    Some((port("rtmp")?, port("http")?))
}

impl Drop for Host {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Files under `dir`, relative, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// One request the receiver got: lower-cased headers, the body, the answer.
#[derive(Clone, Debug)]
pub struct Hit {
    pub headers: HashMap<String, String>,
    pub body: serde_json::Value,
    pub raw: String,
    pub status: u16,
}

/// A real HTTP/1.1 server on loopback that records each request and answers
/// with the status it is told.
pub struct Receiver {
    pub port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
    pub answer: Arc<AtomicU16>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hits, answer) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicU16::new(200)));
        let (h, a) = (hits.clone(), answer.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let (h, a) = (h.clone(), a.clone());
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let head_end = loop {
                        let n = conn.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let headers: HashMap<String, String> = head
                        .lines()
                        .skip(1)
                        .filter_map(|l| l.split_once(':'))
                        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                        .collect();
                    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                    while buf.len() < head_end + len {
                        let n = conn.read(&mut chunk).unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let raw = String::from_utf8_lossy(&buf[head_end..]).to_string();
                    let status = a.load(Ordering::SeqCst);
                    let body = serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null);
                    h.lock().unwrap().push(Hit { headers, body, raw, status });
                    let _ = write!(conn, "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                });
            }
        });
        Receiver { port, hits, answer }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Event ids answered 200, with how many times each.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for h in self.hits().iter().filter(|h| h.status == 200) {
            *out.entry(h.body["id"].as_str().unwrap_or("").to_owned()).or_default() += 1;
        }
        out
    }
}

/// A TCP forwarder on loopback in front of a server (moto), that can be
/// taken down: while down it closes new and open connections, as a storage
/// outage does.
pub struct Gate {
    pub port: u16,
    up: Arc<AtomicBool>,
}

impl Gate {
    pub fn start(to: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", to)) else { continue };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        from.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                        let mut buf = [0u8; 16384];
                        loop {
                            if !flag.load(Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Gate { port, up }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// The crash tests' build of the host, with fail points (`just test` builds it).
pub fn failpoints_bin() -> PathBuf {
    let p = Path::new(bin()).with_file_name("edgesnap-failpoints");
    assert!(
        p.exists(),
        "{} is missing: `just test` builds it (cargo build --release --features failpoints, then copies the binary)",
        p.display()
    );
    p
}
