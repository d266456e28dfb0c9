//! The video codecs ingest reads and the decoder pool decodes. A leaf
//! module (ingest, capture and media name it; the fuzz targets compile it
//! with `ingest/flv.rs`).

/// The video codecs the pool decodes; each worker keeps one pipeline per
/// codec it has been given (made at its first job of that codec).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    #[default]
    H264,
    H265,
    Av1,
    Vp9,
}

impl Codec {
    /// What a job of this codec is to the decoder: Annex-B access units.
    pub(crate) fn caps(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264,stream-format=byte-stream,alignment=au",
            Codec::H265 => "video/x-h265,stream-format=byte-stream,alignment=au",
            // One temporal unit: OBUs with their sizes (a temporal delimiter first).
            Codec::Av1 => "video/x-av1,stream-format=obu-stream,alignment=tu",
            Codec::Vp9 => "video/x-vp9",
        }
    }

    /// The GStreamer decoder element.
    pub(crate) fn decoder(self) -> &'static str {
        match self {
            Codec::H264 => "avdec_h264",
            Codec::H265 => "avdec_h265",
            // libaom (gstreamer1.0-plugins-bad): this GStreamer's libav has no AV1 software decoder.
            Codec::Av1 => "av1dec",
            Codec::Vp9 => "avdec_vp9",
        }
    }

    /// The decoder element's properties: one thread, errors never fatal,
    /// corrupted pictures dropped; libav's own frame pool when the decoder
    /// is made anew per stream (its buffers start zeroed).
    pub(crate) fn decoder_properties(self) -> String {
        let common = "max-errors=-1 discard-corrupted-frames=true";
        match self {
            Codec::Av1 => common.to_owned(),
            _ => format!("{common} max-threads=1 direct-rendering={}", !self.fresh_decoder_per_stream()),
        }
    }

    /// Whether a worker's decoder for this codec is made anew (fresh
    /// context, frames from libav's own zero-filled pool) for a job of
    /// another stream, instead of flushed. HEVC: libav's decoder has no
    /// error concealment and leaves the CTUs a damaged slice did not reach
    /// as they were in the reused frame buffer, which may hold another
    /// stream's picture. H.264's decoder conceals from the picture itself.
    pub(crate) fn fresh_decoder_per_stream(self) -> bool {
        self == Codec::H265
    }

    /// Its name in the API (`codec` of a live stream).
    pub fn id(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "hevc",
            Codec::Av1 => "av1",
            Codec::Vp9 => "vp9",
        }
    }

    /// Every codec, in the order of [`Codec::index`].
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Av1, Codec::Vp9];

    /// Its place in [`Codec::ALL`] (kept in an atomic by the streams' stats).
    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H.264",
            Codec::H265 => "HEVC",
            Codec::Av1 => "AV1",
            Codec::Vp9 => "VP9",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
