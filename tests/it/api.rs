//! The management API (docs/api.md) against the real binary: templates with
//! every rule, notify settings, domains and tokens with tenant isolation
//! over every route, restart, publish auth with key rotation by SIGHUP,
//! "snapshot now" and `apply=immediately`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{DomainSpec, Host, TOKEN};
use crate::media::{Clip, Tag, decode, read_flv};
use crate::publisher::Publisher;

fn code(v: &Value) -> &str {
    v["code"].as_str().unwrap_or_else(|| panic!("an error body: {v}"))
}

/// Asserts a JSON error with this status and code, carrying a request id.
#[track_caller]
fn assert_error((status, body): (u16, Value), want_status: u16, want_code: &str) {
    assert_eq!((status, code(&body)), (want_status, want_code), "{body}");
    assert!(!body["message"].as_str().unwrap().is_empty(), "{body}");
    assert_eq!(body["request_id"].as_str().unwrap().len(), 16, "{body}");
}

#[test]
fn templates_every_rule_and_crud() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let base = "/v1/domains/localhost/snapshot-configs";
    let good = json!({"app_name": "cam", "time_interval": 10, "storage": "store",
                      "overwrite_object": "{AppName}/{StreamName}.jpg"});
    let (status, t) = host.api("POST", base, Some(good.clone()));
    assert_eq!(status, 201, "{t}");
    assert_eq!((t["time_interval"].as_u64(), t["origin"].as_str()), (Some(10), Some("api")));
    assert_eq!(t["sequence_object"], Value::Null);
    assert_error(host.api("POST", base, Some(good.clone())), 409, "ConfigAlreadyExists");
    let star = json!({"app_name": "*", "time_interval": 10, "storage": "store", "overwrite_object": "a.jpg"});
    assert_error(host.api("POST", base, Some(star)), 409, "ConfigAlreadyExists");
    // The file's template is the file's to change.
    assert_error(
        host.api("PATCH", &format!("{base}/*"), Some(json!({"time_interval": 60}))),
        409,
        "ManagedByConfigFile",
    );
    assert_error(host.api("DELETE", &format!("{base}/*"), None), 409, "ManagedByConfigFile");

    // Every docs/templates.md rule, each with its own code.
    let long = format!("{}.jpg", "a".repeat(252));
    let rules: Vec<(Value, &str)> = vec![
        (json!({"app_name": "-cam"}), "InvalidParameter.AppName"),
        (json!({"app_name": "_cam"}), "InvalidParameter.AppName"),
        (json!({"app_name": "c am"}), "InvalidParameter.AppName"),
        (json!({"app_name": "a".repeat(256)}), "InvalidParameter.AppName"),
        (json!({"time_interval": 4}), "InvalidParameter.TimeInterval"),
        (json!({"time_interval": 3601}), "InvalidParameter.TimeInterval"),
        (json!({"storage": "nope"}), "InvalidParameter.Storage"),
        (json!({"overwrite_object": "a.png"}), "InvalidParameter.OverwriteObject"),
        (json!({"overwrite_object": "{Sequence}.jpg"}), "InvalidParameter.OverwriteObject"),
        (json!({"overwrite_object": long}), "InvalidParameter.OverwriteObject"),
        (json!({"overwrite_object": null, "sequence_object": "{AppName}/x.jpg"}), "InvalidParameter.SequenceObject"),
        (json!({"sequence_object": "{Nope}/{Sequence}.jpg"}), "InvalidParameter.SequenceObject"),
        (json!({"overwrite_object": null}), "MissingParameter.Object"),
        (json!({"callback": "ftp://example.com/x"}), "InvalidParameter.Callback"),
        (json!({"jpeg_quality": 0}), "InvalidParameter.JpegQuality"),
        (json!({"jpeg_quality": 101}), "InvalidParameter.JpegQuality"),
        (json!({"width": 8}), "InvalidParameter.Width"),
        (json!({"width": 4097}), "InvalidParameter.Width"),
        (json!({"height": -1}), "InvalidParameter.Height"),
        (json!({"format": "png"}), "InvalidParameter.Format"),
        // A WebP template's names end in .webp.
        (json!({"format": "webp"}), "InvalidParameter.OverwriteObject"),
        (json!({"overwrite_object": "{AppName}/{StreamName}.webp"}), "InvalidParameter.OverwriteObject"),
        (json!({"bogus": 1}), "InvalidBody"),
        (json!({"time_interval": "ten"}), "InvalidBody"),
    ];
    for (i, (change, want)) in rules.iter().enumerate() {
        let mut body = json!({"app_name": format!("r{i}"), "time_interval": 10, "storage": "store",
                              "overwrite_object": "{AppName}/{StreamName}.jpg"});
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                body.as_object_mut().unwrap().remove(k);
            } else {
                body[k] = v.clone();
            }
        }
        let (status, e) = host.api("POST", base, Some(body.clone()));
        assert_eq!((status, code(&e)), (400, *want), "{body} -> {e}");
        let field = change.as_object().unwrap().keys().next_back().unwrap();
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(field.as_str()) || *want == "MissingParameter.Object", "{msg:?} names {field}");
    }
    assert_error(host.api("POST", base, Some(json!({"app_name": "x", "storage": "store"}))), 400, "InvalidBody");

    // Update: "-" and null clear; the at-least-one-mode rule still holds.
    let item = format!("{base}/cam");
    let (status, t) =
        host.api("PATCH", &item, Some(json!({"sequence_object": "{AppName}/{StreamName}/{Sequence}.jpg"})));
    assert_eq!(status, 200, "{t}");
    let (status, t) = host.api("PATCH", &item, Some(json!({"overwrite_object": "-", "jpeg_quality": 70})));
    assert_eq!(status, 200, "{t}");
    assert_eq!((t["overwrite_object"].clone(), t["jpeg_quality"].as_u64()), (Value::Null, Some(70)));
    assert_error(host.api("PATCH", &item, Some(json!({"sequence_object": null}))), 400, "MissingParameter.Object");
    assert_error(host.api("PATCH", &item, Some(json!({"time_interval": null}))), 400, "InvalidParameter");
    assert_error(host.api("PATCH", &item, Some(json!({"time_interval": 2}))), 400, "InvalidParameter.TimeInterval");
    assert_error(host.api("PATCH", &item, Some(json!({"app_name": "other"}))), 400, "InvalidParameter");
    assert_error(host.api("PATCH", &item, Some(json!({"nope": 1}))), 400, "InvalidParameter");
    assert_error(
        host.api("PATCH", &format!("{base}/missing"), Some(json!({"time_interval": 9}))),
        404,
        "ConfigNotFound",
    );
    let (status, t) = host.api("GET", &item, None);
    assert_eq!((status, t["sequence_object"].as_str()), (200, Some("{AppName}/{StreamName}/{Sequence}.jpg")));

    // Describe: paged, ordered by app name.
    for i in 0..11 {
        let body = json!({"app_name": format!("a{i:02}"), "time_interval": 5, "storage": "store", "overwrite_object": "x.jpg"});
        assert_eq!(host.api("POST", base, Some(body)).0, 201);
    }
    let (_, page) = host.api("GET", base, None);
    assert_eq!(
        (page["total"].as_u64(), page["pages"].as_u64(), page["page_size"].as_u64()),
        (Some(13), Some(2), Some(10))
    );
    let (_, page) = host.api("GET", &format!("{base}?page=3&page_size=5"), None);
    let apps: Vec<&str> =
        page["snapshot_configs"].as_array().unwrap().iter().map(|t| t["app_name"].as_str().unwrap()).collect();
    assert_eq!(apps, ["a09", "a10", "cam"]);
    let (_, page) = host.api("GET", &format!("{base}?page_size=5&order=desc"), None);
    assert_eq!(page["snapshot_configs"][0]["app_name"], "cam");
    let (_, page) = host.api("GET", &format!("{base}?app=a03"), None);
    assert_eq!(page["total"], 1);
    assert_error(host.api("GET", &format!("{base}?page_size=4"), None), 400, "InvalidParameter.PageSize");
    assert_error(host.api("GET", &format!("{base}?page_size=31"), None), 400, "InvalidParameter.PageSize");
    assert_error(host.api("GET", &format!("{base}?order=up"), None), 400, "InvalidParameter.Order");
    assert_error(host.api("GET", &format!("{base}?bogus=1"), None), 400, "InvalidParameter");

    // Delete.
    assert_eq!(host.api("DELETE", &item, None).0, 204);
    assert_error(host.api("DELETE", &item, None), 404, "ConfigNotFound");
    assert_error(host.api("GET", &item, None), 404, "ConfigNotFound");

    // Bodies: content type, size, syntax.
    let (status, _) = host.raw_request(Some(TOKEN), "POST", base, Some(("text/plain", b"{}".to_vec())));
    assert_eq!(status, 415);
    let (status, _) = host.raw_request(Some(TOKEN), "POST", base, None);
    assert_eq!(status, 415);
    let big = format!("{{\"app_name\": \"{}\"}}", "x".repeat(2 << 20));
    let (status, _) = host.raw_request(Some(TOKEN), "POST", base, Some(("application/json", big.into_bytes())));
    assert_eq!(status, 413);
    let (status, body) = host.raw_request(Some(TOKEN), "POST", base, Some(("application/json", b"{".to_vec())));
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    assert_error(host.api("PUT", base, Some(json!({}))), 405, "MethodNotAllowed");
    assert_error(host.api("GET", "/v1/domains/localhost/nothing", None), 404, "NotFound");
    assert_error(host.api("GET", "/v1/domains/missing.example/snapshot-configs", None), 404, "DomainNotFound");
}

