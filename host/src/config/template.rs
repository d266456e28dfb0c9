//! The snapshot-template rules of docs/templates.md, shared by the config file and the
//! HTTP API. Each failure carries the reference product's error code and a
//! message naming the rule.

use std::fmt;

/// One broken template rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The reference's style of code, e.g. `InvalidParameter.TimeInterval`.
    pub code: &'static str,
    /// The field that broke it.
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for RuleError {}

fn broken(code: &'static str, field: &'static str, message: impl Into<String>) -> RuleError {
    RuleError { code, field, message: message.into() }
}

pub const MIN_INTERVAL_S: u32 = 5;
pub const MAX_INTERVAL_S: u32 = 3600;

/// `app_name`: 1–255 of letters, digits, `-`, `_`, not starting with `-` or
/// `_`; or exactly `*`.
pub fn check_app_name(app: &str) -> Result<(), RuleError> {
    const CODE: &str = "InvalidParameter.AppName";
    if app == "*" {
        return Ok(());
    }
    if app.is_empty() || app.len() > 255 {
        return Err(broken(CODE, "app_name", "must be 1-255 characters or exactly \"*\""));
    }
    if !app.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(broken(CODE, "app_name", "may contain only letters, digits, '-' and '_'"));
    }
    if app.starts_with(['-', '_']) {
        return Err(broken(CODE, "app_name", "must not start with '-' or '_'"));
    }
    Ok(())
}

/// `time_interval`: integer seconds, 5–3600.
pub fn check_interval(seconds: i64) -> Result<u32, RuleError> {
    if (i64::from(MIN_INTERVAL_S)..=i64::from(MAX_INTERVAL_S)).contains(&seconds) {
        Ok(seconds as u32)
    } else {
        Err(broken(
            "InvalidParameter.TimeInterval",
            "time_interval",
            format!("must be an integer from {MIN_INTERVAL_S} to {MAX_INTERVAL_S} seconds, got {seconds}"),
        ))
    }
}

const OVERWRITE_VARS: &[&str] = &["AppName", "StreamName", "Domain"];
const SEQUENCE_VARS: &[&str] =
    &["AppName", "StreamName", "Domain", "UnixTimestamp", "UnixTimestampMs", "Sequence", "Date", "Time"];
const UNIQUE_VARS: &[&str] = &["UnixTimestamp", "UnixTimestampMs", "Sequence"];

/// The variables `{Name}` used in an object-name template, or an error for an
/// unclosed brace.
fn variables(template: &str) -> Result<Vec<&str>, String> {
    let mut vars = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| "has an unclosed '{'".to_string())?;
        vars.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err("has a '}' without '{'".into());
    }
    Ok(vars)
}

fn check_object(
    template: &str,
    format: ImageFormat,
    field: &'static str,
    code: &'static str,
    allowed: &[&str],
) -> Result<Vec<String>, RuleError> {
    if template.len() >= 256 {
        return Err(broken(code, field, "must be under 256 bytes"));
    }
    if !template.ends_with(format.extension()) {
        return Err(broken(
            code,
            field,
            format!("must end in {} (the template's format is {})", format.extension(), format.as_str()),
        ));
    }
    // As storage checks every key it renders to (a template it passed must
    // not fail each capture at store time; the fuzzer found `//` and `\`).
    if template.starts_with('/')
        || template.contains('\\')
        || template.split('/').any(|seg| matches!(seg, "" | "." | ".."))
    {
        return Err(broken(
            code,
            field,
            "must be a relative object name without empty, '.' or '..' segments, and without '\\'",
        ));
    }
    if template.chars().any(char::is_control) {
        return Err(broken(code, field, "must not contain control characters"));
    }
    let vars = variables(template).map_err(|m| broken(code, field, m))?;
    for v in &vars {
        if !allowed.contains(v) {
            return Err(broken(
                code,
                field,
                format!(
                    "uses {{{v}}}; allowed variables are {}",
                    allowed.iter().map(|a| format!("{{{a}}}")).collect::<Vec<_>>().join(" ")
                ),
            ));
        }
    }
    Ok(vars.into_iter().map(String::from).collect())
}

/// `overwrite_object`: under 256 bytes, ends in the format's extension
/// (`.jpg`, `.webp`), may use `{AppName}` `{StreamName}` `{Domain}`.
pub fn check_overwrite_object(template: &str, format: ImageFormat) -> Result<(), RuleError> {
    check_object(template, format, "overwrite_object", "InvalidParameter.OverwriteObject", OVERWRITE_VARS).map(drop)
}

