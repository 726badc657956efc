//! COPY ... FROM STDIN over the wire (the sqllogictest runner cannot send COPY data):
//! text and CSV formats, NULLs, quoting, column lists, chunks split anywhere, atomicity of a
//! failed COPY, tables, views fed by COPY, and durability of an acknowledged COPY across kill -9.
//! Expected values are computed in this file from the rows it sends.

mod support;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::SinkExt;
use support::{query_text, TestServer};
use tokio_postgres::Client;

type Rows = Vec<Vec<Option<String>>>;

fn text<T: ToString>(value: T) -> Option<String> {
    Some(value.to_string())
}

async fn exec(client: &Client, sql: &str) {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
}

async fn select(client: &Client, sql: &str) -> Rows {
    let mut rows = query_text(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    rows.sort();
    rows
}

/// Sends `data` in the given chunks through `COPY`; returns the row count or the error.
async fn copy_chunks(
    client: &Client,
    statement: &str,
    chunks: Vec<Vec<u8>>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures::pin_mut!(sink);
    for chunk in chunks {
        sink.send(Bytes::from(chunk)).await?;
    }
    sink.finish().await
}

async fn copy(client: &Client, statement: &str, data: &str) -> Result<u64, tokio_postgres::Error> {
    copy_chunks(client, statement, vec![data.as_bytes().to_vec()]).await
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_text_and_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(
        &client,
        "CREATE STREAM s (a INT, b TEXT, c DOUBLE PRECISION)",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW s_agg AS SELECT count(*) AS n, count(b) AS nb, sum(a) AS sa, sum(c) AS sc FROM s",
    )
    .await;

    // Text format (the default): tab-separated, \N is NULL.
    let n = copy(
        &client,
        "COPY s FROM STDIN",
        "1\tone\t1.5\n2\t\\N\t2\n3\tthree\t\\N\n",
    )
    .await
    .expect("COPY text");
    assert_eq!(n, 3);

    // CSV: quoted fields with commas and quotes; an unquoted empty field is NULL.
    let n = copy(
        &client,
        "COPY s FROM STDIN WITH (FORMAT csv)",
        "4,\"four, with comma\",0.25\n5,\"say \"\"hi\"\"\",\n6,,-1\n",
    )
    .await
    .expect("COPY csv");
    assert_eq!(n, 3);

    // CSV with a header line, and a column list in another order.
    let n = copy(
        &client,
        "COPY s FROM STDIN WITH (FORMAT csv, HEADER true)",
        "a,b,c\n7,seven,7\n",
    )
    .await
    .expect("COPY csv header");
    assert_eq!(n, 1);
    let n = copy(
        &client,
        "COPY s (c, a) FROM STDIN WITH (FORMAT csv)",
        "8.5,8\n",
    )
    .await
    .expect("COPY column list");
    assert_eq!(n, 1);

    // No trailing newline on the last line.
    let n = copy(&client, "COPY s FROM STDIN WITH (FORMAT csv)", "9,nine,9")
        .await
        .expect("COPY without final newline");
    assert_eq!(n, 1);

    let expected: Rows = vec![
        vec![text(1), text("one"), text(1.5)],
        vec![text(2), None, text(2)],
        vec![text(3), text("three"), None],
        vec![text(4), text("four, with comma"), text(0.25)],
        vec![text(5), text("say \"hi\""), None],
        vec![text(6), None, text(-1)],
        vec![text(7), text("seven"), text(7)],
        vec![text(8), None, text(8.5)],
        vec![text(9), text("nine"), text(9)],
    ];
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        select(&client, "SELECT a, b, c FROM s").await,
        expected_sorted
    );

    // A COPY with a bad value fails as a whole: none of its rows is added.
    let err = copy(
        &client,
        "COPY s FROM STDIN WITH (FORMAT csv)",
        "10,ten,10\n11,eleven,not-a-number\n",
    )
    .await
    .expect_err("a bad value must fail the COPY");
    assert!(
        err.as_db_error().is_some(),
        "an ErrorResponse, not a broken connection: {err:?}"
    );
    let err = copy(
        &client,
        "COPY s FROM STDIN WITH (FORMAT csv)",
        "12,twelve\n",
    )
    .await
    .expect_err("a short line must fail the COPY");
    assert!(err.as_db_error().is_some(), "{err:?}");
    assert_eq!(
        select(&client, "SELECT count(*) FROM s").await,
        vec![vec![text(9)]]
    );

    // The view saw every copied row once.
    exec(&client, "FLUSH").await;
    assert_eq!(
        select(&client, "SELECT * FROM s_agg").await,
        vec![vec![text(9), text(6), text(45), text(27.25)]]
    );

    // COPY into objects that cannot take it. (Each on its own connection: after a COPY
    // refused before it starts, tokio-postgres's connection is not reusable for COPY.)
    let other = server.connect().await;
    let err = copy(&other, "COPY nosuch FROM STDIN", "1\n")
        .await
        .expect_err("unknown relation");
    assert_eq!(err.code().map(|c| c.code()), Some("42P01"), "{err:?}");
    let other = server.connect().await;
    let err = copy(&other, "COPY s_agg FROM STDIN", "1\n")
        .await
        .expect_err("a view");
    assert_eq!(err.code().map(|c| c.code()), Some("42809"), "{err:?}");

    // The session still works.
    assert_eq!(select(&client, "SELECT 1").await, vec![vec![text(1)]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_table_checks_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE TABLE t (id INT PRIMARY KEY, v TEXT)").await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW t_count AS SELECT count(*) AS n FROM t",
    )
    .await;
    assert_eq!(
        copy(&client, "COPY t FROM STDIN", "1\ta\n2\tb\n")
            .await
            .expect("COPY"),
        2
    );
    let err = copy(&client, "COPY t FROM STDIN", "3\tc\n2\tdup\n")
        .await
        .expect_err("duplicate key");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
    let err = copy(&client, "COPY t FROM STDIN", "4\td\n4\tdup\n")
        .await
        .expect_err("duplicate key inside one COPY");
    assert_eq!(err.code().map(|c| c.code()), Some("23505"));
    assert_eq!(
        select(&client, "SELECT id, v FROM t").await,
        vec![vec![text(1), text("a")], vec![text(2), text("b")]]
    );
    exec(&client, "FLUSH").await;
    assert_eq!(
        select(&client, "SELECT * FROM t_count").await,
        vec![vec![text(2)]]
    );
}

/// Many rows, sent in chunks cut at arbitrary byte offsets (inside lines, fields and
/// multi-byte characters); a grouped view over them equals the aggregates computed here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_large_in_odd_chunks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM big (id BIGINT, g TEXT, x BIGINT)").await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW big_by_g AS SELECT g, count(*) AS n, sum(x) AS s, min(id) AS lo, max(id) AS hi FROM big GROUP BY g",
    )
    .await;

    const ROWS: u64 = 30_000;
    let groups = ["ä", "b€", "c", "日本"];
    let mut data = String::new();
    let mut expected: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for id in 0..ROWS {
        let g = groups[(id % 4) as usize];
        let x = (id * 7919) % 1000;
        data.push_str(&format!("{id},{g},{x}\n"));
        let e = expected.entry(g).or_insert((0, 0, u64::MAX, 0));
        e.0 += 1;
        e.1 += x;
        e.2 = e.2.min(id);
        e.3 = e.3.max(id);
    }
    let bytes = data.into_bytes();
    let mut chunks = Vec::new();
    let mut at = 0;
    let mut size = 1;
    while at < bytes.len() {
        let end = (at + size).min(bytes.len());
        chunks.push(bytes[at..end].to_vec());
        at = end;
        size = size * 7 % 9973 + 1; // 1, 8, 57, 400, ...: uneven sizes, many cut points
    }
    let n = copy_chunks(&client, "COPY big FROM STDIN WITH (FORMAT csv)", chunks)
        .await
        .expect("COPY big");
    assert_eq!(n, ROWS);

    exec(&client, "FLUSH").await;
    let mut want: Rows = expected
        .iter()
        .map(|(g, (n, s, lo, hi))| vec![text(g), text(n), text(s), text(lo), text(hi)])
        .collect();
    want.sort();
    assert_eq!(select(&client, "SELECT * FROM big_by_g").await, want);
    assert_eq!(
        select(
            &client,
            "SELECT g, count(*), sum(x), min(id), max(id) FROM big GROUP BY g"
        )
        .await,
        want
    );
}

