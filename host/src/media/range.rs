//! Limited-range (16–235 / 16–240) I420 to the full range JFIF expects.

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

fn lut(lo: f64, hi: f64, centred: bool) -> [u8; 256] {
    let mut t = [0u8; 256];
    for (v, out) in t.iter_mut().enumerate() {
        let v = v as f64;
        let x = if centred { (v - 128.0) * 255.0 / (hi - lo) + 128.0 } else { (v - lo) * 255.0 / (hi - lo) };
        *out = x.round().clamp(0.0, 255.0) as u8;
    }
    t
}

fn luts() -> &'static ([u8; 256], [u8; 256]) {
    static LUTS: std::sync::OnceLock<([u8; 256], [u8; 256])> = std::sync::OnceLock::new();
    LUTS.get_or_init(|| (lut(16.0, 235.0, false), lut(16.0, 240.0, true)))
}

/// Rescales an I420 buffer in place (a deep copy first if it is shared).
pub(super) fn to_full(buffer: gst::Buffer, info: &gst_video::VideoInfo) -> gst::Buffer {
    let buffer = if buffer.is_writable() { buffer } else { buffer.copy_deep().unwrap_or(buffer) };
    let mut frame = match gst_video::VideoFrame::from_buffer_writable(buffer, info) {
        Ok(f) => f,
        Err(buffer) => return buffer,
    };
    let (luma, chroma) = luts();
    for plane in 0..frame.n_planes() {
        let table = if plane == 0 { luma } else { chroma };
        let stride = frame.plane_stride()[plane as usize] as usize;
        let width = frame.comp_width(plane) as usize;
        let height = frame.comp_height(plane) as usize;
        let Ok(data) = frame.plane_data_mut(plane) else {
            continue;
        };
        for row in data.chunks_mut(stride).take(height) {
            let n = width.min(row.len());
            for px in &mut row[..n] {
                *px = table[*px as usize];
            }
        }
    }
    frame.into_buffer()
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables() {
        let (y, c) = super::luts();
        assert_eq!((y[0], y[16], y[126], y[235], y[255]), (0, 0, 128, 255, 255));
        // Chroma 16 lands half a step above 0.
        assert_eq!((c[16], c[128], c[240]), (1, 128, 255));
    }
}