/// `sequence_object`: as `overwrite_object`, may also use `{UnixTimestamp}`
/// `{UnixTimestampMs}` `{Sequence}` `{Date}` `{Time}`, and must contain one of
/// `{UnixTimestamp}` `{UnixTimestampMs}` `{Sequence}`.
pub fn check_sequence_object(template: &str, format: ImageFormat) -> Result<(), RuleError> {
    const CODE: &str = "InvalidParameter.SequenceObject";
    let vars = check_object(template, format, "sequence_object", CODE, SEQUENCE_VARS)?;
    if !vars.iter().any(|v| UNIQUE_VARS.contains(&v.as_str())) {
        return Err(broken(CODE, "sequence_object", "must contain {UnixTimestamp}, {UnixTimestampMs} or {Sequence}"));
    }
    Ok(())
}

/// At least one of the two modes.
pub fn check_modes(overwrite: Option<&str>, sequence: Option<&str>) -> Result<(), RuleError> {
    if overwrite.is_none() && sequence.is_none() {
        return Err(broken(
            "MissingParameter.Object",
            "overwrite_object",
            "at least one of overwrite_object and sequence_object is required",
        ));
    }
    Ok(())
}

/// The picture format a template stores (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageFormat {
    #[default]
    Jpg,
    Webp,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Jpg => "jpg",
            ImageFormat::Webp => "webp",
        }
    }

    /// What its object names end in.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Jpg => ".jpg",
            ImageFormat::Webp => ".webp",
        }
    }
}

/// `format`: `jpg` or `webp`.
pub fn check_format(f: &str) -> Result<ImageFormat, RuleError> {
    match f {
        "jpg" => Ok(ImageFormat::Jpg),
        "webp" => Ok(ImageFormat::Webp),
        _ => Err(broken("InvalidParameter.Format", "format", format!("must be jpg or webp, got {f:?}"))),
    }
}

/// Most snapshots one storyboard holds (its period over the interval).
pub const MAX_STORYBOARD_TILES: i64 = 1000;

/// `storyboard`: 0 (none) or 60 to 86400 seconds, and at most
/// [`MAX_STORYBOARD_TILES`] snapshots a period.
pub fn check_storyboard(period: i64, interval_s: u32) -> Result<u32, RuleError> {
    const CODE: &str = "InvalidParameter.Storyboard";
    if period == 0 {
        return Ok(0);
    }
    if !(60..=86_400).contains(&period) {
        return Err(broken(CODE, "storyboard", format!("must be 0 (none) or from 60 to 86400 seconds, got {period}")));
    }
    if period / i64::from(interval_s) > MAX_STORYBOARD_TILES {
        return Err(broken(
            CODE,
            "storyboard",
            format!(
                "{period} s holds more than {MAX_STORYBOARD_TILES} snapshots of {interval_s} s; use a shorter period"
            ),
        ));
    }
    Ok(period as u32)
}

/// The largest `width` or `height` a template may scale to.
pub const MAX_SIDE: i64 = 4096;

/// `width` / `height`: 0 (the source's; with the other side set, kept in
/// aspect) or 16 to [`MAX_SIDE`] pixels.
pub fn check_side(field: &'static str, code: &'static str, v: i64) -> Result<u32, RuleError> {
    if v == 0 || (16..=MAX_SIDE).contains(&v) {
        return Ok(v as u32);
    }
    Err(broken(code, field, format!("must be 0 (the source's) or from 16 to {MAX_SIDE} pixels, got {v}")))
}

/// `jpeg_quality`: 1–100.
pub fn check_jpeg_quality(q: i64) -> Result<u8, RuleError> {
    if (1..=100).contains(&q) {
        Ok(q as u8)
    } else {
        Err(broken("InvalidParameter.JpegQuality", "jpeg_quality", format!("must be from 1 to 100, got {q}")))
    }
}

