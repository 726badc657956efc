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
/// Kafka's own default retention (`retention.ms`): a week.
pub const DEFAULT_KAFKA_LOG_RETENTION: runnel_common::Retention =
    runnel_common::Retention::Age(7 * 86_400 * 1_000_000);

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
    Serve(Box<ServeArgs>),
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
    /// kafka_bootstrap_servers, log_format, metrics_listen, superuser_password_file, tls_cert,
    /// tls_key, tls_required, subscribe_buffer, max_connections, handshake_timeout_ms,
    /// max_message_bytes, query_memory_mb, disk_reserve_mb, state_cache_mb,
    /// kafka_log_retention, workers
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
    /// File whose first line is the password of the superuser `runnel`, set at every start;
    /// once it has a password, every client authenticates with SCRAM-SHA-256
    #[arg(long, env = "RUNNEL_SUPERUSER_PASSWORD_FILE")]
    pub superuser_password_file: Option<PathBuf>,
    /// The superuser's password itself (prefer the file: the environment of a process is
    /// visible to its user)
    #[arg(long, env = "RUNNEL_SUPERUSER_PASSWORD", hide_env_values = true)]
    pub superuser_password: Option<String>,
    /// PEM certificate chain for TLS (with --tls-key)
    #[arg(long, env = "RUNNEL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS, readable by its owner only (with --tls-cert)
    #[arg(long, env = "RUNNEL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not use TLS [default: false]
    #[arg(long, env = "RUNNEL_TLS_REQUIRED")]
    pub tls_required: Option<bool>,
    /// Events (a checkpoint's changes, a checkpoint's mark) a SUBSCRIBE client may leave
    /// unread before it is disconnected, at least 4 [default: 1024]
    #[arg(long, env = "RUNNEL_SUBSCRIBE_BUFFER")]
    pub subscribe_buffer: Option<usize>,
    /// Client connections served at once; one more is refused with 53300 [default: 100]
    #[arg(long, env = "RUNNEL_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Milliseconds a client has from connecting to being logged in (TLS, startup, password)
    /// before the server closes the connection [default: 10000]
    #[arg(long, env = "RUNNEL_HANDSHAKE_TIMEOUT_MS")]
    pub handshake_timeout_ms: Option<u64>,
    /// The longest statement text, or the most parameter bytes of one execution, a client may
    /// send; longer fails with 54000 (COPY data is not limited) [default: 268435456]
    #[arg(long, env = "RUNNEL_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Memory one query may hold in its sorts, joins and aggregations (MiB); beyond it sorts
    /// spill to disk and what cannot fails with 53200 [default: 1024]
    #[arg(long, env = "RUNNEL_QUERY_MEMORY_MB")]
    pub query_memory_mb: Option<usize>,
    /// Free space (MiB) kept on the data directory's disk: below it, writes and checkpoints
    /// fail with 53100 while reads go on, and resume by themselves once space is freed; 0
    /// turns the check off [default: 256]
    #[arg(long, env = "RUNNEL_DISK_RESERVE_MB")]
    pub disk_reserve_mb: Option<u64>,
    /// Memory (MiB, fractions allowed) of every view operator's state cache together; state
    /// beyond it stays in RocksDB and is read when needed [default: a quarter of the memory
    /// the machine or its cgroup has, at least 64]
    #[arg(long, env = "RUNNEL_STATE_CACHE_MB")]
    pub state_cache_mb: Option<f64>,
    /// How much of a Kafka stream's local log to keep when the stream names no `retention`
    /// (a duration such as '7 days', a size such as '10 GB', or 'unlimited'); older entries
    /// every view has read are deleted and read again from the topic when a new view needs
    /// them [default: 7 days]
    #[arg(long, env = "RUNNEL_KAFKA_LOG_RETENTION")]
    pub kafka_log_retention: Option<String>,
    /// Threads that maintain the views, each owning a share of every view's state (1 to 256)
    /// [default: the number of cores available]
    #[arg(long, env = "RUNNEL_WORKERS")]
    pub workers: Option<usize>,
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
    pub superuser_password_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_required: Option<bool>,
    pub subscribe_buffer: Option<usize>,
    pub max_connections: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub max_message_bytes: Option<usize>,
    pub query_memory_mb: Option<usize>,
    pub disk_reserve_mb: Option<u64>,
    pub state_cache_mb: Option<f64>,
    pub kafka_log_retention: Option<String>,
    pub workers: Option<usize>,
}

/// What one client may take of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub max_message_bytes: usize,
}

