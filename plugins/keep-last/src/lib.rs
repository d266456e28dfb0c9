//! An example tenant policy: names captures as the template says and keeps
//! the newest [`KEEP`] sequential snapshots of each stream, deleting older
//! ones after each new snapshot. Change `KEEP` and rebuild for another N.

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

/// Sequential snapshots kept per stream.
pub const KEEP: u64 = 10;

struct KeepLast;

impl Guest for KeepLast {
    fn name(capture: Capture, template: Template) -> Result<Vec<Placement>, String> {
        Ok(template_vars::by_template!(capture, template, Placement, Mode))
    }

    fn select_deletions(_stream: StreamRef, page: DeletionPage, _now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: beyond(KEEP, page.offset, &page.items), done: false })
    }
}

/// The ids of a newest-first page's items at positions `keep` and after.
fn beyond(keep: u64, offset: u64, items: &[StoredSnapshot]) -> Vec<String> {
    let skip = keep.saturating_sub(offset).min(items.len() as u64) as usize;
    items[skip..].iter().map(|s| s.id.clone()).collect()
}

export!(KeepLast);

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: std::ops::Range<u64>) -> Vec<StoredSnapshot> {
        ids.map(|i| StoredSnapshot {
            id: i.to_string(),
            create_timestamp_ms: 1000 - i,
            key: String::new(),
            sequence: 0,
            size: 0,
        })
        .collect()
    }

    #[test]
    fn keeps_the_newest_across_pages() {
        assert_eq!(beyond(10, 0, &page(0..8)), Vec::<String>::new());
        assert_eq!(beyond(10, 8, &page(8..12)), vec!["10", "11"]);
        assert_eq!(beyond(10, 12, &page(12..14)), vec!["12", "13"]);
        assert_eq!(beyond(0, 0, &page(0..2)), vec!["0", "1"]);
    }
}
