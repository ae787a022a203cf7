//! The command line: one subcommand per role, global flags shared by all. Every flag can also
//! come from the environment (the `env` names below) or the config file (`--config`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use spreadagg_model::{ExchangeId, Shard, Symbol};
use spreadagg_runtime::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(
    name = "spreadagg",
    version,
    about = "Real-time cross-exchange spreads: one binary, many roles."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub role: Role,
}

/// Flags every role takes.
#[derive(Debug, Args)]
pub struct Global {
    /// NATS URL; absent means the in-process bus (single process only).
    #[arg(long, env = "NATS_URL", global = true)]
    pub nats_url: Option<String>,
    /// Admin HTTP address: /healthz, /readyz, /metrics, /health, POST /drain.
    #[arg(long, env = "SPREADAGG_ADMIN_ADDR", global = true)]
    pub admin_addr: Option<SocketAddr>,
    /// File holding the admin token that lets non-loopback callers use POST /drain and
    /// /config (SPREADAGG_ADMIN_TOKEN gives the token itself instead).
    #[arg(long, env = "SPREADAGG_ADMIN_TOKEN_FILE", global = true)]
    pub admin_token_file: Option<PathBuf>,
    /// TOML configuration file; flags and environment variables override it.
    #[arg(long, env = "SPREADAGG_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format: auto (text on a terminal, JSON otherwise), json or text.
    #[arg(
        long,
        env = "SPREADAGG_LOG_FORMAT",
        global = true,
        default_value = "auto"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// Ingest one exchange's market data to the bus.
    Ingest(IngestArgs),
    /// Compute cross-exchange spreads, bands, chart windows and signals from ticks.
    Engine(EngineArgs),
    /// Archive ticks, trades and spreads to Parquet (`archive verify`: check the archive).
    Archive(ArchiveArgs),
    /// Publish archived ticks and trades back into NATS in time order (backtests, rebuilding
    /// state).
    Replay(ReplayArgs),
    /// Serve live spreads over WebSocket and the dashboard.
    Gateway(GatewayArgs),
    /// Serve every simulated exchange's protocol locally.
    Simulate(SimulateArgs),
    /// Every role in one process (the embedded default with no flags).
    All(AllArgs),
    /// Ask the role running on this host's admin address to drain, and wait until it has
    /// stopped (the Kubernetes preStop hook).
    Drain(DrainArgs),
    /// Create or update the JetStream streams from the [streams] configuration, then exit
    /// (the Helm hook Job).
    Streams(StreamsArgs),
    /// List the roles.
    Roles,
}

impl Role {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Ingest(_) => "ingest",
            Role::Engine(_) => "engine",
            Role::Archive(_) => "archive",
            Role::Replay(_) => "replay",
            Role::Gateway(_) => "gateway",
            Role::Simulate(_) => "simulate",
            Role::All(_) => "all",
            Role::Drain(_) => "drain",
            Role::Streams(_) => "streams",
            Role::Roles => "roles",
        }
    }
}

#[derive(Debug, Args)]
pub struct IngestArgs {
    #[arg(long, env = "SPREADAGG_EXCHANGE")]
    pub exchange: Option<ExchangeId>,
    /// Explicit canonical symbols (BTC-USDT,ETH-USDT); replaces discovery filters.
    #[arg(long, env = "SPREADAGG_SYMBOLS", value_delimiter = ',')]
    pub symbols: Option<Vec<Symbol>>,
    /// Quote assets kept by discovery.
    #[arg(long, env = "SPREADAGG_QUOTES", value_delimiter = ',')]
    pub quotes: Option<Vec<String>>,
    /// Minimum 24 h quote volume, inclusive.
    #[arg(long, env = "SPREADAGG_MIN_VOLUME")]
    pub min_volume: Option<f64>,
    /// Maximum 24 h quote volume, inclusive.
    #[arg(long, env = "SPREADAGG_MAX_VOLUME")]
    pub max_volume: Option<f64>,
    /// The exchange's whole WebSocket endpoint (wss://stream.binance.com:9443/ws).
    #[arg(long, env = "SPREADAGG_WS_URL")]
    pub ws_url: Option<String>,
    /// The exchange's REST scheme and host (https://api.binance.com).
    #[arg(long, env = "SPREADAGG_REST_URL")]
    pub rest_url: Option<String>,
    /// This replica's shard of the symbols, I/N.
    #[arg(long, env = "SPREADAGG_SHARD")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// This replica's shard of the symbols, I/N (N engines split the symbols by a stable
    /// hash, each with its own durable consumer).
    #[arg(long, env = "SPREADAGG_SHARD")]
    pub shard: Option<Shard>,
}

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Object store URL: file:///data or a path, s3://bucket/prefix, gs://, az://, memory://.
    #[arg(long, env = "SPREADAGG_STORE")]
    pub store: Option<String>,
    #[command(subcommand)]
    pub action: Option<ArchiveAction>,
}

