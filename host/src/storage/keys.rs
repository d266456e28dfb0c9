//! Object keys as a plugin or a template produced them (docs/plugins.md):
//! the check every key passes before anything is written under it. Pure
//! (the fuzz targets compile this file on its own).

use object_store::path::Path as ObjectPath;

/// A key refused, and why (the first 200 characters of it).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadKey {
    pub(crate) key: String,
    pub(crate) why: String,
}

/// Relative, no empty, `.` or `..` segments, no `\`, no control
/// characters, 1-1024 bytes; and a path object_store takes as it is.
pub(crate) fn check(key: &str) -> Result<ObjectPath, BadKey> {
    let bad = |why: &str| BadKey { key: key.chars().take(200).collect(), why: why.into() };
    if key.is_empty() || key.len() > 1024 {
        return Err(bad("must be 1-1024 bytes"));
    }
    if key.starts_with('/') || key.contains('\\') {
        return Err(bad("must be a relative path"));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(bad("must not contain empty, '.' or '..' segments"));
    }
    ObjectPath::parse(key).map_err(|e| bad(&e.to_string()))
}
