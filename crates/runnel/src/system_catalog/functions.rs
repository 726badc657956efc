//! The Postgres functions client tools call on connecting and when they read the catalog:
//! session information (`version()`, `current_user`, `current_setting()`), catalog lookups
//! (`format_type()`, `pg_get_userbyid()`, `pg_get_viewdef()`, `to_regclass()`), privilege
//! checks, and the `to_*_oid` / `*_name` functions that reg-type casts are rewritten into
//! (see `runnel_sql::pg_compat`). They read the same catalog snapshot as the catalog tables.
//!
//! Every function takes its arguments as any type and converts them as Postgres's implicit
//! casts would (a name given as text, an OID given as an integer).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int32Array, Int64Array, ListBuilder, StringArray,
    StringBuilder, UInt32Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::{exec_datafusion_err, Result as DfResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use runnel_common::{RunnelError, SqlState};
use runnel_pgwire::oid;
use runnel_sql::Catalog;
use runnel_state::log_index;

use super::oids::{self, UserObject};
use super::pg_catalog::{
    index_definition, key_columns, primary_key_name, role_name, roles, system_relation_name,
    system_relation_oid, view_definition,
};
use super::types::{format_type, lookup_type};
use super::{SessionIdentity, Snapshot};
use crate::privileges::Principal;
use crate::settings::POSTGRES_VERSION;
use crate::shared::Shared;
use runnel_sql::access::Privileges;

/// What a function body sees: its arguments as arrays of the batch's length, and the session.
struct Call<'a> {
    args: &'a [ArrayRef],
    rows: usize,
    catalog: &'a Catalog,
    session: &'a SessionIdentity,
    store: &'a runnel_state::Store,
    roles: &'a crate::roles::RoleMap,
}

impl Call<'_> {
    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            catalog: self.catalog,
            session: self.session,
            roles: self.roles,
        }
    }

    /// Whether `oid` is one of the catalog tables (which have no size of their own).
    fn catalog_relation_exists(&self, oid: u32) -> bool {
        system_relation_name(oid).is_some()
    }

    fn has(&self, index: usize) -> bool {
        index < self.args.len()
    }

    fn text(&self, index: usize) -> DfResult<StringArray> {
        let array = cast(&self.args[index], &DataType::Utf8)?;
        Ok(array.as_string::<i32>().clone())
    }

    fn oid(&self, index: usize) -> DfResult<UInt32Array> {
        let array = cast(&self.args[index], &DataType::UInt32)?;
        Ok(array
            .as_primitive::<datafusion::arrow::datatypes::UInt32Type>()
            .clone())
    }

    fn int(&self, index: usize) -> DfResult<Int64Array> {
        let array = cast(&self.args[index], &DataType::Int64)?;
        Ok(array
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .clone())
    }

    fn bool(&self, index: usize) -> DfResult<BooleanArray> {
        let array = cast(&self.args[index], &DataType::Boolean)?;
        Ok(array.as_boolean().clone())
    }

    /// Whether argument `index` is a string (a name) rather than a number (an OID).
    fn is_text(&self, index: usize) -> bool {
        matches!(
            self.args[index].data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        )
    }

    fn each_text(&self, f: impl Fn(usize) -> DfResult<Option<String>>) -> DfResult<ArrayRef> {
        let values = (0..self.rows).map(f).collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(StringArray::from(values)))
    }

    fn each_oid(&self, f: impl Fn(usize) -> DfResult<Option<u32>>) -> DfResult<ArrayRef> {
        let values = (0..self.rows).map(f).collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(UInt32Array::from(values)))
    }

    fn each_bool(&self, f: impl Fn(usize) -> DfResult<Option<bool>>) -> DfResult<ArrayRef> {
        let values = (0..self.rows).map(f).collect::<DfResult<Vec<_>>>()?;
        Ok(Arc::new(BooleanArray::from(values)))
    }

    /// Text from the OID in argument 0, for each non-NULL row.
    fn oid_to_text(&self, f: impl Fn(u32) -> String) -> DfResult<ArrayRef> {
        let ids = self.oid(0)?;
        self.each_text(|row| Ok(value(&ids, row).map(|r| f(ids.value(r)))))
    }

    /// Text from the text in argument 0, for each non-NULL row.
    fn text_to_text(&self, f: impl Fn(&str) -> String) -> DfResult<ArrayRef> {
        let values = self.text(0)?;
        self.each_text(|row| Ok(value(&values, row).map(|r| f(values.value(r)))))
    }

    fn constant_text(&self, value: Option<&str>) -> ArrayRef {
        Arc::new(StringArray::from(vec![value; self.rows]))
    }
}

fn value<T: Array>(array: &T, row: usize) -> Option<usize> {
    (!array.is_null(row)).then_some(row)
}

type Body = dyn Fn(&Call<'_>) -> DfResult<ArrayRef> + Send + Sync;

/// One catalog function.
struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    body: Box<Body>,
    shared: Arc<Shared>,
    session: SessionIdentity,
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args
            .args
            .iter()
            .map(|a| a.to_array(rows))
            .collect::<DfResult<Vec<_>>>()?;
        let catalog = self.shared.catalog.snapshot();
        let roles = self.shared.roles.snapshot();
        let call = Call {
            args: &arrays,
            rows,
            catalog: &catalog,
            session: &self.session,
            store: &self.shared.store,
            roles: &roles,
        };
        let result = (self.body)(&call)?;
        let result = if result.data_type() == &self.returns {
            result
        } else {
            cast(&result, &self.returns)?
        };
        Ok(ColumnarValue::Array(result))
    }
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

/// (name, accepted argument counts, result type, volatility, body).
type Definition = (
    &'static str,
    &'static [usize],
    DataType,
    Volatility,
    Box<Body>,
);

