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
}

impl Codec {
    /// What a job of this codec is to the decoder: Annex-B access units.
    pub(crate) fn caps(self) -> &'static str {
        match self {
            Codec::H264 => "video/x-h264,stream-format=byte-stream,alignment=au",
            Codec::H265 => "video/x-h265,stream-format=byte-stream,alignment=au",
        }
    }

    /// The GStreamer decoder element.
    pub(crate) fn decoder(self) -> &'static str {
        match self {
            Codec::H264 => "avdec_h264",
            Codec::H265 => "avdec_h265",
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

    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "H.264",
            Codec::H265 => "HEVC",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
