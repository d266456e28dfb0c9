//! Limited-range (16–235 / 16–240) I420 to the full range JFIF expects.
//! Integer arithmetic rather than table lookups, so the loops vectorize.

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

/// Rescales an I420 buffer in place (a deep copy first if it is shared).
pub(super) fn to_full(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> gst::Buffer {
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
}
