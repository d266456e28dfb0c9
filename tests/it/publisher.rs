//! A minimal RTMP publisher for streams no encoder would send: crafted
//! frames, timestamp jumps, silence with the socket held open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use edgesnap_testkit::rtmp::{self, CHUNK};
pub use edgesnap_testkit::rtmp::{handshake, message};

use crate::media::Tag;

pub struct Publisher {
    sock: TcpStream,
    seen: Vec<u8>,
}

impl Publisher {
    /// Connects, handshakes and sends `connect` + `createStream`.
    pub fn connect(port: u16, app: &str) -> std::io::Result<Publisher> {
        let mut sock = handshake(port)?;
        sock.write_all(&rtmp::connect(app, &format!("rtmp://127.0.0.1:{port}/{app}")))?;
        Ok(Publisher { sock, seen: Vec::new() })
    }

    /// [`Publisher::connect`] as an Enhanced RTMP client that may send `fourccs`.
    pub fn connect_enhanced(port: u16, app: &str, fourccs: &[&str]) -> std::io::Result<Publisher> {
        let mut sock = handshake(port)?;
        sock.write_all(&rtmp::connect_with_fourccs(app, &format!("rtmp://127.0.0.1:{port}/{app}"), fourccs))?;
        Ok(Publisher { sock, seen: Vec::new() })
    }

    /// Sends `publish`; true when the host answers NetStream.Publish.Start.
    pub fn publish(&mut self, name: &str) -> std::io::Result<bool> {
        self.sock.write_all(&rtmp::publish(name))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if contains(&self.seen, b"NetStream.Publish.Start") {
                return Ok(true);
            }
            if contains(&self.seen, b"NetStream.Publish.BadName") {
                return Ok(false);
            }
            let mut buf = [0u8; 4096];
            match self.sock.read(&mut buf) {
                Ok(0) => return Ok(false),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Whether the host's answers so far contain `text` (a refusal's description).
    pub fn said(&self, text: &str) -> bool {
        contains(&self.seen, text.as_bytes())
    }

    pub fn send(&mut self, tag: &Tag, ts: u32) -> std::io::Result<()> {
        let csid = if tag.kind == 8 { 4 } else { 6 };
        self.write_message(csid, tag.kind, 1, ts, &tag.data)
    }

    /// Sends raw bytes (for malformed input).
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// True when the host has closed the connection (read returns EOF or reset).
    pub fn closed_by_host(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }

    fn write_message(&mut self, csid: u8, kind: u8, stream: u32, ts: u32, payload: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(&message(csid, kind, stream, ts, payload, CHUNK))
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
