//! Why text did not become an integer, as Postgres's integer input says it: a number that does
//! not fit the type is out of range (22003, `value "99999999999" is out of range for type
//! integer`); anything else is not an integer (22P02, `invalid input syntax for type integer`).
//!
//! Arrow's cast reports both as the same cast error, so the reason is read off the text only
//! once the cast has failed (never on the path of text that parses).

use datafusion::arrow::datatypes::DataType;

use crate::{RunnelError, SqlState};

/// Postgres's name of an integer type (`Int16`, `Int32`, `Int64`), as its errors say it.
pub fn integer_type_name(target: &DataType) -> &'static str {
    match target {
        DataType::Int16 => "smallint",
        DataType::Int32 => "integer",
        _ => "bigint",
    }
}

/// Whether `text` is an integer as Postgres writes one (surrounding spaces, a sign, digits).
fn is_integer_text(text: &str) -> bool {
    let digits = text.trim().trim_start_matches(['+', '-']);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && text.trim().len() - digits.len() <= 1
}

/// The error for `text` that a strict cast to the integer type `target` refused; `context`
/// (such as ` (parameter $1)`) is appended to the message.
pub fn integer_input_error(text: &str, target: &DataType, context: &str) -> RunnelError {
    let name = integer_type_name(target);
    if is_integer_text(text) {
        RunnelError::execution(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!("value \"{text}\" is out of range for type {name}{context}"),
        )
    } else {
        RunnelError::execution(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type {name}: \"{text}\"{context}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(text: &str, target: DataType) -> &'static str {
        integer_input_error(text, &target, "").sqlstate().0
    }

    #[test]
    fn digits_that_do_not_fit_are_out_of_range_and_the_rest_bad_input() {
        assert_eq!(state("99999999999", DataType::Int32), "22003");
        assert_eq!(state(" -70000 ", DataType::Int16), "22003");
        assert_eq!(state("+99999999999999999999", DataType::Int64), "22003");
        assert_eq!(state("12a", DataType::Int32), "22P02");
        assert_eq!(state("", DataType::Int32), "22P02");
        assert_eq!(state("--1", DataType::Int32), "22P02");
        assert_eq!(state("1.5", DataType::Int32), "22P02");
        assert_eq!(state("+-", DataType::Int32), "22P02");
    }
}
