//! edgesnap: a live-stream snapshot host.
//!
//! Modules follow a snapshot's life: [`ingest`] (RTMP, FLV/AVC) →
//! [`capture`] (the per-stream media-clock grid) → [`media`] (the shared
//! decoder pool, JPEG) → [`snapshot`] (the path that calls [`policy`] (Wasm
//! plugins), then [`store`]: [`storage`] (object stores) and [`index`]
//! (redb) in order; [`spool`] holds what a down target cannot take yet).
//! [`api`] reads and steers them; [`config`] is the operator's file and
//! [`tenants`] the domains in force (the file plus what the API made).
//! [`host`] wires them together and stops them in order.
//! ARCHITECTURE.md states the invariants between them.

pub mod api;
pub mod capture;
pub mod codec;
pub mod config;
pub mod datadir;
pub mod fleet;
pub mod host;
pub mod index;
pub mod ingest;
pub mod listen;
pub mod media;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod retention;
pub mod snapshot;
pub mod sources;
pub mod spool;
pub mod storage;
pub mod store;
pub mod storyboard;
pub mod stream;
pub mod tenants;
pub mod thumbs;
pub mod tokens;
pub mod urls;

/// Unix milliseconds as ISO-8601 UTC with milliseconds (`2026-11-25T08:00:00.123Z`).
pub fn iso_ms(ms: u64) -> String {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Wall-clock time, unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A crash point of the write path. In a build with the `failpoints`
/// feature (the crash tests' binary, never a release), the process aborts
/// here when `FAILPOINTS` names the point with `return` (e.g.
/// `capture-after-put=2*off->return`: the third time); otherwise nothing.
#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        if fail::eval($name, |_| ()).is_some() {
            eprintln!("failpoint {} reached: aborting", $name);
            std::process::abort();
        }
    };
}
