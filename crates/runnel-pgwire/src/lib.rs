//! The PostgreSQL v3 frontend/backend wire protocol, server side, on tokio.
//!
//! This crate owns everything between a TCP socket and the database: the startup handshake
//! (SSL and GSS encryption are declined, any user is accepted without a password), the simple
//! and extended query protocols, `COPY ... FROM STDIN` and its text and CSV data formats, error reporting, and the translation
//! of Arrow result columns to Postgres types and their text and binary wire formats. It knows
//! nothing about SQL: statements are opaque values of a [`PgSession`], which the database
//! implements together with [`PgEngine`].
//!
//! Serve an engine with [`serve`] (a listener) or [`serve_connection`] (one socket).

pub mod codec;
pub mod copy_format;
pub mod engine;
pub mod error;
mod server;
pub mod types;

pub use engine::{
    CopyInSink, ParamValue, PgEngine, PgSession, QueryResponse, StartupInfo, StatementDescription,
    TransactionStatus,
};
pub use error::PgError;
pub use server::{serve, serve_connection};
pub use types::{arrow_type_for_oid, oid, pg_type, type_name, Format, PgType};
