//! Differential test of the event-time operators: windows, sessions, EMIT ON WINDOW CLOSE,
//! `NOW()` temporal filters, OVER (RANGE and ROWS), top-N, interval and ASOF joins, UNION ALL
//! and views over views, against a seeded random workload with watermarks.
//!
//! Two streams with watermarks receive rows in bounded disorder, with late rows (behind the
//! watermark, or with no time) now and then, and a table takes inserts, updates and deletes.
//! The test keeps its own model of the inputs and applies the contract's rule for late rows
//! itself: a row is appended only when its time is not NULL and not behind the stream's
//! watermark (the largest accepted time minus the delay, rows taken in order). After every
//! statement the server is FLUSHed, each statement's row count is checked against the model,
//! the watermarks and late counts of `SHOW WATERMARKS` against the model's, and a rotating
//! subset of views against their batch query over the accepted rows with the current watermark:
//! a view's own query run ad hoc, with `NOW()` replaced by the watermark, windows that EMIT ON
//! WINDOW CLOSE limited to those the watermark has reached, and an ASOF JOIN written as the
//! equivalent ordinary join. Streams and the table are compared with the model as well.
//!
//! Environment:
//! - `RUNNEL_DIFF_SEED`: the seed (default: random, always printed).
//! - `RUNNEL_DIFF_STEPS`: number of random DML statements (default 1,500).

