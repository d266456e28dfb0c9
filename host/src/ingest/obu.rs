//! AV1 in Enhanced RTMP (`av01`): the `AV1CodecConfigurationRecord`
//! (`av1C`) and keyframes as low-overhead OBU streams (AV1 spec §5, the
//! form AV1-ISOBMFF samples take), turned into the temporal unit a decoder
//! is fed.

/// OBU types (AV1 spec §6.2.2).
const SEQUENCE_HEADER: u8 = 1;
const TEMPORAL_DELIMITER: u8 = 2;
const FRAME_HEADER: u8 = 3;
const REDUNDANT_FRAME_HEADER: u8 = 7;
const FRAME: u8 = 6;

/// A temporal delimiter OBU with its (zero) size: what a temporal unit opens with.
const DELIMITER: [u8; 2] = [TEMPORAL_DELIMITER << 3 | 0x02, 0];

/// One OBU of a buffer: its type, its whole bytes and its payload.
struct Obu<'a> {
    kind: u8,
    bytes: &'a [u8],
    payload: &'a [u8],
}

/// The OBUs of `data` in order; an OBU without a size field runs to the end.
fn obus(mut data: &[u8]) -> impl Iterator<Item = Result<Obu<'_>, &'static str>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        Some(match split_obu(data) {
            Ok((obu, rest)) => {
                data = rest;
                Ok(obu)
            }
            Err(e) => {
                data = &[];
                Err(e)
            }
        })
    })
}

fn split_obu(data: &[u8]) -> Result<(Obu<'_>, &[u8]), &'static str> {
    let header = data[0];
    if header & 0x80 != 0 {
        return Err("OBU forbidden bit set");
    }
    let kind = (header >> 3) & 0x0f;
    let mut at = 1 + usize::from(header & 0x04 != 0);
    if data.len() < at {
        return Err("OBU extension header missing");
    }
    let size = if header & 0x02 != 0 {
        let (size, len) = leb128(&data[at..])?;
        at += len;
        size
    } else {
        data.len() - at
    };
    let end = at.checked_add(size).filter(|&e| e <= data.len()).ok_or("OBU size runs past the end")?;
    Ok((Obu { kind, bytes: &data[..end], payload: &data[at..end] }, &data[end..]))
}

/// An unsigned LEB128 of at most 8 bytes (AV1 spec §4.10.5): value and length.
fn leb128(data: &[u8]) -> Result<(usize, usize), &'static str> {
    let mut value = 0u64;
    for (i, b) in data.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return usize::try_from(value).map(|v| (v, i + 1)).map_err(|_| "OBU size too large");
        }
    }
    Err("OBU size field truncated")
}

/// `av1C` (AV1-ISOBMFF §2.3): marker and version 1, three bytes of profile
/// and format, then the configuration OBUs, which must hold the sequence
/// header. Returns what every job of the stream starts with: a temporal
/// delimiter and the sequence header OBU.
pub(crate) fn parse_av1c(rec: &[u8]) -> Result<Vec<u8>, &'static str> {
    if rec.len() < 4 {
        return Err("shorter than its fixed header");
    }
    if rec[0] != 0x81 {
        return Err("marker and version are not 1 and 1");
    }
    for obu in obus(&rec[4..]) {
        let obu = obu?;
        if obu.kind == SEQUENCE_HEADER {
            if obu.bytes[0] & 0x02 == 0 {
                return Err("sequence header OBU without a size field");
            }
            if obu.payload.is_empty() {
                return Err("sequence header OBU is empty");
            }
            return Ok([&DELIMITER[..], obu.bytes].concat());
        }
    }
    Err("no sequence header OBU")
}

/// Whether a sequence header OBU says `reduced_still_picture_header`
/// (every frame is a key frame and frame headers omit their type).
fn reduced_still(sequence: &[u8]) -> bool {
    match split_obu(sequence) {
        // seq_profile (3 bits), still_picture, reduced_still_picture_header.
        Ok((seq, _)) => seq.payload.first().is_some_and(|b| b & 0x08 != 0),
        Err(_) => false,
    }
}

