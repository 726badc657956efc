//! Generators of SQL text for the front end's fuzz tests: statements built from a small
//! grammar of Runnel's surface (queries, CREATE STREAM / TABLE / MATERIALIZED VIEW, TUMBLE,
//! HOP and SESSION windows, EMIT ON WINDOW CLOSE, OVER, DML, COPY, SUBSCRIBE, SHOW, EXPLAIN),
//! mutated statements (tokens dropped, repeated or swapped), and token soup.
//!
//! Names come from [`CATALOG_SETUP`], so a fair share of generated statements plan against a
//! real catalog instead of stopping at "relation does not exist".

use proptest::prelude::*;

/// Statements that create the relations the generated SQL names: a stream `s` with a
/// watermark, a keyed table `t`, a view `v` over `s`.
pub const CATALOG_SETUP: &[&str] = &[
    "CREATE STREAM s (user_id BIGINT, item_id INT, price DOUBLE PRECISION, name TEXT, \
     amount NUMERIC(10,2), doc JSONB, ts TIMESTAMPTZ, WATERMARK FOR ts AS ts - INTERVAL '5 seconds')",
    "CREATE TABLE t (item_id INT PRIMARY KEY, category TEXT, weight REAL, added DATE)",
    "CREATE MATERIALIZED VIEW v AS SELECT user_id, count(*) AS n, sum(price) AS total \
     FROM s GROUP BY user_id",
];

const RELATIONS: &[&str] = &[
    "s",
    "t",
    "v",
    "nope",
    "pg_catalog.pg_class",
    "information_schema.tables",
];

const COLUMNS: &[&str] = &[
    "user_id",
    "item_id",
    "price",
    "name",
    "amount",
    "doc",
    "ts",
    "category",
    "weight",
    "added",
    "n",
    "total",
    "window_start",
    "window_end",
    "missing",
    "*",
];

const TYPES: &[&str] = &[
    "BIGINT",
    "INT",
    "SMALLINT",
    "REAL",
    "DOUBLE PRECISION",
    "NUMERIC",
    "NUMERIC(10,2)",
    "NUMERIC(1000)",
    "NUMERIC(5,-3)",
    "TEXT",
    "VARCHAR(3)",
    "CHAR(2)",
    "BOOLEAN",
    "TIMESTAMPTZ",
    "TIMESTAMP",
    "DATE",
    "TIME",
    "INTERVAL",
    "JSON",
    "JSONB",
    "UUID",
    "BYTEA",
    "INT[]",
    "regclass",
];

const LITERALS: &[&str] = &[
    "0",
    "1",
    "-1",
    "42",
    "2147483647",
    "2147483648",
    "9223372036854775807",
    "-9223372036854775808",
    "99999999999999999999999999999999999999999",
    "1.5",
    "-0.0",
    "1e308",
    "1e400",
    "'NaN'",
    "'Infinity'",
    "NULL",
    "TRUE",
    "FALSE",
    "''",
    "'a'",
    "'it''s'",
    "E'\\x41\\n'",
    "'{\"a\": [1, 2]}'",
    "'2026-06-10T00:00:00Z'",
    "TIMESTAMP '2026-06-10 12:00:00'",
    "TIMESTAMPTZ '2026-06-10 12:00:00+02'",
    "DATE '2026-02-29'",
    "INTERVAL '5 seconds'",
    "INTERVAL '1 minute'",
    "INTERVAL '0 seconds'",
    "INTERVAL '-1 hour'",
    "INTERVAL '1 month'",
    "INTERVAL 'nonsense'",
    "ARRAY[1, 2, 3]",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
    "$1",
];

const BINARY_OPS: &[&str] = &[
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "=",
    "<>",
    "<",
    "<=",
    ">",
    ">=",
    "AND",
    "OR",
    "||",
    "LIKE",
    "ILIKE",
    "->",
    "->>",
    "@>",
    "IS DISTINCT FROM",
    "<<",
    "&",
    "|",
];

