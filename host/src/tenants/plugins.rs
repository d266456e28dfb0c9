//! A domain's uploaded plugin versions in the catalog: which are kept (within
//! the domain's upload limits), which is active, which a demotion returns to.

use super::*;

/// An uploaded plugin version of a domain: its bytes are in
/// `data_dir/plugins/{version}.wasm`, `version` being their sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginDoc {
    pub size: u64,
    pub uploaded_ms: u64,
    /// What its conformance run used.
    pub fuel: u64,
    pub peak_memory_bytes: u64,
    /// The contract version it was built against (`wit/`); versions
    /// uploaded before 1.1.0 existed are of 1.0.0.
    #[serde(default = "contract_1_0")]
    pub contract: String,
    /// Why and when it was last demoted, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub demoted: Option<Demotion>,
}

fn contract_1_0() -> String {
    "1.0.0".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Demotion {
    pub time_ms: u64,
    pub reason: String,
}

/// A domain keeps at most `max_versions` uploaded versions of at most
/// `uploads_bytes` together.
fn check_upload_quota(
    domain: &str,
    kept: impl Iterator<Item = u64>,
    size: u64,
    limits: &crate::config::PluginLimits,
) -> Result<(), ChangeError> {
    let (count, bytes) = kept.fold((0usize, 0u64), |(n, b), s| (n + 1, b + s));
    if count >= limits.max_versions {
        return Err(ChangeError::Conflict(
            "PluginQuotaExceeded",
            format!(
                "domain {domain:?} keeps {count} plugin versions, its limit (plugin_limits.max_versions); delete an unused one first"
            ),
        ));
    }
    if bytes + size > limits.uploads_bytes {
        return Err(ChangeError::Conflict(
            "PluginQuotaExceeded",
            format!(
                "domain {domain:?} keeps {bytes} bytes of plugin versions; {size} more is over its limit of {} (plugin_limits.uploads_mib); delete an unused one first",
                limits.uploads_bytes
            ),
        ));
    }
    Ok(())
}

impl Tenants {
    // ---- plugins ---------------------------------------------------------

    /// Every domain's active plugin version (at start).
    pub async fn active_plugins(&self) -> Vec<(String, String)> {
        self.state.lock().await.catalog.active_plugins.iter().map(|(d, v)| (d.clone(), v.clone())).collect()
    }

    /// A domain's versions, and the active one (None: the default).
    pub async fn plugins(&self, domain: &str) -> (Option<String>, Vec<(String, PluginDoc)>) {
        let state = self.state.lock().await;
        let versions = state
            .catalog
            .plugins
            .iter()
            .filter(|((d, _), _)| d == domain)
            .map(|((_, v), doc)| (v.clone(), doc.clone()))
            .collect();
        (state.catalog.active_plugins.get(domain).cloned(), versions)
    }

    /// Where a demotion of the domain's active version would go (None: the default).
    pub async fn previous_plugin(&self, domain: &str) -> Option<String> {
        self.state.lock().await.catalog.previous_plugins.get(domain).cloned()
    }

    /// Records an uploaded version (its bytes already stored). Returns false
    /// if the domain had it already.
    pub async fn add_plugin(&self, domain: &str, version: &str, doc: PluginDoc) -> Result<bool, ChangeError> {
        let mut state = self.state.lock().await;
        self.domain_in_force(domain)?;
        let key = (domain.to_owned(), version.to_owned());
        if state.catalog.plugins.contains_key(&key) {
            return Ok(false);
        }
        let limits = self.settings.get().plugin_limits_for(domain);
        let kept =
            state.catalog.plugins.range((domain.to_owned(), String::new())..).take_while(|((d, _), _)| d == domain);
        check_upload_quota(domain, kept.map(|(_, d)| d.size), doc.size, &limits)?;
        let mut next = state.catalog.clone();
        next.plugins.insert(key, doc.clone());
        let ckey = (PLUGIN.to_owned(), domain.to_owned(), version.to_owned());
        self.change(&mut state, next, None, vec![(ckey, Some(json_bytes(&doc)))]).await?;
        Ok(true)
    }

    /// Whether a domain may keep one more version of `size` bytes (the
    /// API asks before compiling it; `add_plugin` decides).
    pub async fn upload_allowed(&self, domain: &str, version: &str, size: u64) -> Result<(), ChangeError> {
        let state = self.state.lock().await;
        if state.catalog.plugins.contains_key(&(domain.to_owned(), version.to_owned())) {
            return Ok(());
        }
        let limits = self.settings.get().plugin_limits_for(domain);
        let kept =
            state.catalog.plugins.range((domain.to_owned(), String::new())..).take_while(|((d, _), _)| d == domain);
        check_upload_quota(domain, kept.map(|(_, d)| d.size), size, &limits)
    }

    /// Records which version is active (None: the default). The caller has
    /// checked that it loads. The version it replaces becomes the one a
    /// demotion returns to.
    pub async fn activate_plugin(&self, domain: &str, version: Option<&str>) -> Result<(), ChangeError> {
        let mut state = self.state.lock().await;
        self.domain_in_force(domain)?;
        if let Some(v) = version
            && !state.catalog.plugins.contains_key(&(domain.to_owned(), v.to_owned()))
        {
            return Err(plugin_not_found(domain, v));
        }
        let current = state.catalog.active_plugins.get(domain).cloned();
        if current.as_deref() == version {
            return Ok(());
        }
        let mut next = state.catalog.clone();
        let writes = vec![
            set_plugin_slot(&mut next.active_plugins, PLUGIN_ACTIVE, domain, version),
            set_plugin_slot(&mut next.previous_plugins, PLUGIN_PREVIOUS, domain, current.as_deref()),
        ];
        self.change(&mut state, next, None, writes).await
    }

    /// Demotes a domain's active version after repeated failures: the
    /// previous version (if it is still there) or the default becomes
    /// active, and the demoted version records why. Returns what is active
    /// now; nothing changes if `version` is no longer the active one.
    pub async fn demote_plugin(
        &self,
        domain: &str,
        version: &str,
        reason: &str,
    ) -> Result<Option<String>, ChangeError> {
        let mut state = self.state.lock().await;
        let current = state.catalog.active_plugins.get(domain).cloned();
        if current.as_deref() != Some(version) {
            return Ok(current);
        }
        let key = (domain.to_owned(), version.to_owned());
        let back = state
            .catalog
            .previous_plugins
            .get(domain)
            .filter(|p| *p != version && state.catalog.plugins.contains_key(&(domain.to_owned(), (*p).clone())))
            .cloned();
        let mut next = state.catalog.clone();
        let mut writes = vec![
            set_plugin_slot(&mut next.active_plugins, PLUGIN_ACTIVE, domain, back.as_deref()),
            set_plugin_slot(&mut next.previous_plugins, PLUGIN_PREVIOUS, domain, None),
        ];
        if let Some(doc) = next.plugins.get_mut(&key) {
            doc.demoted = Some(Demotion { time_ms: crate::unix_ms(), reason: reason.to_owned() });
            writes.push(((PLUGIN.to_owned(), key.0.clone(), key.1.clone()), Some(json_bytes(&*doc))));
        }
        self.change(&mut state, next, None, writes).await?;
        Ok(back)
    }

    /// Forgets an inactive version. Returns whether any domain still has it.
    pub async fn delete_plugin(&self, domain: &str, version: &str) -> Result<bool, ChangeError> {
        let mut state = self.state.lock().await;
        let key = (domain.to_owned(), version.to_owned());
        if !state.catalog.plugins.contains_key(&key) {
            return Err(plugin_not_found(domain, version));
        }
        if state.catalog.active_plugins.get(domain).map(String::as_str) == Some(version) {
            return Err(ChangeError::Conflict(
                "PluginActive",
                format!("version {version} is active in domain {domain:?}; activate another first"),
            ));
        }
        let mut next = state.catalog.clone();
        next.plugins.remove(&key);
        let mut writes = vec![((PLUGIN.to_owned(), domain.to_owned(), version.to_owned()), None)];
        if next.previous_plugins.get(domain).map(String::as_str) == Some(version) {
            writes.push(set_plugin_slot(&mut next.previous_plugins, PLUGIN_PREVIOUS, domain, None));
        }
        self.change(&mut state, next, None, writes).await?;
        Ok(state.catalog.plugins.keys().any(|(_, v)| v == version))
    }
}

/// Sets or clears a domain's version slot (active, previous), returning
/// the catalog write.
fn set_plugin_slot(
    slot: &mut BTreeMap<String, String>,
    kind: &str,
    domain: &str,
    version: Option<&str>,
) -> (CatalogKey, Option<Vec<u8>>) {
    let key = (kind.to_owned(), domain.to_owned(), String::new());
    match version {
        Some(v) => {
            slot.insert(domain.to_owned(), v.to_owned());
            (key, Some(json_bytes(&v)))
        }
        None => {
            slot.remove(domain);
            (key, None)
        }
    }
}

fn plugin_not_found(domain: &str, version: &str) -> ChangeError {
    ChangeError::NotFound("PluginNotFound", format!("domain {domain:?} has no plugin version {version:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_quota_counts_versions_and_bytes() {
        let limits = crate::config::PluginLimits { max_versions: 3, uploads_bytes: 10 << 20, ..Default::default() };
        let mib = |n: u64| n << 20;
        assert!(check_upload_quota("d", [mib(2), mib(3)].into_iter(), mib(5), &limits).is_ok());
        let e = check_upload_quota("d", [mib(2), mib(3)].into_iter(), mib(5) + 1, &limits).unwrap_err();
        assert!(e.to_string().contains("uploads_mib"), "{e}");
        let e = check_upload_quota("d", [1, 1, 1].into_iter(), 1, &limits).unwrap_err();
        assert!(e.to_string().contains("max_versions"), "{e}");
    }
}