#[test]
fn notify_settings() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let path = "/v1/domains/localhost/notify";
    assert_error(host.api("GET", path, None), 404, "NotifyConfigNotFound");
    for (body, want) in [
        (json!({"notify_url": "not a url"}), "InvalidParameter.NotifyUrl"),
        (json!({"notify_url": "http://h/x", "notify_req_auth": "maybe"}), "InvalidParameter.NotifyReqAuth"),
        (json!({"notify_url": "http://h/x", "notify_req_auth": "yes"}), "MissingParameter.NotifyAuthKey"),
        (
            json!({"notify_url": "http://h/x", "notify_req_auth": "yes", "notify_auth_key": "short123"}),
            "InvalidParameter.NotifyAuthKey",
        ),
        (
            json!({"notify_url": "http://h/x", "notify_req_auth": "yes", "notify_auth_key": "a".repeat(33)}),
            "InvalidParameter.NotifyAuthKey",
        ),
        (
            json!({"notify_url": "http://h/x", "notify_req_auth": "yes", "notify_auth_key": "abc-def-ghi-jkl-mno"}),
            "InvalidParameter.NotifyAuthKey",
        ),
        (json!({"notify_url": "http://h/x", "notify_auth_key": "abcdefghijklmnop"}), "InvalidParameter.NotifyAuthKey"),
        (json!({"notify_url": "http://h/x", "extra": 1}), "InvalidBody"),
        (
            json!({"notify_url": "http://h/x", "notify_req_auth": "yes", "notify_auth_key": null}),
            "MissingParameter.NotifyAuthKey",
        ),
    ] {
        assert_error(host.api("PUT", path, Some(body)), 400, want);
    }
    let body = json!({"notify_url": "https://biz.example.com/hook", "notify_req_auth": "yes", "notify_auth_key": "Key0123456789abcdef"});
    let (status, v) = host.api("PUT", path, Some(body.clone()));
    assert_eq!(status, 201, "{v}");
    assert_eq!(host.api("PUT", path, Some(body)).0, 200);
    let (status, v) = host.api("GET", path, None);
    assert_eq!(status, 200);
    assert_eq!(
        v,
        json!({"notify_url": "https://biz.example.com/hook", "notify_req_auth": "yes", "notify_auth_key_set": true})
    );
    assert!(!v.to_string().contains("Key0123456789abcdef"), "the key is never returned");
    assert_eq!(host.api("DELETE", path, None).0, 204);
    assert_error(host.api("DELETE", path, None), 404, "NotifyConfigNotFound");
    // null is the same as absent (the OpenAPI document says so).
    let (status, v) = host.api(
        "PUT",
        path,
        Some(json!({"notify_url": "http://h/x", "notify_req_auth": null, "notify_auth_key": null})),
    );
    assert_eq!(
        (status, v),
        (201, json!({"notify_url": "http://h/x", "notify_req_auth": "no", "notify_auth_key_set": false}))
    );
}

