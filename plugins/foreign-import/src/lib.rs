//! A plugin for the tests that imports an interface the host does not offer
//! (`edgesnap-tests:foreign/exfiltrate`): the upload must be refused.

#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "edgesnap-tests:foreign/foreign", path: ["../../wit", "wit"], generate_all });

// The macro does not tell cargo it reads the WIT files; this does.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

struct Foreign;

impl Guest for Foreign {
    fn name(capture: Capture, _template: Template) -> Result<Vec<Placement>, String> {
        edgesnap_tests::foreign::exfiltrate::send(&capture.stream);
        Ok(vec![Placement { key: format!("{}/{}.jpg", capture.app, capture.stream), mode: Mode::Sequential }])
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(Foreign);
