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
        let (y, m, d) = civil_from_days((secs / 86_400) as i64);
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

    fn select_deletions(_stream: StreamRef, _page: Vec<StoredSnapshot>, _now_ms: u64) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

export!(DateFolders);

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(super::civil_from_days(11_016), (2000, 2, 29));
    }
}