/// What `archive` does instead of archiving.
#[derive(Debug, Subcommand)]
pub enum ArchiveAction {
    /// Check the archive for gaps and duplicates by stream sequence (against the streams'
    /// bounds when --nats-url is given and reachable); prints a JSON report. Exit status: 0
    /// complete, 1 incomplete, 2 bad flags or configuration, 3 the store could not be read.
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Object store URL (as for `archive --store`).
    #[arg(long, env = "SPREADAGG_STORE")]
    pub store: Option<String>,
    /// Only partitions from this time (2025-01-02T07:00:00Z, 2025-01-02T07:00 UTC, or a date).
    #[arg(long)]
    pub from: Option<String>,
    /// Only partitions up to this time (same forms; a date means its end).
    #[arg(long)]
    pub to: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Object store URL of the archive to replay.
    #[arg(long, env = "SPREADAGG_STORE")]
    pub store: Option<String>,
    /// Replay from this time (2025-01-02T07:00:00Z, 2025-01-02T07:00 UTC, or a date).
    #[arg(long)]
    pub from: String,
    /// Replay up to this time (same forms; a date means its end).
    #[arg(long)]
    pub to: String,
    /// Pace: 1 is the market's original pacing, 2 twice as fast, 0 as fast as possible.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Publish under this subject prefix instead of `md` (`replay` gives `replay.tick...`),
    /// so a replay can run beside the live feed without mixing with it.
    #[arg(long, default_value = "md")]
    pub subject_prefix: String,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// HTTP/WebSocket listen address.
    #[arg(long, env = "SPREADAGG_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// gRPC listen address (the gRPC API, reflection and health); none: no gRPC port.
    #[arg(long, env = "SPREADAGG_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Fixed port for an exchange, EXCHANGE=PORT (repeatable); others get free ports.
    #[arg(long = "port", value_parser = parse_port)]
    pub ports: Vec<(ExchangeId, u16)>,
}

#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Seconds to wait before asking (load balancers stop sending new work meanwhile).
    #[arg(long, default_value_t = 0.0)]
    pub delay: f64,
    /// Seconds to wait, after the drain is accepted, for the role to stop; without it the
    /// command returns as soon as the drain is accepted (what a preStop hook needs).
    #[arg(long)]
    pub wait: Option<f64>,
}

#[derive(Debug, Args)]
pub struct StreamsArgs {
    /// Seconds to keep retrying while NATS is not reachable.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct AllArgs {
    /// Archive location (default ./data).
    #[arg(long, env = "SPREADAGG_STORE")]
    pub store: Option<String>,
    /// Gateway address (default 127.0.0.1:8080).
    #[arg(long, env = "SPREADAGG_LISTEN")]
    pub listen: Option<SocketAddr>,
}

fn parse_port(s: &str) -> Result<(ExchangeId, u16), String> {
    let (ex, port) = s.split_once('=').ok_or("expected EXCHANGE=PORT")?;
    Ok((
        ex.parse().map_err(|e| format!("{e}"))?,
        port.parse().map_err(|_| "bad port")?,
    ))
}
