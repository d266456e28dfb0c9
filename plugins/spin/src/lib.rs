//! A hostile plugin for the tests: `name` loops forever. The host must stop
//! it (fuel, epoch deadline) and store the capture with the default policy.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

struct Spin;

impl Guest for Spin {
    fn name(_capture: Capture, _template: Template) -> Result<Vec<Placement>, String> {
        let mut n = 0u64;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(Spin);