const FUNCTIONS: &[&str] = &[
    "abs",
    "round",
    "lower",
    "upper",
    "length",
    "substr",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "now",
    "date_trunc",
    "date_bin",
    "to_timestamp",
    "concat",
    "md5",
    "sqrt",
    "ln",
    "power",
    "floor",
    "trunc",
    "jsonb_typeof",
    "array_length",
    "split_part",
    "nonexistent",
];

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "bool_and",
    "string_agg",
    "array_agg",
    "count(DISTINCT",
    "approx_distinct",
];

fn pick(items: &'static [&'static str]) -> BoxedStrategy<String> {
    prop::sample::select(items).prop_map(str::to_string).boxed()
}

fn ident() -> BoxedStrategy<String> {
    prop_oneof![
        6 => pick(COLUMNS),
        1 => "[a-z_][a-z0-9_]{0,4}",
        1 => Just("\"Weird \"\" name\"".to_string()),
        1 => prop::sample::select(RELATIONS).prop_map(|r| format!("{r}.{}", "user_id")),
    ]
    .boxed()
}

/// A scalar expression, nested a few levels.
pub fn expr() -> BoxedStrategy<String> {
    let leaf = prop_oneof![3 => pick(LITERALS), 3 => ident()];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (inner.clone(), pick(BINARY_OPS), inner.clone())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (pick(FUNCTIONS), prop::collection::vec(inner.clone(), 0..3))
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
            (pick(AGGREGATES), inner.clone()).prop_map(|(f, a)| {
                if f.ends_with("DISTINCT") {
                    format!("{f} {a})")
                } else {
                    format!("{f}({a})")
                }
            }),
            (inner.clone(), pick(TYPES)).prop_map(|(e, t)| format!("CAST({e} AS {t})")),
            (inner.clone(), pick(TYPES)).prop_map(|(e, t)| format!("{e}::{t}")),
            inner.clone().prop_map(|e| format!("({e})")),
            inner.clone().prop_map(|e| format!("NOT {e}")),
            inner.clone().prop_map(|e| format!("-{e}")),
            inner.clone().prop_map(|e| format!("{e} IS NULL")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("CASE WHEN {a} THEN {b} ELSE {c} END")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("{a} BETWEEN {b} AND {c}")),
            (inner.clone(), prop::collection::vec(inner.clone(), 1..3))
                .prop_map(|(a, l)| format!("{a} IN ({})", l.join(", "))),
            (
                pick(&["second", "minute", "hour", "day", "epoch", "dow"]),
                inner.clone()
            )
                .prop_map(|(f, e)| format!("EXTRACT({f} FROM {e})")),
            (
                pick(&[
                    "row_number()",
                    "rank()",
                    "lag(price)",
                    "sum(price)",
                    "count(*)"
                ]),
                window_spec()
            )
                .prop_map(|(f, w)| format!("{f} OVER ({w})")),
            inner.prop_map(|e| format!("(SELECT {e})")),
        ]
    })
    .boxed()
}

fn window_spec() -> BoxedStrategy<String> {
    (
        prop::option::of(ident()),
        prop::option::of(ident()),
        prop::option::of(pick(&[
            "ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
            "RANGE BETWEEN INTERVAL '1 minute' PRECEDING AND CURRENT ROW",
            "ROWS UNBOUNDED PRECEDING",
        ])),
    )
        .prop_map(|(p, o, f)| {
            let mut parts = Vec::new();
            if let Some(p) = p {
                parts.push(format!("PARTITION BY {p}"));
            }
            if let Some(o) = o {
                parts.push(format!("ORDER BY {o}"));
            }
            if let Some(f) = f {
                parts.push(f);
            }
            parts.join(" ")
        })
        .boxed()
}

fn interval() -> BoxedStrategy<String> {
    pick(&[
        "INTERVAL '1 minute'",
        "INTERVAL '30 seconds'",
        "INTERVAL '5 minutes'",
        "INTERVAL '0 seconds'",
        "INTERVAL '-1 minute'",
        "INTERVAL '1 month'",
        "INTERVAL '1 microsecond'",
        "1",
        "NULL",
    ])
}

