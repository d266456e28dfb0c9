//! Template variable substitution (docs/templates.md), pure and host-independent:
//! the default policy's naming, and a library for tenants' own plugins.

pub struct Vars<'a> {
    pub domain: &'a str,
    pub app: &'a str,
    pub stream: &'a str,
    pub create_timestamp_ms: u64,
    pub sequence: u64,
}

/// Replaces every `{Name}` the spec defines; anything else is kept verbatim
/// (the host's template validation has already refused unknown variables).
pub fn render(template: &str, v: &Vars<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let Some(close) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let name = &after[1..close];
        match name {
            "AppName" => out.push_str(v.app),
            "StreamName" => out.push_str(v.stream),
            "Domain" => out.push_str(v.domain),
            "UnixTimestamp" => out.push_str(&(v.create_timestamp_ms / 1000).to_string()),
            "UnixTimestampMs" => out.push_str(&v.create_timestamp_ms.to_string()),
            "Sequence" => out.push_str(&v.sequence.to_string()),
            "Date" => {
                let (y, m, d) = civil_from_days((v.create_timestamp_ms / 86_400_000) as i64);
                out.push_str(&format!("{y:04}-{m:02}-{d:02}"));
            }
            "Time" => {
                let s = (v.create_timestamp_ms / 1000) % 86_400;
                out.push_str(&format!("{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60));
            }
            _ => out.push_str(&after[..=close]),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The placements a template asks for, built in the calling plugin's own
/// generated WIT types: `by_template!(capture, template, Placement, Mode)`
/// gives the overwrite placement (if the template names one), then the
/// sequential one.
#[macro_export]
macro_rules! by_template {
    ($capture:expr, $template:expr, $placement:ident, $mode:ident) => {{
        let (c, t) = (&$capture, &$template);
        let vars = $crate::Vars {
            domain: &c.domain,
            app: &c.app,
            stream: &c.stream,
            create_timestamp_ms: c.create_timestamp_ms,
            sequence: c.sequence,
        };
        let (over, seq) = $crate::names(t.overwrite_object.as_deref(), t.sequence_object.as_deref(), &vars);
        let over = over.map(|key| $placement { key, mode: $mode::Overwrite });
        over.into_iter().chain(seq.map(|key| $placement { key, mode: $mode::Sequential })).collect::<Vec<_>>()
    }};
}

/// A template's two object names for a capture: (overwrite, sequential),
/// each present when the template names it.
pub fn names(overwrite: Option<&str>, sequence: Option<&str>, v: &Vars<'_>) -> (Option<String>, Option<String>) {
    (overwrite.map(|t| render(t, v)), sequence.map(|t| render(t, v)))
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day), UTC
/// (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(ms: u64, seq: u64) -> Vars<'static> {
        Vars { domain: "push.example.com", app: "live", stream: "cam1", create_timestamp_ms: ms, sequence: seq }
    }

    #[test]
    fn reference_examples() {
        let v = vars(1_764_057_600_123, 7);
        assert_eq!(render("{AppName}/{StreamName}.jpg", &v), "live/cam1.jpg");
        assert_eq!(
            render("snapshot/{AppName}/{StreamName}/{UnixTimestamp}.jpg", &v),
            "snapshot/live/cam1/1764057600.jpg"
        );
        assert_eq!(render("{Domain}/{Sequence}.jpg", &v), "push.example.com/7.jpg");
        assert_eq!(render("{UnixTimestampMs}.jpg", &v), "1764057600123.jpg");
    }

    #[test]
    fn date_and_time_are_utc() {
        // 2025-11-25T08:00:00.123Z
        let v = vars(1_764_057_600_123, 0);
        assert_eq!(render("{Date}/{Time}.jpg", &v), "2025-11-25/080000.jpg");
        assert_eq!(render("{Date}", &vars(0, 0)), "1970-01-01");
        // 2024-02-29T23:59:59Z
        assert_eq!(render("{Date} {Time}", &vars(1_709_251_199_000, 0)), "2024-02-29 235959");
        assert_eq!(civil_from_days(20_417), (2025, 11, 25));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn unknown_and_unclosed_braces_are_kept() {
        let v = vars(0, 0);
        assert_eq!(render("{Nope}/{AppName", &v), "{Nope}/{AppName");
    }
}
