//! AFL entry point: `edgesnap_fuzz::chunk_stream`.
fn main() {
    afl::fuzz!(|data: &[u8]| edgesnap_fuzz::chunk_stream(data));
}
