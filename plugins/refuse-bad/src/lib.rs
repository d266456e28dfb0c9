//! A plugin for the tests that passes its conformance run and then fails on
//! real captures: it refuses every stream whose name starts with `bad`, so
//! the host's fallback and demotion can be seen through the API.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

struct RefuseBad;

impl Guest for RefuseBad {
    fn name(capture: Capture, _template: Template) -> Result<Vec<Placement>, String> {
        if capture.stream.starts_with("bad") {
            return Err(format!("stream {} is refused", capture.stream));
        }
        let key = format!("{}/{}/{}.jpg", capture.app, capture.stream, capture.sequence);
        Ok(vec![Placement { key, mode: Mode::Sequential }])
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(RefuseBad);
