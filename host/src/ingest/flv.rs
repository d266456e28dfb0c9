//! FLV video tag bodies (as carried in RTMP video messages), legacy and
//! Enhanced RTMP (the veovera spec): the decoder configuration records of
//! H.264 (`avcC`) and HEVC (`hvcC`) and keyframe access units checked and
//! turned into the Annex-B job a decoder is fed; AV1 (`obu.rs`) and VP9
//! (`vp9.rs`) the same way in their own forms.

use bytes::Bytes;

use super::{obu, vp9};
pub(crate) use crate::codec::Codec;

/// What a video message holds.
#[derive(Debug)]
pub(crate) enum VideoTag {
    /// A decoder configuration record: the stream's parameter sets.
    Config(VideoConfig),
    /// One access unit: length-prefixed NAL units (H.264, HEVC), OBUs
    /// (AV1) or a VP9 frame.
    Frame { codec: Codec, keyframe: bool, data: Bytes },
    /// End of sequence, metadata, or a video info/command frame: nothing to do.
    Ignored,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum FlvError {
    #[error("video codec {0} is not supported (H.264 and HEVC, legacy or Enhanced RTMP; AV1 and VP9, Enhanced RTMP)")]
    Unsupported(String),
    #[error("video tag truncated")]
    Truncated,
    #[error("{0} decoder configuration is malformed: {1}")]
    BadConfig(Codec, &'static str),
}

/// The parameter sets of a stream, from its own configuration record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VideoConfig {
    pub(crate) codec: Codec,
    /// Bytes of each NAL length prefix in frames: 1, 2 or 4 (0: AV1, VP9).
    pub(crate) length_size: usize,
    /// What the stream's decoder jobs start with: the parameter set NAL
    /// units in Annex-B form (start code before each), SPS and PPS, or VPS,
    /// SPS and PPS for HEVC; AV1: a temporal delimiter and the sequence
    /// header OBU (a keyframe's own replaces it); VP9: nothing.
    pub(crate) headers: Bytes,
}

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The Enhanced RTMP video FourCCs ingested (answered to a connect's `fourCcList`).
pub(crate) const FOURCCS: [&str; 4] = ["avc1", "hvc1", "av01", "vp09"];

/// Whether a video message is a coded frame that no snapshot needs looked
/// at: an inter frame (legacy H.264 or HEVC, or Enhanced RTMP coded frames).
pub(crate) fn is_inter_frame(tag: &[u8]) -> bool {
    match tag.first() {
        Some(&b0) if b0 & 0x80 != 0 => (b0 >> 4) & 0x07 == 2 && matches!(b0 & 0x0f, 1 | 3),
        Some(&b0) => b0 >> 4 == 2 && matches!(b0 & 0x0f, 7 | 12) && tag.get(1) == Some(&1),
        None => false,
    }
}

/// Whether a video message carries a picture (not a configuration record,
/// end of sequence, metadata or command).
pub(crate) fn is_frame(tag: &[u8]) -> bool {
    match tag.first() {
        Some(&b0) if b0 & 0x80 != 0 => (b0 >> 4) & 0x07 != 5 && matches!(b0 & 0x0f, 1 | 3),
        Some(&b0) if matches!(b0 & 0x0f, 7 | 12) => b0 >> 4 != 5 && tag.get(1) == Some(&1),
        Some(_) => tag.len() > 1,
        None => false,
    }
}

pub(crate) fn parse_video(tag: &Bytes) -> Result<VideoTag, FlvError> {
    let b0 = *tag.first().ok_or(FlvError::Truncated)?;
    if b0 & 0x80 != 0 {
        return parse_enhanced(tag, b0);
    }
    let frame_type = b0 >> 4;
    let codec = match b0 & 0x0f {
        7 => Codec::H264,
        12 => Codec::H265,
        id => {
            let name = match id {
                2 => "Sorenson H.263",
                3 => "Screen video",
                4 => "VP6",
                5 => "VP6 alpha",
                6 => "Screen video 2",
                _ => "unknown",
            };
            return Err(FlvError::Unsupported(format!("{name} (FLV codec id {id})")));
        }
    };
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    // Packet type, then a 24-bit composition time.
    if tag.len() < 5 {
        return Err(FlvError::Truncated);
    }
    match tag[1] {
        0 => Ok(VideoTag::Config(parse_config(codec, &tag[5..])?)),
        1 => Ok(VideoTag::Frame { codec, keyframe: frame_type == 1, data: tag.slice(5..) }),
        _ => Ok(VideoTag::Ignored),
    }
}

/// An Enhanced RTMP video tag: `IsExHeader | FrameType(3) | PacketType(4)`,
/// a FourCC, then the packet.
fn parse_enhanced(tag: &Bytes, b0: u8) -> Result<VideoTag, FlvError> {
    let frame_type = (b0 >> 4) & 0x07;
    let packet_type = b0 & 0x0f;
    let fourcc = tag.get(1..5).ok_or(FlvError::Truncated)?;
    let codec = match fourcc {
        b"avc1" => Codec::H264,
        b"hvc1" => Codec::H265,
        b"av01" => Codec::Av1,
        b"vp09" => Codec::Vp9,
        other => {
            return Err(FlvError::Unsupported(format!("{:?} (Enhanced RTMP)", String::from_utf8_lossy(other))));
        }
    };
    if frame_type == 5 {
        return Ok(VideoTag::Ignored);
    }
    let keyframe = frame_type == 1;
    match packet_type {
        // SequenceStart: the configuration record.
        0 => Ok(VideoTag::Config(parse_config(codec, &tag[5..])?)),
        // CodedFrames: H.264 and HEVC put a 24-bit composition time before
        // the access unit; AV1 and VP9 have none.
        1 if matches!(codec, Codec::H264 | Codec::H265) => {
            if tag.len() < 8 {
                return Err(FlvError::Truncated);
            }
            Ok(VideoTag::Frame { codec, keyframe, data: tag.slice(8..) })
        }
        // CodedFramesX: composition time 0, not sent.
        1 | 3 => Ok(VideoTag::Frame { codec, keyframe, data: tag.slice(5..) }),
        // SequenceEnd, Metadata, MPEG-2 TS sequence start.
        2 | 4 | 5 => Ok(VideoTag::Ignored),
        6 => Err(FlvError::Unsupported("multitrack video (Enhanced RTMP v2)".into())),
        7 => Err(FlvError::Unsupported("ModEx video packets (Enhanced RTMP v2)".into())),
        n => Err(FlvError::Unsupported(format!("Enhanced RTMP video packet type {n}"))),
    }
}

pub(crate) fn parse_config(codec: Codec, rec: &[u8]) -> Result<VideoConfig, FlvError> {
    let bad = |why| FlvError::BadConfig(codec, why);
    match codec {
        Codec::H264 => parse_avcc(rec).map_err(bad),
        Codec::H265 => parse_hvcc(rec).map_err(bad),
        Codec::Av1 => obu::parse_av1c(rec)
            .map(|headers| VideoConfig { codec, length_size: 0, headers: Bytes::from(headers) })
            .map_err(bad),
        Codec::Vp9 => {
            vp9::check_vpcc(rec).map(|()| VideoConfig { codec, length_size: 0, headers: Bytes::new() }).map_err(bad)
        }
    }
}

/// What both configuration records open with: at least `fixed` bytes,
/// version 1, and the NAL length size (1, 2 or 4) in the low bits of `rec[at]`.
fn length_size(rec: &[u8], fixed: usize, at: usize) -> Result<usize, &'static str> {
    if rec.len() < fixed {
        return Err("shorter than its fixed header");
    }
    if rec[0] != 1 {
        return Err("configurationVersion is not 1");
    }
    match usize::from(rec[at] & 3) + 1 {
        3 => Err("NAL length size 3 is invalid"),
        n => Ok(n),
    }
}

fn parse_avcc(rec: &[u8]) -> Result<VideoConfig, &'static str> {
    let length_size = length_size(rec, 7, 4)?;
    let mut annexb = Vec::with_capacity(rec.len() + 16);
    let mut pos = 5;
    for (kind, mask, want_type) in [("SPS", 0x1f, 7u8), ("PPS", 0xff, 8u8)] {
        let count = usize::from(*rec.get(pos).ok_or("parameter set count missing")? & mask);
        pos += 1;
        if count == 0 {
            return Err(if kind == "SPS" { "no SPS" } else { "no PPS" });
        }
        for _ in 0..count {
            let len = rec.get(pos..pos + 2).ok_or("parameter set length missing")?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            pos += 2;
            let nal = rec.get(pos..pos + len).ok_or("parameter set truncated")?;
            if len == 0 || nal[0] & 0x1f != want_type {
                return Err("parameter set of the wrong NAL type");
            }
            annexb.extend_from_slice(&START_CODE);
            annexb.extend_from_slice(nal);
            pos += len;
        }
    }
    Ok(VideoConfig { codec: Codec::H264, length_size, headers: Bytes::from(annexb) })
}

