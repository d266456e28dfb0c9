//! The RTMP chunk layer: reassembles messages from interleaved chunk streams
//! (sans-IO, over a byte buffer) and splits outgoing messages into chunks.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One reassembled RTMP message.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) type_id: u8,
    pub(crate) stream_id: u32,
    pub(crate) timestamp: u32,
    pub(crate) payload: Bytes,
}

pub(crate) mod types {
    pub(crate) const SET_CHUNK_SIZE: u8 = 1;
    pub(crate) const ABORT: u8 = 2;
    pub(crate) const ACK: u8 = 3;
    pub(crate) const USER_CONTROL: u8 = 4;
    pub(crate) const WINDOW_ACK_SIZE: u8 = 5;
    pub(crate) const SET_PEER_BANDWIDTH: u8 = 6;
    pub(crate) const AUDIO: u8 = 8;
    pub(crate) const VIDEO: u8 = 9;
    pub(crate) const DATA_AMF3: u8 = 15;
    pub(crate) const COMMAND_AMF3: u8 = 17;
    pub(crate) const DATA_AMF0: u8 = 18;
    pub(crate) const COMMAND_AMF0: u8 = 20;
    pub(crate) const AGGREGATE: u8 = 22;
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum ChunkError {
    #[error("chunk of stream {0} continues a message that never started")]
    NoHeader(u32),
    #[error("message of {0} bytes exceeds the {1} byte limit for its type (media may be larger once publishing)")]
    TooLarge(u32, u32),
    #[error("more than {MAX_CHUNK_STREAMS} chunk streams in use")]
    TooManyStreams,
    #[error("chunk size {0} is out of range")]
    BadChunkSize(u32),
}

/// The largest media message accepted once publishing (a 4K IDR is a few MB).
pub(crate) const MAX_MESSAGE: u32 = 8 << 20;
/// The largest message of any other type, or of any type before publishing:
/// commands and metadata are a few hundred bytes.
pub(crate) const MAX_CONTROL_MESSAGE: u32 = 64 << 10;
/// Up to this much of a message's declared length is allocated up front; the
/// rest grows with the bytes that actually arrive.
const RESERVE_AHEAD: usize = 256 << 10;
const MAX_CHUNK_STREAMS: usize = 64;

#[derive(Default)]
struct ChunkStream {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The extended-timestamp value of the last header, if it had one.
    extended: Option<u32>,
    has_header: bool,
    partial: BytesMut,
}

pub(crate) struct ChunkReader {
    chunk_size: usize,
    /// By chunk stream id; a handful in practice, so a scan beats hashing.
    streams: Vec<(u32, ChunkStream)>,
    /// The largest audio, video or aggregate message accepted now.
    media_max: u32,
    /// Bytes held in unfinished messages, over all chunk streams.
    buffered: usize,
}

impl ChunkReader {
    pub(crate) fn new() -> Self {
        ChunkReader { chunk_size: 128, streams: Vec::new(), media_max: MAX_CONTROL_MESSAGE, buffered: 0 }
    }

    /// From now on media messages may be up to [`MAX_MESSAGE`] (the peer is publishing).
    pub(crate) fn allow_media(&mut self) {
        self.media_max = MAX_MESSAGE;
    }

    /// Bytes held in unfinished messages.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered
    }