/// Every route of the OpenAPI document that names a domain, filled in.
fn domain_routes(host: &Host, domain: &str) -> Vec<(String, String)> {
    let (_, doc) = host.api("GET", "/openapi.json", None);
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.contains("{domain}") {
            continue;
        }
        let filled = path
            .replace("{domain}", domain)
            .replace("{app}", "live")
            .replace("{stream}", "s")
            .replace("{id}", &"0".repeat(32))
            .replace("{token_id}", "0011223344556677");
        for method in item.as_object().unwrap().keys() {
            out.push((method.to_uppercase(), filled.clone()));
        }
    }
    assert!(out.len() >= 20, "{out:?}");
    out
}

#[test]
fn domains_tokens_isolation_and_restart() {
    let mut host = Host::start(&[DomainSpec::new("localhost")], 1);
    let b_dir = host.dir.path().join("objects-b");
    let b = json!({"storage": {"s": {"type": "local", "path": b_dir}}});
    let (status, v) = host.api("PUT", "/v1/domains/b.example", Some(b.clone()));
    assert_eq!(status, 201, "{v}");
    assert_eq!((v["origin"].as_str(), v["storage"]["s"]["type"].as_str()), (Some("api"), Some("local")));
    assert_eq!(host.api("PUT", "/v1/domains/b.example", Some(b.clone())).0, 200);
    assert_eq!(v["plugin_limits"]["memory_mib"], 16, "the defaults: {v}");
    // The operator's plugin limits for the domain, checked like the file's.
    let mut limited = b.clone();
    limited["plugin_limits"] = json!({"memory_mib": 0});
    let refused = host.api("PUT", "/v1/domains/b.example", Some(limited.clone()));
    assert!(refused.1["message"].as_str().unwrap().contains("plugin_limits.memory_mib: must be from 1 to 256"));
    assert_error(refused, 400, "InvalidParameter");
    limited["plugin_limits"] = json!([]);
    assert_error(host.api("PUT", "/v1/domains/b.example", Some(limited.clone())), 400, "InvalidBody");
    assert_error(host.api("POST", "/v1/domains/b.example/tokens", Some(json!([]))), 400, "InvalidBody");
    limited["plugin_limits"] = json!({"memory_mib": 8, "deadline": "50ms"});
    let (status, v) = host.api("PUT", "/v1/domains/b.example", Some(limited));
    assert_eq!(
        (status, &v["plugin_limits"]["memory_mib"], &v["plugin_limits"]["deadline"]),
        (200, &json!(8), &json!("50ms"))
    );
    // Two domains may not share a directory; the file's domain is the file's.
    let inside = host.dir.path().join("objects/localhost/sub");
    let overlap = json!({"storage": {"s": {"type": "local", "path": inside}}});
    let refused = host.api("PUT", "/v1/domains/c.example", Some(overlap));
    assert!(
        refused.1["message"]
            .as_str()
            .unwrap()
            .contains("storage target \"s\" overlaps a target of domain \"localhost\""),
        "{}",
        refused.1
    );
    assert_error(refused, 409, "StorageOverlap");
    assert_error(host.api("PUT", "/v1/domains/localhost", Some(json!({}))), 409, "ManagedByConfigFile");
    assert_error(host.api("DELETE", "/v1/domains/localhost", None), 409, "ManagedByConfigFile");
    assert_error(host.api("PUT", "/v1/domains/bad_name", Some(json!({}))), 400, "InvalidParameter");
    let s3 = json!({"storage": {"s": {"type": "s3", "bucket": "x", "endpoint": "http://127.0.0.1:9",
                    "access_key_id_env": "EDGESNAP_IT_NO_SUCH_VAR"}}});
    assert_error(host.api("PUT", "/v1/domains/d.example", Some(s3)), 400, "InvalidParameter.Storage");
    assert_error(host.api("PUT", "/v1/domains/d.example", Some(json!({"nope": 1}))), 400, "InvalidBody");
    let auth = json!({"publish_auth": {"type": "a", "key_env": "EDGESNAP_IT_NO_SUCH_VAR"}});
    assert_error(host.api("PUT", "/v1/domains/d.example", Some(auth)), 400, "InvalidParameter");

    let tpl = json!({"app_name": "*", "time_interval": 5, "storage": "s", "overwrite_object": "{StreamName}.jpg"});
    assert_eq!(host.api("POST", "/v1/domains/b.example/snapshot-configs", Some(tpl)).0, 201);
    let notify = json!({"notify_url": "https://biz.example.com/hook"});
    assert_eq!(host.api("PUT", "/v1/domains/b.example/notify", Some(notify)).0, 201);
    let (status, minted) = host.api("POST", "/v1/domains/b.example/tokens", Some(json!({"label": "ci"})));
    assert_eq!(status, 201, "{minted}");
    let token = minted["token"].as_str().unwrap().to_owned();
    let (_, list) = host.api("GET", "/v1/domains/b.example/tokens", None);
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&token), "a token is shown once");

    let (status, who) = host.api_as(&token, "GET", "/v1/whoami", None);
    assert_eq!(
        (status, who),
        (200, json!({"role": "domain", "domains": ["b.example"], "default_domain": "b.example"})),
        "a domain token's default domain is its own"
    );
    let (_, who) = host.api("GET", "/v1/whoami", None);
    assert_eq!(
        who,
        json!({"role": "operator", "domains": ["b.example", "localhost"], "default_domain": "localhost"}),
        "the operator's is the server's"
    );

    // A domain token reaches its own domain only: every route elsewhere is 403.
    for other in ["localhost", "missing.example"] {
        for (method, path) in domain_routes(&host, other) {
            let body = matches!(method.as_str(), "POST" | "PUT" | "PATCH").then(|| json!({}));
            assert_error(host.api_as(&token, &method, &path, body), 403, "Forbidden");
        }
    }
    // Operator-only routes, even on its own domain.
    for (method, path) in [
        ("GET", "/v1/domains"),
        ("PUT", "/v1/domains/b.example"),
        ("DELETE", "/v1/domains/b.example"),
        ("GET", "/v1/domains/b.example/tokens"),
        ("POST", "/v1/domains/b.example/tokens"),
        ("DELETE", &format!("/v1/domains/b.example/tokens/{}", minted["id"].as_str().unwrap())),
    ] {
        let body = matches!(method, "POST" | "PUT").then(|| json!({}));
        assert_error(host.api_as(&token, method, path, body), 403, "Forbidden");
    }
    for path in ["/v1/domains/b.example/snapshot-configs", "/v1/domains/b.example/streams", "/v1/domains/b.example"] {
        assert_eq!(host.api_as(&token, "GET", path, None).0, 200, "{path}");
    }
    // No token, a wrong token: 401 on every route that needs one.
    for (method, path) in domain_routes(&host, "b.example") {
        let (status, _) = host.raw_request(None, &method, &path, None);
        assert_eq!(status, 401, "{method} {path} without a token");
        assert_error(host.api_as("not-a-token", &method, &path, None), 401, "Unauthorized");
    }

    // API-made state survives a restart.
    host.restart();
    let (status, v) = host.api_as(&token, "GET", "/v1/domains/b.example/snapshot-configs", None);
    assert_eq!((status, v["total"].as_u64()), (200, Some(1)), "{v}");
    assert_eq!(host.api("GET", "/v1/domains/b.example/notify", None).0, 200);

    // Revoked: the token is dead.
    let id = minted["id"].as_str().unwrap();
    assert_eq!(host.api("DELETE", &format!("/v1/domains/b.example/tokens/{id}"), None).0, 204);
    assert_error(host.api_as(&token, "GET", "/v1/whoami", None), 401, "Unauthorized");
    assert_error(host.api("DELETE", &format!("/v1/domains/b.example/tokens/{id}"), None), 404, "TokenNotFound");

    // Deleted with its templates and notify settings.
    let (status, v) = host.api("DELETE", "/v1/domains/b.example", None);
    assert_eq!(status, 200, "{v}");
    assert_error(host.api("GET", "/v1/domains/b.example", None), 404, "DomainNotFound");
    assert_eq!(host.api("PUT", "/v1/domains/b.example", Some(json!({"storage": {}}))).0, 201);
    let (_, v) = host.api("GET", "/v1/domains/b.example/snapshot-configs", None);
    assert_eq!(v["total"], 0, "templates went with the domain");
    assert_error(host.api("GET", "/v1/domains/b.example/notify", None), 404, "NotifyConfigNotFound");
}

