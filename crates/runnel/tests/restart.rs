//! Restart tests: a real `runnel serve` process is fed through the Postgres wire protocol,
//! killed (kill -9, or SIGTERM), and started again on the same data directory. Every stream,
//! table and view must come back with the same contents, and later writes must keep updating
//! the views. Expected view contents are computed in this file from the rows the test wrote
//! (a small in-memory model), never taken from the server.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{query_text, TestServer};
use tokio_postgres::{Client, SimpleQueryMessage};

type Rows = Vec<Vec<Option<String>>>;

const KINDS: [&str; 3] = ["view", "buy", "cart"];
const COUNTRIES: [Option<&str>; 4] = [Some("fr"), Some("de"), Some("us"), None];

/// The views of the main scenario: aggregates, joins (inner and left), DISTINCT, UNION ALL,
/// and views over views (two levels). Expected contents: [`Model::expected`].
const VIEWS: [(&str, &str); 10] = [
    (
        "v_user",
        "SELECT user_id, count(*) AS n, sum(amount) AS total, min(amount) AS lo, max(amount) AS hi \
         FROM events GROUP BY user_id",
    ),
    (
        "v_enriched",
        "SELECT e.user_id, u.name, e.amount FROM events e JOIN users u ON e.user_id = u.id \
         WHERE e.amount > 150",
    ),
    (
        "v_country",
        "SELECT u.country, count(*) AS n, sum(e.amount) AS total \
         FROM events e JOIN users u ON e.user_id = u.id GROUP BY u.country",
    ),
    (
        "v_left",
        "SELECT u.id, u.name, count(e.user_id) AS events \
         FROM users u LEFT JOIN events e ON u.id = e.user_id GROUP BY u.id, u.name",
    ),
    ("v_top", "SELECT user_id, total FROM v_user WHERE total >= 1000"),
    ("v_top_count", "SELECT count(*) AS n, sum(total) AS s FROM v_top"),
    (
        "v_kinds",
        "SELECT kind, count(DISTINCT user_id) AS users, count(*) AS n FROM events GROUP BY kind",
    ),
    ("v_countries", "SELECT DISTINCT country FROM users"),
    // Only inserts: stored as appended blocks, which a restart must continue, not overwrite.
    (
        "v_big",
        "SELECT user_id, amount * 2 AS double FROM events WHERE amount > 100",
    ),
    (
        "v_union",
        "SELECT id, count(*) AS n FROM \
         (SELECT user_id AS id FROM events WHERE kind = 'buy' UNION ALL SELECT id FROM users) u \
         GROUP BY id",
    ),
];

/// A view created only after the first restart (backfilled from recovered state).
const LATE_VIEW: (&str, &str) = (
    "v_late",
    "SELECT kind, count(*) AS n, sum(amount) AS total, max(amount) AS hi FROM events GROUP BY kind",
);

fn text<T: ToString>(value: T) -> Option<String> {
    Some(value.to_string())
}

fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}

async fn exec(client: &Client, sql: &str) -> u64 {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    messages
        .iter()
        .rev()
        .find_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(0)
}

async fn select(client: &Client, sql: &str) -> Rows {
    sorted(
        query_text(client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}")),
    )
}