/// A FROM item: a relation, a window table function, a join or a subquery.
fn from_item() -> BoxedStrategy<String> {
    let relation = pick(RELATIONS);
    let window = prop_oneof![
        (pick(RELATIONS), ident(), interval())
            .prop_map(|(r, c, i)| format!("TUMBLE({r}, {c}, {i})")),
        (pick(RELATIONS), ident(), interval(), interval())
            .prop_map(|(r, c, a, b)| format!("HOP({r}, {c}, {a}, {b})")),
        (
            pick(RELATIONS),
            ident(),
            interval(),
            prop::option::of(ident())
        )
            .prop_map(|(r, c, i, k)| match k {
                Some(k) => format!("SESSION({r}, {c}, {i}, {k})"),
                None => format!("SESSION({r}, {c}, {i})"),
            }),
    ];
    let simple = prop_oneof![3 => relation, 2 => window];
    prop_oneof![
        3 => simple.clone(),
        1 => (
            simple.clone(),
            pick(&["JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN"]),
            simple,
            expr()
        )
            .prop_map(|(a, j, b, on)| {
                if j == "CROSS JOIN" {
                    format!("{a} AS x {j} {b} AS y")
                } else {
                    format!("{a} AS x {j} {b} AS y ON {on}")
                }
            }),
    ]
    .boxed()
}

/// A SELECT, sometimes with a set operation.
pub fn query() -> BoxedStrategy<String> {
    let select = (
        any::<bool>(),
        prop::collection::vec(expr(), 1..4),
        from_item(),
        prop::option::of(expr()),
        prop::collection::vec(ident(), 0..3),
        prop::option::of(expr()),
        prop::option::of(ident()),
        prop::option::of(0u32..5),
    )
        .prop_map(
            |(distinct, list, from, filter, group, having, order, limit)| {
                let mut sql = format!(
                    "SELECT {}{} FROM {from}",
                    if distinct { "DISTINCT " } else { "" },
                    list.join(", ")
                );
                if let Some(f) = filter {
                    sql += &format!(" WHERE {f}");
                }
                if !group.is_empty() {
                    sql += &format!(" GROUP BY {}", group.join(", "));
                }
                if let Some(h) = having {
                    sql += &format!(" HAVING {h}");
                }
                if let Some(o) = order {
                    sql += &format!(" ORDER BY {o}");
                }
                if let Some(l) = limit {
                    sql += &format!(" LIMIT {l}");
                }
                sql
            },
        );
    prop_oneof![
        4 => select.clone(),
        1 => (select.clone(), pick(&["UNION ALL", "UNION", "EXCEPT", "INTERSECT"]), select)
            .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        1 => expr().prop_map(|e| format!("SELECT {e}")),
    ]
    .boxed()
}

fn column_defs() -> BoxedStrategy<String> {
    (
        prop::collection::vec((ident(), pick(TYPES), any::<bool>()), 0..4),
        prop::option::of((ident(), expr())),
        any::<bool>(),
    )
        .prop_map(|(columns, watermark, key)| {
            let mut parts: Vec<String> = columns
                .iter()
                .map(|(n, t, not_null)| {
                    format!("{n} {t}{}", if *not_null { " NOT NULL" } else { "" })
                })
                .collect();
            if let Some((c, e)) = watermark {
                parts.push(format!("WATERMARK FOR {c} AS {e}"));
            }
            if key {
                if let Some((n, _, _)) = columns.first() {
                    parts.push(format!("PRIMARY KEY ({n})"));
                }
            }
            parts.join(", ")
        })
        .boxed()
}

fn with_options() -> BoxedStrategy<String> {
    prop::collection::vec(
        (
            pick(&[
                "connector",
                "topic",
                "format",
                "start",
                "on_error",
                "mode",
                "nope",
                "bootstrap_servers",
            ]),
            pick(&[
                "'kafka'",
                "'json'",
                "'csv'",
                "'earliest'",
                "'latest'",
                "'offsets:0=42'",
                "'timestamp:2026-06-10T00:00:00Z'",
                "'timestamp:nonsense'",
                "'skip'",
                "'fail'",
                "'dlq:x'",
                "''",
                "1",
                "TRUE",
            ]),
        ),
        0..3,
    )
    .prop_map(|options| {
        if options.is_empty() {
            String::new()
        } else {
            let options: Vec<String> = options.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!(" WITH ({})", options.join(", "))
        }
    })
    .boxed()
}

