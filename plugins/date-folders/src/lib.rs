//! An example tenant policy: every capture becomes one sequential object in
//! UTC date folders, `{app}/{stream}/YYYY/MM/DD/HHmmss-{sequence}.jpg`; the
//! template's names are ignored and nothing is overwritten or deleted.

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

struct DateFolders;

impl Guest for DateFolders {
    fn name(capture: Capture, _template: Template) -> Result<Vec<Placement>, String> {
        let secs = capture.create_timestamp_ms / 1000;
        let (y, m, d) = template_vars::civil_from_days((secs / 86_400) as i64);
        let t = secs % 86_400;
        let key = format!(
            "{}/{}/{y:04}/{m:02}/{d:02}/{:02}{:02}{:02}-{}.jpg",
            capture.app,
            capture.stream,
            t / 3600,
            t / 60 % 60,
            t % 60,
            capture.sequence
        );
        Ok(vec![Placement { key, mode: Mode::Sequential }])
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(DateFolders);