/// Starts or restarts a server without blocking the other tasks of the runtime for long.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What the test wrote: the stream's rows and the table's current rows.
#[derive(Default, Clone)]
struct Model {
    events: Vec<(i64, i64, &'static str)>,
    users: BTreeMap<i64, (String, Option<&'static str>)>,
}

impl Model {
    fn expected(&self, view: &str) -> Rows {
        let rows: Rows = match view {
            "v_big" => self
                .events
                .iter()
                .filter(|e| e.1 > 100)
                .map(|&(user, amount, _)| vec![text(user), text(amount * 2)])
                .collect(),
            "v_user" | "v_top" | "v_top_count" => {
                let mut per_user: BTreeMap<i64, (i64, i64, i64, i64)> = BTreeMap::new();
                for &(user, amount, _) in &self.events {
                    let e = per_user.entry(user).or_insert((0, 0, i64::MAX, i64::MIN));
                    e.0 += 1;
                    e.1 += amount;
                    e.2 = e.2.min(amount);
                    e.3 = e.3.max(amount);
                }
                match view {
                    "v_user" => per_user
                        .iter()
                        .map(|(u, (n, s, lo, hi))| {
                            vec![text(u), text(n), text(s), text(lo), text(hi)]
                        })
                        .collect(),
                    "v_top" => per_user
                        .iter()
                        .filter(|(_, (_, s, _, _))| *s >= 1000)
                        .map(|(u, (_, s, _, _))| vec![text(u), text(s)])
                        .collect(),
                    _ => {
                        let top: Vec<i64> = per_user
                            .values()
                            .map(|v| v.1)
                            .filter(|s| *s >= 1000)
                            .collect();
                        let sum = if top.is_empty() {
                            None
                        } else {
                            text(top.iter().sum::<i64>())
                        };
                        vec![vec![text(top.len()), sum]]
                    }
                }
            }
            "v_enriched" => self
                .events
                .iter()
                .filter(|(_, amount, _)| *amount > 150)
                .filter_map(|(user, amount, _)| {
                    self.users
                        .get(user)
                        .map(|(name, _)| vec![text(user), text(name), text(amount)])
                })
                .collect(),
            "v_country" => {
                let mut per_country: BTreeMap<Option<&str>, (i64, i64)> = BTreeMap::new();
                for (user, amount, _) in &self.events {
                    if let Some((_, country)) = self.users.get(user) {
                        let e = per_country.entry(*country).or_default();
                        e.0 += 1;
                        e.1 += amount;
                    }
                }
                per_country
                    .iter()
                    .map(|(c, (n, s))| vec![c.map(str::to_string), text(n), text(s)])
                    .collect()
            }
            "v_left" => self
                .users
                .iter()
                .map(|(id, (name, _))| {
                    let n = self.events.iter().filter(|(u, _, _)| u == id).count();
                    vec![text(id), text(name), text(n)]
                })
                .collect(),
            "v_kinds" | "v_late" => {
                let mut per_kind: BTreeMap<&str, (BTreeSet<i64>, i64, i64, i64)> = BTreeMap::new();
                for &(user, amount, kind) in &self.events {
                    let e = per_kind
                        .entry(kind)
                        .or_insert((BTreeSet::new(), 0, 0, i64::MIN));
                    e.0.insert(user);
                    e.1 += 1;
                    e.2 += amount;
                    e.3 = e.3.max(amount);
                }
                per_kind
                    .iter()
                    .map(|(k, (users, n, s, hi))| {
                        if view == "v_kinds" {
                            vec![text(k), text(users.len()), text(n)]
                        } else {
                            vec![text(k), text(n), text(s), text(hi)]
                        }
                    })
                    .collect()
            }
            "v_countries" => self
                .users
                .values()
                .map(|(_, c)| *c)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|c| vec![c.map(str::to_string)])
                .collect(),
            "v_union" => {
                let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
                for (user, _, kind) in &self.events {
                    if *kind == "buy" {
                        *counts.entry(*user).or_default() += 1;
                    }
                }
                for id in self.users.keys() {
                    *counts.entry(*id).or_default() += 1;
                }
                counts
                    .iter()
                    .map(|(id, n)| vec![text(id), text(n)])
                    .collect()
            }
            other => panic!("no model for view {other}"),
        };
        sorted(rows)
    }

    fn events_rows(&self) -> Rows {
        sorted(
            self.events
                .iter()
                .map(|(u, a, k)| vec![text(u), text(a), text(k)])
                .collect(),
        )
    }

    fn users_rows(&self) -> Rows {
        sorted(
            self.users
                .iter()
                .map(|(id, (name, country))| {
                    vec![text(id), text(name), country.map(str::to_string)]
                })
                .collect(),
        )
    }
}

fn sql_country(country: Option<&str>) -> String {
    country.map_or_else(|| "NULL".to_string(), |c| format!("'{c}'"))
}

/// Runs `ops` random writes (stream inserts, table inserts/updates/deletes), applying each
/// to the model once the server acknowledged it, and checking affected-row counts.
async fn random_writes(client: &Client, model: &mut Model, rng: &mut StdRng, ops: usize) {
    for _ in 0..ops {
        let choice = rng.random_range(0..100);
        if choice < 50 {
            let rows: Vec<(i64, i64, &'static str)> = (0..rng.random_range(1..=8))
                .map(|_| {
                    (
                        rng.random_range(1..=20),
                        rng.random_range(1..=200),
                        KINDS[rng.random_range(0..KINDS.len())],
                    )
                })
                .collect();
            let values: Vec<String> = rows
                .iter()
                .map(|(u, a, k)| format!("({u}, {a}, '{k}')"))
                .collect();
            let n = exec(
                client,
                &format!("INSERT INTO events VALUES {}", values.join(", ")),
            )
            .await;
            assert_eq!(n, rows.len() as u64);
            model.events.extend(rows);
        } else if choice < 72 {
            let id: i64 = rng.random_range(1..=25);
            let name = format!("n{id}_{}", rng.random_range(0..1000));
            let country = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
            if model.users.contains_key(&id) {
                let n = exec(
                    client,
                    &format!(
                        "UPDATE users SET name = '{name}', country = {} WHERE id = {id}",
                        sql_country(country)
                    ),
                )
                .await;
                assert_eq!(n, 1);
            } else {
                let n = exec(
                    client,
                    &format!(
                        "INSERT INTO users VALUES ({id}, '{name}', {})",
                        sql_country(country)
                    ),
                )
                .await;
                assert_eq!(n, 1);
            }
            model.users.insert(id, (name, country));
        } else if choice < 82 {
            let id: i64 = rng.random_range(1..=25);
            let n = exec(client, &format!("DELETE FROM users WHERE id = {id}")).await;
            let expected = u64::from(model.users.remove(&id).is_some());
            assert_eq!(n, expected, "DELETE FROM users WHERE id = {id}");
        } else if choice < 92 {
            let r: i64 = rng.random_range(0..3);
            let country = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
            let n = exec(
                client,
                &format!(
                    "UPDATE users SET country = {} WHERE id % 3 = {r}",
                    sql_country(country)
                ),
            )
            .await;
            let mut expected = 0;
            for (id, (_, c)) in model.users.iter_mut() {
                if id % 3 == r {
                    *c = country;
                    expected += 1;
                }
            }
            assert_eq!(n, expected);
        } else {
            let above: i64 = rng.random_range(15..=25);
            let n = exec(client, &format!("DELETE FROM users WHERE id > {above}")).await;
            let before = model.users.len();
            model.users.retain(|id, _| *id <= above);
            assert_eq!(n, (before - model.users.len()) as u64);
        }
    }
}

async fn create_schema(client: &Client) {
    exec(
        client,
        "CREATE STREAM events (user_id BIGINT, amount BIGINT, kind TEXT)",
    )
    .await;
    exec(
        client,
        "CREATE TABLE users (id BIGINT PRIMARY KEY, name TEXT, country TEXT)",
    )
    .await;
}

async fn create_views(client: &Client, views: &[(&str, &str)]) {
    for (name, query) in views {
        exec(
            client,
            &format!("CREATE MATERIALIZED VIEW {name} AS {query}"),
        )
        .await;
    }
}

/// Reads every view; returns their contents by name.
async fn read_views(client: &Client, views: &[(&str, &str)]) -> BTreeMap<String, Rows> {
    let mut out = BTreeMap::new();
    for (name, _) in views {
        out.insert(
            name.to_string(),
            select(client, &format!("SELECT * FROM {name}")).await,
        );
    }
    out
}

/// FLUSH, then every view must equal the model, and the stream and table their rows.
async fn check_against_model(client: &Client, model: &Model, views: &[(&str, &str)], when: &str) {
    exec(client, "FLUSH").await;
    assert_eq!(
        select(client, "SELECT user_id, amount, kind FROM events").await,
        model.events_rows(),
        "{when}: stream events"
    );
    assert_eq!(
        select(client, "SELECT id, name, country FROM users").await,
        model.users_rows(),
        "{when}: table users"
    );
    for (name, rows) in read_views(client, views).await {
        assert_eq!(rows, model.expected(&name), "{when}: view {name}");
    }
}

async fn show(client: &Client, what: &str) -> BTreeSet<String> {
    select(client, &format!("SHOW {what}"))
        .await
        .into_iter()
        .map(|row| row[0].clone().expect("a name"))
        .collect()
}

fn names(views: &[(&str, &str)]) -> BTreeSet<String> {
    views.iter().map(|(n, _)| n.to_string()).collect()
}

/// Writes, FLUSH, kill -9, restart: the catalog, the stream, the table and every view are
/// back unchanged; then new writes keep every view (and one created after the restart) right.
/// A second kill -9 and a final SIGTERM restart check the same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_survive_kill_and_keep_updating() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut model = Model::default();

    let client = server.connect().await;
    create_schema(&client).await;
    // Half the views exist before any data, half are backfilled.
    create_views(&client, &VIEWS[..4]).await;
    random_writes(&client, &mut model, &mut rng, 60).await;
    create_views(&client, &VIEWS[4..]).await;
    random_writes(&client, &mut model, &mut rng, 140).await;
    check_against_model(&client, &model, &VIEWS, "before the first kill").await;
    let before = read_views(&client, &VIEWS).await;
    drop(client);

    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(show(&client, "MATERIALIZED VIEWS").await, names(&VIEWS));
    assert_eq!(
        show(&client, "STREAMS").await,
        BTreeSet::from(["events".to_string()])
    );
    assert_eq!(
        show(&client, "TABLES").await,
        BTreeSet::from(["users".to_string()])
    );
    // Inputs are durable as soon as the write is acknowledged: no FLUSH needed to read them.
    assert_eq!(
        select(&client, "SELECT user_id, amount, kind FROM events").await,
        model.events_rows()
    );
    assert_eq!(
        select(&client, "SELECT id, name, country FROM users").await,
        model.users_rows()
    );
    // FLUSH committed the views' state before the kill, so they are back as they were, before
    // any FLUSH on the new process, and stay so after one.
    let after = read_views(&client, &VIEWS).await;
    for (name, rows) in &before {
        assert_eq!(
            &after[name], rows,
            "view {name} changed across kill -9 + restart"
        );
    }
    exec(&client, "FLUSH").await;
    let after = read_views(&client, &VIEWS).await;
    for (name, rows) in &before {
        assert_eq!(
            &after[name], rows,
            "view {name} changed across kill -9 + restart + FLUSH"
        );
    }
    check_against_model(&client, &model, &VIEWS, "after the first restart").await;

    // New writes keep updating the recovered views; a new view backfills from recovered state.
    let mut all_views = VIEWS.to_vec();
    all_views.push(LATE_VIEW);
    create_views(&client, &[LATE_VIEW]).await;
    random_writes(&client, &mut model, &mut rng, 150).await;
    check_against_model(
        &client,
        &model,
        &all_views,
        "writes after the first restart",
    )
    .await;
    drop(client);

    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(show(&client, "MATERIALIZED VIEWS").await, names(&all_views));
    check_against_model(&client, &model, &all_views, "after the second restart").await;
    random_writes(&client, &mut model, &mut rng, 80).await;
    check_against_model(
        &client,
        &model,
        &all_views,
        "writes after the second restart",
    )
    .await;
    let before = read_views(&client, &all_views).await;
    drop(client);

    // A clean shutdown (SIGTERM): everything is back without even a FLUSH.
    server = blocking(|| server.restart_gracefully());
    let client = server.connect().await;
    let after = read_views(&client, &all_views).await;
    for (name, rows) in &before {
        assert_eq!(
            &after[name], rows,
            "view {name} changed across SIGTERM + restart"
        );
    }
    random_writes(&client, &mut model, &mut rng, 40).await;
    check_against_model(
        &client,
        &model,
        &all_views,
        "writes after the SIGTERM restart",
    )
    .await;
    drop(client);
    drop(server);
}

/// Server arguments: `workers` workers and the 1 KiB state cache (state read back from the
/// store all the time).
fn tiny_cache_with_workers(workers: &'static str) -> Vec<&'static str> {
    let mut args = vec!["--workers", workers];
    args.extend_from_slice(support::TINY_STATE_CACHE);
    args
}

/// The state does not depend on the number of workers (`--workers`): each owns a share of
/// the vnodes, reassigned at start-up. A server killed with one count and restarted with
/// another (1 → 2 → 3 → 1, with the 1 KiB state cache so that state is read back from the
/// store all the time) keeps every view equal to the model, and keeps updating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_survive_restarts_with_other_worker_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start_with(dir.path(), &tiny_cache_with_workers("1")));
    let mut rng = StdRng::seed_from_u64(0x5eed_0003);
    let mut model = Model::default();
    let client = server.connect().await;
    create_schema(&client).await;
    create_views(&client, &VIEWS).await;
    random_writes(&client, &mut model, &mut rng, 120).await;
    check_against_model(&client, &model, &VIEWS, "with one worker").await;
    drop(client);
    for (workers, ops) in [("2", 120), ("3", 100), ("1", 80)] {
        server = blocking(|| server.restart_with(&tiny_cache_with_workers(workers)));
        let client = server.connect().await;
        check_against_model(
            &client,
            &model,
            &VIEWS,
            &format!("restarted with {workers} workers"),
        )
        .await;
        random_writes(&client, &mut model, &mut rng, ops).await;
        check_against_model(
            &client,
            &model,
            &VIEWS,
            &format!("writes with {workers} workers"),
        )
        .await;
        drop(client);
    }
    drop(server);
}

/// A temporal filter over a stream keeps its waiting rows on the worker that has them (no
/// exchange), each under a vnode that worker owns. Restarting with other worker counts (and
/// the 1 KiB state cache, so that waiting rows are read back from the store) must neither lose
/// nor double one: the view equals the filter applied to the stream at the watermark after
/// every phase, rows expiring as the clock moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_filter_rows_survive_restarts_with_other_worker_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start_with(dir.path(), &tiny_cache_with_workers("2")));
    let client = server.connect().await;
    exec(
        &client,
        "CREATE STREAM e (id BIGINT, k BIGINT, ts TIMESTAMP, \
         WATERMARK FOR ts AS ts - INTERVAL '1 second')",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW recent AS SELECT k, count(*) AS n, sum(id) AS s FROM e \
         WHERE ts > NOW() - INTERVAL '20 seconds' GROUP BY k",
    )
    .await;
    // (id, k, second): ten rows a second, each phase 15 seconds on from the last.
    let mut rows: Vec<(i64, i64, i64)> = Vec::new();
    let expected = |rows: &[(i64, i64, i64)]| -> Rows {
        let watermark = rows.iter().map(|r| r.2).max().unwrap_or(0) - 1;
        let mut by_k: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
        for &(id, k, _) in rows.iter().filter(|r| r.2 > watermark - 20) {
            let entry = by_k.entry(k).or_default();
            entry.0 += 1;
            entry.1 += id;
        }
        sorted(
            by_k.into_iter()
                .map(|(k, (n, s))| {
                    vec![
                        Some(k.to_string()),
                        Some(n.to_string()),
                        Some(s.to_string()),
                    ]
                })
                .collect(),
        )
    };
    let mut client = client;
    for (phase, workers) in ["2", "3", "1", "2"].into_iter().enumerate() {
        if phase > 0 {
            drop(client);
            server = blocking(|| server.restart_with(&tiny_cache_with_workers(workers)));
            client = server.connect().await;
        }
        let start = phase as i64 * 15;
        let before = rows.len() as i64;
        for (n, second) in (start..start + 15)
            .flat_map(|second| std::iter::repeat_n(second, 10))
            .enumerate()
        {
            let id = before + 1 + n as i64;
            rows.push((id, (id * 7) % 13, second));
        }
        let values: Vec<String> = rows[before as usize..]
            .iter()
            .map(|(id, k, second)| {
                format!(
                    "({id}, {k}, TIMESTAMP '2026-01-01 00:00:00' + INTERVAL '{second} seconds')"
                )
            })
            .collect();
        exec(
            &client,
            &format!("INSERT INTO e VALUES {}", values.join(", ")),
        )
        .await;
        exec(&client, "FLUSH").await;
        assert_eq!(
            select(&client, "SELECT k, n, s FROM recent").await,
            expected(&rows),
            "phase {phase}, {workers} workers"
        );
    }
    drop(client);
    drop(server);
}

