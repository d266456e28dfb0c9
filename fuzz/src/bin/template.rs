//! AFL entry point: `edgesnap_fuzz::template_render`.
fn main() {
    afl::fuzz!(|data: &[u8]| edgesnap_fuzz::template_render(data));
}
