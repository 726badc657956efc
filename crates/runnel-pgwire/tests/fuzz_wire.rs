//! Fuzzes the wire protocol's message handling against a fake engine: a connection sends a
//! random startup and random, often garbled, frontend messages (`runnel_fuzz::wire`). Whatever
//! it sends, the server answers with well-framed messages whose errors are never XX000, closes
//! the connection once the client has finished sending, keeps serving another connection, and
//! none of its threads panics (the server runs in this process, so a panic hook sees them).
//! `crates/runnel/tests/fuzz_wire.rs` sends well-formed messages to the real server.

mod support;

use std::backtrace::Backtrace;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, StringArray};
use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use runnel_fuzz::wire::{error_codes, exchange, session};
use support::{FakeEngine, Server};

/// Statement texts the fake engine knows (see `support`), and some it does not.
const STATEMENTS: &[&str] = &[
    "select one",
    "echo 23 25",
    "echo 16 20 700 1082 1114 1184 2950 3802",
    "copy t from stdin",
    "insert",
    "begin",
    "commit",
    "rollback",
    "fail",
    "-- nothing",
    "",
    "select one; fail; select one",
];

const HANG: Duration = Duration::from_secs(60);

/// Panics of the server's threads this test has found whose fix lies outside Runnel, tolerated
/// (and not printed) until fixed, so that the test still fails on any other. Delete an entry
/// with its fix.
///
/// - pgwire 0.42.1 decodes message bodies with `bytes`' panicking getters: a Bind announcing
///   more parameters or longer values than follow (`split_to out of bounds`), a Parse
///   announcing more parameter types than follow, an Execute, Describe or Close shorter than
///   its fields (`advance out of bounds`). The connection's task panics, so the client sees the
///   connection close with no ErrorResponse (Postgres answers 08P01, "insufficient data left in
///   message"); the server and its other connections go on.
///
/// Matched by the panicking frame's function, not its source path (dependencies are built
/// without line tables, so their own frames have none), and only for the pgwire release they
/// were found in ([`known_panics_are_of_the_pgwire_in_use`]): an upgrade makes this test look
/// again.
const KNOWN_PANICS: &[&str] = &["pgwire::messages::"];

/// The pgwire release whose panics [`KNOWN_PANICS`] lists.
const KNOWN_PANICS_PGWIRE: &str = "0.42.1";

#[test]
fn known_panics_are_of_the_pgwire_in_use() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .expect("the workspace's Cargo.lock");
    let pinned = format!("name = \"pgwire\"\nversion = \"{KNOWN_PANICS_PGWIRE}\"");
    assert!(
        lock.contains(&pinned),
        "pgwire is no longer {KNOWN_PANICS_PGWIRE}: check whether the panics KNOWN_PANICS \
         tolerates are fixed, and delete or update them"
    );
}

/// Panics of the server's threads since the last [`take_panics`]: message and backtrace.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records every panic of a server thread (tokio's workers), printing only unknown ones.
fn watch_server_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let server_thread = std::thread::current()
            .name()
            .is_some_and(|name| name.starts_with("tokio"));
        if !server_thread {
            return default(info);
        }
        let report = format!("{info}\n{}", Backtrace::force_capture());
        let known = KNOWN_PANICS.iter().any(|k| report.contains(k));
        if !known {
            default(info);
        }
        PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }));
}

/// The unknown panics since the last call.
fn take_panics() -> Vec<String> {
    std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()))
        .into_iter()
        .filter(|report| !KNOWN_PANICS.iter().any(|k| report.contains(k)))
        .collect()
}

#[test]
fn fuzz_wire_messages_never_break_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    watch_server_panics();
    let mut engine = FakeEngine::default();
    engine.column("one", Arc::new(StringArray::from(vec!["1"])) as ArrayRef);
    let server = runtime.block_on(Server::start(engine));
    let client = runtime.block_on(server.client());
    let healthy = || -> Result<(), TestCaseError> {
        let rows = runtime
            .block_on(client.simple_query("select one"))
            .map_err(|e| TestCaseError::fail(format!("the other connection failed: {e}")))?;
        let values: Vec<Option<String>> = rows
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => {
                    Some(row.get(0).map(str::to_string))
                }
                _ => None,
            })
            .collect();
        prop_assert_eq!(values, vec![Some("1".to_string())]);
        Ok(())
    };

    let mut runner = TestRunner::new(runnel_fuzz::config(4096));
    let outcome = runner.run(&session(STATEMENTS, true), |parts| {
        let received = exchange(server.addr, &parts, HANG).map_err(TestCaseError::fail)?;
        for code in error_codes(&received).map_err(TestCaseError::fail)? {
            prop_assert_ne!(code.as_str(), "XX000");
        }
        let panics = take_panics();
        prop_assert!(
            panics.is_empty(),
            "the server panicked: {}",
            panics.join("\n")
        );
        healthy()
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
