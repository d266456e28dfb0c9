//! The `edgesnap` binary: `serve --config FILE`, `check-config FILE`, and
//! client subcommands over the HTTP API (`cli`).

#[macro_use]
mod cli;
mod runner;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use edgesnap::config::Config;
use edgesnap::tenants::Tenants;
use edgesnap::{api, index, ingest, listen, media, metrics, notify, policy, retention, snapshot, spool};

#[derive(Parser)]
#[command(
    name = "edgesnap",
    version,
    about = "Live-stream snapshot host: RTMP in, keyframe JPGs out to object storage",
    after_help = "Reference: docs/ in the source tree, /usr/share/doc/edgesnap/docs when installed from the package."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    client: cli::Client,
    /// Log lines (on stderr) as text, or as one JSON object a line. The
    /// level is set by RUST_LOG (default `info`; e.g. `info,edgesnap=debug`).
    #[arg(long, global = true, value_enum, default_value = "text", env = "EDGESNAP_LOG_FORMAT")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host. Every config key: docs/configuration.md.
    Serve {
        /// The TOML config file (docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero naming the field and rule; docs/configuration.md).
    CheckConfig { file: PathBuf },
    /// Run a policy plugin locally with production limits (docs/plugins.md).
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Which domains the token may see.
    Whoami,
    /// List and delete snapshots.
    #[command(subcommand)]
    Snapshots(cli::SnapshotsCmd),
    /// Snapshot configs (templates) of a domain.
    #[command(subcommand)]
    Templates(cli::TemplatesCmd),
    /// Domains (operator).
    #[command(subcommand)]
    Domains(cli::DomainsCmd),
    /// Domain tokens (operator).
    #[command(subcommand)]
    Tokens(cli::TokensCmd),
    /// Live streams.
    #[command(subcommand)]
    Streams(cli::StreamsCmd),
    /// A domain's policy plugins.
    #[command(subcommand)]
    Plugins(cli::PluginsCmd),
}

#[derive(Subcommand)]
enum PluginCmd {
    /// One naming call: prints placements, error, logs, fuel and peak memory
    /// as JSON; exits 1 if the call failed.
    Run {
        file: PathBuf,
        /// {"capture": {domain, app, stream, create_timestamp_ms, sequence?, width?, height?,
        /// mean_luma?, ahash?}, "template": {overwrite_object?, sequence_object?, ...}, "state"?: {k: v}}
        #[arg(long)]
        input: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let client = cli.client;
    let result = match cli.command {
        Command::Whoami => return client.whoami(),
        Command::Snapshots(cmd) => return client.snapshots(cmd),
        Command::Templates(cmd) => return client.templates(cmd),
        Command::Domains(cmd) => return client.domains(cmd),
        Command::Tokens(cmd) => return client.tokens(cmd),
        Command::Streams(cmd) => return client.streams(cmd),
        Command::Plugins(cmd) => return client.plugins(cmd),
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| outln!("{}: ok ({} domains)", file.display(), c.domains.len()))
            .map_err(anyhow::Error::from),
        Command::Serve { config } => serve(config),
        Command::Plugin(PluginCmd::Run { file, input }) => match runner::run(&file, &input) {
            Ok(true) => Ok(()),
            Ok(false) => return std::process::ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgesnap: {}", report(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, each cause once: a message that
/// already quotes its source is not followed by it again.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out += ": ";
            out += &cause;
        }
    }
    out
}

/// Logs to stderr: colour only on a terminal (journald and files get plain
/// text), or JSON lines.
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
    }
}

fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let operator_token = config.server.operator_token.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio runtime")?;
    runtime.block_on(run(path, config, operator_token))
}

