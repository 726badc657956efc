//! The differential oracle shared by the differential tests: a harness that runs a random
//! workload's statements against a real server, compares views with the batch queries that
//! define them (as multisets of text rows), reports the seed and the last statements on a
//! mismatch, and the value helpers the workloads use to write SQL literals and expected text.
//!
//! Seeds: each run takes a fresh random seed unless `RUNNEL_DIFF_SEED` sets one, and prints it,
//! so CI explores new workloads every time and a failure replays with that one variable.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::support::query_text;

/// How many DML statements the failure report shows.
const HISTORY: usize = 40;
/// No single statement may take longer than this (a hang is reported, not waited out).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

pub type Rows = Vec<Vec<Option<String>>>;

pub fn sql_f(v: Option<f64>) -> String {
    match v {
        None => "NULL".into(),
        Some(v) => format!("{v:?}"),
    }
}

pub fn sql_i(v: Option<i64>) -> String {
    match v {
        None => "NULL".into(),
        Some(v) => v.to_string(),
    }
}

pub fn sql_s(v: Option<&str>) -> String {
    match v {
        None => "NULL".into(),
        Some(v) => format!("'{}'", v.replace('\'', "''")),
    }
}

pub fn sql_b(v: Option<bool>) -> String {
    match v {
        None => "NULL".into(),
        Some(true) => "TRUE".into(),
        Some(false) => "FALSE".into(),
    }
}

/// Postgres text output for the values the workload produces.
pub fn text_f(v: Option<f64>) -> Option<String> {
    v.map(|v| format!("{v}"))
}

pub fn text_i(v: Option<i64>) -> Option<String> {
    v.map(|v| v.to_string())
}

pub fn text_b(v: Option<bool>) -> Option<String> {
    v.map(|v| if v { "t" } else { "f" }.to_string())
}

/// A multiple of 0.25, so sums and averages of these values are exact in any order.
pub fn quarter(rng: &mut StdRng, lo: i64, hi: i64) -> f64 {
    rng.random_range(lo * 4..=hi * 4) as f64 * 0.25
}

pub fn maybe<T>(rng: &mut StdRng, p_null: f64, f: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    if rng.random_bool(p_null) {
        None
    } else {
        Some(f(rng))
    }
}

pub fn pick<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

// ---------------------------------------------------------------------------------------------
// Driver.

pub struct Harness {
    /// The command that replays this run, without the step count (shown on a failure).
    replay: String,
    /// Runs the DML, DDL and FLUSH.
    pub writer: Client,
    /// Run the comparison queries, several at a time (the server runs them in parallel).
    pub readers: Vec<Client>,
    history: VecDeque<String>,
    /// Time spent per kind of work (statement kind or compared view), for the runtime report.
    timings: Mutex<BTreeMap<String, (Duration, u64)>>,
}

