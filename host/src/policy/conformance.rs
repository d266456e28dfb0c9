//! The run an upload must pass before it becomes a version: golden inputs
//! under the domain's production limits.

use super::*;

impl Policies {
    /// Runs a plugin on golden inputs under the domain's production limits:
    /// it must name a capture with both modes and answer a deletion question
    /// about a page of three snapshots with ids of that page. Returns what
    /// the naming call used.
    pub fn conformance(&self, plugin: &Plugin, domain: &str) -> Result<Usage, PolicyError> {
        let facts = CaptureFacts {
            domain,
            app: "live",
            stream: "cam1",
            create_timestamp_ms: 1_764_057_600_123,
            sequence: 7,
            width: 1280,
            height: 720,
            frame: crate::media::FrameFacts { mean_luma: 120, ahash: 0xf0f0_f0f0_f0f0_f0f0, luma_spread: 100 },
        };
        let template = Template {
            app_name: "*".into(),
            time_interval_s: 5,
            storage: "local".into(),
            overwrite_object: Some("{AppName}/{StreamName}.jpg".into()),
            sequence_object: Some("{AppName}/{StreamName}/{UnixTimestamp}.jpg".into()),
            callback: None,
            jpeg_quality: 85,
            width: 0,
            height: 0,
            format: Default::default(),
            skip_blank: false,
            storyboard_s: 0,
            origin: crate::config::Origin::Api,
        };
        let call = self.call_name(plugin, &facts, &template);
        call.result?;
        let usage = call.usage;
        let items: Vec<Record> = (0..3u64)
            .map(|i| {
                let ts = facts.create_timestamp_ms - i * 5000;
                Record {
                    id: RecordId(u128::from(ts) << 64 | u128::from(i)),
                    domain: domain.to_owned(),
                    app: facts.app.to_owned(),
                    stream: facts.stream.to_owned(),
                    create_timestamp_ms: ts,
                    key: format!("live/cam1/{}.jpg", ts / 1000),
                    storage: "local".into(),
                    endpoint: String::new(),
                    bucket: String::new(),
                    size: 50_000,
                    width: facts.width,
                    height: facts.height,
                    is_overlay: false,
                    sequence: facts.sequence - i,
                    node: String::new(),
                }
            })
            .collect();
        let q = DeletionQuestion {
            domain,
            app: facts.app,
            stream: facts.stream,
            offset: 0,
            items: &items,
            newer: None,
            now_ms: facts.create_timestamp_ms,
        };
        self.ask(plugin, &q).0?;
        Ok(usage)
    }
}