/// An acknowledged COPY is durable: kill -9 right after it, restart, and the rows and the
/// view over them are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_copy_survives_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (k INT, v BIGINT)").await;
    exec(&client, "CREATE MATERIALIZED VIEW s_by_k AS SELECT k, count(*) AS n, sum(v) AS total FROM s GROUP BY k").await;
    let mut data = String::new();
    for i in 0..5_000u64 {
        data.push_str(&format!("{}\t{}\n", i % 3, i));
    }
    assert_eq!(
        copy(&client, "COPY s FROM STDIN", &data)
            .await
            .expect("COPY"),
        5_000
    );
    drop(client);
    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(
        select(&client, "SELECT count(*), sum(v) FROM s").await,
        vec![vec![text(5_000), text(12_497_500)]]
    );
    exec(&client, "FLUSH").await;
    let mut want: Rows = (0..3u64)
        .map(|k| {
            let vs: Vec<u64> = (0..5_000u64).filter(|i| i % 3 == k).collect();
            vec![text(k), text(vs.len()), text(vs.iter().sum::<u64>())]
        })
        .collect();
    want.sort();
    assert_eq!(select(&client, "SELECT * FROM s_by_k").await, want);
    drop(server);
}

/// In CSV, a quoted empty field `""` is an empty string, only an unquoted empty field is NULL
/// (Postgres COPY semantics).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_csv_quoted_empty_string_is_not_null() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (a INT, b TEXT)").await;
    copy(
        &client,
        "COPY s FROM STDIN WITH (FORMAT csv)",
        "1,\"\"\n2,\n",
    )
    .await
    .expect("COPY");
    assert_eq!(
        select(&client, "SELECT a, b IS NULL, length(b) FROM s").await,
        vec![
            vec![text(1), text("f"), text(0)],
            vec![text(2), text("t"), None]
        ]
    );
}

/// The text format decodes backslash escapes (`\t`, `\n`, `\\`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_text_decodes_backslash_escapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (a INT, b TEXT)").await;
    copy(
        &client,
        "COPY s FROM STDIN",
        "1\ta\\tb\n2\tback\\\\slash\n3\tnew\\nline\n",
    )
    .await
    .expect("COPY");
    assert_eq!(
        select(&client, "SELECT a, b FROM s").await,
        vec![
            vec![text(1), text("a\tb")],
            vec![text(2), text("back\\slash")],
            vec![text(3), text("new\nline")],
        ]
    );
}