fn definitions() -> Vec<Definition> {
    use Volatility::{Stable, Volatile};
    let text = || DataType::Utf8;
    let mut defs: Vec<Definition> = vec![
        (
            "version",
            &[0],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let version = format!(
                "PostgreSQL {POSTGRES_VERSION} (Runnel {}) on {}-linux, compiled by rustc, 64-bit",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            );
                Ok(c.constant_text(Some(&version)))
            }),
        ),
        (
            "current_database",
            &[0],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| Ok(c.constant_text(Some(&c.session.database)))),
        ),
        (
            "current_schema",
            &[0],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let path = c.session.settings.search_path();
                Ok(c.constant_text(path.first().copied()))
            }),
        ),
        (
            "current_schemas",
            &[1],
            text_list(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let implicit = c.bool(0)?;
                let path = c.session.settings.search_path();
                let mut builder = ListBuilder::new(StringBuilder::new());
                for row in 0..c.rows {
                    // pg_catalog is searched first when the path does not name it.
                    if implicit.is_valid(row)
                        && implicit.value(row)
                        && !path.contains(&"pg_catalog")
                    {
                        builder.values().append_value("pg_catalog");
                    }
                    for schema in &path {
                        builder.values().append_value(schema);
                    }
                    builder.append(true);
                }
                Ok(Arc::new(builder.finish()))
            }),
        ),
        (
            "current_setting",
            &[1, 2],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let names = c.text(0)?;
                let missing_ok = if c.has(1) { Some(c.bool(1)?) } else { None };
                c.each_text(|row| {
                    let Some(row) = value(&names, row) else {
                        return Ok(None);
                    };
                    match c.session.settings.get(names.value(row)) {
                        Ok(v) => Ok(Some(v)),
                        Err(_)
                            if missing_ok
                                .as_ref()
                                .is_some_and(|m| m.is_valid(row) && m.value(row)) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(to_df(e)),
                    }
                })
            }),
        ),
        (
            "set_config",
            &[3],
            text(),
            Volatile,
            Box::new(|c: &Call<'_>| {
                let (names, values, local) = (c.text(0)?, c.text(1)?, c.bool(2)?);
                c.each_text(|row| {
                    let Some(row) = value(&names, row) else {
                        return Ok(None);
                    };
                    let new = (!values.is_null(row)).then(|| values.value(row));
                    let is_local = local.is_valid(row) && local.value(row);
                    let name = c
                        .session
                        .settings
                        .set(names.value(row), new, is_local)
                        .map_err(to_df)?;
                    c.session.settings.get(&name).map(Some).map_err(to_df)
                })
            }),
        ),
        (
            "pg_backend_pid",
            &[0],
            DataType::Int32,
            Stable,
            Box::new(|c: &Call<'_>| {
                Ok(Arc::new(Int32Array::from(vec![
                    c.session.backend_pid;
                    c.rows
                ])))
            }),
        ),
        (
            "quote_ident",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| c.text_to_text(runnel_sql::statement::quote_ident)),
        ),
        (
            "format_type",
            &[2],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let (types, mods) = (c.oid(0)?, c.int(1)?);
                c.each_text(|row| {
                    let Some(row) = value(&types, row) else {
                        return Ok(None);
                    };
                    let typmod = (!mods.is_null(row)).then(|| mods.value(row) as i32);
                    let type_oid = types.value(row);
                    Ok(Some(format_type(type_oid, typmod).unwrap_or_else(|| {
                        c.catalog
                            .entries()
                            .find(|e| oids::row_type(e.id) == type_oid)
                            .map_or_else(|| "???".to_string(), |e| e.name.clone())
                    })))
                })
            }),
        ),
        (
            "pg_get_userbyid",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                c.oid_to_text(|oid| {
                    role_name(&c.snapshot(), oid).unwrap_or_else(|| format!("unknown (OID={oid})"))
                })
            }),
        ),
        (
            "pg_get_expr",
            &[2, 3],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let expressions = c.text(0)?;
                Ok(Arc::new(expressions))
            }),
        ),
        (
            "pg_get_indexdef",
            &[1, 3],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let ids = c.oid(0)?;
                let column = if c.has(1) { Some(c.int(1)?) } else { None };
                c.each_text(|row| {
                    let Some(row) = value(&ids, row) else {
                        return Ok(None);
                    };
                    let Some(UserObject::PrimaryKeyIndex(id)) = oids::user_object(ids.value(row))
                    else {
                        return Ok(None);
                    };
                    let Some(entry) = c.catalog.get_by_id(id) else {
                        return Ok(None);
                    };
                    let n = column.as_ref().map_or(0, |col| col.value(row));
                    Ok(Some(if n > 0 {
                        let index = usize::try_from(n - 1).unwrap_or(usize::MAX);
                        match entry.primary_key.get(index) {
                            Some(&i) => entry.schema.field(i).name().clone(),
                            None => return Ok(None),
                        }
                    } else {
                        index_definition(entry)
                    }))
                })
            }),
        ),
        (
            "pg_get_constraintdef",
            &[1, 2],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let ids = c.oid(0)?;
                c.each_text(|row| {
                    let Some(row) = value(&ids, row) else {
                        return Ok(None);
                    };
                    let Some(UserObject::PrimaryKeyConstraint(id)) =
                        oids::user_object(ids.value(row))
                    else {
                        return Ok(None);
                    };
                    Ok(c.catalog
                        .get_by_id(id)
                        .map(|entry| format!("PRIMARY KEY ({})", key_columns(entry))))
                })
            }),
        ),
        (
            "pg_get_viewdef",
            &[1, 2],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let by_name = c.is_text(0);
                let (names, ids) = if by_name {
                    (Some(c.text(0)?), None)
                } else {
                    (None, Some(c.oid(0)?))
                };
                c.each_text(|row| {
                    let entry = match (&names, &ids) {
                        (Some(names), _) if names.is_valid(row) => c.catalog.get(names.value(row)),
                        (_, Some(ids)) if ids.is_valid(row) => {
                            match oids::user_object(ids.value(row)) {
                                Some(UserObject::Relation(id)) => c.catalog.get_by_id(id),
                                _ => None,
                            }
                        }
                        _ => None,
                    };
                    Ok(entry.and_then(|e| view_definition(e)))
                })
            }),
        ),
        (
            "to_regclass",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                let names = c.text(0)?;
                c.each_oid(|row| {
                    Ok(value(&names, row).and_then(|r| relation_oid(c.catalog, names.value(r))))
                })
            }),
        ),
        (
            "to_regclass_oid",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                reg_oid(
                    c,
                    |name| relation_oid(c.catalog, name),
                    |name| {
                        RunnelError::plan(
                            SqlState::UNDEFINED_TABLE,
                            format!("relation \"{name}\" does not exist"),
                        )
                    },
                )
            }),
        ),
        (
            "to_regtype",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                let names = c.text(0)?;
                c.each_oid(|row| Ok(value(&names, row).and_then(|r| lookup_type(names.value(r)))))
            }),
        ),
        (
            "to_regtype_oid",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                reg_oid(c, lookup_type, |name| {
                    RunnelError::plan(SqlState("42704"), format!("type \"{name}\" does not exist"))
                })
            }),
        ),
        // A regproc is its function's name here: `pg_type.typinput` and friends hold names.
        (
            "to_regproc_oid",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                if c.is_text(0) {
                    return c.text_to_text(|name| {
                        let name = name.split('(').next().unwrap_or(name);
                        unqualified(name).1
                    });
                }
                c.oid_to_text(|oid| {
                    function_name(oid).map_or_else(|| oid.to_string(), str::to_string)
                })
            }),
        ),
        (
            "_pg_expandarray",
            &[1],
            expanded_array_type(),
            Stable,
            Box::new(expand_array),
        ),
        (
            "to_regnamespace_oid",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                reg_oid(c, namespace_oid, |name| {
                    RunnelError::plan(
                        SqlState("3F000"),
                        format!("schema \"{name}\" does not exist"),
                    )
                })
            }),
        ),
        (
            "to_regrole_oid",
            &[1],
            DataType::UInt32,
            Stable,
            Box::new(|c: &Call<'_>| {
                let snapshot = c.snapshot();
                let all = roles(&snapshot);
                reg_oid(
                    c,
                    |name| all.iter().find(|(_, n)| n == name).map(|(o, _)| *o),
                    |name| {
                        RunnelError::plan(
                            SqlState("42704"),
                            format!("role \"{name}\" does not exist"),
                        )
                    },
                )
            }),
        ),
        (
            "regclass_name",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| c.oid_to_text(|oid| relation_name(c.catalog, oid))),
        ),
        (
            "regproc_name",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| Ok(Arc::new(c.text(0)?))),
        ),
        (
            "regnamespace_name",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                c.oid_to_text(|oid| {
                    namespace_name(oid).map_or_else(|| oid.to_string(), str::to_string)
                })
            }),
        ),
        (
            "pg_encoding_to_char",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let ids = c.int(0)?;
                c.each_text(|row| {
                    Ok(value(&ids, row)
                        .map(|r| if ids.value(r) == 6 { "UTF8" } else { "" }.to_string()))
                })
            }),
        ),
        (
            "pg_size_pretty",
            &[1],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| {
                let sizes = c.int(0)?;
                c.each_text(|row| Ok(value(&sizes, row).map(|r| size_pretty(sizes.value(r)))))
            }),
        ),
        (
            "pg_is_in_recovery",
            &[0],
            DataType::Boolean,
            Stable,
            Box::new(|c: &Call<'_>| c.each_bool(|_| Ok(Some(false)))),
        ),
        // int8 where Postgres says int4: DataFusion's generate_series takes int8 only.
        (
            "array_upper",
            &[2],
            DataType::Int64,
            Stable,
            Box::new(|c: &Call<'_>| array_bound(c, true)),
        ),
        (
            "array_lower",
            &[2],
            DataType::Int64,
            Stable,
            Box::new(|c: &Call<'_>| array_bound(c, false)),
        ),
    ];
    defs.push((
        "json_build_object",
        &[],
        text(),
        Stable,
        Box::new(json_build_object),
    ));
    defs.push((
        "bytea_in",
        &[1],
        DataType::Binary,
        Stable,
        Box::new(|c: &Call<'_>| {
            crate::convert::text_to_bytea(&c.args[0])
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
        }),
    ));
    // Postgres's interval input (Arrow's cast reads `<number> <unit>` pairs only).
    defs.push((
        "interval_in",
        &[1],
        DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
        Volatility::Immutable,
        Box::new(|c: &Call<'_>| {
            runnel_common::interval_text::intervals_from_text(c.args[0].as_ref())
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))
        }),
    ));
    // A value written into a bare NUMERIC: refused rather than rounded when it has more
    // decimal places than Runnel keeps (see `convert::check_bare_numeric`).
    defs.push((
        "bare_numeric",
        &[1],
        DataType::Decimal128(38, 10),
        Volatility::Immutable,
        Box::new(|c: &Call<'_>| {
            let target = DataType::Decimal128(38, 10);
            crate::convert::check_bare_numeric(c.args[0].as_ref(), &target, "a NUMERIC")
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
            // Not Arrow's default cast, which reads text that is not a number as NULL.
            let options = datafusion::arrow::compute::CastOptions {
                safe: false,
                ..Default::default()
            };
            Ok(datafusion::arrow::compute::cast_with_options(
                &c.args[0], &target, &options,
            )?)
        }),
    ));
    // A value's Postgres text output in the session's styles (`::text` of dates, times,
    // intervals, floats and bytea; Arrow's own cast writes its display form).
    defs.push((
        "text_out",
        &[1],
        text(),
        Stable,
        Box::new(|c: &Call<'_>| {
            let settings = &c.session.settings;
            let array = match c.args[0].data_type() {
                DataType::Timestamp(unit, Some(_)) => datafusion::arrow::compute::cast(
                    &c.args[0],
                    &DataType::Timestamp(*unit, Some(settings.time_zone().into())),
                )?,
                _ => c.args[0].clone(),
            };
            let text = runnel_pgwire::types::text_column(array.as_ref(), &settings.output_style())
                .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
            Ok(Arc::new(text) as ArrayRef)
        }),
    ));
    // `text_out` for materialized views: UTC and the default styles, whoever plans the view.
    defs.push((
        "text_out_utc",
        &[1],
        text(),
        Volatility::Immutable,
        Box::new(|c: &Call<'_>| {
            let array = match c.args[0].data_type() {
                DataType::Timestamp(unit, Some(_)) => datafusion::arrow::compute::cast(
                    &c.args[0],
                    &DataType::Timestamp(*unit, Some("UTC".into())),
                )?,
                _ => c.args[0].clone(),
            };
            let text = runnel_pgwire::types::text_column(
                array.as_ref(),
                &runnel_pgwire::types::OutputStyle::default(),
            )
            .map_err(|e| datafusion::error::DataFusionError::Execution(e.to_string()))?;
            Ok(Arc::new(text) as ArrayRef)
        }),
    ));
    // `length(bytea)` is its bytes, as in Postgres; `length(text)` its characters (DataFusion's
    // `length` takes no binary argument).
    defs.push((
        "length",
        &[1],
        DataType::Int32,
        Volatility::Immutable,
        Box::new(|c: &Call<'_>| {
            let array = &c.args[0];
            let lengths: Int32Array = match array.data_type() {
                DataType::Binary => array
                    .as_binary::<i32>()
                    .iter()
                    .map(|v| v.map(|bytes| i32::try_from(bytes.len()).unwrap_or(i32::MAX)))
                    .collect(),
                DataType::Null => Int32Array::new_null(array.len()),
                _ => c
                    .text(0)?
                    .iter()
                    .map(|v| v.map(|text| i32::try_from(text.chars().count()).unwrap_or(i32::MAX)))
                    .collect(),
            };
            Ok(Arc::new(lengths) as ArrayRef)
        }),
    ));
    defs.push((
        "like_escape",
        &[4],
        DataType::Boolean,
        Stable,
        Box::new(like_escape),
    ));
    defs.push((
        "quote_literal",
        &[1],
        text(),
        Stable,
        Box::new(|c: &Call<'_>| c.text_to_text(quote_literal)),
    ));
    defs.push((
        "parse_ident",
        &[1, 2],
        text_list(),
        Stable,
        Box::new(|c: &Call<'_>| {
            let values = c.text(0)?;
            let mut builder = ListBuilder::new(StringBuilder::new());
            for row in 0..c.rows {
                if values.is_null(row) {
                    builder.append_null();
                    continue;
                }
                for part in parse_ident(values.value(row)).map_err(to_df)? {
                    builder.values().append_value(part);
                }
                builder.append(true);
            }
            Ok(Arc::new(builder.finish()))
        }),
    ));
    // Runnel takes no advisory locks, so there are none to release.
    defs.push((
        "pg_advisory_unlock_all",
        &[0],
        text(),
        Volatile,
        Box::new(|c: &Call<'_>| Ok(c.constant_text(None))),
    ));
    // Functions that name a session user.
    for name in [
        "current_user",
        "session_user",
        "user",
        "current_role",
        "getpgusername",
    ] {
        defs.push((
            name,
            &[0],
            text(),
            Stable,
            Box::new(|c: &Call<'_>| Ok(c.constant_text(Some(&c.session.user)))),
        ));
    }
    defs.push((
        "current_catalog",
        &[0],
        text(),
        Stable,
        Box::new(|c: &Call<'_>| Ok(c.constant_text(Some(&c.session.database)))),
    ));
    // Visibility and privileges: every object is in `public` or `pg_catalog`, on the search
    // path, and every user may do everything (roles and grants come with authentication).
    // Relations in `information_schema` are not on the search path, as in Postgres.
    defs.push((
        "pg_table_is_visible",
        &[1],
        DataType::Boolean,
        Stable,
        Box::new(|c: &Call<'_>| {
            let ids = c.oid(0)?;
            c.each_bool(|row| {
                Ok(value(&ids, row).map(|r| {
                    let oid = ids.value(r);
                    oids::user_object(oid).is_some()
                        || system_relation_name(oid).is_some_and(|name| !name.contains('.'))
                }))
            })
        }),
    ));
    for name in [
        "pg_type_is_visible",
        "pg_function_is_visible",
        "pg_collation_is_visible",
        "pg_opclass_is_visible",
        "pg_operator_is_visible",
    ] {
        defs.push((
            name,
            &[1],
            DataType::Boolean,
            Stable,
            Box::new(|c: &Call<'_>| c.each_bool(|_| Ok(Some(true)))),
        ));
    }
    defs.push((
        "has_table_privilege",
        &[2, 3],
        DataType::Boolean,
        Stable,
        Box::new(has_table_privilege),
    ));
    defs.push((
        "has_schema_privilege",
        &[2, 3],
        DataType::Boolean,
        Stable,
        Box::new(has_schema_privilege),
    ));
    for name in [
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "has_type_privilege",
        "pg_has_role",
    ] {
        defs.push((
            name,
            &[2, 3, 4],
            DataType::Boolean,
            Stable,
            Box::new(|c: &Call<'_>| c.each_bool(|_| Ok(Some(true)))),
        ));
    }
    for name in ["pg_relation_is_publishable", "pg_is_other_temp_schema"] {
        defs.push((
            name,
            &[1],
            DataType::Boolean,
            Stable,
            Box::new(|c: &Call<'_>| c.each_bool(|_| Ok(Some(false)))),
        ));
    }
    // Sizes: RocksDB's estimate of the sorted files holding a relation's keys (its log, rows,
    // view contents and operator state; sorted writes still in memory are not counted), plus
    // its log entries that live in blob files, from the log's index. A primary key is
    // the table's own key order, so indexes take no space of their own.
    for name in [
        "pg_table_size",
        "pg_relation_size",
        "pg_total_relation_size",
    ] {
        defs.push((
            name,
            &[1, 2],
            DataType::Int64,
            Volatile,
            Box::new(|c: &Call<'_>| {
                // The argument is a regclass in Postgres, so `pg_relation_size('name')` names
                // the relation (an unknown name is an error, as there).
                let ids = reg_oid(
                    c,
                    |name| relation_oid(c.catalog, name),
                    |name| {
                        RunnelError::plan(
                            SqlState::UNDEFINED_TABLE,
                            format!("relation \"{name}\" does not exist"),
                        )
                    },
                )?;
                let ids = ids.as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
                let sizes = (0..c.rows)
                    .map(|row| {
                        if !ids.is_valid(row) {
                            return Ok(None);
                        }
                        Ok(match oids::user_object(ids.value(row)) {
                            Some(UserObject::Relation(id)) => {
                                let ranges = runnel_state::keys::object_ranges(id);
                                let in_blobs = log_index::bytes_in_blob_files(c.store, id)
                                    .map_err(|e| to_df(e.into()))?;
                                let bytes = c.store.approximate_size(&ranges) + in_blobs;
                                Some(i64::try_from(bytes).unwrap_or(i64::MAX))
                            }
                            Some(_) => Some(0),
                            None => c.catalog_relation_exists(ids.value(row)).then_some(0),
                        })
                    })
                    .collect::<DfResult<Int64Array>>()?;
                Ok(Arc::new(sizes) as ArrayRef)
            }),
        ));
    }
    defs.push((
        "pg_indexes_size",
        &[1],
        DataType::Int64,
        Stable,
        Box::new(|c: &Call<'_>| {
            let ids = c.oid(0)?;
            let sizes: Int64Array = ids.iter().map(|id| id.map(|_| 0i64)).collect();
            Ok(Arc::new(sizes) as ArrayRef)
        }),
    ));
    // COMMENT ON texts of relations (`obj_description(oid[, 'pg_class'])`) and columns
    // (`col_description(oid, attnum)`); other objects have none.
    defs.push((
        "obj_description",
        &[1, 2],
        text(),
        Stable,
        Box::new(|c: &Call<'_>| {
            let ids = c.oid(0)?;
            let catalogs = if c.has(1) { Some(c.text(1)?) } else { None };
            c.each_text(|row| {
                let on_pg_class = catalogs
                    .as_ref()
                    .is_none_or(|t| t.is_valid(row) && t.value(row) == "pg_class");
                Ok(relation_comment(c, &ids, row, 0).filter(|_| on_pg_class))
            })
        }),
    ));
    defs.push((
        "col_description",
        &[2],
        text(),
        Stable,
        Box::new(|c: &Call<'_>| {
            let ids = c.oid(0)?;
            let columns = c.int(1)?;
            c.each_text(|row| {
                if !columns.is_valid(row) {
                    return Ok(None);
                }
                let column = i32::try_from(columns.value(row)).unwrap_or(-1);
                Ok(relation_comment(c, &ids, row, column))
            })
        }),
    ));
    for (name, arities) in [
        ("shobj_description", &[2usize] as &'static [usize]),
        ("pg_get_statisticsobjdef_columns", &[1]),
        ("pg_get_partkeydef", &[1]),
        ("pg_get_function_identity_arguments", &[1]),
        ("pg_get_function_arguments", &[1]),
        ("pg_get_function_result", &[1]),
        ("pg_get_serial_sequence", &[2]),
        ("pg_tablespace_location", &[1]),
        ("pg_get_ruledef", &[1, 2]),
        ("pg_get_triggerdef", &[1, 2]),
    ] {
        defs.push((
            name,
            arities,
            text(),
            Stable,
            Box::new(|c: &Call<'_>| Ok(c.constant_text(None))),
        ));
    }
    defs
}

/// The COMMENT ON text of the relation whose OID is `ids[row]` (0) or of its column `column`.
fn relation_comment(c: &Call<'_>, ids: &UInt32Array, row: usize, column: i32) -> Option<String> {
    if !ids.is_valid(row) {
        return None;
    }
    let Some(UserObject::Relation(id)) = oids::user_object(ids.value(row)) else {
        return None;
    };
    c.catalog.get_by_id(id)?.comments.get(&column).cloned()
}

/// The functions `pg_proc` lists: (name, argument types, result type).
pub static CATALOG_FUNCTIONS: &[(&str, &[u32], u32)] = &[
    ("version", &[], oid::TEXT),
    ("current_database", &[], oid::NAME),
    ("current_schema", &[], oid::NAME),
    ("current_schemas", &[oid::BOOL], 1003),
    ("current_setting", &[oid::TEXT], oid::TEXT),
    ("set_config", &[oid::TEXT, oid::TEXT, oid::BOOL], oid::TEXT),
    ("pg_backend_pid", &[], oid::INT4),
    ("quote_ident", &[oid::TEXT], oid::TEXT),
    ("format_type", &[oid::OID, oid::INT4], oid::TEXT),
    ("pg_get_userbyid", &[oid::OID], oid::NAME),
    ("pg_get_viewdef", &[oid::OID], oid::TEXT),
    ("pg_get_indexdef", &[oid::OID], oid::TEXT),
    ("pg_get_constraintdef", &[oid::OID], oid::TEXT),
    ("pg_table_is_visible", &[oid::OID], oid::BOOL),
    ("to_regclass", &[oid::TEXT], 2205),
    ("to_regtype", &[oid::TEXT], 2206),
    ("obj_description", &[oid::OID, oid::NAME], oid::TEXT),
    ("col_description", &[oid::OID, oid::INT4], oid::TEXT),
    ("has_table_privilege", &[oid::TEXT, oid::TEXT], oid::BOOL),
];

/// `has_table_privilege([user,] table, 'SELECT, INSERT')`: whether the role holds any of the
/// privileges named on the relation (by name or OID); catalog tables are readable by all.
fn has_table_privilege(c: &Call<'_>) -> DfResult<ArrayRef> {
    let (user, table, wanted) = privilege_arguments(c)?;
    c.each_bool(|row| {
        let (Some(user), Some(table), Some(wanted)) = (user(row)?, table(row)?, wanted(row)?)
        else {
            return Ok(None);
        };
        let entry = match &table {
            RelationArgument::Name(name) => {
                let name = name.strip_prefix("public.").unwrap_or(name);
                c.catalog.get(name).cloned()
            }
            RelationArgument::Oid(oid) => match super::oids::user_object(*oid) {
                Some(super::oids::UserObject::Relation(id)) => c.catalog.get_by_id(id).cloned(),
                _ => None,
            },
        };
        let Some(entry) = entry else {
            // A catalog table, or nothing: Postgres errors on the latter; a tool asking is
            // better answered than failed.
            return Ok(Some(wanted.contains(Privileges::SELECT)));
        };
        let principal = Principal::in_roles(c.roles, &user);
        let any = [
            Privileges::SELECT,
            Privileges::INSERT,
            Privileges::UPDATE,
            Privileges::DELETE,
        ]
        .into_iter()
        .any(|one| wanted.contains(one) && principal.holds(&entry, one));
        Ok(Some(any))
    })
}

/// `has_schema_privilege([user,] schema, 'USAGE' | 'CREATE')`.
fn has_schema_privilege(c: &Call<'_>) -> DfResult<ArrayRef> {
    let (user, _schema, _) = privilege_arguments(c)?;
    let last = c.args.len() - 1;
    let privileges = c.text(last)?;
    c.each_bool(|row| {
        let (Some(user), Some(row)) = (user(row)?, value(&privileges, row)) else {
            return Ok(None);
        };
        let text = privileges.value(row).to_ascii_uppercase();
        let create = Principal::in_roles(c.roles, &user).may_create(c.roles);
        Ok(Some(
            text.contains("USAGE") || (text.contains("CREATE") && create),
        ))
    })
}

enum RelationArgument {
    Name(String),
    Oid(u32),
}

type RowValue<'a, T> = Box<dyn Fn(usize) -> DfResult<Option<T>> + 'a>;

/// The (user, relation, privileges) of a `has_*_privilege` call, by row: the user is the
/// session's when only two arguments are given.
fn privilege_arguments<'a>(
    c: &'a Call<'a>,
) -> DfResult<(
    RowValue<'a, String>,
    RowValue<'a, RelationArgument>,
    RowValue<'a, Privileges>,
)> {
    let with_user = c.args.len() == 3;
    let user: RowValue<'a, String> = if with_user {
        if c.is_text(0) {
            let names = c.text(0)?;
            Box::new(move |row| Ok(value(&names, row).map(|r| names.value(r).to_string())))
        } else {
            let oids = c.oid(0)?;
            Box::new(move |row| {
                Ok(value(&oids, row).map(|r| {
                    let oid = oids.value(r);
                    c.roles
                        .values()
                        .find(|role| role.oid == oid)
                        .map_or_else(String::new, |role| role.name.clone())
                }))
            })
        }
    } else {
        Box::new(move |_| Ok(Some(c.session.user.clone())))
    };
    let at = usize::from(with_user);
    let table: RowValue<'a, RelationArgument> = if c.is_text(at) {
        let names = c.text(at)?;
        Box::new(move |row| {
            Ok(value(&names, row).map(|r| RelationArgument::Name(names.value(r).to_string())))
        })
    } else {
        let oids = c.oid(at)?;
        Box::new(move |row| Ok(value(&oids, row).map(|r| RelationArgument::Oid(oids.value(r)))))
    };
    let names = c.text(at + 1)?;
    let wanted: RowValue<'a, Privileges> = Box::new(move |row| {
        Ok(value(&names, row).map(|r| {
            names
                .value(r)
                .split(',')
                .filter_map(|name| {
                    let name = name.trim();
                    let name = name.split_whitespace().next().unwrap_or(name);
                    Privileges::named(name)
                })
                .fold(Privileges::NONE, Privileges::union)
        }))
    });
    Ok((user, table, wanted))
}

