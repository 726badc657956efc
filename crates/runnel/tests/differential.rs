//! Differential test: the main correctness oracle for incremental view maintenance.
//!
//! A seeded random workload of inserts into two streams and inserts/updates/deletes into two
//! tables runs against a real `runnel serve` process. A fixed set of materialized views covers
//! every operator (projection/filter with expressions, grouped and global aggregates, min/max
//! under deletes, count(DISTINCT), FILTER, HAVING, DISTINCT, inner and left joins, UNION ALL,
//! views over views). After every step the server is FLUSHed and views are compared with the
//! view's own SELECT run ad hoc, from scratch, as multisets of text rows. A rotating subset of
//! views is compared each step (every view at least every [`ROTATION`] steps) and all of them at
//! the end. The tables are also checked against a client-side model (and every DML statement's
//! row count against the model's), and the streams at the end.
//!
//! Environment:
//! - `RUNNEL_DIFF_SEED`: the seed (default: random, always printed).
//! - `RUNNEL_DIFF_STEPS`: number of random DML statements (default 10,000).

mod oracle;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::future::join_all;
use oracle::{
    env_u64, maybe, pick, quarter, seed_from_env, sql_b, sql_f, sql_i, sql_s, text_b, text_f,
    text_i, CreationSchedule, Harness, Rows,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::TestServer;

/// Every view is compared at least once every `ROTATION` steps.
const ROTATION: usize = 10;

/// A materialized view under test.
struct ViewSpec {
    name: &'static str,
    /// The defining query, also run ad hoc as the oracle.
    sql: &'static str,
    /// For views over views: the same query with the inner views inlined as subqueries, so the
    /// final check also compares against a computation that never reads view state.
    inlined: Option<&'static str>,
    /// When the view is created, as a fraction of the run (0.0 = before any data).
    create_at: f64,
}

const fn view(name: &'static str, create_at: f64, sql: &'static str) -> ViewSpec {
    ViewSpec {
        name,
        sql,
        inlined: None,
        create_at,
    }
}

const fn view_over_views(
    name: &'static str,
    create_at: f64,
    sql: &'static str,
    inlined: &'static str,
) -> ViewSpec {
    ViewSpec {
        name,
        sql,
        inlined: Some(inlined),
        create_at,
    }
}

const SCHEMA: &[&str] = &[
    "CREATE STREAM s1 (k BIGINT, x DOUBLE PRECISION, name TEXT, flag BOOLEAN)",
    "CREATE STREAM s2 (uid BIGINT, item BIGINT, qty INT, price DOUBLE PRECISION)",
    "CREATE TABLE t1 (item_id BIGINT, cat TEXT, price DOUBLE PRECISION, stock BIGINT, \
     PRIMARY KEY (item_id))",
    "CREATE TABLE t2 (cat TEXT, lvl BIGINT, label TEXT, weight BIGINT, PRIMARY KEY (cat, lvl))",
];

fn views() -> Vec<ViewSpec> {
    vec![
        // Projection and filter with scalar expressions.
        view(
            "proj_s1",
            0.0,
            "SELECT k, x * 2 + 1 AS y, \
             CASE WHEN x > 1 THEN 'big' WHEN x < 0 THEN 'neg' ELSE 'small' END AS size, \
             upper(name) AS uname, length(name) AS len, concat(name, '#', k) AS tag, \
             NOT flag AS nflag \
             FROM s1 WHERE k IS NOT NULL AND (x IS NULL OR x <> 0)",
        ),
        view(
            "filter_s2",
            0.3,
            "SELECT uid, item, price * qty AS total, coalesce(price, -1) AS p, \
             lower(CASE WHEN qty < 0 THEN 'RET' ELSE 'Buy' END) || '-' || CAST(uid AS VARCHAR) AS kind, \
             substr(CAST(item AS VARCHAR), 1, 1) AS first_digit \
             FROM s2 WHERE qty > 1 OR price IS NULL",
        ),
        view(
            "proj_t1",
            0.15,
            "SELECT item_id, upper(cat) AS ucat, price / 2 AS half, stock % 3 AS m3, \
             CASE WHEN stock IS NULL THEN 'unknown' WHEN stock > 5 THEN 'many' ELSE 'few' END AS level \
             FROM t1 WHERE price IS NULL OR price < 8",
        ),
        // GROUP BY with every aggregate, over a stream.
        view(
            "agg_s1",
            0.0,
            "SELECT k, count(*) AS n, count(x) AS nx, sum(x) AS sx, avg(x) AS ax, min(x) AS mn, \
             max(x) AS mx, min(name) AS mnn, max(name) AS mxn FROM s1 GROUP BY k",
        ),
        // min/max over tables: deleting or updating away the current extreme.
        view(
            "agg_t1",
            0.0,
            "SELECT cat, count(*) AS n, count(price) AS np, min(price) AS mn, max(price) AS mx, \
             sum(stock) AS ss, avg(price) AS ap, min(item_id) AS mni, max(item_id) AS mxi \
             FROM t1 GROUP BY cat",
        ),
        view(
            "minmax_t2",
            0.2,
            "SELECT cat, min(weight) AS mnw, max(weight) AS mxw, min(label) AS mnl, \
             max(label) AS mxl, count(weight) AS nw, sum(weight) AS sw FROM t2 GROUP BY cat",
        ),
        // count(DISTINCT).
        view(
            "distinct_count_s2",
            0.1,
            "SELECT uid, count(DISTINCT item) AS di, count(DISTINCT price) AS dp, count(*) AS n \
             FROM s2 GROUP BY uid",
        ),
        view(
            "distinct_count_t1",
            0.5,
            "SELECT coalesce(cat, '?') AS c, count(DISTINCT stock) AS ds, \
             count(DISTINCT price) AS dp FROM t1 GROUP BY coalesce(cat, '?')",
        ),
        // FILTER (WHERE ...).
        view(
            "filter_agg_s1",
            0.0,
            "SELECT k, count(*) FILTER (WHERE flag) AS nt, sum(x) FILTER (WHERE x > 0) AS sp, \
             count(x) FILTER (WHERE name IS NULL) AS nn, max(x) FILTER (WHERE NOT flag) AS mxf \
             FROM s1 GROUP BY k",
        ),
        view(
            "filter_agg_t1",
            0.4,
            "SELECT cat, count(*) FILTER (WHERE stock > 3) AS hi, \
             sum(price) FILTER (WHERE stock <= 3) AS lo_sum, \
             min(price) FILTER (WHERE item_id % 2 = 0) AS even_min FROM t1 GROUP BY cat",
        ),
        // HAVING.
        view(
            "having_t1",
            0.0,
            "SELECT cat, count(*) AS n, sum(price) AS sp FROM t1 GROUP BY cat \
             HAVING count(*) >= 2 AND (sum(price) IS NULL OR sum(price) < 20)",
        ),
        view(
            "having_s2",
            0.6,
            "SELECT uid, sum(qty) AS sq, count(*) AS n FROM s2 GROUP BY uid \
             HAVING sum(qty) > 10 AND max(price) >= 5",
        ),
        // DISTINCT.
        view(
            "distinct_t1",
            0.0,
            "SELECT DISTINCT cat, stock > 5 AS high FROM t1",
        ),
        view("distinct_s1", 0.2, "SELECT DISTINCT k, name FROM s1"),
        // Inner joins: stream x table, table x table (many-to-many), multi-column keys.
        view(
            "join_st",
            0.0,
            "SELECT s2.uid, s2.item, s2.qty, t1.cat, t1.price AS list_price, s2.price \
             FROM s2 JOIN t1 ON s2.item = t1.item_id",
        ),
        view(
            "join_tt",
            0.1,
            "SELECT t1.item_id, t1.cat, t2.lvl, t2.label, t1.stock * t2.weight AS sw \
             FROM t1 JOIN t2 ON t1.cat = t2.cat",
        ),
        view(
            "join_multi_key",
            0.3,
            "SELECT t1.item_id, t2.cat, t2.lvl, t2.label FROM t1 JOIN t2 \
             ON t1.cat = t2.cat AND t1.stock = t2.lvl",
        ),
        // Left joins: both sides change, rows lose and regain matches.
        view(
            "left_tt",
            0.0,
            "SELECT t1.item_id, t1.price, t2.lvl, t2.weight FROM t1 LEFT JOIN t2 ON t1.cat = t2.cat",
        ),
        view(
            "left_st",
            0.3,
            "SELECT s1.k, s1.x, t1.cat, t1.stock FROM s1 LEFT JOIN t1 ON s1.k = t1.item_id",
        ),
        // Join, then aggregate.
        view(
            "join_agg",
            0.0,
            "SELECT t1.cat, count(*) AS n, sum(s2.qty) AS sq, avg(t1.price) AS ap, \
             max(s2.price) AS mp FROM s2 JOIN t1 ON s2.item = t1.item_id GROUP BY t1.cat",
        ),
        view(
            "left_agg",
            0.5,
            "SELECT t2.cat, t2.lvl, count(t1.item_id) AS n, sum(t1.price) AS sp, \
             min(t1.stock) AS ms FROM t2 LEFT JOIN t1 ON t2.cat = t1.cat GROUP BY t2.cat, t2.lvl",
        ),
        view(
            "three_way_agg",
            0.4,
            "SELECT t2.label, count(*) AS n, sum(s2.qty) AS sq FROM s2 \
             JOIN t1 ON s2.item = t1.item_id JOIN t2 ON t1.cat = t2.cat GROUP BY t2.label",
        ),
        view(
            "stream_stream_agg",
            0.5,
            "SELECT s1.k, count(*) AS n, sum(s2.qty) AS sq, min(s1.x) AS mx FROM s1 \
             JOIN s2 ON s1.k = s2.uid WHERE s1.name = 'cc' AND s2.qty = 7 GROUP BY s1.k",
        ),
        // UNION ALL (stream, table, stream).
        view(
            "union_all",
            0.0,
            "SELECT k AS id, x AS val, 's1' AS src FROM s1 WHERE k < 3 \
             UNION ALL SELECT item_id, price, 't1' FROM t1 \
             UNION ALL SELECT uid, price, 's2' FROM s2 WHERE qty > 5",
        ),
        // Global aggregates (no GROUP BY), one of them over a table that can become empty.
        view(
            "global_s1",
            0.0,
            "SELECT count(*) AS n, count(x) AS nx, sum(x) AS sx, avg(x) AS ax, min(x) AS mn, \
             max(x) AS mx, count(DISTINCT k) AS dk FROM s1",
        ),
        view(
            "global_t1",
            0.7,
            "SELECT count(*) AS n, sum(price) AS sp, min(price) AS mn, max(stock) AS ms, \
             avg(stock) AS ast FROM t1",
        ),
        view(
            "global_t2",
            0.0,
            "SELECT count(*) AS n, min(label) AS mnl, max(weight) AS mxw FROM t2 WHERE lvl > 0",
        ),
        // Grouping by expressions.
        view(
            "group_expr",
            0.0,
            "SELECT x > 0 AS pos, k % 2 AS par, count(*) AS n, sum(x) AS sx FROM s1 \
             GROUP BY x > 0, k % 2",
        ),
        // Views over views.
        view_over_views(
            "vov_agg_join",
            0.2,
            "SELECT cat, count(*) AS n, sum(qty) AS sq, max(list_price) AS mlp FROM join_st \
             GROUP BY cat",
            "SELECT cat, count(*) AS n, sum(qty) AS sq, max(list_price) AS mlp FROM (\
             SELECT s2.uid, s2.item, s2.qty, t1.cat, t1.price AS list_price, s2.price \
             FROM s2 JOIN t1 ON s2.item = t1.item_id) AS j GROUP BY cat",
        ),
        // A subquery stated twice, the second time grouped in the other order (Nexmark q5's
        // shape): the two aggregates are one operator (`runnel_sql::share`), read twice.
        view(
            "top_names_shared",
            0.35,
            "SELECT a.k, a.name, a.n FROM (SELECT k, name, count(*) AS n FROM s1 GROUP BY k, name) a \
             JOIN (SELECT k, max(n) AS m FROM (SELECT name, k, count(*) AS n FROM s1 \
             GROUP BY name, k) c GROUP BY k) b ON a.k = b.k AND a.n = b.m",
        ),
        view(
            "same_agg_twice",
            0.05,
            "SELECT a.cat, a.n, b.n AS n2 FROM (SELECT cat, count(*) AS n FROM t1 GROUP BY cat) a \
             JOIN (SELECT cat, count(*) AS n FROM t1 GROUP BY cat) b ON a.cat = b.cat",
        ),
        view_over_views(
            "vov_filter_agg",
            0.1,
            "SELECT k, n, sx FROM agg_s1 WHERE n >= 3 AND (sx IS NULL OR sx > 0)",
            "SELECT k, n, sx FROM (SELECT k, count(*) AS n, sum(x) AS sx FROM s1 GROUP BY k) AS a \
             WHERE n >= 3 AND (sx IS NULL OR sx > 0)",
        ),
        view_over_views(
            "vov_union_agg",
            0.6,
            "SELECT src, count(*) AS n, sum(val) AS sv, min(val) AS mn FROM union_all GROUP BY src",
            "SELECT src, count(*) AS n, sum(val) AS sv, min(val) AS mn FROM (\
             SELECT k AS id, x AS val, 's1' AS src FROM s1 WHERE k < 3 \
             UNION ALL SELECT item_id, price, 't1' FROM t1 \
             UNION ALL SELECT uid, price, 's2' FROM s2 WHERE qty > 5) AS u GROUP BY src",
        ),
        view_over_views(
            "vov_left_join_aggs",
            0.8,
            "SELECT a.cat, a.n, a.mx, b.n AS nj, b.sq FROM agg_t1 a LEFT JOIN join_agg b \
             ON a.cat = b.cat",
            "SELECT a.cat, a.n, a.mx, b.n AS nj, b.sq FROM \
             (SELECT cat, count(*) AS n, max(price) AS mx FROM t1 GROUP BY cat) AS a LEFT JOIN \
             (SELECT t1.cat, count(*) AS n, sum(s2.qty) AS sq FROM s2 \
              JOIN t1 ON s2.item = t1.item_id GROUP BY t1.cat) AS b ON a.cat = b.cat",
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Client-side model of the inputs.

#[derive(Clone, Debug)]
struct T1Row {
    cat: Option<String>,
    price: Option<f64>,
    stock: Option<i64>,
}

#[derive(Clone, Debug)]
struct T2Row {
    label: Option<String>,
    weight: Option<i64>,
}

#[derive(Default)]
struct Model {
    /// item_id -> row
    t1: BTreeMap<i64, T1Row>,
    /// (cat, lvl) -> row
    t2: BTreeMap<(String, i64), T2Row>,
    s1: Rows,
    s2: Rows,
}

/// Rows per stream INSERT: 1 to this many. Few, larger inserts keep the ad-hoc scans of the
/// streams (one stored batch per INSERT) affordable over 10,000 steps.
const STREAM_ROWS: usize = 8;
const T1_KEYS: i64 = 12;
const T1_CATS: &[&str] = &["a", "b", "c", "d"];
const T2_CATS: &[&str] = &["a", "b", "c", "d", "e"];
const T2_LVLS: i64 = 4;
const NAMES: &[&str] = &["a", "B", "cc", "Dd", "", "x'y", "cc"];
const LABELS: &[&str] = &["alpha", "Beta", "gamma", "delta", ""];

fn gen_t1_row(rng: &mut StdRng) -> T1Row {
    T1Row {
        cat: maybe(rng, 0.15, |r| pick(r, T1_CATS).to_string()),
        price: maybe(rng, 0.15, |r| quarter(r, 0, 10)),
        stock: maybe(rng, 0.15, |r| r.random_range(-3..=10)),
    }
}

fn gen_t2_row(rng: &mut StdRng) -> T2Row {
    T2Row {
        label: maybe(rng, 0.15, |r| pick(r, LABELS).to_string()),
        weight: maybe(rng, 0.15, |r| r.random_range(-2..=8)),
    }
}

/// One random DML statement, applied to the model. Returns the SQL and the number of rows
/// the server must report as affected.
fn gen_step(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    match rng.random_range(0..100) {
        0..=7 => gen_s1(rng, m),
        8..=15 => gen_s2(rng, m),
        16..=62 => gen_t1(rng, m),
        _ => gen_t2(rng, m),
    }
}

fn gen_s1(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let n = rng.random_range(1..=STREAM_ROWS);
    let mut values = Vec::new();
    for _ in 0..n {
        let k = maybe(rng, 0.1, |r| r.random_range(0..6i64));
        let x = maybe(rng, 0.15, |r| quarter(r, -5, 10));
        let name = maybe(rng, 0.15, |r| pick(r, NAMES));
        let flag = maybe(rng, 0.2, |r| r.random_bool(0.5));
        values.push(format!(
            "({}, {}, {}, {})",
            sql_i(k),
            sql_f(x),
            sql_s(name),
            sql_b(flag)
        ));
        m.s1.push(vec![
            text_i(k),
            text_f(x),
            name.map(str::to_string),
            text_b(flag),
        ]);
    }
    (
        format!("INSERT INTO s1 VALUES {}", values.join(", ")),
        n as u64,
    )
}

fn gen_s2(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let n = rng.random_range(1..=STREAM_ROWS);
    let mut values = Vec::new();
    for _ in 0..n {
        let uid = maybe(rng, 0.05, |r| r.random_range(0..5i64));
        // A little beyond t1's key domain, so some rows never match.
        let item = maybe(rng, 0.05, |r| r.random_range(0..T1_KEYS + 2));
        let qty = maybe(rng, 0.1, |r| r.random_range(-5..=9i64));
        let price = maybe(rng, 0.15, |r| quarter(r, 0, 10));
        values.push(format!(
            "({}, {}, {}, {})",
            sql_i(uid),
            sql_i(item),
            sql_i(qty),
            sql_f(price)
        ));
        m.s2.push(vec![text_i(uid), text_i(item), text_i(qty), text_f(price)]);
    }
    (
        format!("INSERT INTO s2 VALUES {}", values.join(", ")),
        n as u64,
    )
}

fn t1_values(id: i64, r: &T1Row) -> String {
    format!(
        "({}, {}, {}, {})",
        id,
        sql_s(r.cat.as_deref()),
        sql_f(r.price),
        sql_i(r.stock)
    )
}

/// A predicate over t1 rows as the model evaluates it.
type T1Predicate = Box<dyn Fn(i64, &T1Row) -> bool>;

/// A predicate over t1 in SQL and in the model (SQL three-valued logic: NULL never matches).
fn gen_t1_pred(rng: &mut StdRng) -> (String, T1Predicate) {
    match rng.random_range(0..6) {
        0 => {
            let c = pick(rng, T1_CATS).to_string();
            (
                format!("cat = {}", sql_s(Some(&c))),
                Box::new(move |_, r| r.cat.as_deref() == Some(c.as_str())),
            )
        }
        1 => {
            let p = quarter(rng, 0, 10);
            (
                format!("price >= {}", sql_f(Some(p))),
                Box::new(move |_, r| r.price.is_some_and(|v| v >= p)),
            )
        }
        2 => ("cat IS NULL".into(), Box::new(|_, r| r.cat.is_none())),
        3 => {
            let s = rng.random_range(-3..=10i64);
            (
                format!("stock < {s}"),
                Box::new(move |_, r| r.stock.is_some_and(|v| v < s)),
            )
        }
        4 => {
            let (lo, hi) = (rng.random_range(0..T1_KEYS), rng.random_range(0..T1_KEYS));
            (
                format!("item_id BETWEEN {lo} AND {hi}"),
                Box::new(move |id, _| lo <= id && id <= hi),
            )
        }
        _ => {
            let md = rng.random_range(2..=4i64);
            let rem = rng.random_range(0..md);
            (
                format!("item_id % {md} = {rem}"),
                Box::new(move |id, _| id % md == rem),
            )
        }
    }
}

type T1Update = Box<dyn Fn(&mut T1Row)>;

/// A SET clause over t1 (non-key columns) in SQL and in the model.
fn gen_t1_set(rng: &mut StdRng) -> (String, T1Update) {
    let mut parts = Vec::new();
    let mut updates: Vec<T1Update> = Vec::new();
    let which: u8 = rng.random_range(1..8); // bit set: cat, price, stock
    if which & 1 != 0 {
        let c = maybe(rng, 0.2, |r| pick(r, T1_CATS).to_string());
        parts.push(format!("cat = {}", sql_s(c.as_deref())));
        updates.push(Box::new(move |r| r.cat = c.clone()));
    }
    if which & 2 != 0 {
        if rng.random_bool(0.5) {
            let d = quarter(rng, -2, 2);
            parts.push(format!("price = price + {}", sql_f(Some(d))));
            updates.push(Box::new(move |r| r.price = r.price.map(|v| v + d)));
        } else {
            let p = maybe(rng, 0.2, |r| quarter(r, 0, 10));
            parts.push(format!("price = {}", sql_f(p)));
            updates.push(Box::new(move |r| r.price = p));
        }
    }
    if which & 4 != 0 {
        if rng.random_bool(0.5) {
            parts.push("stock = stock - 1".into());
            updates.push(Box::new(|r| r.stock = r.stock.map(|v| v - 1)));
        } else {
            let s = maybe(rng, 0.2, |r| r.random_range(-3..=10i64));
            parts.push(format!("stock = {}", sql_i(s)));
            updates.push(Box::new(move |r| r.stock = s));
        }
    }
    (
        parts.join(", "),
        Box::new(move |r| {
            for u in &updates {
                u(r);
            }
        }),
    )
}

fn gen_t1(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let absent: Vec<i64> = (0..T1_KEYS).filter(|k| !m.t1.contains_key(k)).collect();
    let present: Vec<i64> = m.t1.keys().copied().collect();
    let roll = rng.random_range(0..100);
    if roll < 30 && !absent.is_empty() {
        // INSERT one to three new keys.
        let n = rng.random_range(1..=3usize).min(absent.len());
        let mut keys = absent.clone();
        let mut values = Vec::new();
        for _ in 0..n {
            let id = keys.swap_remove(rng.random_range(0..keys.len()));
            let row = gen_t1_row(rng);
            values.push(t1_values(id, &row));
            m.t1.insert(id, row);
        }
        (
            format!("INSERT INTO t1 VALUES {}", values.join(", ")),
            n as u64,
        )
    } else if roll < 50 {
        // UPDATE one key (present or not).
        let id = rng.random_range(0..T1_KEYS);
        let (set, update) = gen_t1_set(rng);
        let n = match m.t1.get_mut(&id) {
            Some(r) => {
                update(r);
                1
            }
            None => 0,
        };
        (format!("UPDATE t1 SET {set} WHERE item_id = {id}"), n)
    } else if roll < 65 {
        // UPDATE by predicate.
        let (pred_sql, pred) = gen_t1_pred(rng);
        let (set, update) = gen_t1_set(rng);
        let mut n = 0;
        for (id, r) in m.t1.iter_mut() {
            if pred(*id, r) {
                update(r);
                n += 1;
            }
        }
        (format!("UPDATE t1 SET {set} WHERE {pred_sql}"), n)
    } else if roll < 72 && !absent.is_empty() && !present.is_empty() {
        // Change a primary key (the row moves to a new key).
        let old = present[rng.random_range(0..present.len())];
        let new = absent[rng.random_range(0..absent.len())];
        let row = m.t1.remove(&old).expect("present");
        m.t1.insert(new, row);
        (
            format!("UPDATE t1 SET item_id = {new} WHERE item_id = {old}"),
            1,
        )
    } else if roll < 92 {
        // DELETE one key (present or not).
        let id = rng.random_range(0..T1_KEYS);
        let n = u64::from(m.t1.remove(&id).is_some());
        (format!("DELETE FROM t1 WHERE item_id = {id}"), n)
    } else {
        // DELETE by predicate.
        let (pred_sql, pred) = gen_t1_pred(rng);
        let before = m.t1.len();
        m.t1.retain(|id, r| !pred(*id, r));
        (
            format!("DELETE FROM t1 WHERE {pred_sql}"),
            (before - m.t1.len()) as u64,
        )
    }
}

fn gen_t2(rng: &mut StdRng, m: &mut Model) -> (String, u64) {
    let all: Vec<(String, i64)> = T2_CATS
        .iter()
        .flat_map(|c| (0..T2_LVLS).map(move |l| (c.to_string(), l)))
        .collect();
    let absent: Vec<(String, i64)> = all
        .iter()
        .filter(|k| !m.t2.contains_key(*k))
        .cloned()
        .collect();
    let roll = rng.random_range(0..100);
    if roll < 35 && !absent.is_empty() {
        let n = rng.random_range(1..=3usize).min(absent.len());
        let mut keys = absent.clone();
        let mut values = Vec::new();
        for _ in 0..n {
            let key = keys.swap_remove(rng.random_range(0..keys.len()));
            let row = gen_t2_row(rng);
            values.push(format!(
                "({}, {}, {}, {})",
                sql_s(Some(&key.0)),
                key.1,
                sql_s(row.label.as_deref()),
                sql_i(row.weight)
            ));
            m.t2.insert(key, row);
        }
        (
            format!("INSERT INTO t2 VALUES {}", values.join(", ")),
            n as u64,
        )
    } else if roll < 55 {
        // UPDATE one key.
        let key = all[rng.random_range(0..all.len())].clone();
        let new = gen_t2_row(rng);
        let n = match m.t2.get_mut(&key) {
            Some(r) => {
                *r = new.clone();
                1
            }
            None => 0,
        };
        (
            format!(
                "UPDATE t2 SET label = {}, weight = {} WHERE cat = {} AND lvl = {}",
                sql_s(new.label.as_deref()),
                sql_i(new.weight),
                sql_s(Some(&key.0)),
                key.1
            ),
            n,
        )
    } else if roll < 65 {
        // UPDATE by predicate: weight arithmetic over one category.
        let c = pick(rng, T2_CATS);
        let d = rng.random_range(-2..=2i64);
        let mut n = 0;
        for ((cat, _), r) in m.t2.iter_mut() {
            if cat == c {
                r.weight = r.weight.map(|w| w + d);
                n += 1;
            }
        }
        (
            format!(
                "UPDATE t2 SET weight = weight + {d} WHERE cat = {}",
                sql_s(Some(c))
            ),
            n,
        )
    } else if roll < 72 {
        // Move a row to another primary key within the same category (a key column update).
        let c = pick(rng, T2_CATS).to_string();
        let lvls: Vec<i64> = (0..T2_LVLS).collect();
        let from = lvls[rng.random_range(0..lvls.len())];
        let to = lvls[rng.random_range(0..lvls.len())];
        let key_from = (c.clone(), from);
        let key_to = (c.clone(), to);
        if from == to || !m.t2.contains_key(&key_from) || m.t2.contains_key(&key_to) {
            // Not a valid move right now: delete the source instead.
            let n = u64::from(m.t2.remove(&key_from).is_some());
            return (
                format!(
                    "DELETE FROM t2 WHERE cat = {} AND lvl = {from}",
                    sql_s(Some(&c))
                ),
                n,
            );
        }
        let row = m.t2.remove(&key_from).expect("present");
        m.t2.insert(key_to, row);
        (
            format!(
                "UPDATE t2 SET lvl = {to} WHERE cat = {} AND lvl = {from}",
                sql_s(Some(&c))
            ),
            1,
        )
    } else if roll < 92 {
        let key = all[rng.random_range(0..all.len())].clone();
        let n = u64::from(m.t2.remove(&key).is_some());
        (
            format!(
                "DELETE FROM t2 WHERE cat = {} AND lvl = {}",
                sql_s(Some(&key.0)),
                key.1
            ),
            n,
        )
    } else {
        // DELETE a whole category, or everything above a level.
        let before = m.t2.len();
        let sql = if rng.random_bool(0.5) {
            let c = pick(rng, T2_CATS);
            m.t2.retain(|(cat, _), _| cat != c);
            format!("DELETE FROM t2 WHERE cat = {}", sql_s(Some(c)))
        } else {
            let l = rng.random_range(1..T2_LVLS);
            m.t2.retain(|(_, lvl), _| *lvl < l);
            format!("DELETE FROM t2 WHERE lvl >= {l}")
        };
        (sql, (before - m.t2.len()) as u64)
    }
}

fn model_t1_rows(m: &Model) -> Rows {
    m.t1.iter()
        .map(|(id, r)| {
            vec![
                Some(id.to_string()),
                r.cat.clone(),
                text_f(r.price),
                text_i(r.stock),
            ]
        })
        .collect()
}

fn model_t2_rows(m: &Model) -> Rows {
    m.t2.iter()
        .map(|((cat, lvl), r)| {
            vec![
                Some(cat.clone()),
                Some(lvl.to_string()),
                r.label.clone(),
                text_i(r.weight),
            ]
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_views_equal_batch_queries() {
    let seed = seed_from_env();
    let steps = env_u64("RUNNEL_DIFF_STEPS").unwrap_or(10_000) as usize;
    println!("differential: seed {seed} (set RUNNEL_DIFF_SEED to reproduce), {steps} steps");
    let started = Instant::now();

    let dir = tempfile::tempdir().expect("temp dir");
    // Every operator evicts and re-reads its state all the time (docs/testing.md).
    let server = TestServer::start_with(dir.path(), support::TINY_STATE_CACHE);
    let mut h = Harness::new(
        format!("RUNNEL_DIFF_SEED={seed} cargo test --test differential"),
        server.connect().await,
        vec![
            server.connect().await,
            server.connect().await,
            server.connect().await,
            server.connect().await,
        ],
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::default();
    let specs = views();
    assert!(specs.len() >= 20);

    for ddl in SCHEMA {
        h.exec(0, ddl).await;
    }

    // Views in creation order; a view's position in `schedule.created` drives its rotation.
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

        let due = schedule.rotation(step, ROTATION, &new_views);
        compared += due.len() as u64;
        let comparisons = due
            .iter()
            .enumerate()
            .map(|(slot, &i)| h.compare_view(step, slot, specs[i].name, specs[i].sql));
        join_all(comparisons).await;
        match step % ROTATION {
            0 => h.compare_model(step, "t1", &model_t1_rows(&model)).await,
            1 => h.compare_model(step, "t2", &model_t2_rows(&model)).await,
            _ => {}
        }

        if last_report.elapsed() > Duration::from_secs(30) || step + 1 == steps {
            println!(
                "differential: step {}/{steps}, {} views, {compared} comparisons, {:.1}s; \
                 s1 {} rows, s2 {} rows, t1 {} rows, t2 {} rows",
                step + 1,
                schedule.created.len(),
                started.elapsed().as_secs_f64(),
                model.s1.len(),
                model.s2.len(),
                model.t1.len(),
                model.t2.len()
            );
            last_report = Instant::now();
        }
        if (step + 1) % 2000 == 0 && step + 1 < steps {
            println!("differential: time by kind so far:\n{}", h.timing_report());
        }
    }

    // Views not yet created (very short runs) are created now, over all the data.
    let end = steps;
    schedule.create_due(&mut h, end, steps).await;
    h.exec(end, "FLUSH").await;

    // Final check: every view, against its own query and (views over views) the inlined query;
    // every input against the model.
    for spec in &specs {
        h.compare_view(end, 0, spec.name, spec.sql).await;
        if let Some(inlined) = spec.inlined {
            h.compare_view(end, 1, spec.name, inlined).await;
        }
    }
    h.compare_model(end, "t1", &model_t1_rows(&model)).await;
    h.compare_model(end, "t2", &model_t2_rows(&model)).await;
    h.compare_model(end, "s1", &model.s1).await;
    h.compare_model(end, "s2", &model.s2).await;

    println!("differential: time by kind:\n{}", h.timing_report());
    println!(
        "differential: passed, seed {seed}, {steps} steps, {} views, {compared} comparisons \
         during the run, {:.1}s",
        specs.len(),
        started.elapsed().as_secs_f64()
    );
    drop(server);
}
