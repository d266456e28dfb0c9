//! A stream's identity, as every stage names it.

use std::fmt;

/// A stream: its domain (the tenant), app and stream name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub domain: String,
    pub app: String,
    pub stream: String,
}

impl StreamKey {
    pub fn new(domain: &str, app: &str, stream: &str) -> StreamKey {
        StreamKey { domain: domain.to_owned(), app: app.to_owned(), stream: stream.to_owned() }
    }
}

/// `domain/app/stream`.
impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.domain, self.app, self.stream)
    }
}