mod oracle;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate};
use futures::future::join_all;
use oracle::{
    env_u64, maybe, pick, quarter, seed_from_env, sql_f, sql_i, sql_s, text_f, text_i,
    CreationSchedule, Harness, Rows,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::TestServer;

/// Every view is compared at least once every `ROTATION` steps.
const ROTATION: usize = 6;

const SCHEMA: &[&str] = &[
    "CREATE STREAM e1 (id BIGINT, k BIGINT, ts TIMESTAMPTZ, v DOUBLE PRECISION, \
     WATERMARK FOR ts AS ts - INTERVAL '10 seconds')",
    "CREATE STREAM e2 (id BIGINT, k BIGINT, ts TIMESTAMPTZ, w BIGINT, \
     WATERMARK FOR ts AS ts - INTERVAL '4 seconds')",
    "CREATE TABLE d (k BIGINT, label TEXT, factor BIGINT, PRIMARY KEY (k))",
];

/// The streams' watermark delays in microseconds, as declared in [`SCHEMA`].
const E1_DELAY: i64 = 10_000_000;
const E2_DELAY: i64 = 4_000_000;

/// A materialized view under test.
struct ViewSpec {
    name: &'static str,
    /// When the view is created, as a fraction of the run (0.0 = before any data).
    create_at: f64,
    /// The defining query.
    sql: &'static str,
    /// The batch query the view must equal, when it is not `sql` itself. `{WM:e1}` and
    /// `{WM:e2}` stand for that stream's current watermark (a `timestamptz` literal, NULL
    /// before the first row).
    oracle: Option<&'static str>,
}

const fn view(name: &'static str, create_at: f64, sql: &'static str) -> ViewSpec {
    ViewSpec {
        name,
        create_at,
        sql,
        oracle: None,
    }
}

const fn view_with_oracle(
    name: &'static str,
    create_at: f64,
    sql: &'static str,
    oracle: &'static str,
) -> ViewSpec {
    ViewSpec {
        name,
        create_at,
        sql,
        oracle: Some(oracle),
    }
}

fn views() -> Vec<ViewSpec> {
    vec![
        // Windows, updated as rows arrive (and closed, their state freed, by the clock).
        view(
            "tumble_agg",
            0.0,
            "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS sv, min(v) AS mn, \
             max(v) AS mx FROM TUMBLE(e1, ts, INTERVAL '30 seconds') \
             GROUP BY k, window_start, window_end",
        ),
        view(
            "hop_agg",
            0.3,
            "SELECT window_start, window_end, count(*) AS n, count(v) AS nv, avg(v) AS av \
             FROM HOP(e1, ts, INTERVAL '10 seconds', INTERVAL '25 seconds') \
             GROUP BY window_start, window_end",
        ),
        view(
            "session_agg",
            0.1,
            "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS sv \
             FROM SESSION(e1, ts, INTERVAL '5 seconds', k) GROUP BY k, window_start, window_end",
        ),
        // EMIT ON WINDOW CLOSE: only the windows the watermark has reached, each final.
        view_with_oracle(
            "tumble_eowc",
            0.0,
            "SELECT k, window_start, window_end, count(*) AS n, max(v) AS mx \
             FROM TUMBLE(e1, ts, INTERVAL '20 seconds') GROUP BY k, window_start, window_end \
             EMIT ON WINDOW CLOSE",
            "SELECT * FROM (SELECT k, window_start, window_end, count(*) AS n, max(v) AS mx \
             FROM TUMBLE(e1, ts, INTERVAL '20 seconds') GROUP BY k, window_start, window_end) \
             AS o WHERE window_end <= {WM:e1}",
        ),
        view_with_oracle(
            "hop_eowc",
            0.4,
            "SELECT window_start, window_end, count(*) AS n, sum(w) AS sw \
             FROM HOP(e2, ts, INTERVAL '5 seconds', INTERVAL '15 seconds') \
             GROUP BY window_start, window_end EMIT ON WINDOW CLOSE",
            "SELECT * FROM (SELECT window_start, window_end, count(*) AS n, sum(w) AS sw \
             FROM HOP(e2, ts, INTERVAL '5 seconds', INTERVAL '15 seconds') \
             GROUP BY window_start, window_end) AS o WHERE window_end <= {WM:e2}",
        ),
        view_with_oracle(
            "session_eowc",
            0.2,
            "SELECT k, window_start, window_end, count(*) AS n, min(v) AS mn \
             FROM SESSION(e1, ts, INTERVAL '4 seconds', k) GROUP BY k, window_start, window_end \
             EMIT ON WINDOW CLOSE",
            "SELECT * FROM (SELECT k, window_start, window_end, count(*) AS n, min(v) AS mn \
             FROM SESSION(e1, ts, INTERVAL '4 seconds', k) GROUP BY k, window_start, window_end) \
             AS o WHERE window_end <= {WM:e1}",
        ),
        // NOW() temporal filters: the clock is the watermark of the filtered stream.
        view_with_oracle(
            "recent_e1",
            0.0,
            "SELECT id, k, ts, v FROM e1 WHERE ts > NOW() - INTERVAL '20 seconds'",
            "SELECT id, k, ts, v FROM e1 WHERE ts > {WM:e1} - INTERVAL '20 seconds'",
        ),
        view_with_oracle(
            "recent_agg",
            0.25,
            "SELECT k, count(*) AS n, sum(v) AS sv, max(v) AS mx, min(v) AS mn FROM e1 \
             WHERE ts >= NOW() - INTERVAL '45 seconds' GROUP BY k",
            "SELECT k, count(*) AS n, sum(v) AS sv, max(v) AS mx, min(v) AS mn FROM e1 \
             WHERE ts >= {WM:e1} - INTERVAL '45 seconds' GROUP BY k",
        ),
        view_with_oracle(
            "settled_e2",
            0.0,
            "SELECT id, k, w FROM e2 WHERE ts <= NOW() - INTERVAL '3 seconds'",
            "SELECT id, k, w FROM e2 WHERE ts <= {WM:e2} - INTERVAL '3 seconds'",
        ),
        view_with_oracle(
            "between_e2",
            0.5,
            "SELECT k, count(*) AS n, sum(w) AS sw FROM e2 \
             WHERE ts BETWEEN NOW() - INTERVAL '30 seconds' AND NOW() GROUP BY k",
            "SELECT k, count(*) AS n, sum(w) AS sw FROM e2 \
             WHERE ts BETWEEN {WM:e2} - INTERVAL '30 seconds' AND {WM:e2} GROUP BY k",
        ),
        view_with_oracle(
            "recent_join_table",
            0.15,
            "SELECT e1.id, e1.k, d.label, e1.v + d.factor AS weighted FROM e1 \
             JOIN d ON e1.k = d.k WHERE e1.ts > NOW() - INTERVAL '15 seconds'",
            "SELECT e1.id, e1.k, d.label, e1.v + d.factor AS weighted FROM e1 \
             JOIN d ON e1.k = d.k WHERE e1.ts > {WM:e1} - INTERVAL '15 seconds'",
        ),
        // OVER windows: a time RANGE, ROWS, a running aggregate, lag and row numbers (ROWS
        // frames, lag and row_number order by a unique key: ties would make them arbitrary).
        view(
            "over_range",
            0.0,
            "SELECT id, k, ts, v, sum(v) OVER w AS s30, count(*) OVER w AS n30, \
             max(v) OVER w AS m30 FROM e1 WINDOW w AS (PARTITION BY k ORDER BY ts \
             RANGE BETWEEN INTERVAL '30 seconds' PRECEDING AND CURRENT ROW)",
        ),
        view(
            "over_rows",
            0.35,
            "SELECT id, k, w, sum(w) OVER (PARTITION BY k ORDER BY ts, id \
             ROWS BETWEEN 2 PRECEDING AND CURRENT ROW) AS s3, \
             lag(w) OVER (PARTITION BY k ORDER BY ts, id) AS prev, \
             row_number() OVER (PARTITION BY k ORDER BY ts, id) AS rn FROM e2",
        ),
        view(
            "over_running",
            0.2,
            "SELECT id, k, avg(v) OVER (PARTITION BY k ORDER BY ts) AS run_avg, \
             min(v) OVER (PARTITION BY k) AS part_min FROM e1",
        ),
        // Top-N, over a stream and over a table whose rows move in and out.
        view(
            "top_e1",
            0.1,
            "SELECT * FROM (SELECT k, id, v, row_number() OVER (PARTITION BY k \
             ORDER BY v DESC, id) AS rn FROM e1 WHERE v IS NOT NULL) AS x WHERE rn <= 3",
        ),
        view(
            "top_d",
            0.0,
            "SELECT * FROM (SELECT k, label, factor, rank() OVER (PARTITION BY label \
             ORDER BY factor DESC) AS r FROM d) AS x WHERE r <= 2",
        ),
        // Interval joins.
        view(
            "interval_join",
            0.0,
            "SELECT a.id AS aid, b.id AS bid, a.k, a.v, b.w FROM e1 a JOIN e2 b \
             ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '8 seconds' \
             AND a.ts + INTERVAL '2 seconds'",
        ),
        view(
            "interval_join_agg",
            0.45,
            "SELECT a.k, count(*) AS n, sum(b.w) AS sw, max(a.v) AS mv FROM e1 a JOIN e2 b \
             ON a.k = b.k AND a.ts >= b.ts AND a.ts < b.ts + INTERVAL '5 seconds' GROUP BY a.k",
        ),
        // ASOF joins, checked against the same join written with row_number(): among right rows
        // of a key at the same time, the one that sorts last (highest id) wins.
        view_with_oracle(
            "asof_ge",
            0.0,
            "SELECT l.id, l.k, l.v, r.id AS rid, r.w FROM e1 l ASOF JOIN e2 r \
             MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k",
            "SELECT l.id, l.k, l.v, m.rid, m.w FROM e1 l LEFT JOIN (SELECT l2.id AS lid, \
             r.id AS rid, r.w, row_number() OVER (PARTITION BY l2.id ORDER BY r.ts DESC, r.id DESC) AS rn \
             FROM e1 l2 JOIN e2 r ON l2.k = r.k AND l2.ts >= r.ts) AS m \
             ON m.lid = l.id AND m.rn = 1",
        ),
        view_with_oracle(
            "asof_gt",
            0.55,
            "SELECT l.id, r.id AS rid, r.w FROM e1 l ASOF JOIN e2 r \
             MATCH_CONDITION (l.ts > r.ts) ON l.k = r.k",
            "SELECT l.id, m.rid, m.w FROM e1 l LEFT JOIN (SELECT l2.id AS lid, \
             r.id AS rid, r.w, row_number() OVER (PARTITION BY l2.id ORDER BY r.ts DESC, r.id DESC) AS rn \
             FROM e1 l2 JOIN e2 r ON l2.k = r.k AND l2.ts > r.ts) AS m \
             ON m.lid = l.id AND m.rn = 1",
        ),
        // UNION ALL of both streams, and a window over it (a view over a view).
        view(
            "union_all",
            0.0,
            "SELECT k, ts, 'e1' AS src FROM e1 WHERE v > 10 \
             UNION ALL SELECT k, ts, 'e2' FROM e2 WHERE w < 10",
        ),
        view_with_oracle(
            "union_windows",
            0.3,
            "SELECT src, window_start, window_end, count(*) AS n \
             FROM TUMBLE(union_all, ts, INTERVAL '1 minute') GROUP BY src, window_start, window_end",
            "WITH u AS (SELECT k, ts, 'e1' AS src FROM e1 WHERE v > 10 \
             UNION ALL SELECT k, ts, 'e2' FROM e2 WHERE w < 10) \
             SELECT src, window_start, window_end, count(*) AS n \
             FROM TUMBLE(u, ts, INTERVAL '1 minute') GROUP BY src, window_start, window_end",
        ),
        // Views over windowed views: one joined with the table, one over the EOWC view.
        view_with_oracle(
            "scored_windows",
            0.2,
            "SELECT t.k, t.window_start, t.n, d.label, t.n * d.factor AS score \
             FROM tumble_agg t JOIN d ON t.k = d.k",
            "SELECT t.k, t.window_start, t.n, d.label, t.n * d.factor AS score FROM \
             (SELECT k, window_start, count(*) AS n FROM TUMBLE(e1, ts, INTERVAL '30 seconds') \
             GROUP BY k, window_start, window_end) AS t JOIN d ON t.k = d.k",
        ),
        view_with_oracle(
            "closed_totals",
            0.6,
            "SELECT k, count(*) AS windows, sum(n) AS total, max(mx) AS mx FROM tumble_eowc \
             GROUP BY k",
            "SELECT k, count(*) AS windows, sum(n) AS total, max(mx) AS mx FROM \
             (SELECT k, window_start, window_end, count(*) AS n, max(v) AS mx \
             FROM TUMBLE(e1, ts, INTERVAL '20 seconds') GROUP BY k, window_start, window_end) \
             AS o WHERE window_end <= {WM:e1} GROUP BY k",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Client-side model of the inputs.

/// A stream with a watermark: its accepted rows and its clock, by the contract's rule.
struct StreamModel {
    delay: i64,
    /// Microseconds since the epoch; None before the first accepted row.
    watermark: Option<i64>,
    late: u64,
    rows: Rows,
}

impl StreamModel {
    fn new(delay: i64) -> StreamModel {
        StreamModel {
            delay,
            watermark: None,
            late: 0,
            rows: Vec::new(),
        }
    }

    /// Appends the row if it is on time (advancing the watermark), counts it as late otherwise.
    fn offer(&mut self, ts: Option<i64>, row: Vec<Option<String>>) -> bool {
        match ts {
            Some(ts) if self.watermark.is_none_or(|wm| ts >= wm) => {
                let candidate = ts - self.delay;
                self.watermark = Some(self.watermark.map_or(candidate, |wm| wm.max(candidate)));
                self.rows.push(row);
                true
            }
            _ => {
                self.late += 1;
                false
            }
        }
    }

    /// The watermark as the batch queries take it: a `timestamptz` literal or a typed NULL.
    fn literal(&self) -> String {
        match self.watermark {
            Some(wm) => format!("TIMESTAMPTZ '{}'", timestamp_text(wm)),
            None => "CAST(NULL AS TIMESTAMPTZ)".to_string(),
        }
    }
}

struct Model {
    e1: StreamModel,
    e2: StreamModel,
    /// k -> (label, factor)
    d: BTreeMap<i64, (Option<String>, Option<i64>)>,
    /// The workload's notion of "now" (microseconds since the epoch); rows scatter behind it.
    clock: i64,
    next_id: i64,
}

const KEYS: i64 = 5;
const D_KEYS: i64 = 7;
const LABELS: &[&str] = &["red", "green", "blue"];
/// Rows per stream INSERT: 1 to this many.
const STREAM_ROWS: usize = 6;

/// Postgres's text for a `timestamptz` in UTC: fractional seconds without trailing zeros.
fn timestamp_text(micros: i64) -> String {
    let t = DateTime::from_timestamp_micros(micros).expect("timestamp in range");
    let mut s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    let fraction = micros.rem_euclid(1_000_000);
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push_str("+00");
    s
}

fn sql_ts(ts: Option<i64>) -> String {
    match ts {
        Some(ts) => format!("'{}'", timestamp_text(ts)),
        None => "NULL".to_string(),
    }
}

impl Model {
    fn new() -> Model {
        let start = NaiveDate::from_ymd_opt(2026, 6, 10)
            .and_then(|d| d.and_hms_opt(10, 0, 0))
            .expect("valid start time")
            .and_utc()
            .timestamp_micros();
        Model {
            e1: StreamModel::new(E1_DELAY),
            e2: StreamModel::new(E2_DELAY),
            d: BTreeMap::new(),
            clock: start,
            next_id: 1,
        }
    }

    /// Moves the clock on a little, now and then a lot (so windows close and state expires).
    fn tick(&mut self, rng: &mut StdRng) {
        self.clock += if rng.random_bool(0.01) {
            rng.random_range(40_000..=90_000) * 1000
        } else {
            rng.random_range(0..=1500) * 1000
        };
    }

    /// An event time behind the clock: usually within the bounded disorder, sometimes far
    /// behind (late), sometimes missing (late too).
    fn event_time(
        &mut self,
        rng: &mut StdRng,
        disorder_ms: i64,
        whole_seconds: bool,
    ) -> Option<i64> {
        if rng.random_bool(0.02) {
            return None;
        }
        let behind = if rng.random_bool(0.03) {
            60_000
        } else {
            rng.random_range(0..=disorder_ms)
        };
        let ts = self.clock - behind * 1000;
        Some(if whole_seconds {
            ts - ts.rem_euclid(1_000_000)
        } else {
            ts
        })
    }

    fn d_rows(&self) -> Rows {
        self.d
            .iter()
            .map(|(k, (label, factor))| vec![text_i(Some(*k)), label.clone(), text_i(*factor)])
            .collect()
    }
}

/// One random DML statement, applied to the model. Returns the SQL and the number of rows the
/// server must report (for a stream, the rows appended: late ones are not).
fn gen_step(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    match rng.random_range(0..100) {
        0..=44 => gen_e1(rng, m),
        45..=79 => gen_e2(rng, m),
        _ => gen_d(rng, m),
    }
}

fn gen_e1(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let n = rng.random_range(1..=STREAM_ROWS);
    let mut values = Vec::new();
    let mut appended = 0;
    for _ in 0..n {
        m.tick(rng);
        let id = m.next_id;
        m.next_id += 1;
        let k = maybe(rng, 0.05, |r| r.random_range(0..KEYS));
        // Whole seconds: many rows share a time (peers of a RANGE frame, ties in windows).
        let ts = m.event_time(rng, 14_000, true);
        let v = maybe(rng, 0.05, |r| quarter(r, -5, 20));
        values.push(format!(
            "({id}, {}, {}, {})",
            sql_i(k),
            sql_ts(ts),
            sql_f(v)
        ));
        let row = vec![
            text_i(Some(id)),
            text_i(k),
            ts.map(timestamp_text),
            text_f(v),
        ];
        appended += u64::from(m.e1.offer(ts, row));
    }
    (
        format!("INSERT INTO e1 VALUES {}", values.join(", ")),
        appended,
    )
}

fn gen_e2(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let n = rng.random_range(1..=STREAM_ROWS);
    let mut values = Vec::new();
    let mut appended = 0;
    for _ in 0..n {
        m.tick(rng);
        let id = m.next_id;
        m.next_id += 1;
        let k = maybe(rng, 0.05, |r| r.random_range(0..KEYS));
        // Milliseconds, a third of them rounded to whole seconds: ties for the ASOF joins,
        // where the right row that sorts last (the highest id, the first column) wins.
        let ts = m.event_time(rng, 6_000, false).map(|t| {
            if rng.random_bool(0.3) {
                t - t.rem_euclid(1_000_000)
            } else {
                t
            }
        });
        let w = maybe(rng, 0.05, |r| r.random_range(0..=40i64));
        values.push(format!(
            "({id}, {}, {}, {})",
            sql_i(k),
            sql_ts(ts),
            sql_i(w)
        ));
        let row = vec![
            text_i(Some(id)),
            text_i(k),
            ts.map(timestamp_text),
            text_i(w),
        ];
        appended += u64::from(m.e2.offer(ts, row));
    }
    (
        format!("INSERT INTO e2 VALUES {}", values.join(", ")),
        appended,
    )
}

fn gen_d(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let k = rng.random_range(0..D_KEYS);
    let label = maybe(rng, 0.15, |r| pick(r, LABELS).to_string());
    let factor = maybe(rng, 0.1, |r| r.random_range(-3..=9i64));
    if let std::collections::btree_map::Entry::Vacant(entry) = m.d.entry(k) {
        let sql = format!(
            "INSERT INTO d VALUES ({k}, {}, {})",
            sql_s(label.as_deref()),
            sql_i(factor)
        );
        entry.insert((label, factor));
        return (sql, 1);
    }
    match rng.random_range(0..10) {
        0..=4 => {
            let sql = format!(
                "UPDATE d SET label = {}, factor = {} WHERE k = {k}",
                sql_s(label.as_deref()),
                sql_i(factor)
            );
            m.d.insert(k, (label, factor));
            (sql, 1)
        }
        5..=7 => {
            m.d.remove(&k);
            (format!("DELETE FROM d WHERE k = {k}"), 1)
        }
        _ => {
            let target = pick(rng, LABELS);
            let mut n = 0;
            for (l, f) in m.d.values_mut() {
                if l.as_deref() == Some(target) {
                    *f = f.map(|f| f + 1);
                    n += 1;
                }
            }
            (
                format!("UPDATE d SET factor = factor + 1 WHERE label = '{target}'"),
                n,
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.

/// The batch query a view must equal now: its oracle with the current watermarks filled in.
fn oracle_query(spec: &ViewSpec, m: &Model) -> String {
    spec.oracle
        .unwrap_or(spec.sql)
        .replace("{WM:e1}", &m.e1.literal())
        .replace("{WM:e2}", &m.e2.literal())
}

/// `SHOW WATERMARKS` must print the model's watermark and late count for both streams.
async fn check_watermarks(h: &Harness, step: usize, m: &Model) {
    let rows = h.query_on(step, &h.readers[0], "SHOW WATERMARKS").await;
    for (name, stream) in [("e1", &m.e1), ("e2", &m.e2)] {
        let Some(row) = rows.iter().find(|r| r[0].as_deref() == Some(name)) else {
            h.fail(
                step,
                &format!("SHOW WATERMARKS has no row for {name}: {rows:?}"),
            );
        };
        let expected_wm = stream.watermark.map(timestamp_text);
        let expected_late = Some(stream.late.to_string());
        if row[3] != expected_wm || row[4] != expected_late {
            h.fail(
                step,
                &format!(
                    "SHOW WATERMARKS for {name} prints watermark {:?} and {:?} late rows; \
                     the model has {expected_wm:?} and {expected_late:?}",
                    row[3], row[4]
                ),
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_views_equal_batch_queries_at_the_watermark() {
    let seed = seed_from_env();
    let steps = env_u64("RUNNEL_DIFF_STEPS").unwrap_or(1_500) as usize;
    println!(
        "differential (event time): seed {seed} (set RUNNEL_DIFF_SEED to reproduce), {steps} steps"
    );
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    // Every operator evicts and re-reads its state all the time (docs/testing.md).
    let server = TestServer::start_with(dir.path(), support::TINY_STATE_CACHE);
    let mut h = Harness::new(
        format!("RUNNEL_DIFF_SEED={seed} cargo test --test differential_event_time"),
        server.connect().await,
        vec![
            server.connect().await,
            server.connect().await,
            server.connect().await,
            server.connect().await,
        ],
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let specs = views();

    for ddl in SCHEMA {
        h.exec(0, ddl).await;
    }

    let mut schedule = CreationSchedule::new(
        specs
            .iter()
            .map(|v| (v.name.to_string(), v.sql.to_string(), v.create_at))
            .collect(),
    );
    let mut compared = 0u64;
    let mut last_report = Instant::now();

    for step in 0..steps {
        let new_views = schedule.create_due(&mut h, step, steps).await;

        let (sql, expected_count) = gen_step(&mut rng, &mut model);
        h.apply(step, &sql, expected_count).await;
        check_watermarks(&h, step, &model).await;

        let due = schedule.rotation(step, ROTATION, &new_views);
        compared += due.len() as u64;
        let queries: Vec<(usize, String)> = due
            .iter()
            .map(|&i| (i, oracle_query(&specs[i], &model)))
            .collect();
        let comparisons = queries
            .iter()
            .enumerate()
            .map(|(slot, (i, q))| h.compare_view(step, slot, specs[*i].name, q));
        join_all(comparisons).await;
        match step % (2 * ROTATION) {
            0 => h.compare_model(step, "d", &model.d_rows()).await,
            1 => h.compare_model(step, "e1", &model.e1.rows).await,
            2 => h.compare_model(step, "e2", &model.e2.rows).await,
            _ => {}
        }

        if last_report.elapsed() > Duration::from_secs(30) || step + 1 == steps {
            println!(
                "differential (event time): step {}/{steps}, {} views, {compared} comparisons, \
                 {:.1}s; e1 {} rows ({} late), e2 {} rows ({} late), d {} rows",
                step + 1,
                schedule.created.len(),
                started.elapsed().as_secs_f64(),
                model.e1.rows.len(),
                model.e1.late,
                model.e2.rows.len(),
                model.e2.late,
                model.d.len()
            );
            last_report = Instant::now();
        }
    }

    let end = steps;
    schedule.create_due(&mut h, end, steps).await;
    h.exec(end, "FLUSH").await;
    check_watermarks(&h, end, &model).await;
    for spec in &specs {
        h.compare_view(end, 0, spec.name, &oracle_query(spec, &model))
            .await;
    }
    h.compare_model(end, "d", &model.d_rows()).await;
    h.compare_model(end, "e1", &model.e1.rows).await;
    h.compare_model(end, "e2", &model.e2.rows).await;
    // The workload must have exercised the late-row rule on both streams.
    assert!(
        steps < 200 || (model.e1.late > 0 && model.e2.late > 0),
        "the workload produced no late rows"
    );

    println!(
        "differential (event time): time by kind:\n{}",
        h.timing_report()
    );
    println!(
        "differential (event time): passed, seed {seed}, {steps} steps, {} views, {compared} \
         comparisons during the run, {:.1}s",
        specs.len(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
}
