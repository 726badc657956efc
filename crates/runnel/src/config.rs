//! Server configuration: command-line flags, `RUNNEL_*` environment variables and an optional
//! TOML file, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::shared::EngineConfig;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:6875";
pub const DEFAULT_DATA_DIR: &str = "./runnel-data";

#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: incremental materialized views over streams, served over the Postgres protocol"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the server.
    Serve(ServeArgs),
    /// Benchmark helper: read a whole topic with a plain consumer and print the rate (the
    /// broker's ceiling in `benches/kafka_backfill.py`).
    #[command(hide = true)]
    KafkaReadRate {
        bootstrap_servers: String,
        topic: String,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address to listen on for Postgres clients (port 0 picks a free port) [default: 127.0.0.1:6875]
    #[arg(long, env = "RUNNEL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory holding all state [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML file with any of: listen, data_dir, checkpoint_interval_ms, sync_writes,
    /// kafka_bootstrap_servers, log_format, metrics_listen
    #[arg(long, env = "RUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Milliseconds between checkpoints [default: 1000]
    #[arg(long, env = "RUNNEL_CHECKPOINT_INTERVAL_MS")]
    pub checkpoint_interval_ms: Option<u64>,
    /// fsync every write (survives power loss, not only process crashes) [default: false]
    #[arg(long, env = "RUNNEL_SYNC_WRITES")]
    pub sync_writes: Option<bool>,
    /// Kafka brokers (host:port,...) for streams, tables and sinks that don't name
    /// bootstrap_servers in their WITH options
    #[arg(long, env = "RUNNEL_KAFKA_BOOTSTRAP_SERVERS")]
    pub kafka_bootstrap_servers: Option<String>,
    /// How log lines on stderr are written: `text` (colored only when stderr is a terminal)
    /// or `json` (one object per line) [default: text]
    #[arg(long, env = "RUNNEL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Address of the HTTP endpoint serving /metrics (Prometheus), /health and /ready [default:
    /// none]
    #[arg(long, env = "RUNNEL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub checkpoint_interval_ms: Option<u64>,
    pub sync_writes: Option<bool>,
    pub kafka_bootstrap_servers: Option<String>,
    pub log_format: Option<LogFormat>,
    pub metrics_listen: Option<SocketAddr>,
}

/// The resolved configuration of `runnel serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeArgs {
    pub fn resolve(self) -> Result<ServeConfig, String> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let listen = match self.listen.or(file.listen) {
            Some(l) => l,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|e| format!("bad default address: {e}"))?,
        };
        let interval = self
            .checkpoint_interval_ms
            .or(file.checkpoint_interval_ms)
            .unwrap_or(1000);
        if interval == 0 {
            return Err("checkpoint_interval_ms must be positive".into());
        }
        Ok(ServeConfig {
            listen,
            data_dir: self
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            engine: EngineConfig {
                checkpoint_interval: Duration::from_millis(interval),
                sync_writes: self.sync_writes.or(file.sync_writes).unwrap_or(false),
                kafka_bootstrap_servers: self
                    .kafka_bootstrap_servers
                    .or(file.kafka_bootstrap_servers)
                    .filter(|s| !s.trim().is_empty()),
            },
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))
}