    pub(crate) fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        let size = size & 0x7fff_ffff;
        if !(1..=0xff_ffff).contains(&size) {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    pub(crate) fn abort(&mut self, csid: u32) {
        if let Some((_, s)) = self.streams.iter_mut().find(|(id, _)| *id == csid) {
            self.buffered -= s.partial.len();
            s.partial = BytesMut::new();
        }
    }

    /// Consumes complete chunks from `buf`; returns the next completed
    /// message, or `None` when `buf` holds no complete chunk any more.
    pub(crate) fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, ChunkError> {
        loop {
            let Some((csid, basic_len)) = basic_header(buf) else {
                return Ok(None);
            };
            let fmt = buf[0] >> 6;
            let header_len = [11, 7, 3, 0][fmt as usize];
            if buf.len() < basic_len + header_len {
                return Ok(None);
            }
            let i = match self.streams.iter().position(|(id, _)| *id == csid) {
                Some(i) => i,
                None if self.streams.len() >= MAX_CHUNK_STREAMS => return Err(ChunkError::TooManyStreams),
                None => {
                    self.streams.push((csid, ChunkStream::default()));
                    self.streams.len() - 1
                }
            };
            let cs = &mut self.streams[i].1;
            if fmt != 0 && !cs.has_header {
                return Err(ChunkError::NoHeader(csid));
            }
            let h = &buf[basic_len..basic_len + header_len];
            let ts_field = if header_len >= 3 { u32::from_be_bytes([0, h[0], h[1], h[2]]) } else { 0 };
            let mut length = cs.length;
            if header_len >= 7 {
                length = u32::from_be_bytes([0, h[3], h[4], h[5]]);
                let max = match h[6] {
                    types::AUDIO | types::VIDEO | types::AGGREGATE => self.media_max,
                    _ => MAX_CONTROL_MESSAGE,
                };
                if length > max {
                    return Err(ChunkError::TooLarge(length, max));
                }
            }
            let mut pos = basic_len + header_len;
            // Extended timestamp: present when the field is 0xffffff, and
            // repeated on type-3 chunks of such a stream (when the peer sends it).
            let extended = if header_len >= 3 {
                if ts_field == 0xff_ffff {
                    if buf.len() < pos + 4 {
                        return Ok(None);
                    }
                    let v = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap());
                    pos += 4;
                    Some(v)
                } else {
                    None
                }
            } else if let Some(prev) = cs.extended {
                if buf.len() < pos + 4 {
                    return Ok(None);
                }
                if u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) == prev {
                    pos += 4;
                }
                Some(prev)
            } else {
                None
            };
            // Only a type-3 chunk continues a message: any other header starts
            // a new one, and what was buffered of the old one is dropped.
            let dropped = if fmt != 3 && !cs.partial.is_empty() { cs.partial.len() } else { 0 };
            let starting = cs.partial.is_empty() || fmt != 3;
            let remaining = length as usize - if starting { 0 } else { cs.partial.len() };
            let take = remaining.min(self.chunk_size);
            if buf.len() < pos + take {
                return Ok(None);
            }
            // The chunk is complete: commit its header.
            let ts_value = extended.unwrap_or(ts_field);
            match fmt {
                0 => {
                    cs.timestamp = ts_value;
                    cs.delta = 0;
                    cs.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
                }
                1 | 2 => {
                    cs.delta = ts_value;
                    cs.timestamp = cs.timestamp.wrapping_add(ts_value);
                }
                _ => {
                    if starting && cs.has_header {
                        cs.timestamp = cs.timestamp.wrapping_add(cs.delta);
                    }
                }
            }
            if header_len >= 7 {
                cs.length = length;
                cs.type_id = h[6];
            }
            cs.extended = extended;
            cs.has_header = true;
            if dropped > 0 {
                cs.partial = BytesMut::new();
                self.buffered -= dropped;
            }
            if starting && length == 0 {
                buf.advance(pos);
                continue;
            }
            buf.advance(pos);
            if starting && take == length as usize {
                // Whole message in one chunk: no copy.
                let payload = buf.split_to(take).freeze();
                return Ok(Some(Message {
                    type_id: cs.type_id,
                    stream_id: cs.stream_id,
                    timestamp: cs.timestamp,
                    payload,
                }));
            }
            if starting {
                cs.partial.reserve((length as usize).min(RESERVE_AHEAD));
            }
            cs.partial.extend_from_slice(&buf[..take]);
            self.buffered += take;
            buf.advance(take);
            if cs.partial.len() == length as usize {
                self.buffered -= cs.partial.len();
                let payload = std::mem::take(&mut cs.partial).freeze();
                return Ok(Some(Message {
                    type_id: cs.type_id,
                    stream_id: cs.stream_id,
                    timestamp: cs.timestamp,
                    payload,
                }));
            }
        }
    }
}

