//! The `edgesnap` binary: `serve --config FILE`, `check-config FILE`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use edgesnap::config::{Config, Settings};
use edgesnap::{api, index, ingest, media, metrics, policy, snapshot, storage};

#[derive(Parser)]
#[command(
    name = "edgesnap",
    version,
    about = "Live-stream snapshot host: RTMP in, keyframe JPGs out to object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file and exit (non-zero naming the field and rule).
    CheckConfig { file: PathBuf },
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CheckConfig { file } => Config::load(&file)
            .map(|c| {
                println!("{}: ok ({} domains)", file.display(), c.domains.len());
            })
            .map_err(anyhow::Error::from),
        Command::Serve { config } => serve(&config),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("edgesnap: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let operator_token = config.server.operator_token.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start tokio runtime")?;
    runtime.block_on(run(config, operator_token))
}

async fn run(config: Config, operator_token: String) -> anyhow::Result<()> {
    let server = config.server.clone();
    std::fs::create_dir_all(&server.data_dir)
        .with_context(|| format!("create data_dir {}", server.data_dir.display()))?;
    let metrics = Arc::new(metrics::Metrics::new());
    let index = Arc::new(index::Index::open(&server.data_dir.join("index.redb"))?);
    let pending = index.pending_intents()?;
    if !pending.is_empty() {
        tracing::warn!(
            count = pending.len(),
            "captures were in flight at the last stop; their records were not committed"
        );
    }
    let storage = Arc::new(storage::Storage::from_config(&config)?);
    let policies = Arc::new(policy::Policies::new(index.clone(), policy::Limits::default())?);
    let url_key = index.secret("url-signing-key")?;
    let settings = Settings::new(config);

    let rtmp = tokio::net::TcpListener::bind(server.rtmp_listen)
        .await
        .with_context(|| format!("listen for RTMP on {}", server.rtmp_listen))?;
    let http = tokio::net::TcpListener::bind(server.http_listen)
        .await
        .with_context(|| format!("listen for HTTP on {}", server.http_listen))?;

    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(server.capture_queue);
    let (decoded_tx, decoded_rx) = tokio::sync::mpsc::channel(256);
    let decoders =
        media::start(media::PoolOptions { workers: server.decoder_workers }, jobs_rx, decoded_tx, metrics.clone())?;

    let cancel = CancellationToken::new();
    let ingest_tasks = TaskTracker::new();
    let snapshot_tasks = TaskTracker::new();
    let ingest = ingest::Ingest::new(settings.clone(), jobs_tx, metrics.clone());
    let path = Arc::new(snapshot::SnapshotPath {
        index: index.clone(),
        storage: storage.clone(),
        policies,
        metrics: metrics.clone(),
    });
    let api = Arc::new(api::Api {
        settings: settings.clone(),
        index: index.clone(),
        storage,
        ingest: ingest.clone(),
        metrics,
        operator_token,
        url_key,
    });
    let snapshots = tokio::spawn(path.run(decoded_rx, snapshot_tasks.clone()));
    let ingest_loop = tokio::spawn(ingest.clone().run(rtmp, cancel.clone(), ingest_tasks.clone()));
    let http_loop = tokio::spawn(api.run(http, cancel.clone()));
    tracing::info!(
        rtmp = %server.rtmp_listen, http = %server.http_listen, decoders = server.decoder_workers,
        "edgesnap is serving"
    );

    shutdown_signal().await;
    tracing::info!("shutting down: closing publishers, finishing in-flight snapshots");
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
    let _ = http_loop.await;
    // 4. Close redb cleanly.
    close_index(index);
    tracing::info!("stopped");
    Ok(())
}

/// Closes redb after the writer has committed what was queued.
fn close_index(index: Arc<index::Index>) {
    match Arc::try_unwrap(index) {
        Ok(index) => {
            index.close();
        }
        Err(_) => {
            tracing::warn!("index still shared at shutdown; redb closes when the process exits")
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
