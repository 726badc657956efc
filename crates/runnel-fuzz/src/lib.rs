//! What Runnel's property-based fuzz tests share (a dev-dependency only): their configuration
//! ([`config`]), generators of Runnel SQL ([`sql`]) and of frontend wire traffic with a way to
//! send it ([`wire`]).
//!
//! Every crate keeps its fuzz targets next to the code they exercise, as `proptest` properties
//! whose names start with `fuzz_`, and builds its [`ProptestConfig`] with [`config`]. The CI run
//! (`cargo test --workspace`) uses each property's bounded default number of cases; a long run
//! raises them all with one variable:
//!
//! ```text
//! RUNNEL_FUZZ_CASES=100000 cargo test -j2 --workspace fuzz_
//! ```
//!
//! Failures are not persisted to `proptest-regressions/` files: every input that ever failed
//! becomes a plain `#[test]` with that input, next to the property that found it.

use proptest::test_runner::Config as ProptestConfig;

/// The environment variable that sets the number of cases of every fuzz property.
pub const CASES_VAR: &str = "RUNNEL_FUZZ_CASES";

/// The number of cases a property runs: `RUNNEL_FUZZ_CASES` if set, else proptest's own
/// `PROPTEST_CASES` if set, else `default_cases` (sized so all fuzz tests together stay within a
/// few minutes of a debug CI build).
///
/// # Panics
///
/// If `RUNNEL_FUZZ_CASES` is set but is not a positive integer: a long run that silently fell
/// back to the CI default would look like a pass.
pub fn cases(default_cases: u32) -> u32 {
    if let Ok(value) = std::env::var(CASES_VAR) {
        return match value.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{CASES_VAR} must be a positive integer, got {value:?}"),
        };
    }
    match std::env::var("PROPTEST_CASES") {
        Ok(value) => value.trim().parse().unwrap_or(default_cases),
        Err(_) => default_cases,
    }
}

/// A [`ProptestConfig`] running [`cases`]`(default_cases)` cases, without failure persistence.
pub fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

pub mod sql;
pub mod wire;
