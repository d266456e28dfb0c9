//! AFL entry point: `edgesnap_fuzz::flv_video`.
fn main() {
    afl::fuzz!(|data: &[u8]| edgesnap_fuzz::flv_video(data));
}