/// One statement of Runnel's surface, well-formed or nearly so. Names created start with
/// `fuzz_` so a test can drop them again.
pub fn statement() -> BoxedStrategy<String> {
    let name = "fuzz_[a-z]{1,3}";
    prop_oneof![
        6 => query(),
        4 => (name, query(), any::<bool>()).prop_map(|(n, q, eowc)| {
            format!(
                "CREATE MATERIALIZED VIEW {n} AS {q}{}",
                if eowc { " EMIT ON WINDOW CLOSE" } else { "" }
            )
        }),
        1 => query().prop_map(|q| format!("EXPLAIN CREATE MATERIALIZED VIEW e AS {q}")),
        1 => query().prop_map(|q| format!("EXPLAIN {q}")),
        1 => (pick(&["STREAM", "TABLE"]), name, column_defs(), with_options())
            .prop_map(|(k, n, c, w)| format!("CREATE {k} {n} ({c}){w}")),
        1 => (prop::collection::vec(expr(), 1..5), pick(&["s", "t", "v"]))
            .prop_map(|(values, r)| format!("INSERT INTO {r} VALUES ({})", values.join(", "))),
        1 => (pick(&["s", "t"]), query()).prop_map(|(r, q)| format!("INSERT INTO {r} {q}")),
        1 => (ident(), expr(), expr())
            .prop_map(|(c, v, w)| format!("UPDATE t SET {c} = {v} WHERE {w}")),
        1 => expr().prop_map(|w| format!("DELETE FROM t WHERE {w}")),
        1 => (query(), pick(&["csv", "text", "binary"]))
            .prop_map(|(q, f)| format!("COPY ({q}) TO STDOUT WITH (FORMAT {f})")),
        1 => (
            pick(RELATIONS),
            pick(&["'\\t'", "','", "'n'", "'\\\\'", "'ab'", "E'\\n'"]),
            pick(&["'\\N'", "''", "'x'", "E'\\r'"])
        )
            .prop_map(|(r, d, n)| format!("COPY {r} TO STDOUT WITH (DELIMITER {d}, NULL {n})")),
        1 => (pick(&["s", "t", "v", "nope"]), with_options())
            .prop_map(|(r, w)| format!("SUBSCRIBE {r}{w}")),
        1 => (name, pick(&["v", "s", "nope"]), with_options())
            .prop_map(|(n, f, w)| format!("CREATE SINK {n} FROM {f}{w}")),
        1 => pick(&[
            "SHOW STREAMS",
            "SHOW TABLES",
            "SHOW MATERIALIZED VIEWS",
            "SHOW SINKS",
            "SHOW PROGRESS",
            "SHOW WATERMARKS",
            "FLUSH",
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "SET TimeZone = 'Europe/Paris'",
            "SET extra_float_digits = 3",
            "SET DateStyle = 'German'",
            "SET statement_timeout = -1",
            "SHOW ALL",
            "DISCARD ALL",
            "DROP MATERIALIZED VIEW IF EXISTS nope",
            "DROP STREAM nope",
        ]),
    ]
    .boxed()
}

/// A statement with some of its words dropped, repeated or moved: mostly syntax errors, but
/// ones that reach deep into the grammar before failing.
pub fn mutated_statement() -> BoxedStrategy<String> {
    (
        statement(),
        prop::collection::vec(
            (
                0u8..3,
                any::<prop::sample::Index>(),
                any::<prop::sample::Index>(),
            ),
            1..4,
        ),
    )
        .prop_map(|(sql, edits)| {
            let mut words: Vec<&str> = sql.split(' ').collect();
            for (kind, a, b) in edits {
                if words.is_empty() {
                    break;
                }
                let (i, j) = (a.index(words.len()), b.index(words.len()));
                match kind {
                    0 => {
                        words.remove(i);
                    }
                    1 => words.insert(i, words[j]),
                    _ => words.swap(i, j),
                }
            }
            words.join(" ")
        })
        .boxed()
}

