//! A domain's pull sources made through the API (docs/sources.md): kept in
//! the catalog by app and stream; the file's sources can only be changed
//! in the file.

use super::*;
use crate::config::RawSource;

fn name(app: &str, stream: &str) -> String {
    format!("{app}/{stream}")
}

fn not_found(domain: &str, app: &str, stream: &str) -> ChangeError {
    ChangeError::NotFound("SourceNotFound", format!("domain {domain:?} has no source for {app}/{stream}"))
}

impl Tenants {
    /// Adds a source (`replace`: or replaces the API's source of the same
    /// app and stream). Returns whether it was new.
    pub async fn put_source(&self, domain: &str, raw: RawSource, replace: bool) -> Result<bool, ChangeError> {
        let mut state = self.state.lock().await;
        let d = self.domain_in_force(domain)?;
        let source = config::validate_source(&raw, "", Origin::Api).map_err(ChangeError::Invalid)?;
        let existing = d.sources.iter().find(|s| (&s.app, &s.stream) == (&source.app, &source.stream));
        match existing {
            Some(s) if s.origin == Origin::File => {
                return Err(ChangeError::Conflict(
                    "ManagedByConfigFile",
                    format!(
                        "the source of {}/{} in domain {domain:?} is defined in the config file; change it there",
                        s.app, s.stream
                    ),
                ));
            }
            Some(s) if !replace => {
                return Err(ChangeError::Conflict(
                    "SourceAlreadyExists",
                    format!("{}/{} of domain {domain:?} already has a source", s.app, s.stream),
                ));
            }
            _ => {}
        }
        let key_name = name(&raw.app, &raw.stream);
        let mut next = state.catalog.clone();
        next.sources.insert((domain.to_owned(), key_name.clone()), raw.clone());
        let key = (SOURCE.to_owned(), domain.to_owned(), key_name);
        self.change(&mut state, next, None, vec![(key, Some(json_bytes(&raw)))]).await?;
        Ok(existing.is_none())
    }

    pub async fn delete_source(&self, domain: &str, app: &str, stream: &str) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        let d = self.domain_in_force(domain)?;
        let current = d
            .sources
            .iter()
            .find(|s| s.app == app && s.stream == stream)
            .ok_or_else(|| not_found(domain, app, stream))?;
        if current.origin == Origin::File {
            return Err(ChangeError::Conflict(
                "ManagedByConfigFile",
                format!(
                    "the source of {app}/{stream} in domain {domain:?} is defined in the config file; change it there"
                ),
            ));
        }
        let mut next = state.catalog.clone();
        next.sources.remove(&(domain.to_owned(), name(app, stream)));
        let key = (SOURCE.to_owned(), domain.to_owned(), name(app, stream));
        self.change(&mut state, next, None, vec![(key, None)]).await
    }
}