impl Harness {
    /// A harness over one writer and several reader connections. `replay` is the command
    /// (environment and cargo invocation, without `RUNNEL_DIFF_STEPS`) that reruns this seed.
    pub fn new(replay: String, writer: Client, readers: Vec<Client>) -> Harness {
        assert!(!readers.is_empty());
        Harness {
            replay,
            writer,
            readers,
            history: VecDeque::new(),
            timings: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn time(&self, what: &str, elapsed: Duration) {
        let mut timings = self.timings.lock().expect("timings lock");
        let entry = timings.entry(what.to_string()).or_default();
        entry.0 += elapsed;
        entry.1 += 1;
    }

    pub fn timing_report(&self) -> String {
        let timings = self.timings.lock().expect("timings lock");
        let mut items: Vec<_> = timings.iter().collect();
        items.sort_by_key(|item| std::cmp::Reverse(item.1 .0));
        let mut s = String::new();
        for (what, (total, n)) in items {
            let _ = writeln!(
                s,
                "    {what:<28} {:>8.1}s total {:>7.2}ms mean over {n}",
                total.as_secs_f64(),
                total.as_secs_f64() * 1000.0 / *n as f64
            );
        }
        s
    }

    fn history_tail(&self) -> String {
        let mut s = String::new();
        for h in &self.history {
            let _ = writeln!(s, "    {h};");
        }
        s
    }

    pub fn fail(&self, step: usize, what: &str) -> ! {
        panic!(
            "\ndifferential test failed at step {step}; reproduce with\n    \
             RUNNEL_DIFF_STEPS={steps} {replay}\n{what}\n\
             last {n} statements (oldest first):\n{hist}",
            replay = self.replay,
            steps = step + 1,
            n = self.history.len(),
            hist = self.history_tail(),
        )
    }

    fn record(&mut self, step: usize, sql: &str) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(format!("[{step}] {sql}"));
    }

    /// Runs a statement on the writer connection; returns the affected-row count if any.
    pub async fn exec(&mut self, step: usize, sql: &str) -> Option<u64> {
        self.record(step, sql);
        let result = tokio::time::timeout(STATEMENT_TIMEOUT, self.writer.simple_query(sql)).await;
        match result {
            Err(_) => self.fail(
                step,
                &format!("statement timed out after {STATEMENT_TIMEOUT:?}: {sql}"),
            ),
            Ok(Err(e)) => self.fail(
                step,
                &format!("statement failed: {sql}\n  error: {}", describe(&e)),
            ),
            Ok(Ok(messages)) => messages.iter().rev().find_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            }),
        }
    }

    pub async fn query_on(&self, step: usize, client: &Client, sql: &str) -> Rows {
        match tokio::time::timeout(STATEMENT_TIMEOUT, query_text(client, sql)).await {
            Err(_) => self.fail(
                step,
                &format!("query timed out after {STATEMENT_TIMEOUT:?}: {sql}"),
            ),
            Ok(Err(e)) => self.fail(
                step,
                &format!("query failed: {sql}\n  error: {}", describe(&e)),
            ),
            Ok(Ok(mut rows)) => {
                rows.sort();
                rows
            }
        }
    }

    /// Compares `SELECT * FROM name` with `oracle` run ad hoc, concurrently on two of the
    /// reader connections (chosen by `slot`).
    pub async fn compare_view(&self, step: usize, slot: usize, name: &str, oracle: &str) {
        let started = Instant::now();
        let select = format!("SELECT * FROM {name}");
        let n = self.readers.len();
        let (actual, expected) = tokio::join!(
            self.query_on(step, &self.readers[(2 * slot) % n], &select),
            self.query_on(step, &self.readers[(2 * slot + 1) % n], oracle)
        );
        self.time(&format!("compare {name}"), started.elapsed());
        if actual != expected {
            self.fail(
                step,
                &format!(
                    "view {name} differs from its query run from scratch\n  query: {oracle}\n{}",
                    describe_diff("view contents", &actual, "ad-hoc query", &expected)
                ),
            );
        }
    }

    pub async fn compare_model(&self, step: usize, relation: &str, expected: &Rows) {
        let actual = self
            .query_on(step, &self.readers[0], &format!("SELECT * FROM {relation}"))
            .await;
        let mut expected = expected.clone();
        expected.sort();
        if actual != expected {
            self.fail(
                step,
                &format!(
                    "{relation} differs from the client-side model of the DML applied to it\n{}",
                    describe_diff("server", &actual, "model", &expected)
                ),
            );
        }
    }
}

/// "INSERT INTO s1", "UPDATE t2", "DELETE FROM t1": the statement and its relation.
pub fn statement_kind(sql: &str) -> String {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let n = if words[0] == "UPDATE" { 2 } else { 3 };
    words[..n.min(words.len())].join(" ")
}

pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

pub fn fmt_row(row: &[Option<String>]) -> String {
    let cells: Vec<String> = row
        .iter()
        .map(|c| match c {
            None => "NULL".to_string(),
            Some(s) => format!("{s:?}"),
        })
        .collect();
    format!("({})", cells.join(", "))
}

