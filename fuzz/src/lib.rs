//! The fuzz targets as functions: each takes any bytes, must not panic, and
//! checks what must hold of its parser's answer. The binaries in `src/bin`
//! hand them AFL's inputs; the tests here replay the seed corpus and every
//! crash AFL ever found (`regressions/`), so a fixed crash stays fixed.

#![allow(dead_code)]

// The host's parsers, compiled from the host's own files.
#[path = "../../host/src/ingest/amf0.rs"]
mod amf0;
#[path = "../../host/src/ingest/chunk.rs"]
mod chunk;
#[path = "../../host/src/codec.rs"]
mod codec;
#[path = "../../host/src/ingest/flv.rs"]
mod flv;
#[path = "../../host/src/storage/keys.rs"]
mod keys;
#[path = "../../host/src/ingest/obu.rs"]
mod obu;
#[path = "../../host/src/config/template.rs"]
mod template;
#[path = "../../host/src/ingest/vp9.rs"]
mod vp9;

use bytes::{Bytes, BytesMut};

/// The chunk layer, fed in two pieces split where the first byte says,
/// media allowed or not as the second byte says: messages come out no
/// larger than the limits, and what it holds never exceeds what it was fed.
pub fn chunk_stream(data: &[u8]) {
    let [split, mode, rest @ ..] = data else { return };
    let mut reader = chunk::ChunkReader::new();
    if mode & 1 == 1 {
        reader.allow_media();
    }
    let cut = (*split as usize * rest.len()) / 255;
    let mut buf = BytesMut::new();
    let mut fed = 0;
    for piece in [&rest[..cut], &rest[cut..]] {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            match reader.read(&mut buf) {
                Ok(Some(m)) => {
                    let limit = match m.type_id {
                        8 | 9 | 22 if mode & 1 == 1 => chunk::MAX_MESSAGE,
                        _ => chunk::MAX_CONTROL_MESSAGE,
                    };
                    assert!(m.payload.len() <= limit as usize, "a message over its limit came out");
                }
                Ok(None) => break,
                Err(_) => return,
            }
            assert!(reader.buffered() + buf.len() <= fed, "holds more than it was fed");
        }
    }
}

/// AMF0 within a small budget: decoding what it encoded gives the same
/// bytes again (values compared by encoding: NaN is not equal to itself).
pub fn amf0_values(data: &[u8]) {
    let budget = amf0::Budget { max_elements: 256, max_depth: 16 };
    let Ok(values) = amf0::decode_all(data, budget) else { return };
    assert!(values.len() <= 256);
    let mut once = BytesMut::new();
    for v in &values {
        amf0::encode(&mut once, v);
    }
    // Re-encoding may need a larger budget only if encode added values; it must not.
    let again = amf0::decode_all(&once, budget).expect("what was encoded decodes");
    let mut twice = BytesMut::new();
    for v in &again {
        amf0::encode(&mut twice, v);
    }
    assert_eq!(once, twice);
}

/// An FLV video tag body (its length in the first two bytes, big-endian),
/// then NAL units: when the tag is a decoder configuration (H.264 or HEVC,
/// legacy or Enhanced RTMP), the NAL units are made into a keyframe job of
/// it, which starts with the stream's parameter sets.
pub fn flv_video(data: &[u8]) {
    let [hi, lo, rest @ ..] = data else { return };
    let n = (usize::from(*hi) << 8 | usize::from(*lo)).min(rest.len());
    let (tag, frame) = rest.split_at(n);
    let Ok(flv::VideoTag::Config(config)) = flv::parse_video(&Bytes::copy_from_slice(tag)) else {
        return;
    };
    let nal = matches!(config.codec, codec::Codec::H264 | codec::Codec::H265);
    assert!(if nal { matches!(config.length_size, 1 | 2 | 4) } else { config.length_size == 0 });
    if let Ok(job) = flv::keyframe_job(&config, config.codec, frame) {
        // AV1's sequence header may be the keyframe's own; its delimiter is the stream's.
        let opens = if config.codec == codec::Codec::Av1 { &config.headers[..2] } else { &config.headers[..] };
        assert!(job.starts_with(opens), "a job starts with the stream's headers");
        // (A keyframe's own AV1 sequence header may be shorter than the stream's.)
        assert!(job.len() > opens.len(), "and holds a picture");
    }
}

/// A snapshot template: checking it never panics, and rendering one that
/// passes with valid names gives a key the storage check takes.
pub fn template_render(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let format = if text.ends_with(".webp") { template::ImageFormat::Webp } else { template::ImageFormat::Jpg };
    let overwrite = template::check_overwrite_object(text, format).is_ok();
    let sequence = template::check_sequence_object(text, format).is_ok();
    if !(overwrite || sequence) {
        return;
    }
    let vars = template_vars::Vars {
        domain: "a.example",
        app: "live",
        stream: "cam-1",
        create_timestamp_ms: 1_764_057_600_123,
        sequence: 42,
    };
    let key = template_vars::render(text, &vars);
    assert!(keys::check(&key).is_ok(), "template {text:?} passed but renders to a refused key {key:?}");
}

/// A key as a plugin returned it: whatever the check passes is relative,
/// at most 1024 bytes, with no `..`, `.` or empty segment and no control
/// characters.
pub fn plugin_output(data: &[u8]) {
    let Ok(key) = std::str::from_utf8(data) else { return };
    if keys::check(key).is_ok() {
        assert!(!key.is_empty() && key.len() <= 1024 && !key.starts_with('/'));
        assert!(key.split('/').all(|s| !s.is_empty() && s != "." && s != ".."));
        assert!(!key.chars().any(char::is_control) && !key.contains('\\'));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every file of `corpus/{target}` and `regressions/{target}` through `f`.
    fn replay(target: &str, f: fn(&[u8])) {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).join(target);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries {
                let path = e.unwrap().path();
                f(&std::fs::read(&path).unwrap());
                n += 1;
            }
        }
        assert!(n > 0, "no seeds for {target}");
    }

    #[test]
    fn chunk() {
        replay("chunk", super::chunk_stream);
    }

    #[test]
    fn amf0() {
        replay("amf0", super::amf0_values);
    }

    #[test]
    fn flv() {
        replay("flv", super::flv_video);
    }

    #[test]
    fn template() {
        replay("template", super::template_render);
    }

    #[test]
    fn plugin_output() {
        replay("plugin_output", super::plugin_output);
    }
}