/// The resolved configuration of `runnel serve`.
#[derive(Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    pub log_format: LogFormat,
    pub metrics_listen: Option<SocketAddr>,
    /// The superuser's password, to set at start-up.
    pub superuser_password: Option<String>,
    /// Certificate chain and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub tls_required: bool,
    pub limits: ClientLimits,
}

// Never the password.
impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("tls", &self.tls)
            .field("tls_required", &self.tls_required)
            .finish_non_exhaustive()
    }
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
        let password_file = self
            .superuser_password_file
            .or(file.superuser_password_file);
        let superuser_password = match (password_file, self.superuser_password) {
            (Some(path), _) => Some(read_password(&path)?),
            (None, Some(password)) => Some(password),
            (None, None) => None,
        };
        if superuser_password.as_deref() == Some("") {
            return Err("the superuser password is empty".into());
        }
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err("TLS needs both tls_cert and tls_key".into()),
        };
        let tls_required = self.tls_required.or(file.tls_required).unwrap_or(false);
        let subscribe_buffer = self
            .subscribe_buffer
            .or(file.subscribe_buffer)
            .unwrap_or(runnel_runtime::subscription::SUBSCRIBER_BUFFER);
        // A checkpoint's changes, its mark and the end of the subscription need room.
        if subscribe_buffer < 4 {
            return Err("subscribe_buffer must be at least 4".into());
        }
        if tls_required && tls.is_none() {
            return Err("tls_required needs tls_cert and tls_key".into());
        }
        let limits = ClientLimits {
            max_connections: positive(
                "max_connections",
                self.max_connections.or(file.max_connections).unwrap_or(100),
            )?,
            handshake_timeout: Duration::from_millis(positive(
                "handshake_timeout_ms",
                self.handshake_timeout_ms
                    .or(file.handshake_timeout_ms)
                    .unwrap_or(10_000),
            )?),
            max_message_bytes: positive(
                "max_message_bytes",
                self.max_message_bytes
                    .or(file.max_message_bytes)
                    .unwrap_or(256 << 20),
            )?,
        };
        let query_memory_mb = positive(
            "query_memory_mb",
            self.query_memory_mb
                .or(file.query_memory_mb)
                .unwrap_or(1024),
        )?;
        let kafka_log_retention = match self.kafka_log_retention.or(file.kafka_log_retention) {
            Some(text) => runnel_common::Retention::parse(&text)
                .map_err(|e| format!("kafka_log_retention: {e}"))?,
            None => DEFAULT_KAFKA_LOG_RETENTION,
        };
        Ok(ServeConfig {
            limits,
            superuser_password,
            tls,
            tls_required,
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
                subscribe_buffer,
                query_memory_bytes: query_memory_mb << 20,
                disk_reserve_bytes: self
                    .disk_reserve_mb
                    .or(file.disk_reserve_mb)
                    .unwrap_or(256)
                    .saturating_mul(1 << 20),
                state_cache_bytes: match self.state_cache_mb.or(file.state_cache_mb) {
                    Some(mb) if mb.is_finite() && mb > 0.0 => (mb * (1u64 << 20) as f64) as usize,
                    Some(_) => return Err("state_cache_mb must be a positive number".into()),
                    None => default_state_cache_bytes(),
                },
                kafka_log_retention,
                workers: match self.workers.or(file.workers) {
                    Some(n) if (1..=usize::from(runnel_plan::VNODE_COUNT)).contains(&n) => n,
                    Some(_) => return Err("workers must be between 1 and 256".into()),
                    None => default_workers(),
                },
            },
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
        })
    }
}

/// The cores this process may use (its CPU affinity or cgroup quota, as the standard library
/// reads them), at most one per vnode.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(usize::from(runnel_plan::VNODE_COUNT))
}

/// A quarter of the memory this process may use: the machine's, or its cgroup's limit when
/// lower (a container); at least 64 MiB. 1 GiB when neither can be read.
pub fn default_state_cache_bytes() -> usize {
    let read_number =
        |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
    let machine = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb << 10)
        });
    let cgroup = read_number("/sys/fs/cgroup/memory.max")
        .or_else(|| read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    let memory = match (machine, cgroup) {
        (Some(m), Some(c)) => m.min(c),
        (Some(m), None) => m,
        (None, Some(c)) => c,
        (None, None) => 4 << 30,
    };
    usize::try_from((memory / 4).max(64 << 20)).unwrap_or(usize::MAX)
}

fn positive<T: PartialEq + Default>(name: &str, value: T) -> Result<T, String> {
    if value == T::default() {
        return Err(format!("{name} must be positive"));
    }
    Ok(value)
}

/// The first line of a password file, without its line break.
fn read_password(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read password file {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or_default().to_string())
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("bad config file {}: {e}", path.display()))
}
