//! Thumbnails for the console: a snapshot's JPG (zune-jpeg) or WebP
//! (image-webp) decoded, scaled down by area averaging to fit `MAX_W` x
//! `MAX_H`, encoded as JPG, and kept in a bounded in-memory cache, so a wall
//! of 100 tiles costs one scaling per snapshot, not one per view. A snapshot
//! that fits already (its template scales) is its own thumbnail.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bytes::Bytes;

/// A thumbnail fits this box (keeping the aspect ratio).
pub const MAX_W: usize = 320;
pub const MAX_H: usize = 180;
const QUALITY: u8 = 80;
/// Bytes of thumbnails kept; the oldest go first.
const CACHE_BYTES: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ThumbError {
    #[error("decode the snapshot for its thumbnail: {0}")]
    Decode(String),
    #[error("encode the thumbnail: {0}")]
    Encode(String),
}

/// Scaled JPGs by (record id, create time): an overwrite record keeps its
/// id while its picture changes, so the time is part of the key.
#[derive(Default)]
pub struct Thumbs {
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<(u128, u64), Bytes>,
    order: VecDeque<(u128, u64)>,
    bytes: usize,
}

impl Thumbs {
    pub fn get(&self, id: u128, created_ms: u64) -> Option<Bytes> {
        self.cache.lock().unwrap().map.get(&(id, created_ms)).cloned()
    }

    pub fn put(&self, id: u128, created_ms: u64, thumb: Bytes) {
        let mut c = self.cache.lock().unwrap();
        if c.map.contains_key(&(id, created_ms)) {
            return;
        }
        c.bytes += thumb.len();
        c.map.insert((id, created_ms), thumb);
        c.order.push_back((id, created_ms));
        while c.bytes > CACHE_BYTES {
            let Some(old) = c.order.pop_front() else { break };
            if let Some(b) = c.map.remove(&old) {
                c.bytes -= b.len();
            }
        }
    }
}

/// Whether a picture of this size is its own thumbnail.
pub fn fits(width: usize, height: usize) -> bool {
    width <= MAX_W && height <= MAX_H
}

/// A JPG or WebP scaled down to fit the thumbnail box, as JPG (one that
/// fits already is returned as it is).
pub fn scale(picture: &[u8]) -> Result<Bytes, ThumbError> {
    let (pixels, w, h) = decode_rgb(picture)?;
    if fits(w, h) {
        return Ok(Bytes::copy_from_slice(picture));
    }
    let ratio = (MAX_W as f64 / w as f64).min(MAX_H as f64 / h as f64);
    let (tw, th) = (((w as f64 * ratio).round() as usize).max(1), ((h as f64 * ratio).round() as usize).max(1));
    let small = area_average(&pixels, w, h, tw, th);
    let mut out = Vec::with_capacity(tw * th / 4);
    let encoder = jpeg_encoder::Encoder::new(&mut out, QUALITY);
    encoder
        .encode(&small, tw as u16, th as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ThumbError::Encode(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// The RGB pixels, width and height of a stored JPG or WebP.
pub fn decode_rgb(picture: &[u8]) -> Result<(Vec<u8>, usize, usize), ThumbError> {
    if crate::storage::content_type(picture) == "image/webp" { decode_webp(picture) } else { decode_jpeg(picture) }
}

fn decode_jpeg(jpg: &[u8]) -> Result<(Vec<u8>, usize, usize), ThumbError> {
    use zune_jpeg::zune_core::bytestream::ZCursor;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(jpg), options);
    let pixels = decoder.decode().map_err(|e| ThumbError::Decode(e.to_string()))?;
    let (w, h) = decoder.dimensions().ok_or_else(|| ThumbError::Decode("no dimensions".into()))?;
    Ok((pixels, w, h))
}

/// RGB of a WebP (lossy, as the decoder pool writes, or lossless; alpha dropped).
fn decode_webp(webp: &[u8]) -> Result<(Vec<u8>, usize, usize), ThumbError> {
    let bad = |e: image_webp::DecodingError| ThumbError::Decode(e.to_string());
    let mut decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(webp)).map_err(bad)?;
    let (w, h) = decoder.dimensions();
    let mut buf = vec![0; decoder.output_buffer_size().ok_or_else(|| ThumbError::Decode("picture too large".into()))?];
    decoder.read_image(&mut buf).map_err(bad)?;
    let rgb = if decoder.has_alpha() { buf.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect() } else { buf };
    Ok((rgb, w as usize, h as usize))
}

/// Each output pixel is the mean of the source pixels its box covers.
pub fn area_average(rgb: &[u8], w: usize, h: usize, tw: usize, th: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(tw * th * 3);
    for ty in 0..th {
        let (y0, y1) = (ty * h / th, ((ty + 1) * h / th).max(ty * h / th + 1));
        for tx in 0..tw {
            let (x0, x1) = (tx * w / tw, ((tx + 1) * w / tw).max(tx * w / tw + 1));
            let mut sum = [0u32; 3];
            for y in y0..y1 {
                let row = &rgb[(y * w + x0) * 3..(y * w + x1) * 3];
                for px in row.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
            let n = ((y1 - y0) * (x1 - x0)) as u32;
            out.extend(sum.map(|s| ((s + n / 2) / n) as u8));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_720p_picture_becomes_320x180_with_its_colours() {
        // Left half red, right half blue, 1280x720.
        let (w, h) = (1280usize, 720usize);
        let mut rgb = Vec::with_capacity(w * h * 3);
        for _ in 0..h {
            for x in 0..w {
                rgb.extend(if x < w / 2 { [200u8, 30, 30] } else { [30u8, 30, 200] });
            }
        }
        let mut jpg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpg, 90)
            .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        let thumb = scale(&jpg).unwrap();
        assert!(thumb.len() < jpg.len() / 4, "{} vs {}", thumb.len(), jpg.len());
        let mut d = zune_jpeg::JpegDecoder::new(zune_jpeg::zune_core::bytestream::ZCursor::new(&thumb[..]));
        let px = d.decode().unwrap();
        assert_eq!(d.dimensions(), Some((320, 180)));
        let at = |x: usize, y: usize| &px[(y * 320 + x) * 3..(y * 320 + x) * 3 + 3];
        assert!(at(40, 90)[0] > 170 && at(40, 90)[2] < 60, "{:?}", at(40, 90));
        assert!(at(280, 90)[2] > 170 && at(280, 90)[0] < 60, "{:?}", at(280, 90));
        // A small picture is served as it is.
        let mut small = Vec::new();
        jpeg_encoder::Encoder::new(&mut small, 90)
            .encode(&rgb[..160 * 90 * 3], 160, 90, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        assert_eq!(&scale(&small).unwrap()[..], &small[..]);
    }

    #[test]
    fn the_cache_keeps_a_bounded_number_of_bytes() {
        let t = Thumbs::default();
        for i in 0..100u128 {
            t.put(i, 0, Bytes::from(vec![0u8; 1 << 20]));
        }
        assert!(t.get(0, 0).is_none(), "the oldest left");
        assert!(t.get(99, 0).is_some());
        assert!(t.get(99, 1).is_none(), "another picture of the same record");
    }
}
