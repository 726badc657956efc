//! `runnel serve`: starts the engine on a data directory and serves Postgres clients.
//! (`runnel kafka-read-rate`, hidden, is the Kafka benchmark's raw-consumer baseline.)

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use clap::Parser;
use runnel::config::{Cli, Command, LogFormat};
use runnel::Engine;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Serve(args) => *args,
        Command::KafkaReadRate {
            bootstrap_servers,
            topic,
        } => {
            init_logging(LogFormat::Text);
            read_rate(&bootstrap_servers, &topic)
        }
    };
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel: {e}");
            std::process::exit(2);
        }
    };
    init_logging(config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(runnel_runtime::worker::THREAD_STACK_BYTES)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runnel: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(serve(config)) {
        eprintln!("runnel: {e}");
        std::process::exit(1);
    }
}

/// Log lines go to stderr at the level `RUNNEL_LOG` sets (default `info`), as text (colored
/// only when stderr is a terminal: log files get no escape codes) or as one JSON object per
/// line.
///
/// sqlparser's debug lines hold every statement's tokens, and so the passwords a CREATE STREAM
/// or CREATE SINK may carry: its level is capped at info unless RUNNEL_LOG names it.
fn init_logging(format: LogFormat) {
    let mut filter =
        EnvFilter::try_from_env("RUNNEL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let named = std::env::var("RUNNEL_LOG").is_ok_and(|spec| spec.contains("sqlparser"));
    let verbose = filter
        .max_level_hint()
        .is_none_or(|level| level > tracing_subscriber::filter::LevelFilter::INFO);
    if verbose && !named {
        if let Ok(cap) = "sqlparser=info".parse() {
            filter = filter.add_directive(cap);
        }
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn read_rate(bootstrap: &str, topic: &str) -> ! {
    match runnel_connectors::kafka::measure_read_rate(bootstrap, topic) {
        Ok(r) => {
            println!(
                "records={} bytes={} seconds={:.3} records_per_sec={:.0}",
                r.records,
                r.bytes,
                r.seconds,
                r.records as f64 / r.seconds
            );
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("runnel: {e}");
            std::process::exit(1);
        }
    }
}

async fn serve(config: runnel::config::ServeConfig) -> Result<(), String> {
    // The metrics endpoint answers /health while the stored objects are restored.
    let ready: runnel::metrics_server::ReadyEngine = Arc::default();
    if let Some(address) = config.metrics_listen {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|e| format!("cannot listen for metrics on {address}: {e}"))?;
        let bound = listener
            .local_addr()
            .map_err(|e| format!("no local address for metrics: {e}"))?;
        println!("runnel metrics on {bound}");
        tokio::spawn(runnel::metrics_server::serve_metrics(
            listener,
            ready.clone(),
        ));
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(runnel::tls::load(cert, key)?),
        None => None,
    };
    let engine = Engine::open(&config.data_dir, config.engine.clone())
        .await
        .map_err(|e| format!("cannot open {}: {e}", config.data_dir.display()))?;
    let served = serve_engine(&config, engine.clone(), tls, ready).await;
    // Also when serving failed: the worker must stop before the process exits.
    tokio::task::spawn_blocking(move || engine.shutdown())
        .await
        .map_err(|e| format!("shutdown failed: {e}"))?;
    served
}

/// Serves clients until the server is told to stop.
async fn serve_engine(
    config: &runnel::config::ServeConfig,
    engine: Arc<Engine>,
    tls: Option<runnel::tls::ServerTls>,
    ready: runnel::metrics_server::ReadyEngine,
) -> Result<(), String> {
    if let Some(password) = &config.superuser_password {
        engine
            .shared
            .roles
            .set_superuser_password(password)
            .map_err(|e| format!("cannot set the superuser password: {e}"))?;
    }
    if !engine.shared.roles.passwords_required() {
        if !runnel::engine::is_loopback(config.listen.ip()) {
            return Err(format!(
                "refusing to listen on {} without authentication: give the superuser \
                 `runnel` a password with --superuser-password-file FILE or \
                 RUNNEL_SUPERUSER_PASSWORD",
                config.listen
            ));
        }
        tracing::warn!(
            "the superuser has no password: every local (loopback) client is trusted; set one \
             with --superuser-password-file to require passwords"
        );
    }
    let _ = ready.set(engine.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("no local address: {e}"))?;
    // Logged before the line on stdout that tells scripts (and tests) the server is up.
    let restored = engine.restored_objects();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        address = %addr,
        data_dir = %config.data_dir.display(),
        streams = restored.streams,
        tables = restored.tables,
        materialized_views = restored.views,
        sinks = restored.sinks,
        "runnel started"
    );
    println!(
        "runnel listening on {addr} (data directory {})",
        config.data_dir.display()
    );
    let _ = std::io::stdout().flush();
    let options = runnel_pgwire::ServeOptions {
        certificate_pem: tls.as_ref().map(|tls| tls.certificate_pem.clone()),
        tls: tls.map(|tls| tls.acceptor),
        tls_required: config.tls_required,
        max_connections: config.limits.max_connections,
        handshake_timeout: config.limits.handshake_timeout,
        max_message_bytes: config.limits.max_message_bytes,
    };
    let server = runnel_pgwire::serve(listener, engine, options);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        result = server => result.map_err(|e| format!("server failed: {e}"))?,
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = sigterm.recv() => tracing::info!("terminated; shutting down"),
    }
    Ok(())
}