/// Token soup: keywords, names, literals and punctuation in any order.
pub fn token_soup() -> BoxedStrategy<String> {
    let token = prop_oneof![
        pick(&[
            "SELECT",
            "FROM",
            "WHERE",
            "GROUP",
            "BY",
            "ORDER",
            "HAVING",
            "CREATE",
            "STREAM",
            "TABLE",
            "MATERIALIZED",
            "VIEW",
            "SINK",
            "AS",
            "WITH",
            "TUMBLE",
            "HOP",
            "SESSION",
            "EMIT",
            "ON",
            "WINDOW",
            "CLOSE",
            "OVER",
            "PARTITION",
            "WATERMARK",
            "FOR",
            "INTERVAL",
            "JOIN",
            "LEFT",
            "UNION",
            "ALL",
            "INSERT",
            "INTO",
            "VALUES",
            "COPY",
            "TO",
            "STDOUT",
            "STDIN",
            "SUBSCRIBE",
            "EXPLAIN",
            "SHOW",
            "DROP",
            "DECLARE",
            "CURSOR",
            "FETCH",
            "CAST",
            "ARRAY",
            "CASE",
            "WHEN",
            "THEN",
            "END",
            "NOT",
            "NULL",
            "IS",
            "DISTINCT",
            "PRIMARY",
            "KEY",
            "GRANT",
            "REVOKE",
            "ROLE",
            "BEGIN",
            "COMMIT",
            "LATERAL",
            "UNNEST",
            "ROW",
        ]),
        pick(&[
            "(", ")", ",", ";", ".", "::", "[", "]", "*", "+", "-", "/", "=", "<", ">", "'", "\"",
            "$$", "--", "/*", "*/", "\\", "E'", "$1", "#", "@",
        ]),
        pick(LITERALS),
        ident(),
    ];
    prop::collection::vec(token, 0..24)
        .prop_map(|tokens| tokens.join(" "))
        .boxed()
}

/// Any of the above, or arbitrary text.
pub fn any_sql() -> BoxedStrategy<String> {
    prop_oneof![
        4 => statement(),
        3 => mutated_statement(),
        2 => token_soup(),
        1 => any::<String>(),
    ]
    .boxed()
}

/// A relation of [`CATALOG_SETUP`] (or a window over its stream) with its numeric, text and
/// time columns, for queries that resolve.
#[derive(Debug, Clone)]
struct Source {
    from: String,
    numeric: Vec<&'static str>,
    text: Vec<&'static str>,
    time: Vec<&'static str>,
}