/// Writes acknowledged after the last FLUSH and just before a kill -9 are durable: after
/// the restart and a FLUSH, the views include them. Several kill cycles, each killing the
/// server right after the last acknowledgement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_without_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let mut rng = StdRng::seed_from_u64(0x5eed_0002);
    let mut model = Model::default();

    let client = server.connect().await;
    create_schema(&client).await;
    create_views(&client, &VIEWS).await;
    random_writes(&client, &mut model, &mut rng, 40).await;
    check_against_model(&client, &model, &VIEWS, "before the first kill").await;
    drop(client);

    for cycle in 0..4 {
        let client = server.connect().await;
        // No FLUSH after these: the kill comes right after the last acknowledgement.
        random_writes(&client, &mut model, &mut rng, 25).await;
        drop(client);
        server = blocking(|| server.restart());
        let client = server.connect().await;
        assert_eq!(
            select(&client, "SELECT user_id, amount, kind FROM events").await,
            model.events_rows(),
            "cycle {cycle}: acknowledged stream rows lost"
        );
        assert_eq!(
            select(&client, "SELECT id, name, country FROM users").await,
            model.users_rows(),
            "cycle {cycle}: acknowledged table changes lost"
        );
        check_against_model(
            &client,
            &model,
            &VIEWS,
            &format!("cycle {cycle} after restart"),
        )
        .await;
    }

    // A write immediately followed by the kill, on a connection that never flushed.
    let client = server.connect().await;
    exec(&client, "INSERT INTO events VALUES (7, 999, 'buy')").await;
    model.events.push((7, 999, "buy"));
    exec(&client, "DELETE FROM users WHERE id = 7").await;
    model.users.remove(&7);
    drop(client);
    server = blocking(|| server.restart());
    let client = server.connect().await;
    check_against_model(&client, &model, &VIEWS, "last write then kill").await;
    drop(client);
    drop(server);
}

