//! FLV files: their tags, the NAL units of AVC frames, and keyframes as
//! the Annex-B decoder jobs the host makes of them.

use std::path::Path;

/// One FLV tag.
#[derive(Debug, Clone)]
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub data: Vec<u8>,
}

impl Tag {
    /// An Enhanced RTMP video tag (`IsExHeader`): FourCC after the first byte.
    fn is_enhanced_video(&self) -> bool {
        self.kind == 9 && self.data.first().is_some_and(|b| b & 0x80 != 0)
    }

    /// A keyframe's coded frame: legacy AVC (frame type 1, NALU packet) or
    /// Enhanced RTMP (frame type 1, CodedFrames or CodedFramesX).
    pub fn is_video_keyframe(&self) -> bool {
        if self.is_enhanced_video() {
            return (self.data[0] >> 4) & 0x07 == 1 && matches!(self.data[0] & 0x0f, 1 | 3);
        }
        self.kind == 9 && self.data.len() > 1 && self.data[0] >> 4 == 1 && self.data[1] == 1
    }

    pub fn is_avc_config(&self) -> bool {
        self.kind == 9 && self.data.len() > 1 && !self.is_enhanced_video() && self.data[1] == 0
    }

    /// Metadata or a sequence header (audio or video, legacy or Enhanced
    /// RTMP's SequenceStart): sent once, before media.
    pub fn is_config(&self) -> bool {
        if self.is_enhanced_video() {
            return self.data[0] & 0x0f == 0;
        }
        self.kind == 18 || (self.data.len() > 1 && (self.kind == 9 || self.kind == 8) && self.data[1] == 0)
    }
}

/// Every tag of an FLV file.
pub fn read(path: &Path) -> Vec<Tag> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert_eq!(&b[..3], b"FLV", "{} is not FLV", path.display());
    let mut pos = u32::from_be_bytes(b[5..9].try_into().unwrap()) as usize + 4;
    let mut tags = Vec::new();
    while pos + 11 <= b.len() {
        let kind = b[pos] & 0x1f;
        let size = u32::from_be_bytes([0, b[pos + 1], b[pos + 2], b[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([b[pos + 7], b[pos + 4], b[pos + 5], b[pos + 6]]);
        tags.push(Tag { kind, ts, data: b[pos + 11..pos + 11 + size].to_vec() });
        pos += 11 + size + 4;
    }
    tags
}

/// The NAL units of an AVC frame tag (4-byte lengths).
pub fn nalus(tag: &Tag) -> Vec<&[u8]> {
    let mut rest = &tag.data[5..];
    let mut out = Vec::new();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        out.push(&rest[4..4 + len]);
        rest = &rest[4 + len..];
    }
    out
}

/// A frame tag rebuilt from NAL units, lengths consistent.
pub fn frame_tag(template: &Tag, nals: &[Vec<u8>]) -> Tag {
    let mut data = template.data[..5].to_vec();
    for n in nals {
        data.extend_from_slice(&(n.len() as u32).to_be_bytes());
        data.extend_from_slice(n);
    }
    Tag { kind: 9, ts: template.ts, data }
}

/// The SPS and PPS of an AVC configuration tag, each after a start code.
pub fn parameter_sets(config: &Tag) -> Vec<u8> {
    let rec = &config.data[5..];
    let mut out = Vec::new();
    let mut p = 6;
    for round in 0..2 {
        let n = if round == 0 { rec[5] & 0x1f } else { rec[p] };
        p += round; // the PPS count is its own byte
        for _ in 0..n {
            let len = u16::from_be_bytes([rec[p], rec[p + 1]]) as usize;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(&rec[p + 2..p + 2 + len]);
            p += 2 + len;
        }
    }
    out
}

/// The Annex-B decoder job of a keyframe: SPS + PPS from the config, then the frame.
pub fn annexb_job(config: &Tag, frame: &Tag) -> Vec<u8> {
    let mut out = parameter_sets(config);
    for n in nalus(frame) {
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(n);
    }
    out
}