/// md5hash for the reference's type A URL signing.
fn auth_key(app: &str, stream: &str, key: &str, ts: u64) -> String {
    use md5::{Digest, Md5};
    let rand = "r4nd";
    let hash = hex::encode(Md5::digest(format!("/{app}/{stream}-{ts}-{rand}-0-{key}")));
    format!("{ts}-{rand}-0-{hash}")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn send_clip(p: &mut Publisher, tags: &[Tag], offset: u32) {
    for t in tags.iter().filter(|t| t.kind == 8 || t.kind == 9) {
        p.send(t, t.ts + offset).unwrap();
    }
}

fn stored(host: &Host, stream: &str) -> usize {
    host.snapshots("localhost", "live", Some(stream)).iter().filter(|r| r["is_overlay"] == false).count()
}

fn wait_reloads(host: &Host, n: usize) {
    host.wait_for("SIGHUP reload", Duration::from_secs(10), || {
        host.log().matches("SIGHUP: config reloaded").count() >= n
    });
}

#[test]
fn publish_auth_type_a_and_key_rotation_by_sighup() {
    let keys = tempfile::tempdir().unwrap();
    let (old, new) = (keys.path().join("old.key"), keys.path().join("new.key"));
    let (old_key, new_key) = ("OldPrivateKey0123456", "NewPrivateKey6543210");
    std::fs::write(&old, old_key).unwrap();
    std::fs::write(&new, new_key).unwrap();
    let auth = |primary: &std::path::Path, secondary: Option<&std::path::Path>| {
        let mut s = format!("{{ type = \"a\", key_file = \"{}\", ttl = \"30m\"", primary.display());
        if let Some(sec) = secondary {
            s += &format!(", secondary_key_file = \"{}\"", sec.display());
        }
        s + " }"
    };
    let spec = DomainSpec { publish_auth: Some(auth(&old, None)), ..DomainSpec::new("localhost") };
    let host = Host::start(&[spec], 1);
    let tags = read_flv(&Clip { bframes: false, ..Clip::new(320, 180, 12, 1) }.flv());
    let publish = |stream: &str, key: Option<String>| {
        let mut p = Publisher::connect(host.rtmp_port, "live").unwrap();
        let name = match key {
            Some(k) => format!("{stream}?auth_key={k}"),
            None => stream.to_owned(),
        };
        let ok = p.publish(&name).unwrap();
        (ok, p)
    };
    let now = unix_now();
    assert!(!publish("s", None).0, "no auth_key");
    assert!(!publish("s", Some(auth_key("live", "s", "WrongKey000000000000", now))).0, "wrong key");
    assert!(!publish("s", Some(auth_key("live", "other", old_key, now))).0, "signed for another stream");
    assert!(!publish("s", Some(auth_key("live", "s", old_key, now - 31 * 60))).0, "expired");
    assert!(!publish("s", Some("garbage".into())).0, "malformed");
    assert!(host.log().contains("auth_key has expired"), "the refusal says why");

    let (ok, mut live) = publish("s", Some(auth_key("live", "s", old_key, now)));
    assert!(ok, "signed with the key: {}", host.log());
    send_clip(&mut live, &tags, 0);
    host.wait_for("3 snapshots", Duration::from_secs(30), || stored(&host, "s") >= 3);

    // Rotate: the new key becomes primary, the old one secondary. The live
    // publisher keeps its session.
    let config = std::fs::read_to_string(&host.config_path).unwrap();
    std::fs::write(&host.config_path, config.replace(&auth(&old, None), &auth(&new, Some(&old)))).unwrap();
    host.reload();
    wait_reloads(&host, 1);
    send_clip(&mut live, &tags, 12_000);
    // The clip is 12 s: seconds 15 and 20 of the grid.
    host.wait_for("5 snapshots after the reload", Duration::from_secs(30), || stored(&host, "s") >= 5);
    let now = unix_now();
    assert!(publish("t1", Some(auth_key("live", "t1", new_key, now))).0, "new primary key");
    assert!(publish("t2", Some(auth_key("live", "t2", old_key, now))).0, "old key as secondary");

    // Retire the old key.
    let config = std::fs::read_to_string(&host.config_path).unwrap();
    std::fs::write(&host.config_path, config.replace(&auth(&new, Some(&old)), &auth(&new, None))).unwrap();
    host.reload();
    wait_reloads(&host, 2);
    assert!(!publish("t3", Some(auth_key("live", "t3", old_key, now))).0, "retired key");
    assert!(publish("t4", Some(auth_key("live", "t4", new_key, now))).0, "current key");

    // A broken file changes nothing.
    std::fs::write(&host.config_path, "version = 1\n[server]\nbogus = true\n").unwrap();
    host.reload();
    host.wait_for("reload refused", Duration::from_secs(10), || host.log().contains("SIGHUP: config not reloaded"));
    assert!(publish("t5", Some(auth_key("live", "t5", new_key, now))).0, "the old config stays in force");
    send_clip(&mut live, &tags, 24_000);
    host.wait_for("8 snapshots", Duration::from_secs(30), || stored(&host, "s") >= 8);
}

/// Publishes a looped clip at its real pace in a thread, for `seconds`.
fn push_paced(port: u16, app: &str, stream: &str, seconds: u32) -> std::thread::JoinHandle<()> {
    let tags = read_flv(&Clip { bframes: false, ..Clip::new(160, 120, 30, 1) }.flv());
    let (app, stream) = (app.to_owned(), stream.to_owned());
    std::thread::spawn(move || {
        let mut p = Publisher::connect(port, &app).unwrap();
        assert!(p.publish(&stream).unwrap());
        let start = Instant::now();
        'outer: for lap in 0.. {
            for t in tags.iter().filter(|t| t.kind == 8 || t.kind == 9) {
                let ts = lap * 30_000 + t.ts;
                if ts >= seconds * 1000 {
                    break 'outer;
                }
                let due = start + Duration::from_millis(u64::from(ts));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if p.send(t, ts).is_err() {
                    return; // the host closed the connection
                }
            }
        }
    })
}

