//! The `edgesnap` binary: `serve --config FILE`, `check-config FILE`, and
//! client subcommands over the HTTP API (`cli`).

#[macro_use]
mod cli;
mod runner;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use edgesnap::config::Config;
use edgesnap::host::Host;
use edgesnap::tenants::Tenants;

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
    /// Pull sources: RTSP cameras, SRT feeds, HLS playlists.
    #[command(subcommand)]
    Sources(cli::SourcesCmd),
    /// A domain's policy plugins.
    #[command(subcommand)]
    Plugins(cli::PluginsCmd),
    /// The fleet this node belongs to (SPEC §9).
    #[command(subcommand)]
    Fleet(cli::FleetCmd),
}

#[derive(Subcommand)]
enum PluginCmd {
    /// One naming call: prints placements, error, logs, fuel and peak memory
    /// as JSON; exits 1 if the call failed.
    Run {
        file: PathBuf,
        /// {"capture": {domain, app, stream, create_timestamp_ms, sequence?, width?, height?,
        /// mean_luma?, ahash?}, "template": {overwrite_object?, sequence_object?, format?, width?,
        /// height?, jpeg_quality?, skip_blank?, storyboard?, ...}, "state"?: {k: v}}
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
        Command::Sources(cmd) => return client.sources(cmd),
        Command::Plugins(cmd) => return client.plugins(cmd),
        Command::Fleet(cmd) => return client.fleet(cmd),
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
    let host = Host::start(config, &operator_token).await?;
    shutdown_signal(&config_path, host.tenants()).await;
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    host.shutdown().await;
    Ok(())
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