/// kill -9 while another connection is inserting as fast as it can: after the restart the
/// stream holds every acknowledged row exactly once (plus, at most, the one batch in flight),
/// and every view equals the same query computed from scratch over the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_writes_is_exactly_once() {
    kill_during_writes(&[], 7).await;
}

/// The same with a 1 KiB state cache and 997 groups: the kills land while the aggregate
/// evicts groups and reads them back all the time, and the restarts open state far larger
/// than the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_eviction_heavy_writes_is_exactly_once() {
    kill_during_writes(support::TINY_STATE_CACHE, 997).await;
}

async fn kill_during_writes(server_args: &'static [&'static str], groups: u64) {
    const BATCH: u64 = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start_with(dir.path(), server_args));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (id BIGINT, g BIGINT, x BIGINT)").await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW s_by_g AS SELECT g, count(*) AS n, sum(x) AS total, max(id) AS last FROM s GROUP BY g",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW s_total AS SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(id) AS ids_sum FROM s",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW s_top AS SELECT count(*) AS groups, sum(n) AS n FROM s_by_g WHERE total > 0",
    )
    .await;
    drop(client);

    let row = move |id: u64| format!("({id}, {}, {})", id % groups, (id * 31) % 101);
    let mut next_batch = 0u64;
    for cycle in 0..3 {
        let writer_client = server.connect().await;
        let acked = Arc::new(AtomicU64::new(next_batch));
        let writer = {
            let acked = acked.clone();
            tokio::spawn(async move {
                let mut batch = next_batch;
                loop {
                    let values: Vec<String> =
                        (batch * BATCH..(batch + 1) * BATCH).map(row).collect();
                    let sql = format!("INSERT INTO s VALUES {}", values.join(", "));
                    if writer_client.simple_query(&sql).await.is_err() {
                        return batch; // the batch in flight when the server died
                    }
                    batch += 1;
                    acked.store(batch, Ordering::SeqCst);
                }
            })
        };
        // Let the writer get well under way (past at least one checkpoint), then kill.
        let deadline = Instant::now() + Duration::from_secs(120);
        let target = next_batch + 25;
        while acked.load(Ordering::SeqCst) < target {
            assert!(Instant::now() < deadline, "the writer made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300 * (cycle + 1))).await;
        server.kill();
        let in_flight = writer.await.expect("writer task");
        let acked_batches = acked.load(Ordering::SeqCst);
        assert_eq!(in_flight, acked_batches);
        server = blocking(|| TestServer::start_on_with(server.data_dir.clone(), server_args));

        let client = server.connect().await;
        exec(&client, "FLUSH").await;
        let stats = select(
            &client,
            "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM s",
        )
        .await;
        let count: u64 = stats[0][0]
            .as_deref()
            .expect("count")
            .parse()
            .expect("number");
        let distinct: u64 = stats[0][1]
            .as_deref()
            .expect("count")
            .parse()
            .expect("number");
        assert_eq!(
            count, distinct,
            "cycle {cycle}: duplicated rows in the stream"
        );
        assert!(
            count == acked_batches * BATCH || count == (acked_batches + 1) * BATCH,
            "cycle {cycle}: {count} rows after the kill, but {acked_batches} batches of {BATCH} were acknowledged"
        );
        assert_eq!(stats[0][2].as_deref(), Some("0"));
        assert_eq!(
            stats[0][3],
            text(count - 1),
            "cycle {cycle}: rows are not a prefix"
        );
        next_batch = count / BATCH;

        // Incremental == batch, and both equal the rows computed here.
        let ids = 0..count;
        let mut by_g: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
        for id in ids.clone() {
            let e = by_g.entry(id % groups).or_default();
            e.0 += 1;
            e.1 += (id * 31) % 101;
            e.2 = e.2.max(id);
        }
        let expected_by_g: Rows = sorted(
            by_g.iter()
                .map(|(g, (n, t, last))| vec![text(g), text(n), text(t), text(last)])
                .collect(),
        );
        assert_eq!(
            select(&client, "SELECT * FROM s_by_g").await,
            expected_by_g,
            "cycle {cycle}: s_by_g"
        );
        assert_eq!(
            select(
                &client,
                "SELECT g, count(*), sum(x), max(id) FROM s GROUP BY g"
            )
            .await,
            expected_by_g,
            "cycle {cycle}: batch query over s"
        );
        let ids_sum: u64 = ids.clone().sum();
        assert_eq!(
            select(&client, "SELECT * FROM s_total").await,
            vec![vec![text(count), text(count), text(ids_sum)]],
            "cycle {cycle}: s_total"
        );
        let groups = by_g.values().filter(|(_, t, _)| *t > 0).count();
        let n: u64 = by_g
            .values()
            .filter(|(_, t, _)| *t > 0)
            .map(|(n, _, _)| n)
            .sum();
        assert_eq!(
            select(&client, "SELECT * FROM s_top").await,
            vec![vec![text(groups), text(n)]],
            "cycle {cycle}: s_top"
        );
    }
    drop(server);
}

/// DROPs and re-creations under the same names survive a kill -9: nothing dropped comes
/// back, re-created objects keep their new schema and only their new rows, and views over
/// them keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_changes_survive_kill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    for sql in [
        "CREATE STREAM s (k INT, v INT)",
        "CREATE TABLE t (id INT PRIMARY KEY, name TEXT)",
        "CREATE MATERIALIZED VIEW v AS SELECT k, sum(v) AS total FROM s GROUP BY k",
        "CREATE MATERIALIZED VIEW j AS SELECT s.k, t.name FROM s JOIN t ON s.k = t.id",
        "CREATE MATERIALIZED VIEW gone AS SELECT count(*) AS n FROM v",
        "INSERT INTO s VALUES (1, 1), (2, 2)",
        "INSERT INTO t VALUES (1, 'one')",
        "FLUSH",
        "DROP MATERIALIZED VIEW gone",
        "DROP TABLE t CASCADE",
        "CREATE TABLE t (id INT PRIMARY KEY, other BIGINT)",
        "INSERT INTO t VALUES (5, 50)",
        "DROP STREAM s CASCADE",
        "CREATE STREAM s (k INT, v INT, extra TEXT)",
        "INSERT INTO s VALUES (9, 9, 'x'), (5, 1, 'y')",
        "CREATE MATERIALIZED VIEW v AS SELECT k, sum(v) AS total FROM s GROUP BY k",
        "CREATE MATERIALIZED VIEW j2 AS SELECT s.k, t.other FROM s JOIN t ON s.k = t.id",
        "COMMENT ON TABLE t IS 'kept'",
        "COMMENT ON COLUMN t.other IS 'other''s'",
        "COMMENT ON MATERIALIZED VIEW v IS 'per k'",
        "CREATE TABLE d (id INT PRIMARY KEY, doc JSONB, u UUID)",
        "INSERT INTO d VALUES (1, '{\"b\": 1, \"a\": 2}', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11')",
        "FLUSH",
    ] {
        exec(&client, sql).await;
    }
    drop(client);
    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(
        show(&client, "MATERIALIZED VIEWS").await,
        BTreeSet::from(["j2".to_string(), "v".to_string()])
    );
    assert_eq!(
        show(&client, "STREAMS").await,
        BTreeSet::from(["s".to_string()])
    );
    assert_eq!(
        show(&client, "TABLES").await,
        BTreeSet::from(["d".to_string(), "t".to_string()])
    );
    assert_eq!(
        select(
            &client,
            "SELECT obj_description('t'::regclass), col_description('t'::regclass, 2), \
             obj_description('v'::regclass)"
        )
        .await,
        vec![vec![text("kept"), text("other's"), text("per k")]]
    );
    assert_eq!(
        select(
            &client,
            "SELECT doc, u, format_type(atttypid, NULL) FROM d, pg_attribute \
             WHERE attrelid = 'd'::regclass AND attname = 'doc'"
        )
        .await,
        vec![vec![
            text(r#"{"a": 2, "b": 1}"#),
            text("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            text("jsonb")
        ]]
    );
    assert_eq!(
        select(&client, "SELECT k, v, extra FROM s").await,
        vec![
            vec![text(5), text(1), text("y")],
            vec![text(9), text(9), text("x")]
        ]
    );
    assert_eq!(
        select(&client, "SELECT id, other FROM t").await,
        vec![vec![text(5), text(50)]]
    );
    assert_eq!(
        select(&client, "SELECT * FROM v").await,
        vec![vec![text(5), text(1)], vec![text(9), text(9)]]
    );
    assert_eq!(
        select(&client, "SELECT * FROM j2").await,
        vec![vec![text(5), text(50)]]
    );
    for gone in ["gone", "j"] {
        let err = client
            .simple_query(&format!("SELECT * FROM {gone}"))
            .await
            .expect_err("a dropped view stays dropped");
        assert_eq!(err.code().map(|c| c.code()), Some("42P01"), "{err:?}");
    }
    exec(&client, "INSERT INTO s VALUES (5, 4, 'z')").await;
    exec(&client, "UPDATE t SET other = 51 WHERE id = 5").await;
    exec(&client, "FLUSH").await;
    assert_eq!(
        select(&client, "SELECT * FROM v").await,
        vec![vec![text(5), text(5)], vec![text(9), text(9)]]
    );
    assert_eq!(
        select(&client, "SELECT * FROM j2").await,
        vec![vec![text(5), text(51)], vec![text(5), text(51)]]
    );
}

/// A view that failed (here on a division by zero) is reported `failed: ...` by SHOW
/// MATERIALIZED VIEWS, and must stay failed after a kill -9 and restart rather than come back
/// `running` without the row that failed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_view_stays_failed_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (k INT, v INT)").await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW q AS SELECT k, 10 / v AS q FROM s",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n FROM s",
    )
    .await;
    exec(&client, "INSERT INTO s VALUES (1, 1), (2, 0)").await;
    exec(&client, "FLUSH").await;
    let status = |rows: Rows| -> BTreeMap<String, String> {
        rows.into_iter()
            .map(|r| (r[0].clone().expect("name"), r[1].clone().expect("status")))
            .collect()
    };
    let before = status(select(&client, "SHOW MATERIALIZED VIEWS").await);
    assert!(before["q"].starts_with("failed"), "{before:?}");
    assert_eq!(before["total"], "running");
    drop(client);
    server = blocking(|| server.restart());
    let client = server.connect().await;
    exec(&client, "FLUSH").await;
    let after = status(select(&client, "SHOW MATERIALIZED VIEWS").await);
    assert!(
        after["q"].starts_with("failed"),
        "the failure was forgotten: {after:?}"
    );
    assert_eq!(
        select(&client, "SELECT * FROM total").await,
        vec![vec![text(2)]]
    );
}