#[test]
fn snapshot_now_and_apply_immediately() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let base = "/v1/domains/localhost/snapshot-configs";
    let tpl = json!({"app_name": "cam", "time_interval": 3600, "storage": "store",
                     "overwrite_object": "{AppName}/{StreamName}.jpg",
                     "sequence_object": "{AppName}/{StreamName}/{Sequence}.jpg"});
    assert_eq!(host.api("POST", base, Some(tpl)).0, 201);
    let pusher = push_paced(host.rtmp_port, "cam", "s1", 28);
    let count = || host.snapshots("localhost", "cam", Some("s1")).iter().filter(|r| r["is_overlay"] == false).count();
    host.wait_for("the first snapshot", Duration::from_secs(10), || count() == 1);
    std::thread::sleep(Duration::from_millis(2500));

    // Now: the next keyframe, answered with its records; the grid stays.
    let (status, v) = host.api("POST", "/v1/domains/localhost/streams/cam/s1/snapshot", None);
    assert_eq!(status, 200, "{v}");
    let items = v["snapshots"].as_array().unwrap();
    assert_eq!(items.len(), 2, "both modes: {v}");
    let seq = items.iter().find(|i| i["is_overlay"] == false).unwrap();
    assert_eq!(seq["object"], "cam/s1/1.jpg", "the next {{Sequence}}");
    let second = decode(&host.objects("localhost").get(seq["object"].as_str().unwrap())).grey_second();
    assert!((2..=4).contains(&second), "a keyframe from about now, not the grid: second {second}");
    assert_eq!(count(), 2);

    let (_, streams) = host.api("GET", "/v1/domains/localhost/streams", None);
    let s = &streams["streams"][0];
    assert_eq!((s["app"].as_str(), s["width"].as_u64(), s["height"].as_u64()), (Some("cam"), Some(160), Some(120)));
    assert_eq!((s["template"].as_str(), s["time_interval"].as_u64()), (Some("cam"), Some(3600)));
    assert_eq!((s["codec"].as_str(), s["snapshots"].as_u64()), (Some("h264"), Some(2)));
    assert!(s["last_snapshot_time"].is_string());

    // A change applies from the next publish, unless apply=immediately.
    assert_eq!(host.api("PATCH", &format!("{base}/cam"), Some(json!({"time_interval": 5}))).0, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count(), 2, "the live stream keeps the template it started with");
    let (status, v) = host.api("PATCH", &format!("{base}/cam?apply=immediately"), Some(json!({"time_interval": 5})));
    assert_eq!((status, v["replanned_streams"].as_u64()), (200, Some(1)), "{v}");
    host.wait_for("snapshots every 5 s", Duration::from_secs(15), || count() >= 4);
    let (_, streams) = host.api("GET", "/v1/domains/localhost/streams", None);
    assert_eq!(streams["streams"][0]["time_interval"], 5);

    assert_error(host.api("POST", "/v1/domains/localhost/streams/cam/nope/snapshot", None), 404, "StreamNotLive");
    assert_error(
        host.api("POST", "/v1/domains/localhost/snapshot-configs?apply=later", Some(json!({}))),
        400,
        "InvalidParameter.Apply",
    );
    pusher.join().unwrap();
}

