//! The host's listeners: bound with a retry, then announced (a file in
//! `data_dir` and systemd's readiness notification) with the addresses the
//! OS gave, so a config may say port 0 and whoever waits reads the port back.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Written to `data_dir` once the host serves, removed when it stops:
/// `{"pid": N, "rtmp": "ip:port", "http": "ip:port"}`.
pub const LISTENING_FILE: &str = "listening.json";

/// How long a taken address is retried before the start fails.
const BIND_RETRY_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("listen for {what} on {addr}: {source}")]
pub struct BindError {
    what: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds a listener. A taken address is retried for 5 s: a restart on a
/// fixed port may find it held a moment longer by the process before it.
pub async fn bind(addr: SocketAddr, what: &'static str) -> Result<tokio::net::TcpListener, BindError> {
    let deadline = Instant::now() + BIND_RETRY_FOR;
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tracing::warn!(%addr, "{what} address in use; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(source) => return Err(BindError { what, addr, source }),
        }
    }
}

/// Tells whoever waits for the host that it serves: writes `path`
/// atomically, then notifies systemd (`Type=notify`) when started by it.
pub fn announce(path: &Path, rtmp: SocketAddr, http: SocketAddr) -> std::io::Result<()> {
    let body = serde_json::json!({"pid": std::process::id(), "rtmp": rtmp.to_string(), "http": http.to_string()});
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)?;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_address_is_retried_until_it_is_free() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(700));
            drop(held);
        });
        let l = bind(addr, "RTMP").await.expect("bound once the holder let go");
        assert_eq!(l.local_addr().unwrap(), addr);
        release.join().unwrap();
    }

    #[tokio::test]
    async fn an_address_held_past_the_retry_fails_naming_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let e = bind(addr, "HTTP").await.unwrap_err().to_string();
        assert!(e.starts_with(&format!("listen for HTTP on {addr}: ")), "{e}");
    }

    #[tokio::test]
    async fn port_zero_is_announced_as_bound() {
        let dir = tempfile::tempdir().unwrap();
        let (r, h) = (
            bind("127.0.0.1:0".parse().unwrap(), "RTMP").await.unwrap(),
            bind("127.0.0.1:0".parse().unwrap(), "HTTP").await.unwrap(),
        );
        let path = dir.path().join(LISTENING_FILE);
        announce(&path, r.local_addr().unwrap(), h.local_addr().unwrap()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["rtmp"], r.local_addr().unwrap().to_string());
        assert_ne!(r.local_addr().unwrap().port(), 0);
        assert_eq!(v["http"], h.local_addr().unwrap().to_string());
    }
}
