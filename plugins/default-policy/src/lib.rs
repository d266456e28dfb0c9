//! The built-in policy: the snapshot-template rules of docs/templates.md, exactly.
//!
//! Naming substitutes the template variables; the host has already validated
//! the templates, reserved the `{Sequence}` number and will resolve key
//! collisions of sequential objects. Deletion keeps everything (the reference
//! product deletes only on request).

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

struct DefaultPolicy;

impl Guest for DefaultPolicy {
    fn name(capture: Capture, template: Template) -> Result<Vec<Placement>, String> {
        Ok(template_vars::by_template!(capture, template, Placement, Mode))
    }

    fn select_deletions(_stream: StreamRef, _page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: Vec::new(), done: true })
    }
}

export!(DefaultPolicy);