fn to_df(error: RunnelError) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::External(Box::new(error))
}

/// A reg-type cast: numbers pass through as OIDs, names are looked up (an unknown name is
/// an error, as in Postgres).
fn reg_oid(
    c: &Call<'_>,
    lookup: impl Fn(&str) -> Option<u32>,
    missing: impl Fn(&str) -> RunnelError,
) -> DfResult<ArrayRef> {
    if !c.is_text(0) {
        return Ok(Arc::new(c.oid(0)?));
    }
    let names = c.text(0)?;
    c.each_oid(|row| {
        let Some(row) = value(&names, row) else {
            return Ok(None);
        };
        let name = names.value(row);
        if let Ok(number) = name.trim().parse::<u32>() {
            return Ok(Some(number));
        }
        lookup(name).map(Some).ok_or_else(|| to_df(missing(name)))
    })
}

/// Strips a `public.` or `pg_catalog.` qualification and double quotes.
fn unqualified(name: &str) -> (Option<String>, String) {
    let unquote = |s: &str| {
        let s = s.trim();
        if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
            s[1..s.len() - 1].replace("\"\"", "\"")
        } else {
            s.to_ascii_lowercase()
        }
    };
    match name.split_once('.') {
        Some((schema, rest)) if !name.trim_start().starts_with('"') || schema.ends_with('"') => {
            (Some(unquote(schema)), unquote(rest))
        }
        _ => (None, unquote(name)),
    }
}

