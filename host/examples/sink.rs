//! The receive floor for `scripts/bench.py`: an RTMP endpoint that does
//! nothing but take the bytes. It answers the handshake, tells the load
//! generator its publish started, then reads every connection into a
//! 64 KiB buffer and drops what it read. Its CPU is what the kernel and a
//! minimal reader spend receiving the streams; the benchmark reports it
//! beside the decode floor (BENCHMARKS.md).
//!
//! `sink PORT_FILE`: listens on 127.0.0.1:0 and writes the bound port to
//! PORT_FILE; runs until killed.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the load generator waits for after `publish` (it looks for the code only).
const STARTED: &[u8] = b"NetStream.Publish.Start";

async fn serve(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut c0c1 = [0u8; 1537];
    s.read_exact(&mut c0c1).await?;
    // S0, S1 (zeros), S2 (echo of C1).
    let mut reply = vec![3u8];
    reply.extend_from_slice(&[0u8; 1536]);
    reply.extend_from_slice(&c0c1[1..]);
    s.write_all(&reply).await?;
    let mut buf = vec![0u8; 64 << 10];
    let mut answered = false;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        if !answered {
            // C2, connect and publish arrive together; one answer is enough.
            s.write_all(STARTED).await?;
            answered = true;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port_file = std::env::args().nth(1).expect("usage: sink PORT_FILE");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(&port_file, listener.local_addr()?.port().to_string())?;
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = serve(socket).await;
        });
    }
}