fn source() -> BoxedStrategy<Source> {
    let stream = || Source {
        from: "s".into(),
        numeric: vec!["user_id", "item_id", "price", "amount"],
        text: vec!["name", "doc->>'k'"],
        time: vec!["ts"],
    };
    let windowed = move |from: String| {
        let mut s = stream();
        s.from = from;
        s.time.extend(["window_start", "window_end"]);
        s
    };
    let size = || {
        pick(&[
            "INTERVAL '1 minute'",
            "INTERVAL '30 seconds'",
            "INTERVAL '5 minutes'",
            "INTERVAL '1 hour'",
            "INTERVAL '0 seconds'",
            "INTERVAL '1 day'",
        ])
    };
    prop_oneof![
        3 => Just(stream()),
        2 => Just(Source {
            from: "t".into(),
            numeric: vec!["item_id", "weight"],
            text: vec!["category"],
            time: vec!["added"],
        }),
        1 => Just(Source {
            from: "v".into(),
            numeric: vec!["user_id", "n", "total"],
            text: vec![],
            time: vec![],
        }),
        2 => size().prop_map(move |i| windowed(format!("TUMBLE(s, ts, {i})"))),
        // Slides and sizes at most 5 windows apart: a HOP is planned as a branch per window, and
        // an OVER window over many window rows keeps the dataflow worker busy for minutes
        // (see `hits_known_crash` in `runnel/tests/fuzz_sql.rs`).
        2 => prop::sample::select(vec![
            ("INTERVAL '1 minute'", "INTERVAL '5 minutes'"),
            ("INTERVAL '30 seconds'", "INTERVAL '1 minute'"),
            ("INTERVAL '5 minutes'", "INTERVAL '1 minute'"),
            ("INTERVAL '1 minute'", "INTERVAL '90 seconds'"),
            ("INTERVAL '0 seconds'", "INTERVAL '1 minute'"),
        ])
        .prop_map(move |(a, b)| windowed(format!("HOP(s, ts, {a}, {b})"))),
        2 => (size(), any::<bool>()).prop_map(move |(i, keyed)| windowed(if keyed {
            format!("SESSION(s, ts, {i}, user_id)")
        } else {
            format!("SESSION(s, ts, {i})")
        })),
        1 => Just(Source {
            from: "s JOIN t ON s.item_id = t.item_id".into(),
            numeric: vec!["user_id", "s.item_id", "price", "weight"],
            text: vec!["name", "category"],
            time: vec!["ts"],
        }),
        1 => Just(Source {
            from: "s LEFT JOIN t ON s.item_id = t.item_id AND t.weight > 1".into(),
            numeric: vec!["user_id", "t.item_id", "price", "weight"],
            text: vec!["name", "category"],
            time: vec!["ts", "added"],
        }),
    ]
    .boxed()
}