/// The OID of a relation named as `::regclass` accepts it.
fn relation_oid(catalog: &Catalog, name: &str) -> Option<u32> {
    let (schema, name) = unqualified(name);
    let user = || {
        let entry = catalog.get(&name)?;
        (entry.kind != runnel_sql::ObjectKind::Sink).then(|| oids::relation(entry.id))
    };
    let index = || {
        catalog
            .entries()
            .find(|e| !e.primary_key.is_empty() && primary_key_name(e) == name)
            .map(|e| oids::primary_key_index(e.id))
    };
    match schema.as_deref() {
        None => user().or_else(index).or_else(|| system_relation_oid(&name)),
        Some("public") => user().or_else(index),
        Some(schema) => system_relation_oid(&format!("{schema}.{name}")),
    }
}

/// The name a relation OID prints as through `::regclass`.
fn relation_name(catalog: &Catalog, oid: u32) -> String {
    let found = match oids::user_object(oid) {
        Some(UserObject::Relation(id)) => catalog.get_by_id(id).map(|e| e.name.clone()),
        Some(UserObject::PrimaryKeyIndex(id)) => catalog.get_by_id(id).map(primary_key_name_of),
        _ => system_relation_name(oid),
    };
    found.unwrap_or_else(|| oid.to_string())
}

