//! AFL entry point: `edgesnap_fuzz::plugin_output`.
fn main() {
    afl::fuzz!(|data: &[u8]| edgesnap_fuzz::plugin_output(data));
}