fn from_list(items: &[&'static str], fallback: &'static str) -> BoxedStrategy<String> {
    if items.is_empty() {
        Just(fallback.to_string()).boxed()
    } else {
        prop::sample::select(items.to_vec())
            .prop_map(str::to_string)
            .boxed()
    }
}

/// A numeric expression over the source's numeric columns.
fn numeric_expr(src: &Source) -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        3 => from_list(&src.numeric, "1"),
        1 => pick(&["0", "1", "-7", "2.5", "1e300", "9223372036854775807", "NULL", "'NaN'::float8"]),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                pick(&["+", "-", "*", "/", "%"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (
                pick(&["abs", "round", "floor", "sqrt", "ln"]),
                inner.clone()
            )
                .prop_map(|(f, a)| format!("{f}({a})")),
            (
                inner.clone(),
                pick(&[
                    "BIGINT",
                    "INT",
                    "SMALLINT",
                    "NUMERIC(10,2)",
                    "DOUBLE PRECISION",
                    "REAL"
                ])
            )
                .prop_map(|(a, t)| format!("CAST({a} AS {t})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("coalesce({a}, {b})")),
            inner.prop_map(|a| format!("-{a}")),
        ]
    })
    .boxed()
}

fn predicate(src: &Source) -> BoxedStrategy<String> {
    let numeric = numeric_expr(src);
    let text = from_list(&src.text, "'x'");
    let time = from_list(&src.time, "NOW()");
    let atom = prop_oneof![
        3 => (numeric.clone(), pick(&["=", "<>", "<", ">=", ">"]), numeric.clone())
            .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        1 => (text.clone(), pick(&["'a%'", "'%'", "''", "'\\_'"])).prop_map(|(t, p)| format!("{t} LIKE {p}")),
        1 => (time, pick(&["INTERVAL '30 minutes'", "INTERVAL '1 second'", "INTERVAL '1 day'"]))
            .prop_map(|(t, i)| format!("{t} > NOW() - {i}")),
        1 => numeric.prop_map(|a| format!("{a} IS NULL")),
        1 => text.prop_map(|t| format!("{t} IS NOT NULL")),
    ];
    atom.prop_recursive(2, 6, 2, |inner| {
        prop_oneof![
            (inner.clone(), pick(&["AND", "OR"]), inner.clone())
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
    .boxed()
}

/// A query that mostly resolves against [`CATALOG_SETUP`]: projections and filters,
/// aggregates grouped by a column, OVER windows, over the relations, windows and joins.
pub fn plannable_query() -> BoxedStrategy<String> {
    source()
        .prop_flat_map(|src| {
            let key = prop_oneof![
                from_list(&src.numeric, "1"),
                from_list(&src.text, "'x'"),
                from_list(&src.time, "1"),
            ];
            let aggregate = (
                pick(&[
                    "count",
                    "sum",
                    "avg",
                    "min",
                    "max",
                    "count(DISTINCT",
                    "stddev",
                ]),
                numeric_expr(&src),
            )
                .prop_map(|(f, a)| {
                    if f.ends_with("DISTINCT") {
                        format!("{f} {a})")
                    } else {
                        format!("{f}({a})")
                    }
                });
            let projection = (
                prop::collection::vec(numeric_expr(&src), 1..3),
                prop::option::of(predicate(&src)),
            )
                .prop_map({
                    let from = src.from.clone();
                    move |(list, filter)| {
                        let mut sql = format!("SELECT {} FROM {from}", list.join(", "));
                        if let Some(f) = filter {
                            sql += &format!(" WHERE {f}");
                        }
                        sql
                    }
                });
            let grouped = (
                prop::collection::vec(key.clone(), 0..3),
                prop::collection::vec(aggregate.clone(), 1..3),
                prop::option::of(predicate(&src)),
                prop::option::of((aggregate, pick(&[">", "<", "="]), numeric_expr(&src))),
            )
                .prop_map({
                    let from = src.from.clone();
                    move |(keys, aggregates, filter, having)| {
                        let mut list = keys.clone();
                        list.extend(aggregates);
                        let mut sql = format!("SELECT {} FROM {from}", list.join(", "));
                        if let Some(f) = filter {
                            sql += &format!(" WHERE {f}");
                        }
                        if !keys.is_empty() {
                            sql += &format!(" GROUP BY {}", keys.join(", "));
                        }
                        if let Some((a, op, e)) = having {
                            sql += &format!(" HAVING {a} {op} {e}");
                        }
                        sql
                    }
                });
            let over = (
                key.clone(),
                pick(&[
                    "row_number()",
                    "rank()",
                    "sum(1)",
                    "count(*)",
                    "lag(1)",
                    "min(1)",
                ]),
                key,
                from_list(&src.time, "1"),
            )
                .prop_map({
                    let from = src.from.clone();
                    move |(k, f, p, o)| {
                        format!("SELECT {k}, {f} OVER (PARTITION BY {p} ORDER BY {o}) FROM {from}")
                    }
                });
            prop_oneof![2 => projection, 3 => grouped, 1 => over]
        })
        .boxed()
}

/// A statement that mostly plans against [`CATALOG_SETUP`]: ad-hoc queries, views (some
/// emitting on window close), EXPLAIN, and the catalog's DML.
pub fn plannable_statement() -> BoxedStrategy<String> {
    prop_oneof![
        3 => plannable_query(),
        4 => ("fuzz_[a-z]{1,3}", plannable_query(), prop::bool::weighted(0.2)).prop_map(
            |(n, q, eowc)| format!(
                "CREATE MATERIALIZED VIEW {n} AS {q}{}",
                if eowc { " EMIT ON WINDOW CLOSE" } else { "" }
            )
        ),
        1 => plannable_query().prop_map(|q| format!("EXPLAIN CREATE MATERIALIZED VIEW e AS {q}")),
        1 => (
            pick(&["1", "NULL", "-9223372036854775808", "2147483648"]),
            pick(&["2.5", "'NaN'", "NULL", "1e308"]),
            pick(&["'x'", "NULL", "E'\\\\'"]),
            pick(&["'2026-06-10T00:05:00Z'", "NULL", "'1970-01-01T00:00:00Z'", "'nonsense'"]),
        )
            .prop_map(|(a, b, c, d)| format!(
                "INSERT INTO s VALUES ({a}, 10, {b}, {c}, 1.5, NULL, {d})"
            )),
        1 => (pick(&["12", "10", "NULL"]), pick(&["'y'", "NULL"]))
            .prop_map(|(k, c)| format!("INSERT INTO t VALUES ({k}, {c}, 2.5, '2026-06-11')")),
    ]
    .boxed()
}
