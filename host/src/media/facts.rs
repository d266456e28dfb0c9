//! Cheap facts about a decoded picture for policy plugins (docs/plugins.md) and
//! the blank-frame rule (docs/templates.md): the mean luma, its spread, and a
//! 64-bit average hash of an 8x8 luma grid, from every 4th pixel of every 4th
//! row of the Y plane (about 60 000 reads for 720p).

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

/// What a plugin may know about a capture's picture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameFacts {
    /// 0–255, full range.
    pub mean_luma: u8,
    /// Bit `8 * row + col` is set where that cell of an 8x8 grid is brighter
    /// than the picture's mean: equal hashes mean near-identical pictures.
    pub ahash: u64,
    /// The standard deviation of the sampled luma, 0–255 (rounded down).
    pub luma_spread: u8,
}

/// A picture whose sampled luma varies less than this (standard deviation,
/// of 255) is blank: black, or one flat colour.
pub(crate) const BLANK_SPREAD: u8 = 3;

impl FrameFacts {
    /// Black or one flat colour (luma spread under [`BLANK_SPREAD`]).
    pub fn is_blank(&self) -> bool {
        self.luma_spread < BLANK_SPREAD
    }
}

const STEP: usize = 4;

/// The facts of an I420 (or any planar YUV) buffer's Y plane, in full
/// range: a `limited` range plane's are rescaled.
pub(super) fn of_frame(buffer: &gst::BufferRef, info: &gst_video::VideoInfo, limited: bool) -> Option<FrameFacts> {
    let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, info).ok()?;
    let stride = frame.plane_stride()[0] as usize;
    let (width, height) = (frame.comp_width(0) as usize, frame.comp_height(0) as usize);
    let y = frame.plane_data(0).ok()?;
    let facts = of_luma(y, stride, width, height);
    if !limited {
        return Some(facts);
    }
    // The hash compares cells with the mean: the same in either range.
    let spread = (u32::from(facts.luma_spread) * 255 / 219).min(255) as u8;
    Some(FrameFacts { mean_luma: super::range::full_luma(facts.mean_luma), luma_spread: spread, ..facts })
}

pub(super) fn of_luma(y: &[u8], stride: usize, width: usize, height: usize) -> FrameFacts {
    if width < 8 || height < 8 {
        return FrameFacts::default();
    }
    let mut sums = [0u64; 64];
    let mut counts = [0u64; 64];
    let mut squares = 0u64;
    // Per row, the eight column bands as ranges: sum each band's samples.
    let bands: Vec<(usize, usize)> = (0..8).map(|c| (c * width / 8, (c + 1) * width / 8)).collect();
    for row in (0..height).step_by(STEP) {
        let Some(rest) = y.get(row * stride..) else { break };
        let line = &rest[..width.min(rest.len())];
        let cell_row = row * 8 / height * 8;
        for (c, &(from, to)) in bands.iter().enumerate() {
            let Some(band) = line.get(from..to.min(line.len())) else { continue };
            let mut sum = 0u64;
            let mut n = 0u64;
            for px in band.iter().step_by(STEP) {
                let px = u64::from(*px);
                sum += px;
                squares += px * px;
                n += 1;
            }
            sums[cell_row + c] += sum;
            counts[cell_row + c] += n;
        }
    }
    let total: u64 = sums.iter().sum();
    let n: u64 = counts.iter().sum::<u64>().max(1);
    let mean = total / n;
    let mut ahash = 0u64;
    for (i, (s, c)) in sums.iter().zip(&counts).enumerate() {
        if *c > 0 && s / c > mean {
            ahash |= 1 << i;
        }
    }
    // Variance from the exact mean: E[x²] - E[x]², in the sample's integers.
    let variance = (squares * n).saturating_sub(total * total) / (n * n);
    FrameFacts { mean_luma: mean as u8, ahash, luma_spread: (variance as f64).sqrt().min(255.0) as u8 }
}

#[cfg(test)]
mod tests {
    use super::of_luma;

    #[test]
    fn flat_and_split_pictures() {
        let flat = vec![100u8; 64 * 48];
        assert_eq!(of_luma(&flat, 64, 64, 48).mean_luma, 100);
        assert_eq!(of_luma(&flat, 64, 64, 48).ahash, 0);
        // Left half dark, right half bright: the right four columns of cells are set.
        let split: Vec<u8> = (0..64 * 48).map(|i| if i % 64 < 32 { 20 } else { 220 }).collect();
        let f = of_luma(&split, 64, 64, 48);
        assert_eq!(f.mean_luma, 120);
        assert_eq!(f.ahash, 0xf0f0_f0f0_f0f0_f0f0);
        // Flat is blank; half 20, half 220 spreads 100 either side; a little noise is not flat.
        assert!(of_luma(&flat, 64, 64, 48).is_blank() && !f.is_blank());
        assert_eq!(f.luma_spread, 100);
        let noisy: Vec<u8> = (0..64 * 48).map(|i| 16 + (i * 7919 % 13) as u8).collect();
        let n = of_luma(&noisy, 64, 64, 48);
        assert!(!n.is_blank() && (3..=5).contains(&n.luma_spread), "{n:?}");
    }
}