fn primary_key_name_of(entry: &Arc<runnel_sql::CatalogEntry>) -> String {
    primary_key_name(entry)
}

fn namespace_oid(name: &str) -> Option<u32> {
    match unqualified(name).1.as_str() {
        "pg_catalog" => Some(oids::PG_CATALOG_NAMESPACE),
        "public" => Some(oids::PUBLIC_NAMESPACE),
        "information_schema" => Some(oids::INFORMATION_SCHEMA_NAMESPACE),
        _ => None,
    }
}

fn namespace_name(oid: u32) -> Option<&'static str> {
    match oid {
        oids::PG_CATALOG_NAMESPACE => Some("pg_catalog"),
        oids::PUBLIC_NAMESPACE => Some("public"),
        oids::INFORMATION_SCHEMA_NAMESPACE => Some("information_schema"),
        _ => None,
    }
}

fn function_name(oid: u32) -> Option<&'static str> {
    let index = usize::try_from(oid.checked_sub(13_000)?).ok()?;
    CATALOG_FUNCTIONS.get(index).map(|(name, _, _)| *name)
}

/// `pg_size_pretty`: bytes in the largest unit that keeps the number at least 10 (kB, MB, ...).
fn size_pretty(bytes: i64) -> String {
    let units = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes;
    let mut unit = 0;
    // Postgres switches unit once the value reaches 10 * 1024 of the smaller one, rounding
    // half up when it does.
    while unit + 1 < units.len() && value.unsigned_abs() >= 10 * 1024 {
        value = if value >= 0 {
            (value + 512) / 1024
        } else {
            (value - 512) / 1024
        };
        unit += 1;
    }
    format!("{value} {}", units[unit])
}

