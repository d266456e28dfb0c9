//! An example tenant policy: names captures as the template says, and thins
//! a stream's sequential snapshots out as they age: all of the last hour,
//! one per 10 minutes for the last day, one per hour before that (in each
//! slot, the newest is kept).

// The generated guest bindings take one argument per flattened field.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({ world: "policy", path: "../../wit" });

// The macro does not tell cargo it reads the WIT file; this does, so a
// change of the contract rebuilds the component.
const _: &[u8] = include_bytes!("../../../wit/policy.wit");

use edgesnap::policy::types::Mode;

const MINUTE: u64 = 60_000;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

struct ThinByAge;

impl Guest for ThinByAge {
    fn name(capture: Capture, template: Template) -> Result<Vec<Placement>, String> {
        Ok(template_vars::by_template!(capture, template, Placement, Mode))
    }

    fn select_deletions(_stream: StreamRef, page: DeletionPage, now_ms: u64) -> Result<Deletions, String> {
        Ok(Deletions { ids: thin(page.newer.as_ref(), &page.items, now_ms), done: false })
    }
}

/// The slot a snapshot of this age falls in; None: younger than an hour, kept.
fn slot(create_ms: u64, now_ms: u64) -> Option<(u8, u64)> {
    match now_ms.saturating_sub(create_ms) {
        age if age < HOUR => None,
        age if age < DAY => Some((1, create_ms / (10 * MINUTE))),
        _ => Some((2, create_ms / HOUR)),
    }
}

/// The ids of a newest-first page to delete: each item sharing its slot
/// with the snapshot just newer than it.
fn thin(newer: Option<&StoredSnapshot>, items: &[StoredSnapshot], now_ms: u64) -> Vec<String> {
    let mut prev = newer.map(|n| slot(n.create_timestamp_ms, now_ms));
    let mut out = Vec::new();
    for item in items {
        let s = slot(item.create_timestamp_ms, now_ms);
        if s.is_some() && prev == Some(s) {
            out.push(item.id.clone());
        }
        prev = Some(s);
    }
    out
}

export!(ThinByAge);

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ms: u64) -> StoredSnapshot {
        StoredSnapshot { id: ms.to_string(), create_timestamp_ms: ms, key: String::new(), sequence: 0, size: 0 }
    }

    #[test]
    fn three_days_every_5_seconds_thin_to_the_rule() {
        let now = 10 * DAY;
        // Newest first, every 5 s over three days.
        let all: Vec<StoredSnapshot> = (0..3 * DAY / 5000).map(|i| snap(now - i * 5000)).collect();
        // In pages of 256, each told the item just newer than its first.
        let mut deleted = std::collections::HashSet::new();
        for (n, page) in all.chunks(256).enumerate() {
            let newer = (n > 0).then(|| &all[n * 256 - 1]);
            deleted.extend(thin(newer, page, now));
        }
        let kept: Vec<u64> = all.iter().filter(|s| !deleted.contains(&s.id)).map(|s| s.create_timestamp_ms).collect();
        let last_hour = kept.iter().filter(|&&t| now - t < HOUR).count();
        let day = kept.iter().filter(|&&t| (HOUR..DAY).contains(&(now - t))).count();
        let older = kept.iter().filter(|&&t| now - t >= DAY).count();
        assert_eq!(last_hour, 720);
        // `now` falls on a slot edge, so the snapshot exactly an hour old
        // opens a slot of its own, then 23 hours of 10-minute slots follow;
        // likewise the one exactly a day old, then 48 hourly slots.
        assert_eq!(day, 1 + 23 * 6);
        assert_eq!(older, 1 + 48);
        // Thinning again changes nothing.
        let kept_snaps: Vec<StoredSnapshot> = kept.iter().map(|&t| snap(t)).collect();
        assert!(thin(None, &kept_snaps, now).is_empty());
    }
}
