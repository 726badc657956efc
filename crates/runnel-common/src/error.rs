//! Errors, classified by whose fault they are. Each variant maps to a Postgres SQLSTATE so that
//! the wire layer can answer with an ErrorResponse a client can act on.

use datafusion::error::DataFusionError;

pub type Result<T, E = RunnelError> = std::result::Result<T, E>;

/// Postgres SQLSTATE codes Runnel answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqlState(pub &'static str);

impl SqlState {
    pub const SYNTAX_ERROR: SqlState = SqlState("42601");
    /// The class of statement errors, for a planning error without a more precise cause.
    pub const STATEMENT_ERROR: SqlState = SqlState("42000");
    pub const AMBIGUOUS_COLUMN: SqlState = SqlState("42702");
    pub const UNDEFINED_TABLE: SqlState = SqlState("42P01");
    pub const UNDEFINED_COLUMN: SqlState = SqlState("42703");
    pub const UNDEFINED_FUNCTION: SqlState = SqlState("42883");
    pub const DUPLICATE_TABLE: SqlState = SqlState("42P07");
    pub const DUPLICATE_COLUMN: SqlState = SqlState("42701");
    pub const DATATYPE_MISMATCH: SqlState = SqlState("42804");
    pub const GROUPING_ERROR: SqlState = SqlState("42803");
    pub const INVALID_TABLE_DEFINITION: SqlState = SqlState("42P16");
    pub const WRONG_OBJECT_TYPE: SqlState = SqlState("42809");
    pub const INVALID_PARAMETER_VALUE: SqlState = SqlState("22023");
    pub const DEPENDENT_OBJECTS_STILL_EXIST: SqlState = SqlState("2BP01");
    pub const UNIQUE_VIOLATION: SqlState = SqlState("23505");
    pub const NOT_NULL_VIOLATION: SqlState = SqlState("23502");
    pub const STRING_DATA_RIGHT_TRUNCATION: SqlState = SqlState("22001");
    pub const INVALID_TEXT_REPRESENTATION: SqlState = SqlState("22P02");
    pub const DATA_EXCEPTION: SqlState = SqlState("22000");
    pub const DIVISION_BY_ZERO: SqlState = SqlState("22012");
    pub const NUMERIC_VALUE_OUT_OF_RANGE: SqlState = SqlState("22003");
    pub const INVALID_DATETIME_FORMAT: SqlState = SqlState("22007");
    pub const DATETIME_FIELD_OVERFLOW: SqlState = SqlState("22008");
    pub const FEATURE_NOT_SUPPORTED: SqlState = SqlState("0A000");
    pub const DUPLICATE_OBJECT: SqlState = SqlState("42710");
    pub const UNDEFINED_OBJECT: SqlState = SqlState("42704");
    pub const INSUFFICIENT_PRIVILEGE: SqlState = SqlState("42501");
    pub const OBJECT_IN_USE: SqlState = SqlState("55006");
    /// A relation that cannot be used as it is (a materialized view that stopped updating).
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: SqlState = SqlState("55000");
    pub const SYSTEM_ERROR: SqlState = SqlState("58000");
    pub const INTERNAL_ERROR: SqlState = SqlState("XX000");
    pub const PROTOCOL_VIOLATION: SqlState = SqlState("08P01");
    /// The server could not reach a system it depends on (a Kafka broker).
    pub const CONNECTION_EXCEPTION: SqlState = SqlState("08001");
    /// A statement beyond what the server parses or plans (Postgres: nesting past its stack
    /// depth limit).
    pub const STATEMENT_TOO_COMPLEX: SqlState = SqlState("54001");
    pub const PROGRAM_LIMIT_EXCEEDED: SqlState = SqlState("54000");
    /// A query needed more memory than it may hold (`--query-memory-mb`).
    pub const OUT_OF_MEMORY: SqlState = SqlState("53200");
    pub const DISK_FULL: SqlState = SqlState("53100");
}

/// A Runnel error. The variant says whose fault it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunnelError {
    /// The user's statement is wrong (unknown name, type mismatch, syntax ...).
    #[error("{message}")]
    Plan {
        state: SqlState,
        message: String,
        /// 1-based character position in the statement, where one applies.
        position: Option<u32>,
    },
    /// A valid statement Runnel does not support (yet); the message names the construct.
    #[error("{0}")]
    NotImplemented(String),
    /// The data made a statement fail while running (bad cast, duplicate key, ...).
    #[error("{message}")]
    Execution { state: SqlState, message: String },
    /// The statement is valid but the session's role may not run it (42501).
    #[error("{0}")]
    PermissionDenied(String),
    /// Something outside Runnel failed: the disk, RocksDB, the network.
    #[error("{0}")]
    External(String),
    /// A bug in Runnel.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RunnelError {
    pub fn plan(state: SqlState, message: impl Into<String>) -> Self {
        RunnelError::Plan {
            state,
            message: message.into(),
            position: None,
        }
    }

    pub fn not_implemented(message: impl Into<String>) -> Self {
        RunnelError::NotImplemented(message.into())
    }

    pub fn execution(state: SqlState, message: impl Into<String>) -> Self {
        RunnelError::Execution {
            state,
            message: message.into(),
        }
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        RunnelError::PermissionDenied(message.into())
    }

    pub fn internal(message: impl Into<String>) -> Self {
        RunnelError::Internal(message.into())
    }

    pub fn external(message: impl Into<String>) -> Self {
        RunnelError::External(message.into())
    }

    pub fn sqlstate(&self) -> SqlState {
        match self {
            RunnelError::Plan { state, .. } | RunnelError::Execution { state, .. } => *state,
            RunnelError::NotImplemented(_) => SqlState::FEATURE_NOT_SUPPORTED,
            RunnelError::PermissionDenied(_) => SqlState::INSUFFICIENT_PRIVILEGE,
            RunnelError::External(_) => SqlState::SYSTEM_ERROR,
            RunnelError::Internal(_) => SqlState::INTERNAL_ERROR,
        }
    }

    pub fn position(&self) -> Option<u32> {
        match self {
            RunnelError::Plan { position, .. } => *position,
            _ => None,
        }
    }

    /// Attaches a statement position to a planning error.
    pub fn with_position(self, pos: Option<u32>) -> Self {
        match self {
            RunnelError::Plan {
                state,
                message,
                position: None,
            } => RunnelError::Plan {
                state,
                message,
                position: pos,
            },
            other => other,
        }
    }
}