/// The chunk stream id and the basic header's length, if complete.
fn basic_header(buf: &[u8]) -> Option<(u32, usize)> {
    let b0 = *buf.first()?;
    match b0 & 0x3f {
        0 => Some((64 + u32::from(*buf.get(1)?), 2)),
        1 => Some((64 + u32::from(*buf.get(1)?) + 256 * u32::from(*buf.get(2)?), 3)),
        id => Some((u32::from(id), 1)),
    }
}

/// Appends `payload` as chunks of `chunk_size` on chunk stream `csid` (< 64).
pub(crate) fn write_message(
    out: &mut BytesMut,
    csid: u8,
    type_id: u8,
    stream_id: u32,
    timestamp: u32,
    payload: &[u8],
    chunk_size: usize,
) {
    debug_assert!((2..64).contains(&csid));
    let ts = timestamp.min(0xff_ffff);
    out.put_u8(csid);
    out.put_uint(u64::from(ts), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    let extended = timestamp >= 0xff_ffff;
    if extended {
        out.put_u32(timestamp);
    }
    for (i, piece) in payload.chunks(chunk_size).enumerate() {
        if i > 0 {
            out.put_u8(0xc0 | csid);
            if extended {
                out.put_u32(timestamp);
            }
        }
        out.put_slice(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(reader: &mut ChunkReader, bytes: &[u8]) -> Vec<Message> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed one byte at a time: every split point must work.
        for b in bytes {
            buf.put_u8(*b);
            while let Some(m) = reader.read(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert!(buf.is_empty());
        out
    }

    #[test]
    fn round_trip_with_small_and_extended_chunks() {
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut out = BytesMut::new();
        write_message(&mut out, 6, types::VIDEO, 1, 40, &payload, 128);
        write_message(&mut out, 6, types::VIDEO, 1, 0x0100_0000, &payload[..300], 128);
        write_message(&mut out, 4, types::AUDIO, 1, 7, b"abc", 128);
        let msgs = read_all(&mut ChunkReader::new(), &out);
        assert_eq!(msgs.len(), 3);
        assert_eq!(&msgs[0].payload[..], &payload[..]);
        assert_eq!(msgs[0].timestamp, 40);
        assert_eq!(msgs[1].timestamp, 0x0100_0000);
        assert_eq!(&msgs[1].payload[..], &payload[..300]);
        assert_eq!((msgs[2].type_id, msgs[2].timestamp, &msgs[2].payload[..]), (types::AUDIO, 7, &b"abc"[..]));
    }

    #[test]
    fn deltas_accumulate() {
        // fmt 0 at ts 100, then fmt 2 with delta 33, then fmt 3 reusing the delta.
        let mut bytes = vec![0x06, 0, 0, 100, 0, 0, 1, types::VIDEO, 1, 0, 0, 0, 0xaa];
        bytes.extend_from_slice(&[0x86, 0, 0, 33, 0xbb]);
        bytes.extend_from_slice(&[0xc6, 0xcc]);
        let msgs = read_all(&mut ChunkReader::new(), &bytes);
        let ts: Vec<u32> = msgs.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![100, 133, 166]);
    }

    #[test]
    fn bad_input() {
        let mut r = ChunkReader::new();
        let mut buf = BytesMut::from(&[0xc5u8, 1, 2, 3][..]);
        assert_eq!(r.read(&mut buf).unwrap_err(), ChunkError::NoHeader(5));
        let mut buf = BytesMut::from(&[0x05u8, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0][..]);
        assert!(matches!(ChunkReader::new().read(&mut buf), Err(ChunkError::TooLarge(_, MAX_CONTROL_MESSAGE))));
        assert!(ChunkReader::new().set_chunk_size(0).is_err());
    }

    /// A type-0 or type-1 chunk header on chunk stream 5.
    fn header(fmt: u8, length: u32, type_id: u8) -> Vec<u8> {
        let mut h = vec![(fmt << 6) | 5, 0, 0, 0];
        h.extend_from_slice(&length.to_be_bytes()[1..]);
        h.push(type_id);
        if fmt == 0 {
            h.extend_from_slice(&[1, 0, 0, 0]);
        }
        h
    }

    #[test]
    fn media_is_small_until_publishing() {
        let mut r = ChunkReader::new();
        let mut buf = BytesMut::from(&header(0, 100_000, types::VIDEO)[..]);
        assert_eq!(r.read(&mut buf).unwrap_err(), ChunkError::TooLarge(100_000, MAX_CONTROL_MESSAGE));
        let mut r = ChunkReader::new();
        r.allow_media();
        let mut buf = BytesMut::from(&header(0, 100_000, types::VIDEO)[..]);
        assert!(r.read(&mut buf).unwrap().is_none());
        // Commands stay small.
        let mut buf = BytesMut::from(&header(0, 100_000, types::COMMAND_AMF0)[..]);
        assert!(matches!(ChunkReader::new().read(&mut buf), Err(ChunkError::TooLarge(..))));
    }

    /// A one-chunk type-0 message of one byte on any chunk stream id (< 320).
    fn one_byte_message(csid: u32, byte: u8) -> Vec<u8> {
        let mut m = if csid < 64 { vec![csid as u8] } else { vec![0, (csid - 64) as u8] };
        m.extend_from_slice(&[0, 0, 0, 0, 0, 1, types::VIDEO, 1, 0, 0, 0, byte]);
        m
    }

    #[test]
    fn at_most_64_chunk_streams() {
        let mut r = ChunkReader::new();
        for csid in 2..2 + MAX_CHUNK_STREAMS as u32 {
            let mut buf = BytesMut::from(&one_byte_message(csid, csid as u8)[..]);
            let m = r.read(&mut buf).unwrap().expect("a message");
            assert_eq!(&m.payload[..], &[csid as u8], "chunk stream {csid}");
        }
        // A stream in use goes on; a 65th is refused.
        let mut buf = BytesMut::from(&one_byte_message(40, 7)[..]);
        assert_eq!(&r.read(&mut buf).unwrap().expect("a message").payload[..], &[7]);
        let mut buf = BytesMut::from(&one_byte_message(2 + MAX_CHUNK_STREAMS as u32, 0)[..]);
        assert_eq!(r.read(&mut buf).unwrap_err(), ChunkError::TooManyStreams);
    }

    #[test]
    fn a_new_header_mid_message_drops_the_old_message() {
        // 300 bytes of a 1000-byte message (chunk size 128: three chunks)...
        let mut r = ChunkReader::new();
        r.allow_media();
        let mut bytes = header(0, 1000, types::VIDEO);
        bytes.extend_from_slice(&[1; 128]);
        bytes.extend_from_slice(&[0xc5; 1]);
        bytes.extend_from_slice(&[2; 128]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(r.read(&mut buf).unwrap().is_none());
        assert_eq!(r.buffered(), 256);
        // ...then a type-1 header shorter than what is buffered (this
        // underflowed once): a new 10-byte message, the old one dropped.
        let mut bytes = header(1, 10, types::VIDEO);
        bytes.extend_from_slice(&[3; 10]);
        let mut buf = BytesMut::from(&bytes[..]);
        let m = r.read(&mut buf).unwrap().expect("the new message");
        assert_eq!(&m.payload[..], &[3; 10]);
        assert_eq!(r.buffered(), 0);
        // Abort releases what it drops.
        let mut bytes = header(0, 1000, types::VIDEO);
        bytes.extend_from_slice(&[1; 128]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(r.read(&mut buf).unwrap().is_none());
        assert_eq!(r.buffered(), 128);
        r.abort(5);
        assert_eq!(r.buffered(), 0);
    }
}