#[test]
fn api_made_domain_ingests_serves_images_and_force_deletes() {
    let host = Host::start(&[DomainSpec::new("localhost")], 1);
    let dir = host.dir.path().join("objects-b");
    // A null publish_auth is "off", as absent (documented so).
    let body = json!({"storage": {"s": {"type": "local", "path": dir}}, "publish_auth": null});
    assert_eq!(host.api("PUT", "/v1/domains/b.example", Some(body)).0, 201);
    // A null optional field of a template is absent (documented so).
    let tpl = json!({"app_name": "*", "time_interval": 5, "storage": "s", "callback": null, "jpeg_quality": null,
                     "overwrite_object": "{Domain}/{StreamName}.jpg", "sequence_object": "{StreamName}/{Sequence}.jpg"});
    assert_eq!(host.api("POST", "/v1/domains/b.example/snapshot-configs", Some(tpl)).0, 201);
    // Published to the new domain by vhost, at real pace.
    let pusher = push_paced(host.rtmp_port, "live?vhost=b.example", "cam", 14);
    let count = || host.snapshots("b.example", "live", Some("cam")).len();
    host.wait_for("snapshots in the API-made domain", Duration::from_secs(15), || count() >= 3);
    assert!(dir.join("b.example/cam.jpg").exists() && dir.join("cam/0.jpg").exists());

    // Images through the host, with validators.
    let path = "/v1/domains/b.example/streams/live/cam/latest.jpg";
    let (status, jpg) = host.raw_request(Some(TOKEN), "GET", path, None);
    assert_eq!(status, 200);
    assert_eq!(decode(&jpg).width, 160);
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let url = format!("http://127.0.0.1:{}{path}", host.http_port);
    let resp = agent.get(&url).header("Authorization", &format!("Bearer {TOKEN}")).call().unwrap();
    let etag = resp.headers().get("etag").expect("an ETag").to_str().unwrap().to_owned();
    assert_eq!(resp.headers().get("cache-control").unwrap(), "private, no-cache", "the overwrite image changes");
    let resp = agent
        .get(&url)
        .header("Authorization", &format!("Bearer {TOKEN}"))
        .header("If-None-Match", &etag)
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 304);
    let seq = host.snapshots("b.example", "live", Some("cam")).into_iter().find(|r| r["is_overlay"] == false).unwrap();
    let resp = agent.get(seq["url"].as_str().unwrap()).call().unwrap();
    assert_eq!(resp.status().as_u16(), 200, "signed URL without a token");
    assert_eq!(resp.headers().get("cache-control").unwrap(), "private, max-age=31536000, immutable");

    // Live streams block a delete unless forced; forced, files go too.
    assert_error(host.api("DELETE", "/v1/domains/b.example", None), 409, "StreamsLive");
    let (status, v) = host.api("DELETE", "/v1/domains/b.example?force=true&remove_files=true", None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["streams_disconnected"], 1);
    assert!(v["records_deleted"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["files_deleted"], v["records_deleted"]);
    assert!(crate::harness::files(&dir).is_empty(), "objects removed: {:?}", crate::harness::files(&dir));
    assert_error(host.api("GET", "/v1/domains/b.example/streams", None), 404, "DomainNotFound");
    let _ = pusher.join(); // the host closed its connection
    host.wait_for("the publisher's end logged", Duration::from_secs(5), || {
        host.log().contains("its domain was deleted")
    });
    let (_, metrics) = host.raw_request(Some(crate::harness::TOKEN), "GET", "/metrics", None);
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(
            r#"edgesnap_http_request_seconds_count{method="DELETE",route="/v1/domains/{domain}",status="409"} 1"#
        ),
        "per-route latency in /metrics"
    );
}