impl From<DataFusionError> for RunnelError {
    fn from(err: DataFusionError) -> Self {
        classify_datafusion(err)
    }
}

impl From<datafusion::arrow::error::ArrowError> for RunnelError {
    fn from(err: datafusion::arrow::error::ArrowError) -> Self {
        classify_arrow(&err)
    }
}

fn classify_arrow(err: &datafusion::arrow::error::ArrowError) -> RunnelError {
    use datafusion::arrow::error::ArrowError;
    match err {
        ArrowError::DivideByZero => {
            RunnelError::execution(SqlState::DIVISION_BY_ZERO, "division by zero")
        }
        ArrowError::CastError(m)
        | ArrowError::ParseError(m)
        | ArrowError::InvalidArgumentError(m) => {
            RunnelError::execution(SqlState::INVALID_TEXT_REPRESENTATION, m.clone())
        }
        ArrowError::ComputeError(m) => RunnelError::execution(SqlState::DATA_EXCEPTION, m.clone()),
        ArrowError::ArithmeticOverflow(m) => {
            RunnelError::execution(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, m.clone())
        }
        ArrowError::NotYetImplemented(m) => RunnelError::NotImplemented(m.clone()),
        ArrowError::IoError(m, _) => RunnelError::External(m.clone()),
        other => RunnelError::execution(SqlState::DATA_EXCEPTION, other.to_string()),
    }
}

/// DataFusion's errors by variant. A `Plan` error carries only a message, which Runnel never
/// reads: the query handlers name the cause themselves (`plan_diagnosis` in the server crate)
/// and this is the SQLSTATE when they cannot (42000, the class of statement errors).
fn classify_datafusion(err: DataFusionError) -> RunnelError {
    use datafusion::common::SchemaError;
    match err {
        DataFusionError::SchemaError(schema_err, _) => {
            let message = schema_err.to_string();
            let state = match *schema_err {
                SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
                SchemaError::DuplicateQualifiedField { .. }
                | SchemaError::DuplicateUnqualifiedField { .. } => SqlState::DUPLICATE_COLUMN,
                SchemaError::AmbiguousReference { .. } => SqlState::AMBIGUOUS_COLUMN,
            };
            RunnelError::plan(state, message)
        }
        DataFusionError::SQL(e, _) => RunnelError::plan(SqlState::SYNTAX_ERROR, e.to_string()),
        DataFusionError::Plan(m) => RunnelError::plan(SqlState::STATEMENT_ERROR, m),
        DataFusionError::NotImplemented(m) => RunnelError::NotImplemented(m),
        DataFusionError::ArrowError(e, _) => classify_arrow(&e),
        DataFusionError::Execution(m) => RunnelError::execution(SqlState::DATA_EXCEPTION, m),
        DataFusionError::ResourcesExhausted(m) => out_of_memory(&m),
        DataFusionError::External(e) => match e.downcast::<RunnelError>() {
            Ok(runnel) => *runnel,
            Err(other) => RunnelError::External(other.to_string()),
        },
        DataFusionError::Context(ctx, inner) => {
            let inner = classify_datafusion(*inner);
            match inner {
                RunnelError::Plan {
                    state,
                    message,
                    position,
                } => RunnelError::Plan {
                    state,
                    message: format!("{ctx}: {message}"),
                    position,
                },
                other => other,
            }
        }
        // An error several partitions share (a hash join's build side): the cause is its root.
        DataFusionError::Shared(shared) => match std::sync::Arc::try_unwrap(shared) {
            Ok(error) => classify_datafusion(error),
            // Still shared (other partitions hold it): classify the root by reference, so a
            // division by zero in a grouped aggregate's argument is 22012, not XX000.
            Err(shared) => match shared.find_root() {
                DataFusionError::ResourcesExhausted(m) => out_of_memory(m),
                DataFusionError::ArrowError(e, _) => classify_arrow(e),
                DataFusionError::External(e) => match e.downcast_ref::<RunnelError>() {
                    Some(runnel) => runnel.clone(),
                    None => RunnelError::External(e.to_string()),
                },
                DataFusionError::Execution(m) => {
                    RunnelError::execution(SqlState::DATA_EXCEPTION, m.clone())
                }
                _ => RunnelError::Internal(shared.to_string()),
            },
        },
        DataFusionError::IoError(e) => RunnelError::External(e.to_string()),
        DataFusionError::Diagnostic(_, inner) => classify_datafusion(*inner),
        DataFusionError::Collection(mut errs) => match errs.pop() {
            Some(e) => classify_datafusion(e),
            None => RunnelError::internal("empty DataFusion error collection"),
        },
        other => RunnelError::Internal(other.to_string()),
    }
}

fn out_of_memory(detail: &str) -> RunnelError {
    RunnelError::execution(
        SqlState::OUT_OF_MEMORY,
        format!("out of memory: the query needs more than its memory limit (--query-memory-mb): {detail}"),
    )
}
