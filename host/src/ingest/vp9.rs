//! VP9 in Enhanced RTMP (`vp09`): the `VPCodecConfigurationRecord`
//! (`vpcC`) and keyframes. A VP9 key frame carries everything a decoder
//! needs (no parameter sets), so a job is the frame (or superframe) itself.

/// `vpcC` (VP-codec-ISOBMFF §2.2, version 1): version and flags, profile,
/// level, bit depth and colour, then the codec initialization data size.
pub(crate) fn check_vpcc(rec: &[u8]) -> Result<(), &'static str> {
    if rec.len() < 12 {
        return Err("shorter than its fixed header");
    }
    if rec[0] != 1 {
        return Err("version is not 1");
    }
    if rec[4] > 3 {
        return Err("profile is not 0-3");
    }
    Ok(())
}

/// Checks that `frame` opens with a shown key frame's uncompressed header
/// (VP9 spec §6.2): frame marker, profile, `show_existing_frame` = 0,
/// `frame_type` = KEY_FRAME, then the sync code. A superframe's first frame
/// comes first in it, so the check holds for superframes too.
pub(crate) fn check_keyframe(frame: &[u8]) -> Result<(), &'static str> {
    let Some(head) = frame.get(..5) else {
        return Err("shorter than a key frame header");
    };
    let bits = u64::from_be_bytes([head[0], head[1], head[2], head[3], head[4], 0, 0, 0]);
    let bit = |at: u32| (bits >> (63 - at)) & 1;
    if bits >> 62 != 0b10 {
        return Err("no frame marker");
    }
    let profile = bit(2) | bit(3) << 1;
    // Profile 3 has a reserved zero bit after the profile bits.
    let at = if profile == 3 { 5 } else { 4 };
    if bit(at) == 1 {
        return Err("a shown existing frame, not a key frame");
    }
    if bit(at + 1) == 1 {
        return Err("not a key frame");
    }
    // show_frame and error_resilient_mode, then the 24-bit sync code.
    if (bits >> (64 - (at + 4) - 24)) & 0xff_ffff != 0x49_8342 {
        return Err("key frame without the sync code");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes() {
        // What libvpx writes: profile 0, key frame, shown, sync code.
        assert_eq!(check_keyframe(&[0x82, 0x49, 0x83, 0x42, 0x00, 0x27]), Ok(()));
        // Profile 3 (a reserved bit shifts the rest by one).
        assert_eq!(check_keyframe(&[0xb1, 0x24, 0xc1, 0xa1, 0x00]), Ok(()));
        // An inter frame (frame_type 1), a shown existing frame, no marker, no sync code.
        assert_eq!(check_keyframe(&[0x86, 0x00, 0x40, 0x92, 0xf1]), Err("not a key frame"));
        assert_eq!(check_keyframe(&[0x88, 0, 0, 0, 0]), Err("a shown existing frame, not a key frame"));
        assert_eq!(check_keyframe(&[0x42, 0x49, 0x83, 0x42, 0]), Err("no frame marker"));
        assert_eq!(check_keyframe(&[0x82, 0x49, 0x83, 0x43, 0]), Err("key frame without the sync code"));
        assert_eq!(check_keyframe(&[0x82]), Err("shorter than a key frame header"));
        assert_eq!(check_vpcc(&[1, 0, 0, 0, 0, 0x15, 0x82, 2, 2, 2, 0, 0]), Ok(()));
        assert_eq!(check_vpcc(&[2, 0, 0, 0, 0, 0x15, 0x82, 2, 2, 2, 0, 0]), Err("version is not 1"));
    }
}
