//! AFL entry point: `edgesnap_fuzz::amf0_values`.
fn main() {
    afl::fuzz!(|data: &[u8]| edgesnap_fuzz::amf0_values(data));
}