/// Checks a keyframe's OBUs and builds the temporal unit a decoder is fed:
/// a temporal delimiter, the keyframe's own sequence header (encoders send
/// one with each key frame, and it can differ from the one in `av1C`:
/// SVT-AV1's does, and libaom cannot decode the frames with that one) or
/// else the stream's (`headers`, from [`parse_av1c`]), then frame headers,
/// tile groups, frames and metadata. Delimiters, padding and tile lists are
/// left out. The first frame header must be a shown key frame.
pub(crate) fn keyframe_job(headers: &[u8], data: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut sequence = None;
    let mut first_header = None;
    let mut frames = Vec::with_capacity(data.len());
    for obu in obus(data) {
        let obu = obu?;
        match obu.kind {
            // One with a size field: a frame follows it in the job.
            SEQUENCE_HEADER if obu.bytes[0] & 0x02 != 0 && !obu.payload.is_empty() => {
                sequence.get_or_insert(obu.bytes);
            }
            FRAME_HEADER | FRAME => {
                if first_header.is_none() {
                    first_header = Some(*obu.payload.first().ok_or("empty frame header")?);
                }
                frames.extend_from_slice(obu.bytes);
            }
            4..=REDUNDANT_FRAME_HEADER => frames.extend_from_slice(obu.bytes),
            _ => {}
        }
    }
    let sequence = sequence.unwrap_or(&headers[DELIMITER.len()..]);
    let first = first_header.ok_or("no frame header")?;
    // show_existing_frame (1 bit) = 0, frame_type (2 bits) = KEY_FRAME.
    if !reduced_still(sequence) && first & 0xe0 != 0 {
        return Err("the first frame header is not a shown key frame");
    }
    Ok([&DELIMITER[..], sequence, &frames].concat())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence header OBU (size field set) whose payload opens with `first`.
    fn seq(first: u8) -> Vec<u8> {
        vec![SEQUENCE_HEADER << 3 | 2, 3, first, 0x0a, 0x0b]
    }

    #[test]
    fn config_and_keyframe() {
        let rec = [&[0x81, 0x01, 0x0c, 0][..], &seq(0x00)].concat();
        let headers = parse_av1c(&rec).unwrap();
        assert_eq!(headers, [&DELIMITER[..], &seq(0x00)].concat());
        // A delimiter, the key frame's own sequence header (used instead of
        // the stream's), a key FRAME with an extension byte, then padding (dropped).
        let frame = [FRAME << 3 | 0x06, 0x10, 2, 0x10, 0xff];
        let data = [&DELIMITER[..], &seq(0x01), &frame, &[15 << 3 | 2, 1, 0]].concat();
        assert_eq!(keyframe_job(&headers, &data).unwrap(), [&DELIMITER[..], &seq(0x01), &frame].concat());
        // Without one, the stream's; the last OBU may omit its size and run to the end.
        let out = keyframe_job(&headers, &[FRAME << 3, 0x10, 0xff, 0xfe]).unwrap();
        assert_eq!(out, [&headers[..], &[FRAME << 3, 0x10, 0xff, 0xfe]].concat());
    }

    #[test]
    fn refusals() {
        let headers = [&DELIMITER[..], &seq(0x00)].concat();
        let job = |data: &[u8]| keyframe_job(&headers, data).map(|_| ());
        // An inter frame (frame_type 1) and a shown existing frame are not keyframes.
        assert_eq!(job(&[FRAME << 3 | 2, 1, 0x20]), Err("the first frame header is not a shown key frame"));
        assert_eq!(job(&[FRAME_HEADER << 3 | 2, 1, 0x80]), Err("the first frame header is not a shown key frame"));
        assert_eq!(job(&DELIMITER), Err("no frame header"));
        assert_eq!(job(&[FRAME << 3 | 2, 9, 0]), Err("OBU size runs past the end"));
        assert_eq!(job(&[0x80]), Err("OBU forbidden bit set"));
        assert_eq!(job(&[FRAME << 3 | 2, 0x80]), Err("OBU size field truncated"));
        // reduced_still_picture_header: frame headers carry no type, every frame is key.
        let still = [&DELIMITER[..], &seq(0x18)].concat();
        assert!(keyframe_job(&still, &[FRAME << 3 | 2, 1, 0xe0]).is_ok());

        assert_eq!(parse_av1c(&[0x81, 1, 0x0c, 0]), Err("no sequence header OBU"));
        assert_eq!(parse_av1c(&[0x01, 1, 0x0c, 0, 0x0a, 0]), Err("marker and version are not 1 and 1"));
        assert_eq!(parse_av1c(&[0x81, 1, 0x0c, 0, 0x0a, 0]), Err("sequence header OBU is empty"));
        assert_eq!(parse_av1c(&[0x81, 1, 0x0c, 0, 0x08, 1]), Err("sequence header OBU without a size field"));
    }
}
