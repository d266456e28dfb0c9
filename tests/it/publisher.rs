//! A minimal RTMP publisher for streams no encoder would send: crafted
//! frames, timestamp jumps, silence with the socket held open.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::media::Tag;

pub struct Publisher {
    sock: TcpStream,
    seen: Vec<u8>,
}

fn amf_string(out: &mut Vec<u8>, s: &str) {
    out.push(2);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn amf_number(out: &mut Vec<u8>, n: f64) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

const CHUNK: usize = 4096;

impl Publisher {
    /// Connects, handshakes and sends `connect` + `createStream`.
    pub fn connect(port: u16, app: &str) -> std::io::Result<Publisher> {
        let sock = handshake(port)?;
        let mut p = Publisher { sock, seen: Vec::new() };
        p.write_message(2, 1, 0, 0, &(CHUNK as u32).to_be_bytes())?;
        let mut cmd = Vec::new();
        amf_string(&mut cmd, "connect");
        amf_number(&mut cmd, 1.0);
        cmd.push(3);
        for (k, v) in [("app", app.to_owned()), ("tcUrl", format!("rtmp://127.0.0.1:{port}/{app}"))] {
            cmd.extend_from_slice(&(k.len() as u16).to_be_bytes());
            cmd.extend_from_slice(k.as_bytes());
            amf_string(&mut cmd, &v);
        }
        cmd.extend_from_slice(&[0, 0, 9]);
        p.write_message(3, 20, 0, 0, &cmd)?;
        let mut cmd = Vec::new();
        amf_string(&mut cmd, "createStream");
        amf_number(&mut cmd, 2.0);
        cmd.push(5);
        p.write_message(3, 20, 0, 0, &cmd)?;
        Ok(p)
    }

    /// Sends `publish`; true when the host answers NetStream.Publish.Start.
    pub fn publish(&mut self, name: &str) -> std::io::Result<bool> {
        let mut cmd = Vec::new();
        amf_string(&mut cmd, "publish");
        amf_number(&mut cmd, 3.0);
        cmd.push(5);
        amf_string(&mut cmd, name);
        amf_string(&mut cmd, "live");
        self.write_message(3, 20, 1, 0, &cmd)?;
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
        let chunk = if kind == 1 { 128 } else { CHUNK };
        self.sock.write_all(&message(csid, kind, stream, ts, payload, chunk))
    }
}

/// Connects and completes the RTMP handshake; read timeout 5 s, write timeout 10 s.
pub fn handshake(port: u16) -> std::io::Result<TcpStream> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut c0c1 = vec![3u8];
    c0c1.extend(std::iter::repeat_n(7u8, 1536));
    sock.write_all(&c0c1)?;
    let mut s = vec![0u8; 1 + 2 * 1536];
    sock.read_exact(&mut s)?;
    sock.write_all(&s[1..1537])?; // C2 echoes S1
    Ok(sock)
}

/// One RTMP message as chunks of `chunk` bytes on chunk stream `csid` (< 64).
pub fn message(csid: u8, kind: u8, stream: u32, ts: u32, payload: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    let ext = ts >= 0xff_ffff;
    out.push(csid);
    out.extend_from_slice(&ts.min(0xff_ffff).to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.extend_from_slice(&stream.to_le_bytes());
    if ext {
        out.extend_from_slice(&ts.to_be_bytes());
    }
    for (i, piece) in payload.chunks(chunk).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid);
            if ext {
                out.extend_from_slice(&ts.to_be_bytes());
            }
        }
        out.extend_from_slice(piece);
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
