//! Runnel's SQL frontend: the parser (sqlparser's PostgreSQL parser wrapped so Runnel's statement
//! extensions are parsed from tokens) and the typed statements, CREATE STREAM/TABLE definitions, the catalog's objects, and the
//! lowering of DataFusion logical plans to the streaming plan IR. No I/O happens here.

pub mod access;
pub mod asof;
pub mod catalog;
pub mod complexity;
pub mod ddl;
pub mod epoch_bin;
pub mod event_time;
pub mod exact_aggregates;
pub mod float_extremes;
pub mod integer_range;
pub mod interval_literals;
pub mod json;
pub mod lower;
pub mod parser;
pub mod pg_compat;
pub mod pg_numbers;
pub mod session_window;
pub mod share;
pub mod statement;
pub mod temporal;
pub mod text_type_casts;
pub mod whole_row;
pub mod windows;

pub use catalog::{Catalog, CatalogEntry, StoredEntry, StoredKind};
pub use ddl::{relation_def, RelationDef};
pub use lower::{check_view_plan, lower_view, RelationInfo, RelationResolver};
pub use parser::parse_statements;
pub use statement::{
    GrantStatement, Granted, ObjectKind, ParsedStatement, RoleOptions, ShowKind, Statement,
    WatermarkClause,
};