/// `array_upper(a, 1)` / `array_lower(a, 1)` of one-dimensional arrays.
fn array_bound(c: &Call<'_>, upper: bool) -> DfResult<ArrayRef> {
    let dims = c.int(1)?;
    let lengths: Vec<Option<i32>> = match c.args[0].data_type() {
        DataType::List(_) => {
            let list = c.args[0].as_list::<i32>();
            (0..c.rows)
                .map(|row| {
                    (list.is_valid(row) && dims.is_valid(row) && dims.value(row) == 1)
                        .then(|| list.value_length(row))
                })
                .collect()
        }
        DataType::Null => vec![None; c.rows],
        other => {
            return Err(exec_datafusion_err!(
                "array_upper of a value of type {other}"
            ))
        }
    };
    Ok(Arc::new(Int64Array::from(
        lengths
            .into_iter()
            .map(|len| {
                len.filter(|&n| n > 0)
                    .map(|n| if upper { i64::from(n) } else { 1 })
            })
            .collect::<Vec<_>>(),
    )))
}

/// `json_build_object(key, value, ...)`: a JSON object of the pairs, as text.
fn json_build_object(c: &Call<'_>) -> DfResult<ArrayRef> {
    if !c.args.len().is_multiple_of(2) {
        return Err(to_df(RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            "argument list must have even number of elements",
        )));
    }
    let keys = (0..c.args.len() / 2)
        .map(|pair| c.text(2 * pair))
        .collect::<DfResult<Vec<_>>>()?;
    let values = (0..c.args.len() / 2)
        .map(|pair| -> DfResult<Vec<serde_json::Value>> {
            let array = &c.args[2 * pair + 1];
            let as_text = cast(array, &DataType::Utf8)?;
            let as_text = as_text.as_string::<i32>();
            Ok((0..c.rows)
                .map(|row| {
                    if array.is_null(row) {
                        return serde_json::Value::Null;
                    }
                    let text = as_text.value(row);
                    match array.data_type() {
                        DataType::Boolean => serde_json::Value::Bool(text == "true"),
                        t if t.is_numeric() => serde_json::from_str(text)
                            .unwrap_or_else(|_| serde_json::Value::String(text.to_string())),
                        _ => serde_json::Value::String(text.to_string()),
                    }
                })
                .collect())
        })
        .collect::<DfResult<Vec<_>>>()?;
    c.each_text(|row| {
        let mut object = serde_json::Map::new();
        for (pair, keys) in keys.iter().enumerate() {
            if keys.is_null(row) {
                return Err(to_df(RunnelError::plan(
                    SqlState::INVALID_PARAMETER_VALUE,
                    "null value not allowed for object key",
                )));
            }
            object.insert(keys.value(row).to_string(), values[pair][row].clone());
        }
        Ok(Some(serde_json::Value::Object(object).to_string()))
    })
}

