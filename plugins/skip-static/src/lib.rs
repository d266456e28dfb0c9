//! An example tenant policy for static scenes: a capture whose picture hash
//! equals the stream's previous one is skipped; otherwise it is stored as
//! the template says. The previous hash lives in the domain's `state`.

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::log::{Level, log};
use edgesnap::policy::state;
use edgesnap::policy::types::Mode;

struct SkipStatic;

impl Guest for SkipStatic {
    fn name(capture: Capture, template: Template) -> Result<Vec<Placement>, String> {
        let key = format!("last-hash/{}/{}", capture.app, capture.stream);
        let hash = capture.frame.ahash.to_le_bytes().to_vec();
        if state::get(&key).as_deref() == Some(hash.as_slice()) {
            log(Level::Debug, &format!("{}/{}: same picture, skipped", capture.app, capture.stream));
            return Ok(Vec::new());
        }
        state::set(&key, &hash);
        Ok(template_vars::by_template!(capture, template, Placement, Mode))
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(SkipStatic);
