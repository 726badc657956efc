//! Fuzz properties of the parser: any text — grammar-generated statements of Runnel's surface,
//! mutations of them, token soup, arbitrary strings — splits and parses into statements or a
//! typed error with a real SQLSTATE, never a panic, and splitting agrees with parsing; and
//! statements nested or chained thousands deep, the shapes the recursion limit, the work
//! budget and the nesting check ([`crate::complexity`]) bound, are parsed or refused.

use proptest::prelude::*;
use runnel_common::SqlState;
use runnel_fuzz::sql::any_sql;

use super::*;

/// Whether `sql` parses to statements or to a user-facing error (never `XX000`, which says
/// Runnel itself is wrong).
fn check(sql: &str) -> std::result::Result<(), TestCaseError> {
    match parse_statements(sql) {
        Ok(statements) => {
            let parts = split_statements(sql).expect("what parses also splits");
            prop_assert_eq!(statements.len(), parts.len());
            for (statement, part) in statements.iter().zip(&parts) {
                prop_assert_eq!(&statement.sql, part);
                prop_assert!(!part.is_empty());
            }
        }
        Err(e) => prop_assert_ne!(e.sqlstate(), SqlState::INTERNAL_ERROR, "{}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(runnel_fuzz::config(4096))]

    #[test]
    fn fuzz_sql_parse_any_text(sql in any_sql()) {
        check(&sql)?;
    }

    /// Several statements in one string, as a simple query sends them.
    #[test]
    fn fuzz_sql_parse_statement_lists(parts in prop::collection::vec(any_sql(), 1..4)) {
        check(&parts.join("; "))?;
    }
}

/// One level of a deep statement: what wraps (`{}` is the inner part) or extends it.
const LEVELS: &[&str] = &[
    "({})",
    "-{}",
    "NOT {}",
    "abs({})",
    "coalesce({}, 1)",
    "CAST({} AS BIGINT)",
    "{}::int",
    "ARRAY[{}]",
    "CASE WHEN {} THEN 1 END",
    "(SELECT {})",
    "{} + 1",
    "1 + {}",
    "{} IN (1, 2)",
    "{} OVER ()",
    "{} IS NULL",
];

/// A statement whose select list is `depth` levels of one or two shapes around `1` (or a
/// syntax error, innermost), or a chain of `depth` set operations or joins.
fn deep_statement() -> impl Strategy<Value = String> {
    let nested = (
        prop::sample::select(LEVELS),
        prop::sample::select(LEVELS),
        1usize..2000,
        prop::sample::select(vec!["1", "1 +", ")", "SELECT"]),
    )
        .prop_map(|(a, b, depth, core)| {
            let mut expr = core.to_string();
            for level in 0..depth {
                let shape = if level % 2 == 0 { a } else { b };
                expr = shape.replacen("{}", &expr, 1);
            }
            format!("SELECT {expr}")
        });
    let chained = (
        prop::sample::select(vec![" UNION ALL SELECT 1", " JOIN t USING (a)", ", 1"]),
        1usize..2000,
    )
        .prop_map(|(link, depth)| format!("SELECT 1 FROM t{}", link.repeat(depth)));
    prop_oneof![nested, chained]
}

proptest! {
    #![proptest_config(runnel_fuzz::config(256))]

    #[test]
    fn fuzz_sql_parse_deep_statements(sql in deep_statement()) {
        // On a thread with the stack the server plans on (`THREAD_STACK_BYTES` in
        // runnel-runtime): the bounds are sized for it, not for a test thread's 2 MiB.
        let outcome = std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || check(&sql).map_err(|e| e.to_string()))
            .expect("a parser thread")
            .join()
            .expect("parsing never panics");
        outcome.map_err(TestCaseError::fail)?;
    }
}