/// `like_escape(value, pattern, escape, case_insensitive)`: LIKE with an escape character
/// other than backslash (which DataFusion's LIKE does not take).
fn like_escape(c: &Call<'_>) -> DfResult<ArrayRef> {
    let (values, patterns, escapes, insensitive) = (c.text(0)?, c.text(1)?, c.text(2)?, c.bool(3)?);
    c.each_bool(|row| {
        if values.is_null(row) || patterns.is_null(row) {
            return Ok(None);
        }
        let escape = if escapes.is_null(row) {
            None
        } else {
            escapes.value(row).chars().next()
        };
        let fold = insensitive.is_valid(row) && insensitive.value(row);
        let regex = like_regex(patterns.value(row), escape, fold);
        let regex = regex::Regex::new(&regex).map_err(|e| exec_datafusion_err!("{e}"))?;
        Ok(Some(regex.is_match(values.value(row))))
    })
}

/// The anchored regular expression of a LIKE pattern.
fn like_regex(pattern: &str, escape: Option<char>, case_insensitive: bool) -> String {
    let mut regex = String::from(if case_insensitive { "(?is)^" } else { "(?s)^" });
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            c if Some(c) == escape => {
                if let Some(next) = chars.next() {
                    regex.push_str(&regex::escape(&next.to_string()));
                }
            }
            '%' => regex.push_str(".*"),
            '_' => regex.push('.'),
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    regex
}