/// In a stopped server's catalog, records `layout` as view `name`'s state layout (`None`:
/// leaves it out, as entries written before layouts were recorded do), and with `garbage`
/// overwrites the view's rows and operator state with bytes no layout can read.
fn set_stored_layout(server: &TestServer, name: &str, layout: Option<u32>, garbage: bool) {
    use runnel_state::{keys, Store, StoreOptions, WriteBatch};
    let store = Store::open(&server.data_dir.join("state"), StoreOptions::default())
        .expect("open the stopped server's store");
    let mut batch = WriteBatch::default();
    for (key, value) in store.scan_prefix(&keys::catalog_prefix()).expect("catalog") {
        let mut entry: serde_json::Value = serde_json::from_slice(&value).expect("json");
        if entry["name"] != name {
            continue;
        }
        let fields = entry.as_object_mut().expect("object");
        match layout {
            Some(layout) => fields.insert("state_layout".into(), layout.into()),
            None => fields.remove("state_layout"),
        };
        batch.put(&key, serde_json::to_vec(&entry).expect("json"));
        if garbage {
            let id = u32::try_from(entry["id"].as_u64().expect("id")).expect("id");
            for prefix in [keys::view_prefix(id), keys::view_operators_prefix(id)] {
                for (key, _) in store.scan_prefix(&prefix).expect("state") {
                    batch.put(&key, b"garbage of an earlier layout");
                }
            }
        }
    }
    store.write(batch).expect("rewrite");
}

