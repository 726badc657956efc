//! The parser's statements, extensions and errors.

use super::*;

#[test]
fn splits_at_top_level_semicolons_only() {
    let parts = split_statements("select ';'; select 2 ; -- c; \n ;").unwrap();
    assert_eq!(parts, vec!["select ';'", "select 2"]);
}

#[test]
fn classifies_runnel_commands() {
    let s = parse_statements("CREATE STREAM s (a BIGINT); FLUSH; SHOW materialized views").unwrap();
    assert!(matches!(
        s[0].kind,
        Statement::CreateRelation {
            kind: ObjectKind::Stream,
            ..
        }
    ));
    assert!(matches!(s[1].kind, Statement::Flush));
    assert!(matches!(
        s[2].kind,
        Statement::Show(ShowKind::MaterializedViews)
    ));
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse_one("SELECT * FORM t").unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::SYNTAX_ERROR);
    assert!(err.position().is_some());
}

#[test]
fn copy_options() {
    let s = parse_statements("COPY s FROM STDIN WITH (FORMAT csv, HEADER true)").unwrap();
    match &s[0].kind {
        Statement::Copy { table, options, .. } => {
            assert_eq!(table, "s");
            assert!(options.csv && options.header);
            assert_eq!(options.delimiter, b',');
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn copy_framing_options_postgres_refuses() {
    // Each would make COPY TO write data that COPY FROM reads back differently.
    for sql in [
        "COPY s TO STDOUT WITH (DELIMITER 'n')",
        "COPY s TO STDOUT WITH (DELIMITER '\\')",
        "COPY s TO STDOUT WITH (DELIMITER '7')",
        "COPY s TO STDOUT WITH (DELIMITER E'\\n')",
        "COPY s TO STDOUT WITH (NULL E'a\\rb')",
        "COPY s TO STDOUT WITH (DELIMITER ',', NULL 'a,b')",
        "COPY s TO STDOUT WITH (FORMAT csv, QUOTE ',')",
        "COPY s FROM STDIN WITH (FORMAT csv, NULL '\"\"')",
    ] {
        let err = parse_statements(sql).unwrap_err();
        assert_eq!(
            err.sqlstate(),
            SqlState::INVALID_PARAMETER_VALUE,
            "{sql}: {err}"
        );
    }
    for sql in [
        "COPY s TO STDOUT WITH (DELIMITER '|', NULL '')",
        "COPY s TO STDOUT WITH (FORMAT csv, DELIMITER ';', QUOTE '''', NULL 'NULL')",
        "COPY s TO STDOUT WITH (FORMAT csv, DELIMITER 'n')",
        "COPY s FROM STDIN WITH (FORMAT binary)",
    ] {
        parse_statements(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

#[test]
fn create_and_drop_sink() {
    let parsed = parse_statements(
        "CREATE SINK IF NOT EXISTS out FROM v WITH (connector = 'kafka', topic = 'recs', mode = 'upsert');",
    )
    .unwrap();
    match &parsed[0].kind {
        Statement::CreateSink {
            name,
            from,
            options,
            if_not_exists,
        } => {
            assert_eq!(
                (name.as_str(), from.as_str(), *if_not_exists),
                ("out", "v", true)
            );
            assert_eq!(
                options,
                &vec![
                    ("connector".to_string(), "kafka".to_string()),
                    ("topic".to_string(), "recs".to_string()),
                    ("mode".to_string(), "upsert".to_string()),
                ]
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    for bad in [
        "CREATE SINK out v WITH (topic = 't')",
        "CREATE SINK out FROM v WITH (topic = 't') extra",
        "CREATE SINK FROM v",
    ] {
        let err = parse_statements(bad).unwrap_err();
        assert_eq!(err.sqlstate(), SqlState::SYNTAX_ERROR, "{bad}");
    }
    match &parse_statements("DROP SINK IF EXISTS a, b").unwrap()[0].kind {
        Statement::Drop {
            kind,
            names,
            if_exists,
            ..
        } => {
            assert_eq!(*kind, ObjectKind::Sink);
            assert_eq!(names, &vec!["a".to_string(), "b".to_string()]);
            assert!(*if_exists);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn create_stream_with_watermark_anywhere_in_the_column_list() {
    for sql in [
        "CREATE STREAM s (WATERMARK FOR ts AS ts - INTERVAL '5' SECOND, ts TIMESTAMP, v BIGINT)",
        "CREATE STREAM s (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND, v BIGINT)",
        "create stream s (ts timestamp, v bigint, watermark for ts as ts - interval '5' second) \
         with (connector = 'kafka', topic = 't')",
    ] {
        match RunnelParser::parse(sql).unwrap() {
            Statement::CreateRelation {
                kind: ObjectKind::Stream,
                create,
                watermark: Some(watermark),
            } => {
                let names: Vec<&str> = create
                    .columns
                    .iter()
                    .map(|c| c.name.value.as_str())
                    .collect();
                assert_eq!(names.len(), 2, "{sql}");
                assert!(names.iter().any(|n| n.eq_ignore_ascii_case("ts")), "{sql}");
                assert_eq!(watermark.column, "ts");
                assert_eq!(watermark.expr.to_string(), "ts - INTERVAL '5' SECOND");
            }
            other => panic!("{sql}: unexpected {other:?}"),
        }
    }
    // A column may be called watermark.
    match RunnelParser::parse("CREATE STREAM s (watermark BIGINT)").unwrap() {
        Statement::CreateRelation {
            create, watermark, ..
        } => {
            assert_eq!(create.columns[0].name.value, "watermark");
            assert!(watermark.is_none());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn extension_errors_are_positioned_syntax_errors() {
    for (sql, at) in [
        ("CREATE STREAM s (a BIGINT, WATERMARK FOR a)", 43),
        ("CREATE STREAM s (a BIGINT) extra", 28),
        ("SHOW PROGRESS now", 15),
        ("FLUSH everything", 7),
    ] {
        let err = parse_statements(sql).unwrap_err();
        assert_eq!(err.sqlstate(), SqlState::SYNTAX_ERROR, "{sql}");
        assert_eq!(err.position(), Some(at), "{sql}: {err}");
    }
    let err = parse_statements(
        "CREATE STREAM s (a TIMESTAMP, WATERMARK FOR a AS a, WATERMARK FOR a AS a)",
    )
    .unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::INVALID_TABLE_DEFINITION);
    let err = parse_statements("CREATE TABLE t (a TIMESTAMP, WATERMARK FOR a AS a)").unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::INVALID_TABLE_DEFINITION);
}

#[test]
fn emit_on_window_close_is_the_views_last_clause() {
    let sql = "CREATE MATERIALIZED VIEW v AS SELECT * FROM t EMIT ON WINDOW CLOSE;";
    match RunnelParser::parse(sql).unwrap() {
        Statement::CreateMaterializedView {
            view,
            emit_on_window_close: true,
            explain: false,
        } => assert_eq!(view.query.to_string(), "SELECT * FROM t"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(matches!(
        RunnelParser::parse(&format!("EXPLAIN {sql}")).unwrap(),
        Statement::CreateMaterializedView {
            emit_on_window_close: true,
            explain: true,
            ..
        }
    ));
    // Inside a string it is data.
    match RunnelParser::parse("CREATE MATERIALIZED VIEW v AS SELECT 'EMIT ON WINDOW CLOSE' AS x")
        .unwrap()
    {
        Statement::CreateMaterializedView {
            emit_on_window_close,
            ..
        } => assert!(!emit_on_window_close),
        other => panic!("unexpected {other:?}"),
    }
}

/// Every statement prints as SQL that parses back to a statement printing the same.
#[test]
fn statements_print_as_sql_that_parses_back() {
    for sql in [
        "CREATE STREAM IF NOT EXISTS \"Clicks\" (user_id BIGINT NOT NULL, ts TIMESTAMP, \
         PRIMARY KEY (user_id), WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE) \
         WITH (connector = 'kafka', topic = 'clicks')",
        "CREATE STREAM s (a BIGINT)",
        "CREATE TABLE t (k INT PRIMARY KEY, v TEXT)",
        "CREATE MATERIALIZED VIEW v AS SELECT k, count(*) FROM t GROUP BY k EMIT ON WINDOW CLOSE",
        "EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT 1",
        "CREATE SINK IF NOT EXISTS out FROM v WITH (connector = 'kafka', topic = 'it''s')",
        "DROP STREAM IF EXISTS a, \"B\" CASCADE",
        "DROP SINK out",
        "DROP MATERIALIZED VIEW v",
        "SHOW MATERIALIZED VIEWS",
        "SHOW PROGRESS",
        "FLUSH",
        "SET LOCAL statement_timeout TO '5s'",
        "SET TIME ZONE DEFAULT",
        "RESET ALL",
        "SHOW TimeZone",
        "BEGIN",
        "SAVEPOINT a",
        "ROLLBACK TO SAVEPOINT a",
        "RELEASE a",
        "COPY t (a, b) FROM STDIN WITH (FORMAT csv, HEADER true)",
        "COPY (SELECT 1) TO STDOUT",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "FETCH 10 FROM c",
        "CLOSE ALL",
        "COMMENT ON TABLE t IS 'it''s'",
        "COMMENT ON MATERIALIZED VIEW v IS NULL",
        "COMMENT ON COLUMN public.t.\"Col\" IS 'c'",
        "SELECT 1",
    ] {
        let first = RunnelParser::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let printed = first.to_string();
        let again = RunnelParser::parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
        assert_eq!(again.to_string(), printed, "{sql}");
        assert_eq!(
            std::mem::discriminant(&first),
            std::mem::discriminant(&again),
            "{sql}"
        );
    }
}

#[test]
fn role_statements() {
    let s = parse_statements(
        "CREATE USER alice WITH PASSWORD 'pw'; CREATE ROLE bob SUPERUSER; \
         ALTER ROLE alice NOLOGIN PASSWORD NULL; ALTER USER bob WITH PASSWORD 'x'; \
         DROP ROLE IF EXISTS alice, bob",
    )
    .unwrap();
    let Statement::CreateRole { name, options, .. } = &s[0].kind else {
        panic!("{:?}", s[0].kind)
    };
    assert_eq!(name, "alice");
    // CREATE USER implies LOGIN; CREATE ROLE does not.
    assert_eq!(options.login, Some(true));
    assert_eq!(options.password, Some(Some("pw".to_string())));
    let Statement::CreateRole { options, .. } = &s[1].kind else {
        panic!("{:?}", s[1].kind)
    };
    assert_eq!((options.login, options.superuser), (None, Some(true)));
    let Statement::AlterRole { options, .. } = &s[2].kind else {
        panic!("{:?}", s[2].kind)
    };
    assert_eq!(
        (options.login, options.password.clone()),
        (Some(false), Some(None))
    );
    assert!(matches!(&s[3].kind, Statement::AlterRole { name, .. } if name == "bob"));
    let Statement::DropRole { names, if_exists } = &s[4].kind else {
        panic!("{:?}", s[4].kind)
    };
    assert_eq!(
        (names.clone(), *if_exists),
        (vec!["alice".into(), "bob".into()], true)
    );
}

#[test]
fn role_passwords_are_never_displayed() {
    let s = parse_statements("CREATE ROLE alice LOGIN PASSWORD 'hunter2'").unwrap();
    assert!(!s[0].kind.to_string().contains("hunter2"));
    assert!(!format!("{:?}", s[0].kind).contains("hunter2"));
    assert_eq!(
        s[0].kind.to_string(),
        "CREATE ROLE alice WITH LOGIN PASSWORD '********'"
    );
}

#[test]
fn role_options_runnel_does_not_keep_are_refused() {
    for sql in [
        "CREATE ROLE a CREATEDB",
        "CREATE ROLE a VALID UNTIL '2030-01-01'",
        "ALTER ROLE a CONNECTION LIMIT 3",
        "ALTER ROLE a RENAME TO b",
    ] {
        let err = parse_one_statement(sql).unwrap_err();
        assert_eq!(
            err.sqlstate(),
            SqlState::FEATURE_NOT_SUPPORTED,
            "{sql}: {err}"
        );
    }
}

fn parse_one_statement(sql: &str) -> Result<Statement> {
    parse_statements(sql).map(|mut s| s.remove(0).kind)
}

#[test]
fn grant_and_revoke() {
    use crate::access::{Privileges, PUBLIC};
    use crate::statement::{GrantStatement, Granted};
    let grant = |sql: &str| match parse_one_statement(sql).unwrap() {
        Statement::Grant(grant) => *grant,
        other => panic!("{sql}: {other:?}"),
    };
    assert_eq!(
        grant("GRANT SELECT, insert ON TABLE t, \"V\" TO alice, PUBLIC"),
        GrantStatement {
            revoke: false,
            granted: Granted::Relations {
                privileges: Privileges::SELECT.union(Privileges::INSERT),
                relations: Some(vec!["t".into(), "V".into()]),
            },
            grantees: vec!["alice".into(), PUBLIC.into()],
        }
    );
    assert_eq!(
        grant("REVOKE ALL PRIVILEGES ON ALL TABLES IN SCHEMA public FROM bob CASCADE").granted,
        Granted::Relations {
            privileges: Privileges::ALL,
            relations: None,
        }
    );
    assert_eq!(
        grant("GRANT CREATE ON SCHEMA public TO bob").granted,
        Granted::CreateOnSchema
    );
    assert_eq!(
        grant("GRANT runnel_kafka TO bob").granted,
        Granted::Roles(vec!["runnel_kafka".into()])
    );
    assert_eq!(
        grant("GRANT SELECT ON STREAM s TO bob").granted,
        Granted::Relations {
            privileges: Privileges::SELECT,
            relations: Some(vec!["s".into()]),
        }
    );
    // A relation called `stream` is a name, not the keyword.
    assert_eq!(
        grant("GRANT SELECT ON stream TO bob").granted,
        Granted::Relations {
            privileges: Privileges::SELECT,
            relations: Some(vec!["stream".into()]),
        }
    );
    for sql in [
        "GRANT TRUNCATE ON t TO bob",
        "GRANT SELECT ON t TO bob WITH GRANT OPTION",
        "REVOKE GRANT OPTION FOR SELECT ON t FROM bob",
    ] {
        let err = parse_one_statement(sql).unwrap_err();
        assert_eq!(
            err.sqlstate(),
            SqlState::FEATURE_NOT_SUPPORTED,
            "{sql}: {err}"
        );
    }
    assert_eq!(
        parse_one_statement("GRANT CREATE ON SCHEMA other TO bob")
            .unwrap_err()
            .sqlstate(),
        SqlState("3F000")
    );
}

#[test]
fn subscribe_statements() {
    use crate::statement::{CopySource, SubscribeSpec};
    let spec = |relation: &str, snapshot, progress| SubscribeSpec {
        relation: relation.into(),
        snapshot,
        progress,
    };
    assert!(matches!(
        parse_one_statement("SUBSCRIBE v").unwrap(),
        Statement::Subscribe(s) if s == spec("v", true, false)
    ));
    assert!(matches!(
        parse_one_statement("SUBSCRIBE TO v WITH (SNAPSHOT = false, progress)").unwrap(),
        Statement::Subscribe(s) if s == spec("v", false, true)
    ));
    match parse_one_statement(
        "COPY (SUBSCRIBE v WITH (snapshot = false)) TO STDOUT WITH (FORMAT csv)",
    )
    .unwrap()
    {
        Statement::CopyTo {
            source: CopySource::Subscribe(s),
            options,
        } => {
            assert_eq!(s, spec("v", false, false));
            assert!(options.csv);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_one_statement("DECLARE c CURSOR WITH HOLD FOR SUBSCRIBE v").unwrap(),
        Statement::DeclareSubscribe { name, subscribe, hold: true }
            if name == "c" && subscribe == spec("v", true, false)
    ));
    assert!(matches!(
        parse_one_statement("FETCH 10 c WITH (timeout = '1.5s')").unwrap(),
        Statement::Fetch { name, count: Some(10), timeout: Some(t) }
            if name == "c" && t == std::time::Duration::from_millis(1500)
    ));
    assert!(matches!(
        parse_one_statement("FETCH ALL FROM c").unwrap(),
        Statement::Fetch {
            count: None,
            timeout: None,
            ..
        }
    ));
    assert!(parse_one_statement("SUBSCRIBE v WITH (colour = true)").is_err());
    assert!(parse_one_statement("FETCH 1 c WITH (timeout = 'soon')").is_err());
}

#[test]
fn fetch_without_from() {
    assert!(matches!(
        parse_one_statement("FETCH 5 c").unwrap(),
        Statement::Fetch { name, count: Some(5), .. } if name == "c"
    ));
    assert!(matches!(
        parse_one_statement("FETCH NEXT c;").unwrap(),
        Statement::Fetch { name, count: Some(1), .. } if name == "c"
    ));
}

fn nested(open: &str, inner: &str, close: &str, depth: usize) -> String {
    format!(
        "SELECT {}{inner}{}",
        open.repeat(depth),
        close.repeat(depth)
    )
}

#[test]
fn speculative_nesting_is_refused_as_too_complex_not_parsed_for_hours() {
    // Past the recursion limit, every level retried its `ARRAY` as an identifier: with the
    // default limit of 50, 48 levels took 2^48 tries.
    let err = parse_one(&nested("ARRAY[", "1", "]", 120)).unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::STATEMENT_TOO_COMPLEX, "{err}");
    // A syntax error under nested CASTs: every level tried four ways.
    let cast_error = format!(
        "SELECT {}1 + AS INT){}",
        "CAST(".repeat(24),
        " AS INT)".repeat(23)
    );
    let err = parse_one(&cast_error).unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::STATEMENT_TOO_COMPLEX, "{err}");
    // Through the statement parser too.
    let err = parse_statements(&nested("CAST(", "1", " AS INT)", 120)).unwrap_err();
    assert_eq!(err.sqlstate(), SqlState::STATEMENT_TOO_COMPLEX, "{err}");
}

#[test]
fn deep_but_linear_statements_still_parse() {
    for sql in [
        nested("ARRAY[", "1", "]", 60),
        nested("CAST(", "1", " AS INT)", 60),
        nested("replace(", "x", ", 'a', 'b')", 30),
        nested("f(a => ", "1", ")", 30),
        nested("CASE WHEN x > 1 THEN ", "1", " END", 40),
        nested("(", "1", ")", 90),
        format!("SELECT {}1", "1 + ".repeat(900)),
        vec!["SELECT 1"; 900].join(" UNION ALL "),
    ] {
        parse_one(&sql).unwrap_or_else(|e| panic!("{e}: {}", &sql[..60]));
    }
    // A small syntax error under a little nesting is still reported as one.
    let small = format!(
        "SELECT {}1 + AS INT){}",
        "CAST(".repeat(4),
        " AS INT)".repeat(3)
    );
    assert_eq!(
        parse_one(&small).unwrap_err().sqlstate(),
        SqlState::SYNTAX_ERROR
    );
}

/// The budgeted dialect parses exactly as sqlparser's PostgreSQL dialect does, on statements
/// that depend on the choices that dialect makes, but for named function arguments: their
/// names are identifiers, not expressions.
#[test]
fn budgeted_dialect_parses_as_postgres_does() {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    let corpus = [
        "SELECT E'a\\nb', U&'d\\0061t\\+000061', x::int[], 'a' || \"B c\" FROM t",
        "SELECT 5 !, 1 << 2, 8 >> 1, a NOTNULL, b ISNULL, 1_000_000, '{1}'::int[]",
        "SELECT a @> b, a <@ b, a ~ 'x', a !~* 'y', a ->> 'k', a #>> '{k}', a -> 0",
        "SELECT extract('year' FROM ts), trim(both 'x' from y), ts AT TIME ZONE 'UTC'",
        "SELECT count(*) FILTER (WHERE x > 0), f(1, 'a', x) FROM t GROUP BY ROLLUP (a)",
        "SELECT point '(1,2)', xml '<a/>', INTERVAL '1 day' HOUR, /* a /* nested */ c */ 1",
        "COMMENT ON TABLE t IS 'x'",
        "LISTEN ch",
        "CREATE TABLE t2 (LIKE t)",
        "EXPLAIN (ANALYZE, VERBOSE) SELECT 1",
        "SELECT * FROM t AS a(x, y) WHERE x NOT BETWEEN 1 AND 2 AND y IS DISTINCT FROM 3",
        "INSERT INTO t AS tt VALUES (1) ON CONFLICT (a) DO NOTHING",
        "SELECT 2 ^ 3 * -4 % 5 OPERATOR(pg_catalog.+) 1",
        "SELECT ARRAY[1, 2][1], (ARRAY[ROW(1, 2)])[1]",
        "SET NAMES 'UTF8'",
    ];
    for sql in corpus {
        let postgres = Parser::parse_sql(&PostgreSqlDialect {}, sql);
        let budgeted = Parser::parse_sql(&dialect::BudgetedDialect::new(1_000_000), sql);
        assert_eq!(
            format!("{postgres:?}"),
            format!("{budgeted:?}"),
            "differs on {sql}"
        );
        assert!(postgres.is_ok(), "{sql}: {postgres:?}");
    }
    let named = Parser::parse_sql(&dialect::BudgetedDialect::new(1_000), "SELECT f(a => 1)");
    assert!(
        format!("{named:?}").contains("Named { name: Ident"),
        "{named:?}"
    );
}