/// Stream and app names at ingest: 1–255 of letters, digits, `-`, `_`, `.`,
/// not starting with `.`.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code<T>(r: Result<T, RuleError>) -> &'static str {
        r.err().map(|e| e.code).unwrap_or("ok")
    }

    #[test]
    fn app_names() {
        for (app, want) in [
            ("live", "ok"),
            ("*", "ok"),
            ("app-1_x", "ok"),
            ("A9", "ok"),
            ("", "InvalidParameter.AppName"),
            ("-live", "InvalidParameter.AppName"),
            ("_live", "InvalidParameter.AppName"),
            ("li ve", "InvalidParameter.AppName"),
            ("li.ve", "InvalidParameter.AppName"),
            ("**", "InvalidParameter.AppName"),
            (&"a".repeat(255), "ok"),
            (&"a".repeat(256), "InvalidParameter.AppName"),
        ] {
            assert_eq!(code(check_app_name(app)), want, "app_name {app:?}");
        }
    }

    #[test]
    fn intervals() {
        for (s, want) in [
            (5, "ok"),
            (3600, "ok"),
            (10, "ok"),
            (4, "InvalidParameter.TimeInterval"),
            (0, "InvalidParameter.TimeInterval"),
            (-5, "InvalidParameter.TimeInterval"),
            (3601, "InvalidParameter.TimeInterval"),
        ] {
            assert_eq!(code(check_interval(s)), want, "time_interval {s}");
        }
    }

    #[test]
    fn overwrite_objects() {
        for (t, want) in [
            ("{AppName}/{StreamName}.jpg", "ok"),
            ("{Domain}/{AppName}/{StreamName}.jpg", "ok"),
            ("snap.jpg", "ok"),
            ("{AppName}/{StreamName}.png", "InvalidParameter.OverwriteObject"),
            ("{AppName}/{StreamName}", "InvalidParameter.OverwriteObject"),
            ("{AppName}/{UnixTimestamp}.jpg", "InvalidParameter.OverwriteObject"),
            ("{AppName}/{Sequence}.jpg", "InvalidParameter.OverwriteObject"),
            ("{AppName/x.jpg", "InvalidParameter.OverwriteObject"),
            ("/abs/{StreamName}.jpg", "InvalidParameter.OverwriteObject"),
            ("../{StreamName}.jpg", "InvalidParameter.OverwriteObject"),
            // Found by the template fuzz target: they passed, and every key failed at store time.
            ("{AppName}//{StreamName}.jpg", "InvalidParameter.OverwriteObject"),
            ("{AppName}\\{StreamName}.jpg", "InvalidParameter.OverwriteObject"),
            (&format!("{}.jpg", "a".repeat(251)), "ok"),
            (&format!("{}.jpg", "a".repeat(252)), "InvalidParameter.OverwriteObject"),
        ] {
            assert_eq!(code(check_overwrite_object(t, ImageFormat::Jpg)), want, "overwrite_object {t:?}");
        }
        // A WebP template's names end in .webp, and only those.
        assert_eq!(code(check_overwrite_object("{StreamName}.webp", ImageFormat::Webp)), "ok");
        assert_eq!(
            code(check_overwrite_object("{StreamName}.jpg", ImageFormat::Webp)),
            "InvalidParameter.OverwriteObject"
        );
        assert_eq!(
            code(check_overwrite_object("{StreamName}.webp", ImageFormat::Jpg)),
            "InvalidParameter.OverwriteObject"
        );
    }

    #[test]
    fn formats_and_sizes() {
        assert_eq!(check_format("webp"), Ok(ImageFormat::Webp));
        assert_eq!(code(check_format("png").map(drop)), "InvalidParameter.Format");
        assert_eq!(check_side("width", "InvalidParameter.Width", 0), Ok(0));
        assert_eq!(check_side("width", "InvalidParameter.Width", 320), Ok(320));
        for bad in [-1, 1, 15, 4097] {
            assert_eq!(code(check_side("width", "InvalidParameter.Width", bad).map(drop)), "InvalidParameter.Width");
        }
        assert_eq!(check_storyboard(0, 5), Ok(0));
        assert_eq!(check_storyboard(3600, 5), Ok(3600));
        for (bad, interval) in [(59, 5), (86_401, 3600), (86_400, 5)] {
            assert_eq!(code(check_storyboard(bad, interval).map(drop)), "InvalidParameter.Storyboard");
        }
    }

    #[test]
    fn sequence_objects() {
        for (t, want) in [
            ("snapshot/{AppName}/{StreamName}/{UnixTimestamp}.jpg", "ok"),
            ("{AppName}/{StreamName}/{Sequence}.jpg", "ok"),
            ("{AppName}/{StreamName}/{UnixTimestampMs}.jpg", "ok"),
            ("{Date}/{Time}/{Sequence}.jpg", "ok"),
            ("{AppName}/{StreamName}.jpg", "InvalidParameter.SequenceObject"),
            ("{Date}/{Time}.jpg", "InvalidParameter.SequenceObject"),
            ("{AppName}/{Nope}/{Sequence}.jpg", "InvalidParameter.SequenceObject"),
            ("{Sequence}.jpeg", "InvalidParameter.SequenceObject"),
        ] {
            assert_eq!(code(check_sequence_object(t, ImageFormat::Jpg)), want, "sequence_object {t:?}");
        }
    }

    #[test]
    fn at_least_one_mode() {
        assert_eq!(code(check_modes(None, None)), "MissingParameter.Object");
        assert_eq!(code(check_modes(Some("a.jpg"), None)), "ok");
        assert_eq!(code(check_modes(None, Some("{Sequence}.jpg"))), "ok");
    }

    #[test]
    fn stream_names() {
        assert!(is_valid_stream_name("cam1"));
        assert!(is_valid_stream_name("cam.1-x_y"));
        assert!(!is_valid_stream_name(".cam"));
        assert!(!is_valid_stream_name(""));
        assert!(!is_valid_stream_name("cam/1"));
        assert!(!is_valid_stream_name("cam 1"));
        assert!(!is_valid_stream_name(&"a".repeat(256)));
    }
}
