//! FLV files for the benchmark examples: tags, and keyframes as decoder jobs.

pub(crate) struct Tag {
    pub(crate) kind: u8,
    pub(crate) ts: u32,
    pub(crate) data: Vec<u8>,
}

pub(crate) fn read(path: &str) -> Vec<Tag> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    assert_eq!(&b[..3], b"FLV", "{path} is not FLV");
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

/// Each AVC keyframe of the file as an Annex-B decoder job: the SPS and PPS
/// of the configuration record in force, then the frame's NAL units.
pub(crate) fn keyframe_jobs(tags: &[Tag]) -> Vec<Vec<u8>> {
    let mut sps_pps = Vec::new();
    let mut jobs = Vec::new();
    for t in tags.iter().filter(|t| t.kind == 9 && t.data.len() > 5 && t.data[0] & 0x0f == 7) {
        if t.data[1] == 0 {
            let rec = &t.data[5..];
            sps_pps.clear();
            let mut p = 6;
            for round in 0..2 {
                let n = if round == 0 { rec[5] & 0x1f } else { rec[p] };
                p += round; // the PPS count is its own byte
                for _ in 0..n {
                    let len = u16::from_be_bytes([rec[p], rec[p + 1]]) as usize;
                    sps_pps.extend_from_slice(&[0, 0, 0, 1]);
                    sps_pps.extend_from_slice(&rec[p + 2..p + 2 + len]);
                    p += 2 + len;
                }
            }
        } else if t.data[0] >> 4 == 1 && t.data[1] == 1 {
            let mut job = sps_pps.clone();
            let mut rest = &t.data[5..];
            while rest.len() >= 4 {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                job.extend_from_slice(&[0, 0, 0, 1]);
                job.extend_from_slice(&rest[4..4 + len]);
                rest = &rest[4 + len..];
            }
            jobs.push(job);
        }
    }
    jobs
}