/// `quote_literal`: single-quoted, quotes doubled; with backslashes, an `E''` string.
fn quote_literal(text: &str) -> String {
    let quoted = text.replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", quoted.replace('\\', "\\\\"))
    } else {
        format!("'{quoted}'")
    }
}

/// `parse_ident`: the parts of a qualified identifier, unquoted (`"A".b` is `{A,b}`).
fn parse_ident(text: &str) -> Result<Vec<String>, RunnelError> {
    let invalid = || {
        RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("string is not a valid identifier: \"{text}\""),
        )
    };
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(invalid()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' || c.is_whitespace() {
                    break;
                }
                part.push(c.to_ascii_lowercase());
                chars.next();
            }
            if part.is_empty() {
                return Err(invalid());
            }
        }
        parts.push(part);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some('.') => {
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
            }
            None => return Ok(parts),
            Some(_) => return Err(invalid()),
        }
    }
}

/// `_pg_expandarray`'s result: a list of (element, 1-based subscript) records.
fn expanded_array_type() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(
        DataType::Struct(
            vec![
                Field::new("x", DataType::Int64, true),
                Field::new("n", DataType::Int32, true),
            ]
            .into(),
        ),
        true,
    )))
}

/// `_pg_expandarray(array)`: each element of a one-dimensional integer array with its
/// subscript (pgjdbc reads index and key columns with it).
fn expand_array(c: &Call<'_>) -> DfResult<ArrayRef> {
    use datafusion::arrow::array::{Int32Builder, Int64Builder, StructBuilder};
    let DataType::List(_) = c.args[0].data_type() else {
        return Err(exec_datafusion_err!("_pg_expandarray takes an array"));
    };
    let list = c.args[0].as_list::<i32>();
    let elements = cast(list.values(), &DataType::Int64)?;
    let elements = elements.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
    let DataType::List(item) = expanded_array_type() else {
        return Err(exec_datafusion_err!("_pg_expandarray's type is a list"));
    };
    let DataType::Struct(fields) = item.data_type().clone() else {
        return Err(exec_datafusion_err!("_pg_expandarray's item is a struct"));
    };
    let mut builder =
        ListBuilder::new(StructBuilder::from_fields(fields, 0)).with_field(item.clone());
    for row in 0..c.rows {
        if list.is_null(row) {
            builder.append_null();
            continue;
        }
        let offsets = list.value_offsets();
        let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
        let records = builder.values();
        for (n, index) in (start..end).enumerate() {
            let x = records
                .field_builder::<Int64Builder>(0)
                .ok_or_else(|| exec_datafusion_err!("_pg_expandarray: x builder"))?;
            x.append_option((!elements.is_null(index)).then(|| elements.value(index)));
            let subscript = records
                .field_builder::<Int32Builder>(1)
                .ok_or_else(|| exec_datafusion_err!("_pg_expandarray: n builder"))?;
            subscript.append_value(i32::try_from(n + 1).unwrap_or(i32::MAX));
            records.append(true);
        }
        builder.append(true);
    }
    Ok(Arc::new(builder.finish()))
}

/// Registers every catalog function on a session's context.
pub fn register(ctx: &SessionContext, shared: &Arc<Shared>, session: &SessionIdentity) {
    for (name, arities, returns, volatility, body) in definitions() {
        // No arity at all: any number of arguments of any type.
        let signatures = if arities.is_empty() {
            vec![TypeSignature::VariadicAny]
        } else {
            arities
                .iter()
                .map(|&n| {
                    if n == 0 {
                        TypeSignature::Nullary
                    } else {
                        TypeSignature::Any(n)
                    }
                })
                .collect()
        };
        ctx.register_udf(ScalarUDF::new_from_impl(PgFunction {
            name,
            signature: Signature::one_of(signatures, volatility),
            returns,
            body,
            shared: shared.clone(),
            session: session.clone(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_identifiers_like_postgres() {
        use runnel_sql::statement::quote_ident;
        assert_eq!(quote_ident("items"), "items");
        assert_eq!(quote_ident("Items"), "\"Items\"");
        assert_eq!(quote_ident("my table"), "\"my table\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident("select"), "\"select\"");
    }

    #[test]
    fn like_with_other_escapes() {
        assert_eq!(like_regex("pg/_%", Some('/'), false), "(?s)^pg_.*$");
        let re = regex::Regex::new(&like_regex("pg/_%", Some('/'), false)).unwrap();
        assert!(re.is_match("pg_toast"));
        assert!(!re.is_match("pgxtoast"));
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("a\\b"), "E'a\\\\b'");
        assert_eq!(
            parse_ident("Public.\"Items\"").unwrap(),
            vec!["public", "Items"]
        );
        assert!(parse_ident("a..b").is_err());
    }

    #[test]
    fn sizes_print_like_pg_size_pretty() {
        assert_eq!(size_pretty(10), "10 bytes");
        assert_eq!(size_pretty(10 * 1024), "10 kB");
        assert_eq!(size_pretty(123_456_789), "118 MB");
    }

    #[test]
    fn names_resolve_qualified_and_quoted() {
        assert_eq!(
            unqualified("public.items"),
            (Some("public".into()), "items".into())
        );
        assert_eq!(unqualified("\"Items\""), (None, "Items".into()));
        assert_eq!(unqualified("ITEMS"), (None, "items".into()));
        assert!(relation_oid(&Catalog::default(), "pg_catalog.pg_class").is_some());
        assert_eq!(relation_oid(&Catalog::default(), "pg_class"), Some(1259));
        assert_eq!(relation_oid(&Catalog::default(), "nothing"), None);
    }
}