/// Layout 7 (before equal subplans were shared) is rebuilt only where the view's plan now
/// shares nodes, since only there did the node ids keying its state change: a view stating a
/// subquery twice is rebuilt (its old state, made garbage here, is dropped) and its entry
/// rewritten with the current layout; a view without repeats keeps its state and entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_7_view_is_rebuilt_only_when_its_plan_shares_nodes() {
    use runnel_state::{keys, Store, StoreOptions};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(&client, "CREATE STREAM s (g INT, h INT)").await;
    let views = [
        (
            "shared_v",
            "SELECT a.g, a.h, a.n FROM (SELECT g, h, count(*) AS n FROM s GROUP BY g, h) a \
             JOIN (SELECT g, max(n) AS m FROM (SELECT h, g, count(*) AS n FROM s \
             GROUP BY h, g) c GROUP BY g) b ON a.g = b.g AND a.n = b.m",
        ),
        ("plain_v", "SELECT g, count(*) AS n FROM s GROUP BY g"),
    ];
    for (name, query) in views {
        exec(
            &client,
            &format!("CREATE MATERIALIZED VIEW {name} AS {query}"),
        )
        .await;
    }
    exec(
        &client,
        "INSERT INTO s VALUES (1, 1), (1, 1), (1, 2), (2, 5), (2, 6), (2, 6), (2, 6), (3, 1)",
    )
    .await;
    exec(&client, "FLUSH").await;
    assert_views_answer(&client, &views).await;
    drop(client);
    server.terminate();
    set_stored_layout(&server, "shared_v", Some(7), true);
    set_stored_layout(&server, "plain_v", Some(7), false);

    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_views_answer(&client, &views).await;
    exec(&client, "INSERT INTO s VALUES (1, 2), (1, 2), (3, 4)").await;
    exec(&client, "FLUSH").await;
    assert_views_answer(&client, &views).await;
    drop(client);
    server.terminate();
    let store = Store::open(&server.data_dir.join("state"), StoreOptions::default())
        .expect("open the stopped server's store");
    let mut layouts = BTreeMap::new();
    for (_, value) in store.scan_prefix(&keys::catalog_prefix()).expect("catalog") {
        let entry: serde_json::Value = serde_json::from_slice(&value).expect("json");
        if let Some(name) = entry["name"].as_str().filter(|n| n.ends_with("_v")) {
            layouts.insert(name.to_string(), entry["state_layout"].as_u64());
        }
    }
    let current = u64::from(runnel_sql::catalog::STATE_LAYOUT);
    assert_eq!(
        layouts,
        BTreeMap::from([
            ("plain_v".to_string(), Some(7)),
            ("shared_v".to_string(), Some(current)),
        ])
    );
}

