//! Limited-range (16–235 / 16–240) I420 to the full range JFIF expects, and
//! back for WebP (VP8 is limited range). Integer arithmetic rather than
//! table lookups, so the loops vectorize.

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// (y - 16) * 255 / 219, in 8.8 fixed point, clamped.
#[inline]
fn luma(y: u8) -> u8 {
    let v = (i32::from(y) - 16).max(0) * 298 + 128;
    (v >> 8).min(255) as u8
}

/// (c - 128) * 255 / 224 + 128, in 8.8 fixed point, clamped.
#[inline]
fn chroma(c: u8) -> u8 {
    let v = (i32::from(c) - 128) * 291 + (128 << 8) + 128;
    (v >> 8).clamp(0, 255) as u8
}

/// y * 219 / 255 + 16, in 8.8 fixed point.
#[inline]
fn luma_limited(y: u8) -> u8 {
    ((i32::from(y) * 220 + (16 << 8) + 128) >> 8) as u8
}

/// (c - 128) * 224 / 255 + 128, in 8.8 fixed point.
#[inline]
fn chroma_limited(c: u8) -> u8 {
    (((i32::from(c) - 128) * 225 + (128 << 8) + 128).clamp(16 << 8, 240 << 8) >> 8) as u8
}

/// Rescales a limited-range I420 buffer to full range in place (a deep copy
/// first if it is shared).
pub(super) fn to_full(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> gst::Buffer {
    map_planes(buffer, info, luma, chroma)
}

/// Rescales a full-range I420 buffer to limited range in place.
pub(super) fn to_limited(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> gst::Buffer {
    map_planes(buffer, info, luma_limited, chroma_limited)
}

/// A full-range luma level of a limited-range one (frame facts).
pub(super) fn full_luma(y: u8) -> u8 {
    luma(y)
}

fn map_planes(
    buffer: gst::Buffer,
    info: &gst_video::VideoInfo,
    luma: impl Fn(u8) -> u8,
    chroma: impl Fn(u8) -> u8,
) -> gst::Buffer {
    let buffer = if buffer.is_writable() { buffer } else { buffer.copy_deep().unwrap_or(buffer) };
    let mut frame = match gst_video::VideoFrame::from_buffer_writable(buffer, info) {
        Ok(f) => f,
        Err(buffer) => return buffer,
    };
    for plane in 0..frame.n_planes() {
        let stride = frame.plane_stride()[plane as usize] as usize;
        let width = frame.comp_width(plane) as usize;
        let height = frame.comp_height(plane) as usize;
        let Ok(data) = frame.plane_data_mut(plane) else { continue };
        for row in data.chunks_mut(stride).take(height) {
            let n = width.min(row.len());
            if plane == 0 {
                row[..n].iter_mut().for_each(|px| *px = luma(*px));
            } else {
                row[..n].iter_mut().for_each(|px| *px = chroma(*px));
            }
        }
    }
    frame.into_buffer()
}

#[cfg(test)]
mod tests {
    use super::{chroma, luma};

    #[test]
    fn limited_to_full() {
        assert_eq!((luma(0), luma(16), luma(126), luma(235), luma(255)), (0, 0, 128, 255, 255));
        // Chroma 16 lands half a step above 0.
        assert_eq!((chroma(0), chroma(16), chroma(128), chroma(240), chroma(255)), (0, 1, 128, 255, 255));
        // Monotonic: no level maps below a lower one.
        assert!((1..=255u8).all(|v| luma(v) >= luma(v - 1) && chroma(v) >= chroma(v - 1)));
    }

    #[test]
    fn full_to_limited_and_back() {
        use super::{chroma_limited, luma_limited};
        assert_eq!((luma_limited(0), luma_limited(128), luma_limited(255)), (16, 126, 235));
        assert_eq!((chroma_limited(0), chroma_limited(128), chroma_limited(255)), (16, 128, 240));
        // A round trip moves no level by more than one step.
        assert!((0..=255u8).all(|v| luma(luma_limited(v)).abs_diff(v) <= 1));
        assert!((0..=255u8).all(|v| chroma(chroma_limited(v)).abs_diff(v) <= 1));
    }
}
