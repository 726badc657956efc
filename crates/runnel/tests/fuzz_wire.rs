//! Fuzzes the real server's side of the wire protocol: a connection sends a random startup and
//! random, often garbled, frontend messages (`runnel_fuzz::wire`) around statements that plan
//! against a small catalog, with parameters of random types and bytes. Whatever it sends, the
//! server answers with well-framed messages whose errors are never XX000, closes the connection
//! once the client has finished sending, and keeps answering `SELECT 1` on another connection.

mod support;

use std::time::Duration;

use proptest::test_runner::{TestCaseError, TestRunner};
use runnel_fuzz::sql::CATALOG_SETUP;
use runnel_fuzz::wire::{error_codes, exchange, session};
use support::{query_text, TestServer};

/// Statements over `CATALOG_SETUP`'s relations, many with parameters, so that Bind's values
/// (random bytes in random formats) reach the server's parameter decoding and its planner.
const STATEMENTS: &[&str] = &[
    "SELECT 1",
    "SELECT $1",
    "SELECT $1::int + 1",
    "SELECT $1::text, $2::timestamptz, $3::numeric",
    "SELECT $1::jsonb -> 'a', $2::uuid, $3::bytea, $4::interval, $5::date, $6::bool",
    "SELECT * FROM s WHERE user_id = $1 AND ts > $2",
    "SELECT item_id, count(*) FROM t WHERE category = $1 GROUP BY item_id",
    "SELECT * FROM v",
    "INSERT INTO t VALUES ($1, $2, $3, $4)",
    "INSERT INTO s (user_id, price, ts) VALUES ($1, $2, $3)",
    "COPY t FROM STDIN",
    "COPY t TO STDOUT",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SET TimeZone = 'UTC'",
    "SHOW ALL",
    "DECLARE c CURSOR FOR SELECT * FROM s",
    "FETCH 1 FROM c",
    "SELECT 1; SELECT $1",
    "",
];

const HANG: Duration = Duration::from_secs(60);

#[test]
fn fuzz_wire_messages_against_a_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let server = TestServer::start(dir.path());
    let client = runtime.block_on(server.connect());
    runtime.block_on(async {
        for sql in CATALOG_SETUP {
            client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    });
    let addr = server.addr.parse().expect("the server's address");

    let mut runner = TestRunner::new(runnel_fuzz::config(1024));
    let outcome = runner.run(&session(STATEMENTS, false), |parts| {
        let received = exchange(addr, &parts, HANG).map_err(TestCaseError::fail)?;
        for code in error_codes(&received).map_err(TestCaseError::fail)? {
            if code == "XX000" {
                return Err(TestCaseError::fail(format!(
                    "internal error in {:?}",
                    String::from_utf8_lossy(&received)
                )));
            }
        }
        let one = runtime
            .block_on(query_text(&client, "SELECT 1"))
            .map_err(|e| TestCaseError::fail(format!("SELECT 1 failed afterwards: {e:?}")))?;
        if one != vec![vec![Some("1".to_string())]] {
            return Err(TestCaseError::fail(format!("SELECT 1 gave {one:?}")));
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
