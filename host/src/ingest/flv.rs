//! FLV video tag bodies (as carried in RTMP video messages): the AVC decoder
//! configuration, and keyframe access units checked and turned into the
//! Annex-B job a decoder is fed.

use bytes::Bytes;

/// What a video message holds.
#[derive(Debug)]
pub(crate) enum VideoTag {
    /// AVCDecoderConfigurationRecord: the stream's SPS and PPS.
    AvcConfig(AvcConfig),
    /// One access unit in length-prefixed NAL units.
    AvcFrame { keyframe: bool, nalus: Bytes },
    /// End of sequence, or a video info/command frame: nothing to do.
    Ignored,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum FlvError {
    #[error("video codec {0} is not supported (H.264 only; HEVC over Enhanced RTMP is planned)")]
    Unsupported(String),
    #[error("video tag truncated")]
    Truncated,
    #[error("AVC decoder configuration is malformed: {0}")]
    BadConfig(&'static str),
}

/// The parameter sets of a stream, from its own configuration record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AvcConfig {
    /// Bytes of each NAL length prefix in frames: 1, 2 or 4.
    pub(crate) length_size: usize,
    /// SPS and PPS NAL units in Annex-B form (start code before each).
    pub(crate) annexb: Bytes,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

pub(crate) fn parse_video(tag: &Bytes) -> Result<VideoTag, FlvError> {
    let b0 = *tag.first().ok_or(FlvError::Truncated)?;
    if b0 & 0x80 != 0 {
        // Enhanced RTMP: a FourCC follows the header byte.
        let fourcc = tag.get(1..5).ok_or(FlvError::Truncated)?;
        return Err(FlvError::Unsupported(format!("{:?} (Enhanced RTMP)", String::from_utf8_lossy(fourcc))));
    }
    let frame_type = b0 >> 4;
    let codec = b0 & 0x0f;
    if codec != 7 {
        let name = match codec {
            2 => "Sorenson H.263",
            3 => "Screen video",
            4 => "VP6",
            5 => "VP6 alpha",
            6 => "Screen video 2",
            12 => "HEVC (legacy codec id 12)",
            _ => "unknown",
        };
        return Err(FlvError::Unsupported(format!("{name} (FLV codec id {codec})")));
    }
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    if tag.len() < 5 {
        return Err(FlvError::Truncated);
    }
    match tag[1] {
        0 => Ok(VideoTag::AvcConfig(parse_config(&tag[5..])?)),
        1 => Ok(VideoTag::AvcFrame { keyframe: frame_type == 1, nalus: tag.slice(5..) }),
        _ => Ok(VideoTag::Ignored),
    }
}

fn parse_config(rec: &[u8]) -> Result<AvcConfig, FlvError> {
    use FlvError::BadConfig;
    if rec.len() < 7 {
        return Err(BadConfig("shorter than its fixed header"));
    }
    if rec[0] != 1 {
        return Err(BadConfig("configurationVersion is not 1"));
    }
    let length_size = usize::from(rec[4] & 3) + 1;
    if length_size == 3 {
        return Err(BadConfig("NAL length size 3 is invalid"));
    }
    let mut annexb = Vec::with_capacity(rec.len() + 16);
    let mut pos = 5;
    for (kind, mask, want_type) in [("SPS", 0x1f, 7u8), ("PPS", 0xff, 8u8)] {
        let count = usize::from(*rec.get(pos).ok_or(BadConfig("parameter set count missing"))? & mask);
        pos += 1;
        if count == 0 {
            return Err(BadConfig(if kind == "SPS" { "no SPS" } else { "no PPS" }));
        }
        for _ in 0..count {
            let len = rec.get(pos..pos + 2).ok_or(BadConfig("parameter set length missing"))?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            pos += 2;
            let nal = rec.get(pos..pos + len).ok_or(BadConfig("parameter set truncated"))?;
            if len == 0 || nal[0] & 0x1f != want_type {
                return Err(BadConfig("parameter set of the wrong NAL type"));
            }
            annexb.extend_from_slice(&START_CODE);
            annexb.extend_from_slice(nal);
            pos += len;
        }
    }
    Ok(AvcConfig { length_size, annexb: Bytes::from(annexb) })
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum KeyframeError {
    #[error("NAL unit lengths do not add up to the frame's size")]
    Lengths,
    #[error("keyframe holds no IDR slice")]
    NoIdr,
}

/// Checks a keyframe's NAL units and builds the decoder job: the stream's own
/// SPS + PPS followed by the access unit, in Annex-B. Lengths must add up
/// exactly and an IDR slice must be present; nothing else reaches a decoder.
pub(crate) fn keyframe_job(config: &AvcConfig, nalus: &[u8]) -> Result<Vec<u8>, KeyframeError> {
    let n = config.length_size;
    let mut out = Vec::with_capacity(config.annexb.len() + nalus.len() + 64);
    out.extend_from_slice(&config.annexb);
    let mut rest = nalus;
    let mut idr = false;
    while !rest.is_empty() {
        if rest.len() < n {
            return Err(KeyframeError::Lengths);
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        rest = &rest[n..];
        if len == 0 || len > rest.len() {
            return Err(KeyframeError::Lengths);
        }
        let nal = &rest[..len];
        match nal[0] & 0x1f {
            5 => idr = true,
            // In-band parameter sets would override the stream's own config.
            7..=9 => {
                rest = &rest[len..];
                continue;
            }
            _ => {}
        }
        out.extend_from_slice(&START_CODE);
        out.extend_from_slice(nal);
        rest = &rest[len..];
    }
    if !idr {
        return Err(KeyframeError::NoIdr);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_record() -> Vec<u8> {
        let mut r = vec![1, 0x64, 0, 0x1f, 0xff, 0xe1, 0, 3, 0x67, 1, 2, 1, 0, 2, 0x68, 9];
        r.truncate(16);
        r
    }

    #[test]
    fn config_and_keyframe() {
        let mut tag = vec![0x17, 0, 0, 0, 0];
        tag.extend(config_record());
        let VideoTag::AvcConfig(cfg) = parse_video(&Bytes::from(tag)).unwrap() else { panic!() };
        assert_eq!(cfg.length_size, 4);
        assert_eq!(&cfg.annexb[..], &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9]);

        let frame = [0, 0, 0, 2, 0x06, 0xaa, 0, 0, 0, 3, 0x65, 1, 2];
        let job = keyframe_job(&cfg, &frame).unwrap();
        assert_eq!(&job[13..], &[0, 0, 0, 1, 0x06, 0xaa, 0, 0, 0, 1, 0x65, 1, 2]);
    }

    #[test]
    fn bad_keyframes() {
        let cfg = AvcConfig { length_size: 4, annexb: Bytes::from_static(&[0, 0, 0, 1, 0x67]) };
        // length runs past the end
        assert_eq!(keyframe_job(&cfg, &[0, 0, 0, 9, 0x65, 1]), Err(KeyframeError::Lengths));
        // trailing bytes that are not a whole NAL
        assert_eq!(keyframe_job(&cfg, &[0, 0, 0, 1, 0x65, 0, 0]), Err(KeyframeError::Lengths));
        // a non-IDR slice flagged as keyframe
        assert_eq!(keyframe_job(&cfg, &[0, 0, 0, 2, 0x41, 1]), Err(KeyframeError::NoIdr));
        assert_eq!(keyframe_job(&cfg, &[]), Err(KeyframeError::NoIdr));
    }

    #[test]
    fn codecs() {
        assert!(matches!(parse_video(&Bytes::from_static(&[0x12, 0])), Err(FlvError::Unsupported(_))));
        assert!(matches!(
            parse_video(&Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1'])),
            Err(FlvError::Unsupported(_))
        ));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x17, 0, 0, 0, 0, 2])), Err(FlvError::BadConfig(_))));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x17])), Err(FlvError::Truncated)));
    }
}
