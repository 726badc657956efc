//! Runnel's side of the PostgreSQL v3 wire protocol, on the `pgwire` crate.
//!
//! `pgwire` owns the socket and the protocol: TLS negotiation (on rustls, when the server has
//! a certificate), message framing, the startup handshake and SCRAM-SHA-256's exchange, the
//! simple and extended query flows, the COPY sub-protocol, portals and cancel keys. This crate keeps what is Runnel's: the contract with
//! the database ([`PgEngine`] opens a [`PgSession`] per connection; statements are opaque to
//! the protocol; it decides how each connection authenticates and keeps the users' verifiers,
//! [`auth`]), the handlers that drive a session from `pgwire`'s messages (the `server`
//! module), the translation of Arrow result columns to Postgres types and their text and binary
//! wire formats ([`types`]), and COPY's text, CSV and binary data formats ([`copy_format`]).
//!
//! Serve an engine with [`serve`].

pub mod auth;
pub mod copy_format;
pub mod engine;
pub mod error;
mod server;
pub mod types;

pub use engine::{
    batch_stream, BatchStream, CopyInSink, ParamValue, PgEngine, PgSession, QueryResponse,
    StartupInfo, StatementDescription, TransactionStatus,
};
pub use error::PgError;
/// TLS for [`ServeOptions`]: the acceptor type and the rustls it is built with.
pub use pgwire::tokio::{tokio_rustls::rustls, TlsAcceptor};
pub use server::{serve, ServeOptions};
pub use types::{
    arrow_type_for_oid, oid, pg_type, pg_type_of, type_name, Format, PgType, PG_TYPE_METADATA_KEY,
};

#[cfg(test)]
mod copy_format_fuzz;