/// Rows only on one side (as multisets), then both full row sets (truncated if very long).
pub fn describe_diff(a_name: &str, a: &Rows, b_name: &str, b: &Rows) -> String {
    let mut counts: BTreeMap<&Vec<Option<String>>, i64> = BTreeMap::new();
    for r in a {
        *counts.entry(r).or_default() += 1;
    }
    for r in b {
        *counts.entry(r).or_default() -= 1;
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "  {a_name}: {} rows; {b_name}: {} rows",
        a.len(),
        b.len()
    );
    for (row, c) in &counts {
        if *c > 0 {
            let _ = writeln!(s, "  only in {a_name} (x{c}): {}", fmt_row(row));
        } else if *c < 0 {
            let _ = writeln!(s, "  only in {b_name} (x{}): {}", -c, fmt_row(row));
        }
    }
    for (name, rows) in [(a_name, a), (b_name, b)] {
        let _ = writeln!(s, "  all rows of {name}:");
        for r in rows.iter().take(200) {
            let _ = writeln!(s, "    {}", fmt_row(r));
        }
        if rows.len() > 200 {
            let _ = writeln!(s, "    ... {} more", rows.len() - 200);
        }
    }
    s
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be an unsigned integer, got {v:?}"))
    })
}

/// The run's seed: `RUNNEL_DIFF_SEED` when set, else a fresh random one (printed by the caller).
pub fn seed_from_env() -> u64 {
    env_u64("RUNNEL_DIFF_SEED").unwrap_or_else(rand::random)
}

/// When each view of a run is created: in order of its fraction of the run (0.0 = before any
/// data), later ones backfilled from what is there by then.
pub struct CreationSchedule {
    /// View indexes by creation time.
    order: Vec<usize>,
    /// (name, defining query) by view index.
    views: Vec<(String, String)>,
    create_at: Vec<f64>,
    next: usize,
    /// Views created so far, in creation order (a view's position drives its rotation).
    pub created: Vec<usize>,
}

impl CreationSchedule {
    /// `views`: (name, defining query, fraction of the run) by view index.
    pub fn new(views: Vec<(String, String, f64)>) -> CreationSchedule {
        let mut order: Vec<usize> = (0..views.len()).collect();
        order.sort_by(|a, b| views[*a].2.total_cmp(&views[*b].2));
        CreationSchedule {
            order,
            create_at: views.iter().map(|v| v.2).collect(),
            views: views.into_iter().map(|(n, s, _)| (n, s)).collect(),
            next: 0,
            created: Vec::new(),
        }
    }

    /// Creates the views due at `step` of `steps` (all the rest when `step` is `steps`) and
    /// returns their indexes.
    pub async fn create_due(&mut self, h: &mut Harness, step: usize, steps: usize) -> Vec<usize> {
        let mut new_views = Vec::new();
        while self.next < self.order.len()
            && (step >= steps
                || (self.create_at[self.order[self.next]] * steps as f64) as usize <= step)
        {
            let i = self.order[self.next];
            let (name, sql) = &self.views[i];
            h.exec(step, &format!("CREATE MATERIALIZED VIEW {name} AS {sql}"))
                .await;
            self.created.push(i);
            new_views.push(i);
            self.next += 1;
        }
        new_views
    }

    /// The views to compare at `step`: every one at least every `rotation` steps, and the
    /// ones just created.
    pub fn rotation(&self, step: usize, rotation: usize, new_views: &[usize]) -> Vec<usize> {
        self.created
            .iter()
            .enumerate()
            .filter(|(pos, i)| pos % rotation == step % rotation || new_views.contains(i))
            .map(|(_, &i)| i)
            .collect()
    }
}

impl Harness {
    /// Runs one workload statement, checks the row count it reports against the model's, and
    /// FLUSHes.
    pub async fn apply(&mut self, step: usize, sql: &str, expected_count: u64) {
        let t = Instant::now();
        let count = self.exec(step, sql).await;
        self.time(&statement_kind(sql), t.elapsed());
        if count != Some(expected_count) {
            self.fail(
                step,
                &format!(
                    "statement reported {count:?} rows affected, the model expects \
                     {expected_count}: {sql}"
                ),
            );
        }
        let t = Instant::now();
        self.exec(step, "FLUSH").await;
        self.time("FLUSH", t.elapsed());
    }
}