async fn run(config_path: PathBuf, config: Config, operator_token: String) -> anyhow::Result<()> {
    let server = config.server.clone();
    edgesnap::datadir::prepare(&server.data_dir)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let index = Arc::new(index::Index::open(&server.data_dir.join("index.redb"))?);
    edgesnap::datadir::private(&server.data_dir.join("index.redb"))?;
    let sealer = edgesnap::datadir::Sealer::open_dir(&server.data_dir)?;
    let tenants = Tenants::start(config, &operator_token, index.clone(), sealer)?;
    tenants.seal_earlier_notify_keys().await?;
    let (settings, storage) = (tenants.settings().clone(), tenants.storage().clone());
    remove_tombstoned(&index, &storage).await?;
    let compiled = server.data_dir.join("plugins/compiled");
    let policies =
        Arc::new(policy::Policies::new(index.clone(), settings.get().plugin_limits, metrics.clone(), Some(&compiled))?);
    policies.follow(settings.clone());
    let rtmp = listen::bind(server.rtmp_listen, "RTMP").await?;
    let http = listen::bind(server.http_listen, "HTTP").await?;
    let (rtmp_addr, http_addr) = (rtmp.local_addr()?, http.local_addr()?);
    let urls = Arc::new(edgesnap::urls::UrlSigner::new(
        settings.clone(),
        edgesnap::datadir::url_signing_key(&server.data_dir, &index)?,
        http_addr,
    ));

    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(server.capture_queue);
    let (decoded_tx, decoded_rx) = tokio::sync::mpsc::channel(256);
    let decoders =
        media::start(media::PoolOptions { workers: server.decoder_workers }, jobs_rx, decoded_tx, metrics.clone())?;

    let cancel = CancellationToken::new();
    let ingest_tasks = TaskTracker::new();
    let snapshot_tasks = TaskTracker::new();
    let ingest = ingest::Ingest::new(settings.clone(), jobs_tx, metrics.clone());
    activate_plugins(&tenants, &policies, &server.data_dir).await;
    // A demoted plugin stays demoted across restarts: the catalog follows,
    // and the previous version (or the default) takes over.
    let (demoted_tx, mut demoted_rx) = tokio::sync::mpsc::unbounded_channel::<policy::Demoted>();
    policies.on_demotion(demoted_tx);
    // Weak: the policies hold the channel's sender, so a strong handle here
    // would keep both alive past shutdown.
    let (demotion_tenants, demotion_policies) = (tenants.clone(), Arc::downgrade(&policies));
    let plugins_dir = server.data_dir.join("plugins");
    tokio::spawn(async move {
        while let Some(d) = demoted_rx.recv().await {
            match demotion_tenants.demote_plugin(&d.domain, &d.version, &d.reason).await {
                Ok(Some(back)) => {
                    let Some(demotion_policies) = demotion_policies.upgrade() else { break };
                    let path = plugins_dir.join(format!("{back}.wasm"));
                    match load_plugin(&demotion_policies, &path, &back) {
                        Ok(plugin) => {
                            demotion_policies.activate(&d.domain, Some(Arc::new(plugin)));
                            tracing::warn!(domain = %d.domain, demoted = %d.version, active = %back, "the previous plugin version is active again");
                        }
                        Err(e) => {
                            tracing::error!(domain = %d.domain, version = %back, error = %e, "the previous plugin version does not load; the default policy runs")
                        }
                    }
                }
                Ok(None) => tracing::warn!(domain = %d.domain, demoted = %d.version, "the default policy is active"),
                Err(e) => {
                    tracing::error!(domain = %d.domain, version = %d.version, error = %e, "recording a demotion failed")
                }
            }
        }
    });
    let notifier = notify::Notifier::new(index.clone(), settings.clone(), urls.clone(), metrics.clone())?;
    let notifier_stop = CancellationToken::new();
    let notifier_loop = tokio::spawn(notifier.clone().run(notifier_stop.clone()));
    let store = edgesnap::store::Store::new(index.clone(), notifier.clone(), metrics.clone());
    let spool = spool::Spool::new(
        server.data_dir.join("spool"),
        index.clone(),
        storage.clone(),
        store.clone(),
        settings.clone(),
        metrics.clone(),
    )?;
    // Before ingest: spooled captures are queued first, so new ones line up behind them.
    spool.recover().await?;
    storage.probe_all();
    let (retention, retention_rx) =
        retention::Retention::new(index.clone(), storage.clone(), policies.clone(), notifier.clone(), metrics.clone());
    let retention_stop = CancellationToken::new();
    let retention_loop = tokio::spawn(retention.clone().run(retention_rx, retention_stop.clone()));
    let reconcile_loop = tokio::spawn(retention::reconcile_schedule(
        index.clone(),
        storage.clone(),
        notifier.clone(),
        settings.clone(),
        retention_stop.clone(),
    ));
    let path = Arc::new(snapshot::SnapshotPath {
        index: index.clone(),
        storage: storage.clone(),
        policies: policies.clone(),
        retention,
        store,
        spool: spool.clone(),
        metrics: metrics.clone(),
    });
    let (totals, spool_handle) = (metrics.clone(), spool.clone());
    let api = Arc::new(api::Api {
        settings: settings.clone(),
        tenants: tenants.clone(),
        index: index.clone(),
        storage,
        ingest: ingest.clone(),
        metrics,
        policies,
        urls,
        notifier,
        spool,
        thumbs: Default::default(),
    });
    let snapshots = tokio::spawn(path.run(decoded_rx, snapshot_tasks.clone()));
    let ingest_loop = tokio::spawn(ingest.clone().run(rtmp, cancel.clone(), ingest_tasks.clone()));
    let http_loop = tokio::spawn(api.run(http, cancel.clone()));
    let listening = server.data_dir.join(listen::LISTENING_FILE);
    listen::announce(&listening, rtmp_addr, http_addr).with_context(|| format!("write {}", listening.display()))?;
    tracing::info!(rtmp = %rtmp_addr, http = %http_addr, decoders = server.decoder_workers, "edgesnap is serving");

    shutdown_signal(&config_path, &tenants).await;
    tracing::info!("shutting down: closing publishers, finishing in-flight snapshots");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = std::fs::remove_file(&listening);
    // 1. Stop ingest: no new keyframes enter the capture queue.
    cancel.cancel();
    let _ = ingest_loop.await;
    ingest_tasks.close();
    ingest_tasks.wait().await;
    // 2. The decoders drain the queue; the capture queue's last sender is ingest's.
    drop(ingest);
    let _ = tokio::task::spawn_blocking(move || decoders.into_iter().for_each(|h| drop(h.join()))).await;
    // 3. The snapshot path stores what was decoded.
    let _ = snapshots.await;
    snapshot_tasks.close();
    snapshot_tasks.wait().await;
    // 4. A deletion pass under way finishes; no new one starts.
    retention_stop.cancel();
    let _ = retention_loop.await;
    let _ = reconcile_loop.await;
    // 5. Callbacks not delivered yet stay in the outbox for the next start;
    //    a round under way ends within the delivery timeout.
    notifier_stop.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(6), notifier_loop).await;
    let _ = http_loop.await;
    // 6. Spooled captures stay on disk; an upload under way ends first.
    spool_handle.shutdown().await;
    let spool_totals = spool_handle.status();
    drop(spool_handle);
    // 7. Close redb cleanly: the last holder of the index is this function.
    drop(tenants);
    close_index(index).await;
    tracing::info!(
        queued = totals.snapshots_queued.get(),
        stored = totals.snapshots_stored.get(),
        spooled = spool_totals.entries,
        "stopped"
    );
    Ok(())
}

