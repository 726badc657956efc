//! Runs every `sql-tests/*.slt` file in sqllogictest format over the Postgres wire protocol,
//! each against its own fresh `runnel serve` process, at most two files at a time.
//!
//! Conventions of the runner (also described in `sql-tests/README.md`):
//! - queries go through the simple query protocol, so every cell is Postgres text output;
//! - a NULL cell reads `NULL` and an empty string reads `(empty)`;
//! - the column type letters after `query` are not checked (use `I`, `T`, `R` as documentation);
//! - `statement error <regex>` matches the regex against `<SQLSTATE>: <message>` (plus detail and
//!   hint when present), and `statement error (42703)` matches the SQLSTATE alone;
//! - a record preceded by `skipif runnel` is skipped (only for a documented engine bug);
//!   `SLT_RUN_SKIPPED=1` runs those records too, to check whether the bugs are fixed;
//! - `SLT_FILTER=substring cargo test -p runnel --test slt` runs only the matching files, and
//!   `SLT_DIR=path` reads the files from another directory.

mod support;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType, Runner};
use support::TestServer;
use tokio_postgres::{Client, SimpleQueryMessage};

/// How many files (and so server processes) run at the same time.
const CONCURRENCY: usize = 2;

/// An error from the server (or the connection), carrying the SQLSTATE when there is one.
#[derive(Debug)]
struct PgError {
    code: Option<String>,
    message: String,
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for PgError {}

impl From<tokio_postgres::Error> for PgError {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.as_db_error() {
            Some(db) => {
                let mut message = db.message().to_string();
                if let Some(detail) = db.detail() {
                    message.push_str("\nDETAIL: ");
                    message.push_str(detail);
                }
                if let Some(hint) = db.hint() {
                    message.push_str("\nHINT: ");
                    message.push_str(hint);
                }
                PgError {
                    code: Some(db.code().code().to_string()),
                    message,
                }
            }
            None => PgError {
                code: err.code().map(|c| c.code().to_string()),
                message: err.to_string(),
            },
        }
    }
}

/// One sqllogictest connection: a tokio-postgres client speaking the simple query protocol.
struct Runnel {
    client: Client,
    /// "runnel", or "" when records marked `skipif runnel` should run anyway.
    engine: &'static str,
}

fn cell(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(text) => text.to_string(),
    }
}

#[async_trait::async_trait]
impl AsyncDB for Runnel {
    type Error = PgError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, PgError> {
        let messages = self.client.simple_query(sql).await?;
        // A multi-statement string yields the output of its last row-returning statement, or
        // of its last statement when none returns rows.
        let mut result: Option<DBOutput<DefaultColumnType>> = None;
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut columns: Option<usize> = None;
        let mut saw_rows = false;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(desc) => {
                    columns = Some(desc.len());
                    rows.clear();
                }
                SimpleQueryMessage::Row(row) => {
                    columns.get_or_insert(row.len());
                    rows.push((0..row.len()).map(|i| cell(row.get(i))).collect());
                }
                SimpleQueryMessage::CommandComplete(count) => match columns.take() {
                    Some(n) => {
                        saw_rows = true;
                        result = Some(DBOutput::Rows {
                            types: vec![DefaultColumnType::Any; n],
                            rows: std::mem::take(&mut rows),
                        });
                    }
                    None if !saw_rows => result = Some(DBOutput::StatementComplete(count)),
                    None => {}
                },
                _ => {}
            }
        }
        if let Some(n) = columns {
            // Rows without a CommandComplete (should not happen); report them anyway.
            result = Some(DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            });
        }
        Ok(result.unwrap_or(DBOutput::StatementComplete(0)))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        self.engine
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }

    fn error_sql_state(err: &PgError) -> Option<String> {
        err.code.clone()
    }
}

/// Column type letters are documentation only.
#[allow(clippy::ptr_arg)]
fn any_columns(_actual: &Vec<DefaultColumnType>, _expected: &Vec<DefaultColumnType>) -> bool {
    true
}

/// Runs one file against a fresh server started with `args`; returns the runner's error text
/// on failure.
fn run_file(path: &Path, args: &[&str]) -> Result<(), String> {
    let run_skipped =
        std::env::var_os("SLT_RUN_SKIPPED").is_some_and(|v| !v.is_empty() && v != "0");
    let engine = if run_skipped { "" } else { "runnel" };
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let server = TestServer::start_with(dir.path(), args);
    let conninfo = server.conninfo();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let outcome = runtime.block_on(async {
        let mut runner = Runner::new(move || {
            let conninfo = conninfo.clone();
            async move {
                let (client, connection) =
                    tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, PgError>(Runnel { client, engine })
            }
        });
        if !run_skipped {
            runner.add_label("runnel");
        }
        runner.with_column_validator(any_columns);
        let result = runner.run_file_async(path).await;
        runner.shutdown_async().await;
        result
    });
    drop(server);
    outcome.map_err(|e| e.display(false).to_string())
}

fn slt_files() -> Vec<PathBuf> {
    let dir = std::env::var_os("SLT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sql-tests")));
    let filter = std::env::var("SLT_FILTER").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|ext| ext == "slt"))
        .filter(|p| {
            filter.is_empty()
                || p.file_name()
                    .is_some_and(|n| n.to_string_lossy().contains(&filter))
        })
        .collect();
    files.sort();
    files
}

/// The server configurations every file runs under: the default, and a 1 KiB state cache
/// in which every operator evicts and re-reads its state all the time.
const CONFIGURATIONS: &[(&str, &[&str])] = &[
    ("", &[]),
    (" [tiny state cache]", support::TINY_STATE_CACHE),
];

#[test]
fn sql_logic_tests() {
    let files = slt_files();
    assert!(!files.is_empty(), "no sql-tests/*.slt files matched");
    let runs: Vec<(PathBuf, usize)> = files
        .iter()
        .flat_map(|f| (0..CONFIGURATIONS.len()).map(move |c| (f.clone(), c)))
        .collect();
    let queue = Mutex::new(runs.clone());
    let failures: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..CONCURRENCY {
            scope.spawn(|| loop {
                let Some((path, configuration)) = queue.lock().expect("queue lock").pop() else {
                    break;
                };
                let (label, args) = CONFIGURATIONS[configuration];
                let name = path
                    .file_name()
                    .map(|n| format!("{}{label}", n.to_string_lossy()))
                    .unwrap_or_default();
                let started = std::time::Instant::now();
                // A panic (for example the server failing to start) is a failure of this file.
                let outcome = std::panic::catch_unwind(|| run_file(&path, args))
                    .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_text(&panic))));
                match outcome {
                    Ok(()) => eprintln!("ok     {name} ({:.1}s)", started.elapsed().as_secs_f64()),
                    Err(error) => {
                        eprintln!("FAILED {name}");
                        failures.lock().expect("failures lock").push((name, error));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().expect("failures lock");
    failures.sort();
    if !failures.is_empty() {
        let mut report = format!("{} of {} slt runs failed:\n", failures.len(), runs.len());
        for (name, error) in &failures {
            report.push_str(&format!("\n=== {name}\n{error}\n"));
        }
        panic!("{report}");
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}