/// Asserts that each view `(name, query)` holds what its query answers now.
async fn assert_views_answer(client: &Client, views: &[(&str, &str)]) {
    for (name, query) in views {
        let held = sorted(select(client, &format!("SELECT * FROM {name}")).await);
        assert_eq!(held, sorted(select(client, query).await), "{name}");
    }
}

/// A view whose catalog entry records an earlier state layout (what every entry an earlier
/// Runnel wrote says, by leaving the field out) is rebuilt from its sources at start-up: its
/// old rows and operator state are dropped (here they are made garbage first), and it answers
/// as a view created now would, then keeps updating, and is not rebuilt again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_of_an_earlier_state_layout_is_rebuilt_from_its_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = blocking(|| TestServer::start(dir.path()));
    let client = server.connect().await;
    exec(
        &client,
        "CREATE STREAM s (g INT, x BIGINT, f DOUBLE PRECISION)",
    )
    .await;
    let view =
        "SELECT g, sum(x) AS sx, avg(x) AS ax, sum(f) AS sf, count(*) AS n FROM s GROUP BY g";
    exec(&client, &format!("CREATE MATERIALIZED VIEW v AS {view}")).await;
    exec(
        &client,
        "INSERT INTO s VALUES (1, 9223372036854775807, 0.1), (1, 1, 0.2), (2, 5, 1e17), (2, 6, 1)",
    )
    .await;
    exec(&client, "FLUSH").await;
    let expected = sorted(select(&client, view).await);
    assert_eq!(sorted(select(&client, "SELECT * FROM v").await), expected);
    drop(client);
    server.terminate();

    set_stored_layout(&server, "v", None, true);

    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(sorted(select(&client, "SELECT * FROM v").await), expected);
    exec(&client, "INSERT INTO s VALUES (1, 2, 0.3), (3, 7, 2.5)").await;
    exec(&client, "FLUSH").await;
    let expected = sorted(select(&client, view).await);
    assert_eq!(sorted(select(&client, "SELECT * FROM v").await), expected);
    drop(client);
    server = blocking(|| server.restart());
    let client = server.connect().await;
    assert_eq!(sorted(select(&client, "SELECT * FROM v").await), expected);
}
