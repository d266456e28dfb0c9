//! An RTMP publisher's bytes: the handshake, messages as chunks, and the
//! AMF0 commands of a publish (`connect`, `createStream`, `publish`).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The chunk size a publisher announces with SetChunkSize.
pub const CHUNK: usize = 4096;

/// C0 + C1 of the simple handshake.
pub fn c0c1() -> Vec<u8> {
    let mut out = vec![3u8];
    out.extend(std::iter::repeat_n(7u8, 1536));
    out
}

/// Connects to 127.0.0.1:`port` and completes the handshake; read timeout
/// 5 s, write timeout 10 s.
pub fn handshake(port: u16) -> std::io::Result<TcpStream> {
    let mut sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))?;
    sock.write_all(&c0c1())?;
    let mut s = vec![0u8; 1 + 2 * 1536];
    sock.read_exact(&mut s)?;
    sock.write_all(&s[1..1537])?; // C2 echoes S1
    Ok(sock)
}

/// One message as chunks of `chunk` bytes on chunk stream `csid` (< 64).
pub fn message(csid: u8, kind: u8, stream: u32, ts: u32, payload: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    write_message(&mut out, csid, kind, stream, ts, payload, chunk);
    out
}

/// [`message`], appended to `out`.
pub fn write_message(out: &mut Vec<u8>, csid: u8, kind: u8, stream: u32, ts: u32, payload: &[u8], chunk: usize) {
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
}

pub fn amf_string(out: &mut Vec<u8>, s: &str) {
    out.push(2);
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub fn amf_number(out: &mut Vec<u8>, n: f64) {
    out.push(0);
    out.extend_from_slice(&n.to_be_bytes());
}

/// SetChunkSize([`CHUNK`]), `connect` (app and tcUrl) and `createStream`,
/// as one write.
pub fn connect(app: &str, tc_url: &str) -> Vec<u8> {
    connect_with_fourccs(app, tc_url, &[])
}

/// [`connect`], its command object also naming the Enhanced RTMP FourCCs
/// the client may send (`fourCcList`, a strict array) when there are any.
pub fn connect_with_fourccs(app: &str, tc_url: &str, fourccs: &[&str]) -> Vec<u8> {
    let mut out = message(2, 1, 0, 0, &(CHUNK as u32).to_be_bytes(), 128);
    let mut cmd = Vec::new();
    amf_string(&mut cmd, "connect");
    amf_number(&mut cmd, 1.0);
    cmd.push(3);
    for (k, v) in [("app", app), ("tcUrl", tc_url)] {
        cmd.extend_from_slice(&(k.len() as u16).to_be_bytes());
        cmd.extend_from_slice(k.as_bytes());
        amf_string(&mut cmd, v);
    }
    if !fourccs.is_empty() {
        cmd.extend_from_slice(&10u16.to_be_bytes());
        cmd.extend_from_slice(b"fourCcList");
        cmd.push(0x0a);
        cmd.extend_from_slice(&(fourccs.len() as u32).to_be_bytes());
        for f in fourccs {
            amf_string(&mut cmd, f);
        }
    }
    cmd.extend_from_slice(&[0, 0, 9]);
    out.extend(message(3, 20, 0, 0, &cmd, CHUNK));
    let mut cmd = Vec::new();
    amf_string(&mut cmd, "createStream");
    amf_number(&mut cmd, 2.0);
    cmd.push(5);
    out.extend(message(3, 20, 0, 0, &cmd, CHUNK));
    out
}

/// `publish` of `name` on message stream 1.
pub fn publish(name: &str) -> Vec<u8> {
    let mut cmd = Vec::new();
    amf_string(&mut cmd, "publish");
    amf_number(&mut cmd, 3.0);
    cmd.push(5);
    amf_string(&mut cmd, name);
    amf_string(&mut cmd, "live");
    message(3, 20, 1, 0, &cmd, CHUNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_chunked_with_type_3_headers() {
        let m = message(4, 9, 1, 40, &[7u8; 300], 128);
        assert_eq!(m.len(), 12 + 300 + 2);
        assert_eq!((m[0], m[12 + 128], m[12 + 128 + 1 + 128]), (4, 0xc4, 0xc4));
        let ext = message(4, 9, 1, 0x0100_0000, &[7u8; 10], 128);
        assert_eq!(&ext[1..4], &[0xff, 0xff, 0xff]);
        assert_eq!(&ext[12..16], &0x0100_0000u32.to_be_bytes());
    }
}