/// Closes redb after the writer has committed what was queued. Tasks that
/// finished their work may still be dropping their handles (HTTP
/// connections closing), so this waits up to 5 s to be the last holder: a
/// redb that is not closed cleanly is checked at the next start.
async fn close_index(mut index: Arc<index::Index>) {
    for _ in 0..500 {
        match Arc::try_unwrap(index) {
            Ok(index) => {
                tokio::task::spawn_blocking(move || index.close()).await.ok();
                return;
            }
            Err(shared) => {
                index = shared;
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    tracing::warn!(
        holders = Arc::strong_count(&index),
        "index still shared at shutdown; redb closes when the process exits"
    )
}

/// Waits for SIGTERM or Ctrl-C; on SIGHUP re-reads the config file without
/// dropping publishers (a file that does not validate changes nothing).
async fn shutdown_signal(path: &std::path::Path, tenants: &Tenants) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut hup = signal(SignalKind::hangup()).expect("install SIGHUP handler");
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => match Config::load(path) {
                Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded; the old one stays in force"),
                Ok(file) => match tenants.apply_file(file).await {
                    Ok(warnings) => {
                        for w in warnings {
                            tracing::warn!("SIGHUP: {w}");
                        }
                        tracing::info!(path = %path.display(), "SIGHUP: config reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: config not reloaded; the old one stays in force"),
                },
            },
        }
    }
}

/// Puts each domain's active plugin in force. One that no longer loads is
/// logged and the domain runs the default policy.
async fn activate_plugins(tenants: &Tenants, policies: &Arc<policy::Policies>, data_dir: &std::path::Path) {
    for (domain, version) in tenants.active_plugins().await {
        let path = data_dir.join("plugins").join(format!("{version}.wasm"));
        match load_plugin(policies, &path, &version) {
            Ok(plugin) => policies.activate(&domain, Some(Arc::new(plugin))),
            Err(e) => {
                tracing::error!(%domain, %version, error = %e, "active plugin does not load; the default policy runs")
            }
        }
    }
}

/// Reads and compiles (or takes from the compiled cache) an uploaded version.
fn load_plugin(policies: &policy::Policies, path: &std::path::Path, version: &str) -> Result<policy::Plugin, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    policies.load(version, &bytes).map_err(|e| e.to_string())
}

/// Removes objects whose records were deleted before a crash or an outage.
async fn remove_tombstoned(index: &index::Index, storage: &edgesnap::storage::Storage) -> anyhow::Result<()> {
    let tombstones = index.tombstones()?;
    if tombstones.is_empty() {
        return Ok(());
    }
    let doomed = tombstones.iter().map(|(id, t)| retention::Doomed {
        id: *id,
        domain: &t.domain,
        storage: &t.storage,
        key: &t.key,
    });
    let (removed, done) = retention::delete_objects(doomed, |d, s| storage.target(d, s)).await;
    tracing::info!(removed, pending = tombstones.len() - done.len(), "removed objects of deleted records");
    index.clear_tombstones(done).await?;
    Ok(())
}
