//! The config file: the example is valid; invalid files make `check-config`
//! and `serve` exit non-zero naming the field and the rule.

use std::process::Command;
use std::time::Duration;

use crate::harness::{OutputWithin, bin};

fn example() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/edgesnap.toml")
}

#[test]
fn example_config_is_valid() {
    let out = Command::new(bin()).arg("check-config").arg(example()).output_within(Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = edgesnap::config::Config::load(&example()).unwrap();
    let t = config.template_for("localhost", "live").expect("app * template");
    assert_eq!(t.time_interval_s, 5);
    assert!(t.overwrite_object.is_some() && t.sequence_object.is_some(), "both modes");
    assert_eq!(config.server.default_domain.as_deref(), Some("localhost"));
}

/// Runs `check-config` and `serve` on the example with `from` replaced.
fn check(from: &str, to: &str, want: &str) {
    let text = std::fs::read_to_string(example()).unwrap();
    assert!(text.contains(from), "{from:?} is in the example");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    for args in [vec!["check-config".to_owned()], vec!["serve".to_owned(), "--config".to_owned()]] {
        let out = Command::new(bin())
            .args(&args)
            .arg(&path)
            .env("EDGESNAP_OPERATOR_TOKEN", "it-operator-token-0123456789")
            .output_within(Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} with {to:?} must fail");
        assert!(stderr.contains(want), "{args:?} with {to:?}: stderr {stderr:?} should name {want:?}");
    }
}

#[test]
fn invalid_configs_exit_non_zero_naming_field_and_rule() {
    check(
        "time_interval = 5",
        "time_interval = 2",
        "domains.\"localhost\".snapshot_configs[0].time_interval: must be an integer from 5 to 3600",
    );
    check("app_name = \"*\"", "app_name = \"_live\"", "snapshot_configs[0].app_name: must not start with '-' or '_'");
    check("{AppName}/{StreamName}.jpg\"", "{AppName}/{StreamName}.png\"", "overwrite_object: must end in .jpg");
    check(
        "{UnixTimestamp}.jpg",
        "x.jpg",
        "sequence_object: must contain {UnixTimestamp}, {UnixTimestampMs} or {Sequence}",
    );
    check("storage = \"local\"\n", "storage = \"archive\"\n", "snapshot_configs[0].storage: names no storage target");
    check("[server]", "[server]\nlisten = \"x\"", "unknown field `listen`");
    check("version = 1", "version = 3", "version: must be 1");
    check("[server]", "[server]\nspool_max_mib = 0", "server.spool_max_mib: must be from 1 to 1048576, got 0");
    check(
        "[server]",
        "[server]\nspool_domain_share = 101",
        "server.spool_domain_share: must be a percentage from 1 to 100",
    );
    check("[server]", "[server]\nreconcile_every = \"10s\"", "server.reconcile_every: must be at least 1m");
    let source =
        "[[domains.\"localhost\".sources]]\nurl = \"rtsp://admin:pw@10.0.0.7/s\"\napp = \"cams\"\nstream = \"door\"\n";
    check(
        "[[domains.\"localhost\".snapshot_configs]]",
        &format!("{source}[[domains.\"localhost\".snapshot_configs]]"),
        "domains.\"localhost\".sources[0].url: must not hold credentials; name them with credentials_env or credentials_file",
    );
    check(
        "[[domains.\"localhost\".snapshot_configs]]",
        &format!("{}\nmode = \"lazy\"\n[[domains.\"localhost\".snapshot_configs]]", source.replace("admin:pw@", "")),
        "domains.\"localhost\".sources[0].mode: must be persistent or on-demand, got \"lazy\"",
    );
    check(
        "[server]",
        "[fleet]\nnats_url = \"nats://127.0.0.1:4222\"\nroles = [\"archive\"]\n[server]",
        "fleet.roles: each must be \"edge\" or \"index\"",
    );
    check(
        "[[domains.\"localhost\".snapshot_configs]]",
        "[domains.\"localhost\".storage.b]\ntype = \"s3\"\nbucket = \"x\"\ncredentials_file = \"/c\"\naccess_key_id_env = \"K\"\n\
         [[domains.\"localhost\".snapshot_configs]]",
        "domains.\"localhost\".storage.b.credentials_file: set either credentials_file or access_key_id_env",
    );
    check(
        "http_listen = \"127.0.0.1:8080\"",
        "http_listen = \"localhost\"",
        "server.http_listen: must be an IP address and port",
    );
    check(
        "publish_auth = \"off\"",
        "publish_auth = { type = \"a\" }",
        "domains.\"localhost\".publish_auth.key_env: set key_env or key_file to the private key",
    );
    check(
        "publish_auth = \"off\"",
        "publish_auth = { type = \"a\", key_env = \"EDGESNAP_NO_SUCH_VARIABLE\" }",
        "publish_auth.key_env: environment variable EDGESNAP_NO_SUCH_VARIABLE is not set",
    );
    check("publish_auth = \"off\"", "publish_auth = \"on\"", "publish_auth: must be \"off\" or a table");
}

#[test]
fn missing_operator_token_is_named() {
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(example())
        .env_remove("EDGESNAP_OPERATOR_TOKEN")
        .output_within(Duration::from_secs(60));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.operator_token_env: environment variable EDGESNAP_OPERATOR_TOKEN must be set"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out =
        Command::new(bin()).args(["check-config", "/nonexistent/edgesnap.toml"]).output_within(Duration::from_secs(60));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read config file /nonexistent/edgesnap.toml"));
}

/// Credentials are read when a target is set up: `serve` refuses to start
/// without them, naming the target and the file.
#[test]
fn a_missing_credentials_file_stops_serve_naming_it() {
    let text = std::fs::read_to_string(example()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    let target =
        "[domains.\"localhost\".storage.b]\ntype = \"s3\"\nbucket = \"x\"\ncredentials_file = \"/nonexistent/c\"\n";
    std::fs::write(&path, format!("{text}\n{target}")).unwrap();
    // The index opens before the targets (in `./data`): run in the tempdir.
    let out = Command::new(bin())
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir.path())
        .env("EDGESNAP_OPERATOR_TOKEN", "it-operator-token-0123456789")
        .output_within(Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("localhost/b") && stderr.contains("read credentials_file /nonexistent/c"), "{stderr}");
}

#[test]
fn data_dir_is_private_and_the_signing_key_lives_outside_the_index() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let mut host = crate::harness::Host::start(&[crate::harness::DomainSpec::new("localhost")], 1);
    let data = host.dir.path().join("data");
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("index.redb")), 0o600);
    assert_eq!(mode(&data.join("url-signing.key")), 0o600);
    assert_eq!(mode(&data.join("sealing.key")), 0o600);
    let key = std::fs::read(data.join("url-signing.key")).unwrap();
    assert_eq!(key.len(), 32);
    // A tenant's callback signing key is kept sealed.
    let notify = serde_json::json!({"notify_url": "https://biz.example.com/hook", "notify_req_auth": "yes",
        "notify_auth_key": "NotifyKey0123456789"});
    assert_eq!(host.api("PUT", "/v1/domains/localhost/notify", Some(notify)).0, 201);
    host.stop();
    let index = std::fs::read(data.join("index.redb")).unwrap();
    assert!(!index.windows(key.len()).any(|w| w == key), "the index holds a copy of the key");
    assert!(!index.windows(19).any(|w| w == b"NotifyKey0123456789"), "the notify key is in the index in the clear");

    // Others may write to it: the host refuses to start, naming it and the rule.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    host.spawn_unchecked();
    assert!(!host.wait_exit(std::time::Duration::from_secs(30)).success());
    assert!(host.log().contains("is writable by other users (mode 777)"), "{}", host.log());
    // Readable only: made private, and it starts with the same key.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    host.spawn();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(std::fs::read(data.join("url-signing.key")).unwrap(), key);
    assert_eq!(host.get_json("/v1/domains/localhost/notify")["notify_auth_key_set"], true, "unsealed at start");

    // No tenant's target among the host's files, however it is spelled.
    for path in
        [data.display().to_string(), format!("{}/./plugins/../", data.display()), format!("{}/spool", data.display())]
    {
        let body = serde_json::json!({"storage": {"local": {"type": "local", "path": path}}});
        let (status, v) = host.api("PUT", "/v1/domains/other.example", Some(body));
        assert_eq!((status, v["code"].as_str()), (409, Some("StorageOverlap")), "{path}: {v}");
    }
}
