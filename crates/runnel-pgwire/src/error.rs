//! The error a client sees: an ErrorResponse with severity, SQLSTATE, message and position.

/// A Postgres ErrorResponse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{sqlstate}: {message}")]
pub struct PgError {
    /// `ERROR` or `FATAL`.
    pub severity: &'static str,
    /// Five-character SQLSTATE, e.g. `42P01`.
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// 1-based character position in the statement text the error points at.
    pub position: Option<u32>,
}

impl PgError {
    pub fn new(sqlstate: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: "ERROR",
            sqlstate: sqlstate.into(),
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
        }
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new("08P01", message)
    }

    pub fn fatal(mut self) -> Self {
        self.severity = "FATAL";
        self
    }
}