/// HEVC NAL unit types the configuration must hold: VPS, (SPS,) PPS.
const HEVC_VPS: u8 = 32;
const HEVC_PPS: u8 = 34;

fn hevc_type(nal: &[u8]) -> u8 {
    (nal[0] >> 1) & 0x3f
}

/// `HEVCDecoderConfigurationRecord` (ISO/IEC 14496-15 §8.3.3): 22 bytes of
/// profile and format, then arrays of NAL units by type. VPS, SPS and PPS
/// are kept (SEI arrays are not).
fn parse_hvcc(rec: &[u8]) -> Result<VideoConfig, &'static str> {
    let length_size = length_size(rec, 23, 21)?;
    let mut annexb = Vec::with_capacity(rec.len() + 32);
    let mut seen = [false; 3];
    let mut pos = 23;
    for _ in 0..rec[22] {
        let head = rec.get(pos..pos + 3).ok_or("NAL array header missing")?;
        let (kind, count) = (head[0] & 0x3f, u16::from_be_bytes([head[1], head[2]]));
        pos += 3;
        for _ in 0..count {
            let len = rec.get(pos..pos + 2).ok_or("NAL unit length missing")?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            pos += 2;
            let nal = rec.get(pos..pos + len).ok_or("NAL unit truncated")?;
            if len < 2 || hevc_type(nal) != kind {
                return Err("NAL unit of another type than its array");
            }
            if (HEVC_VPS..=HEVC_PPS).contains(&kind) {
                seen[usize::from(kind - HEVC_VPS)] = true;
                annexb.extend_from_slice(&START_CODE);
                annexb.extend_from_slice(nal);
            }
            pos += len;
        }
    }
    match seen {
        [false, _, _] => Err("no VPS"),
        [_, false, _] => Err("no SPS"),
        [_, _, false] => Err("no PPS"),
        _ => Ok(VideoConfig { codec: Codec::H265, length_size, headers: Bytes::from(annexb) }),
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum KeyframeError {
    #[error("NAL unit lengths do not add up to the frame's size")]
    Lengths,
    #[error("keyframe holds no IDR slice")]
    NoIdr,
    #[error("keyframe holds no IRAP picture (HEVC types 16-21)")]
    NoIrap,
    #[error("a {frame} frame after a {config} decoder configuration")]
    OtherCodec { frame: Codec, config: Codec },
    #[error("{0} keyframe: {1}")]
    Invalid(Codec, &'static str),
}

/// Checks a keyframe and builds the decoder job, in the form the decoder
/// takes. NAL codecs: the stream's own parameter sets followed by the
/// access unit; lengths must add up exactly and a random access picture
/// (H.264 IDR, HEVC IRAP) must be present; in-band parameter sets and
/// delimiters are left out (they would override the stream's own). AV1 and
/// VP9: a shown key frame, checked and built by their modules. Nothing else
/// reaches a decoder.
pub(crate) fn keyframe_job(config: &VideoConfig, codec: Codec, data: &[u8]) -> Result<Vec<u8>, KeyframeError> {
    if codec != config.codec {
        return Err(KeyframeError::OtherCodec { frame: codec, config: config.codec });
    }
    let invalid = |why| KeyframeError::Invalid(codec, why);
    match codec {
        Codec::H264 | Codec::H265 => nal_keyframe(config, data),
        Codec::Av1 => obu::keyframe_job(&config.headers, data).map_err(invalid),
        Codec::Vp9 => vp9::check_keyframe(data).map(|()| data.to_vec()).map_err(invalid),
    }
}

fn nal_keyframe(config: &VideoConfig, nalus: &[u8]) -> Result<Vec<u8>, KeyframeError> {
    let (n, codec) = (config.length_size, config.codec);
    let mut out = Vec::with_capacity(config.headers.len() + nalus.len() + 64);
    out.extend_from_slice(&config.headers);
    let mut rest = nalus;
    let mut random_access = false;
    while !rest.is_empty() {
        if rest.len() < n {
            return Err(KeyframeError::Lengths);
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        rest = &rest[n..];
        if len == 0 || len > rest.len() || (codec == Codec::H265 && len < 2) {
            return Err(KeyframeError::Lengths);
        }
        let nal = &rest[..len];
        rest = &rest[len..];
        let keep = match codec {
            Codec::H264 => match nal[0] & 0x1f {
                5 => {
                    random_access = true;
                    true
                }
                7..=9 => false,
                _ => true,
            },
            _ => match hevc_type(nal) {
                16..=21 => {
                    random_access = true;
                    true
                }
                // VPS, SPS, PPS, access unit delimiter.
                32..=35 => false,
                _ => true,
            },
        };
        if keep {
            out.extend_from_slice(&START_CODE);
            out.extend_from_slice(nal);
        }
    }
    match (random_access, codec) {
        (true, _) => Ok(out),
        (false, Codec::H264) => Err(KeyframeError::NoIdr),
        (false, _) => Err(KeyframeError::NoIrap),
    }
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
        let VideoTag::Config(cfg) = parse_video(&Bytes::from(tag)).unwrap() else { panic!() };
        assert_eq!(cfg.codec, Codec::H264);
        assert_eq!(cfg.length_size, 4);
        assert_eq!(&cfg.headers[..], &[0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9]);

        let frame = [0, 0, 0, 2, 0x06, 0xaa, 0, 0, 0, 3, 0x65, 1, 2];
        let job = keyframe_job(&cfg, Codec::H264, &frame).unwrap();
        assert_eq!(&job[13..], &[0, 0, 0, 1, 0x06, 0xaa, 0, 0, 0, 1, 0x65, 1, 2]);
    }

    #[test]
    fn bad_keyframes() {
        let cfg = VideoConfig { codec: Codec::H264, length_size: 4, headers: Bytes::from_static(&[0, 0, 0, 1, 0x67]) };
        let keyframe_job = |cfg: &VideoConfig, nalus: &[u8]| keyframe_job(cfg, Codec::H264, nalus);
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
            parse_video(&Bytes::from_static(&[0x90, b'v', b'p', b'0', b'8'])),
            Err(FlvError::Unsupported(_))
        ));
        assert!(matches!(
            parse_video(&Bytes::from_static(&[0x17, 0, 0, 0, 0, 2])),
            Err(FlvError::BadConfig(Codec::H264, _))
        ));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x17])), Err(FlvError::Truncated)));
        assert!(matches!(parse_video(&Bytes::from_static(&[0x90, b'h', b'v'])), Err(FlvError::Truncated)));
    }

    /// An `hvcC` with one VPS, SPS and PPS (2-byte NAL headers, tiny bodies)
    /// and an SEI array that is left out.
    fn hvcc() -> Vec<u8> {
        let mut r = vec![1, 1, 0x60, 0, 0, 0, 0x90, 0, 0, 0, 0, 0, 0x5d, 0xf0, 0, 0xfc, 0xfd, 0xf8, 0xf8, 0, 0, 0x0f];
        r.push(4);
        for (kind, body) in [(32u8, [0x0c, 1]), (33, [1, 1]), (34, [1, 0xc1]), (39, [1, 5])] {
            r.extend([kind, 0, 1, 0, 4, kind << 1, body[0], body[1], 0xaa]);
        }
        r
    }

    #[test]
    fn hevc_legacy_and_enhanced() {
        // Enhanced RTMP: SequenceStart (key frame, packet type 0), "hvc1".
        let mut start = vec![0x90, b'h', b'v', b'c', b'1'];
        start.extend(hvcc());
        let VideoTag::Config(cfg) = parse_video(&Bytes::from(start)).unwrap() else { panic!() };
        assert_eq!((cfg.codec, cfg.length_size), (Codec::H265, 4));
        assert_eq!(
            &cfg.headers[..],
            &[0, 0, 0, 1, 64, 0x0c, 1, 0xaa, 0, 0, 0, 1, 66, 1, 1, 0xaa, 0, 0, 0, 1, 68, 1, 0xc1, 0xaa]
        );
        // The same record as legacy codec id 12.
        let mut legacy = vec![0x1c, 0, 0, 0, 0];
        legacy.extend(hvcc());
        let VideoTag::Config(legacy_cfg) = parse_video(&Bytes::from(legacy)).unwrap() else { panic!() };
        assert_eq!(legacy_cfg, cfg);
        // A CRA picture (type 21) with an AUD (35) and an in-band SPS left out.
        let au = [0, 0, 0, 3, 35 << 1, 1, 0x50, 0, 0, 0, 3, 33 << 1, 1, 9, 0, 0, 0, 4, 21 << 1, 1, 0xaf, 0x20];
        for (b0, header) in [(0x91u8, &[b'h', b'v', b'c', b'1', 0, 0, 0][..]), (0x93, &[b'h', b'v', b'c', b'1'][..])] {
            let mut tag = vec![b0];
            tag.extend(header);
            tag.extend(au);
            let VideoTag::Frame { codec, keyframe, data: nalus } = parse_video(&Bytes::from(tag)).unwrap() else {
                panic!()
            };
            assert!(keyframe && codec == Codec::H265);
            let job = keyframe_job(&cfg, codec, &nalus).unwrap();
            assert_eq!(&job[cfg.headers.len()..], &[0, 0, 0, 1, 21 << 1, 1, 0xaf, 0x20]);
        }
        // A trailing picture (type 1) is not a keyframe's picture; an H.264 frame is not this stream's.
        assert_eq!(keyframe_job(&cfg, Codec::H265, &[0, 0, 0, 3, 2, 1, 0]), Err(KeyframeError::NoIrap));
        assert!(matches!(
            keyframe_job(&cfg, Codec::H264, &[0, 0, 0, 2, 0x65, 1]),
            Err(KeyframeError::OtherCodec { .. })
        ));
        // Inter frames take the fast path; sequence starts are not frames.
        assert!(
            is_inter_frame(&[0xa1, b'h', b'v', b'c', b'1']) && is_inter_frame(&[0x2c, 1]) && is_inter_frame(&[0x27, 1])
        );
        assert!(!is_inter_frame(&[0x91, b'h']) && !is_inter_frame(&[0x2c, 0]));
        assert!(!is_frame(&[0x90, b'h', b'v', b'c', b'1']) && is_frame(&[0xa3, b'h']) && !is_frame(&[0x17, 0]));
    }

    #[test]
    fn bad_hevc_configs() {
        let mut rec = hvcc()[..hvcc().len() - 18].to_vec();
        rec[22] = 2;
        assert_eq!(parse_hvcc(&rec), Err("no PPS"));
        let mut wrong = hvcc();
        wrong[23] = 33; // the VPS array says SPS
        assert_eq!(parse_hvcc(&wrong), Err("NAL unit of another type than its array"));
        assert_eq!(parse_hvcc(&hvcc()[..30]), Err("NAL unit truncated"));
        assert_eq!(parse_hvcc(&[1; 10]), Err("shorter than its fixed header"));
        let mut v2 = hvcc();
        v2[0] = 2;
        assert_eq!(parse_hvcc(&v2), Err("configurationVersion is not 1"));
        let mut three = hvcc();
        three[21] = 0xfe;
        assert_eq!(parse_hvcc(&three), Err("NAL length size 3 is invalid"));
    }
}
