//! Conversions between Arrow and Postgres identities used when describing statements: type
//! OIDs and names, and the column names Postgres would give a query's results.

use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::logical_expr::{Distinct, Expr, LogicalPlan};
use runnel_common::{Result, RunnelError, SqlState};

/// The Postgres type OID a column of this Arrow type is reported as.
pub fn type_oid(t: &DataType) -> u32 {
    runnel_pgwire::pg_type(t).oid
}

/// The Arrow type a parameter declared with this OID is parsed as: the protocol layer's choice
/// ([`runnel_pgwire::arrow_type_for_oid`]), with Runnel's own for `numeric` (a bare NUMERIC,
/// (38, 10)), `timestamptz` in the zone the query context computes in, and an array type as a
/// list of its element's type.
pub fn oid_type(oid: u32) -> Option<DataType> {
    use runnel_pgwire::oid;
    if let Some(element) = runnel_pgwire::types::element_oid(oid) {
        return Some(DataType::List(Arc::new(Field::new_list_field(
            oid_type(element)?,
            true,
        ))));
    }
    match oid {
        oid::NUMERIC => Some(DataType::Decimal128(38, 10)),
        oid::TIMESTAMPTZ => Some(DataType::Timestamp(
            TimeUnit::Microsecond,
            Some("+00:00".into()),
        )),
        other => runnel_pgwire::arrow_type_for_oid(other),
    }
}

/// The Postgres type name (`pg_type.typname`) of a column of this Arrow type, which Postgres
/// uses as the name of an unaliased `CAST`.
pub fn typname(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "bool",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "int2",
        DataType::Int32 | DataType::UInt16 => "int4",
        DataType::Int64 | DataType::UInt32 => "int8",
        DataType::Float16 | DataType::Float32 => "float4",
        DataType::Float64 => "float8",
        DataType::UInt64 | DataType::Decimal128(_, _) | DataType::Decimal256(_, _) => "numeric",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea",
        DataType::Date32 | DataType::Date64 => "date",
        DataType::Timestamp(_, None) => "timestamp",
        DataType::Timestamp(_, Some(_)) => "timestamptz",
        DataType::Interval(_) => "interval",
        DataType::Time32(_) | DataType::Time64(_) => "time",
        _ => "text",
    }
}

/// Column names as Postgres would give them: the alias or column name, the function name
/// for an unaliased call, the type name for an unaliased cast, `?column?` otherwise. A column
/// that refers to a computed column below it (an aggregate under a projection) keeps that
/// column's name.
pub fn postgres_column_names(plan: &LogicalPlan) -> Vec<String> {
    let (exprs, input): (Vec<&Expr>, &LogicalPlan) = match plan {
        LogicalPlan::Sort(sort) => return postgres_column_names(&sort.input),
        LogicalPlan::Limit(limit) => return postgres_column_names(&limit.input),
        LogicalPlan::Filter(filter) => return postgres_column_names(&filter.input),
        LogicalPlan::Distinct(Distinct::All(input)) => return postgres_column_names(input),
        LogicalPlan::Projection(p) => (p.expr.iter().collect(), &p.input),
        // Aliases inside an aggregate are DataFusion's own (`count(*)`); the user's are in
        // the projection above it.
        LogicalPlan::Aggregate(a) => (
            a.group_expr
                .iter()
                .chain(&a.aggr_expr)
                .map(|e| match e {
                    Expr::Alias(alias) => alias.expr.as_ref(),
                    other => other,
                })
                .collect(),
            &a.input,
        ),
        other => {
            return other
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect()
        }
    };
    let mut input_names: Option<Vec<String>> = None;
    exprs
        .into_iter()
        .map(|expr| expr_column_name(expr, input, &mut input_names))
        .collect()
}

/// The Postgres name of one output column computed by `expr` over `input` (whose own names
/// are computed once, when a column refers to them).
fn expr_column_name(
    expr: &Expr,
    input: &LogicalPlan,
    input_names: &mut Option<Vec<String>>,
) -> String {
    match expr {
        // DataFusion's own alias for `count(*)`; a user's alias is kept.
        Expr::Alias(a) if a.name == "count(*)" => expr_column_name(&a.expr, input, input_names),
        Expr::Alias(a) if runnel_sql::pg_compat::reported_alias(&a.name).is_some() => {
            runnel_sql::pg_compat::reported_alias(&a.name)
                .unwrap_or_default()
                .to_string()
        }
        Expr::Alias(a) if is_planned_cast_name(a) => expr_column_name(&a.expr, input, input_names),
        Expr::Alias(a) => a.name.clone(),
        Expr::Column(c) => match input.schema().index_of_column(c) {
            Ok(i) => input_names
                .get_or_insert_with(|| postgres_column_names(input))
                .get(i)
                .cloned()
                .unwrap_or_else(|| c.name.clone()),
            Err(_) => c.name.clone(),
        },
        Expr::AggregateFunction(f) => f.func.name().to_string(),
        // Runnel's own functions stand for operators (`doc -> 'k'`, `doc @> '{...}'`).
        Expr::ScalarFunction(f) if f.func.name() == runnel_sql::whole_row::ROW_FUNCTION => {
            "row".to_string()
        }
        Expr::ScalarFunction(f) if f.func.name().starts_with("runnel_") => "?column?".to_string(),
        Expr::ScalarFunction(f) => f.func.name().to_string(),
        // Postgres names a cast after what it casts when that has a name of its own (a
        // column, a function: `d::text` is `d`), after the type otherwise (`'1'::int` is
        // `int4`).
        Expr::Cast(datafusion::logical_expr::Cast { expr, field })
        | Expr::TryCast(datafusion::logical_expr::TryCast { expr, field }) => {
            // What the user cast, under the function the cast was planned as.
            let cast = match expr.as_ref() {
                Expr::ScalarFunction(call)
                    if crate::text_casts::PLANNED_CAST_FUNCTIONS.contains(&call.func.name())
                        && call.args.len() == 1 =>
                {
                    &call.args[0]
                }
                other => other,
            };
            match cast {
                Expr::Column(_) | Expr::ScalarFunction(_) | Expr::AggregateFunction(_) => {
                    expr_column_name(cast, input, input_names)
                }
                _ => typname(field.data_type()).to_string(),
            }
        }
        _ => "?column?".to_string(),
    }
}

/// Whether `alias` only keeps the name an expression had before the query layer planned its
/// casts as Postgres's input or output functions (`d::text` as `CAST(text_out(d) AS text)`,
/// aliased to the name of `CAST(d AS text)`), rather than being a user's alias.
fn is_planned_cast_name(alias: &datafusion::logical_expr::expr::Alias) -> bool {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let mut planned = false;
    let original = alias.expr.as_ref().clone().transform_up(|e| match e {
        Expr::ScalarFunction(call)
            if crate::text_casts::PLANNED_CAST_FUNCTIONS.contains(&call.func.name())
                && call.args.len() == 1 =>
        {
            planned = true;
            Ok(Transformed::yes(
                call.args.into_iter().next().expect("one argument"),
            ))
        }
        other => Ok(Transformed::no(other)),
    });
    let Ok(original) = original else {
        return false;
    };
    let (relation, name) = original.data.qualified_name();
    planned && alias.relation == relation && alias.name == name
}

/// A bare `NUMERIC` column as Runnel keeps it: Decimal128(38, 10).
const BARE_NUMERIC: DataType = DataType::Decimal128(38, 10);

/// Refuses (22003) a value written into a bare `NUMERIC` column that it would have to round:
/// Postgres keeps every digit of an unconstrained numeric, Runnel keeps 10 decimal places, and
/// rounding in silence would lose data. Decimals and decimal text are checked; a float is
/// approximate anyway, and a declared `NUMERIC(p, s)` rounds to its scale, as in Postgres.
/// `NaN` and the infinities, which Postgres's `numeric` has and Runnel's (a 128-bit decimal)
/// has not: refused with Postgres's code for bad input rather than read as NULL.
pub fn refuse_special_numeric(text: &str) -> Result<()> {
    let word = text
        .trim()
        .trim_start_matches(['+', '-'])
        .to_ascii_lowercase();
    if matches!(word.as_str(), "nan" | "inf" | "infinity") {
        return Err(RunnelError::execution(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!(
                "NUMERIC cannot hold \"{}\" in Runnel (a 38-digit decimal); use DOUBLE \
                 PRECISION for NaN and infinities",
                text.trim()
            ),
        ));
    }
    Ok(())
}

pub fn check_bare_numeric(values: &dyn Array, target: &DataType, what: &str) -> Result<()> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Decimal128Type, DecimalType};

    let DataType::Decimal128(_, kept) = BARE_NUMERIC else {
        return Ok(());
    };
    if target != &BARE_NUMERIC {
        return Ok(());
    }
    let refuse = |value: String| {
        RunnelError::execution(
            SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            format!(
                "value {value} for {what} has more than {kept} decimal places, which \
                 a NUMERIC without scale keeps in Runnel; declare the column NUMERIC(p, s) with \
                 the scale it needs"
            ),
        )
    };
    match values.data_type() {
        DataType::Decimal128(_, scale) if *scale > kept => {
            let divisor = 10i128.pow((*scale - kept) as u32);
            let scale = *scale;
            for value in values.as_primitive::<Decimal128Type>().iter().flatten() {
                if value % divisor != 0 {
                    return Err(refuse(Decimal128Type::format_decimal(value, 38, scale)));
                }
            }
        }
        DataType::Utf8 => {
            for text in values.as_string::<i32>().iter().flatten() {
                refuse_special_numeric(text)?;
                if decimal_places(text).is_some_and(|places| places > i64::from(kept)) {
                    return Err(refuse(text.to_string()));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// The decimal places decimal text needs (`1.50` needs 1, `1.5e-3` 4); `None` when it is not a
/// plain decimal number.
fn decimal_places(text: &str) -> Option<i64> {
    let text = text.trim();
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i64>().ok()?),
        None => (text, 0),
    };
    let mantissa = mantissa.trim_start_matches(['+', '-']);
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !whole
        .bytes()
        .chain(fraction.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let places = fraction.trim_end_matches('0').len() as i64;
    Some((places - exponent).max(0))
}

/// The schema a query's rows are described with: nullable, with Postgres's column names.
pub fn result_schema(plan: &LogicalPlan) -> SchemaRef {
    let names = postgres_column_names(plan);
    let fields: Vec<Field> = plan
        .schema()
        .fields()
        .iter()
        .zip(names)
        .map(|(f, name)| {
            // The metadata keeps a json/jsonb/uuid column's type.
            Field::new(name, f.data_type().clone(), true).with_metadata(f.metadata().clone())
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A query's batches relabelled with its result schema (Postgres's column names, the types'
/// metadata) as they stream by, so the wire encodes every batch as the result was described;
/// columns of type `timestamptz` are relabelled with the session's `TimeZone`, so they are
/// printed in it (the instants are unchanged; only Arrow's zone metadata differs).
pub fn as_described(
    schema: SchemaRef,
    batches: datafusion::physical_plan::SendableRecordBatchStream,
    zone: &str,
) -> (
    SchemaRef,
    futures::stream::BoxStream<
        'static,
        datafusion::error::Result<datafusion::arrow::record_batch::RecordBatch>,
    >,
) {
    use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
    use futures::StreamExt;
    let zoned = |t: &DataType| match t {
        DataType::Timestamp(unit, Some(current)) if current.as_ref() != zone => {
            Some(DataType::Timestamp(*unit, Some(zone.into())))
        }
        _ => None,
    };
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match zoned(f.data_type()) {
            Some(t) => f.as_ref().clone().with_data_type(t),
            None => f.as_ref().clone(),
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let target = schema.clone();
    let relabel = move |batch: RecordBatch| {
        let columns = batch
            .columns()
            .iter()
            .zip(target.fields())
            .map(|(column, field)| {
                if column.data_type() == field.data_type() {
                    Ok(column.clone())
                } else {
                    datafusion::arrow::compute::cast(column, field.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            target.clone(),
            columns,
            &options,
        )?)
    };
    let batches = batches.map(move |batch| batch.and_then(&relabel)).boxed();
    (schema, batches)
}

/// Text in Postgres's `bytea` input format (`\xdeadbeef`, or the escape format) as binary
/// values: what a string becomes in a BYTEA column, a `::bytea` cast or a bytea parameter
/// (Arrow's own cast would keep the text's bytes).
pub fn text_to_bytea(
    array: &datafusion::arrow::array::ArrayRef,
) -> runnel_common::Result<datafusion::arrow::array::ArrayRef> {
    use datafusion::arrow::array::{Array, AsArray, BinaryBuilder};
    if matches!(
        array.data_type(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView
    ) {
        return Ok(datafusion::arrow::compute::cast(array, &DataType::Binary)?);
    }
    let text = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
    let text = text.as_string::<i32>();
    let mut out = BinaryBuilder::with_capacity(text.len(), text.value_data().len());
    for i in 0..text.len() {
        if text.is_null(i) {
            out.append_null();
            continue;
        }
        let value = text.value(i);
        let bytes = runnel_pgwire::types::parse_bytea(value).ok_or_else(|| {
            runnel_common::RunnelError::execution(
                runnel_common::SqlState::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type bytea: \"{value}\""),
            )
        })?;
        out.append_value(bytes);
    }
    Ok(Arc::new(out.finish()))
}

/// A one-dimensional Postgres array in its text form (`{1,2,NULL}`, `{"a b","c\\"d"}`) as a
/// list value of `element`s; `None` when the text is not one (an element that does not parse
/// as `element` is an error).
pub fn parse_array_text(
    text: &str,
    element: &DataType,
) -> Option<runnel_common::Result<datafusion::common::ScalarValue>> {
    let inner = text.trim().strip_prefix('{')?.strip_suffix('}')?;
    let mut items: Vec<Option<String>> = Vec::new();
    let mut chars = inner.chars().peekable();
    while chars.peek().is_some() {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let item = if chars.peek() == Some(&'"') {
            chars.next();
            let mut value = String::new();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '"' => break,
                    c => value.push(c),
                }
            }
            Some(value)
        } else {
            let mut value = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                // Nested arrays (more than one dimension) are not taken.
                if c == '{' || c == '"' {
                    return None;
                }
                value.push(c);
                chars.next();
            }
            let value = value.trim().to_string();
            (!value.eq_ignore_ascii_case("null")).then_some(value)
        };
        items.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') | None => {}
            Some(_) => return None,
        }
    }
    if inner.trim().is_empty() {
        items.clear();
    }
    let strings: datafusion::arrow::array::ArrayRef =
        Arc::new(datafusion::arrow::array::StringArray::from(items));
    let strict = datafusion::arrow::compute::CastOptions {
        safe: false,
        format_options: Default::default(),
    };
    Some(
        datafusion::arrow::compute::cast_with_options(&strings, element, &strict)
            .map_err(Into::into)
            .map(|values| {
                datafusion::common::utils::SingleRowListArrayBuilder::new(values)
                    .build_list_scalar()
            }),
    )
}

#[cfg(test)]
mod array_text_tests {
    use datafusion::common::ScalarValue;

    use super::*;

    #[test]
    fn array_text_parameters() {
        let ints = parse_array_text("{1, 3,NULL}", &DataType::Int64)
            .unwrap()
            .unwrap();
        let ScalarValue::List(list) = ints else {
            panic!("{ints:?}")
        };
        let values = list.value(0);
        let values = values
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            vec![Some(1), Some(3), None]
        );
        let texts = parse_array_text(r#"{x,"y,z","q\"t",NULL,"NULL"}"#, &DataType::Utf8)
            .unwrap()
            .unwrap();
        let ScalarValue::List(list) = texts else {
            panic!()
        };
        let values = list.value(0);
        let values = values
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .unwrap();
        assert_eq!(
            values.iter().collect::<Vec<_>>(),
            vec![Some("x"), Some("y,z"), Some("q\"t"), None, Some("NULL")]
        );
        assert!(parse_array_text("{}", &DataType::Int32).unwrap().is_ok());
        assert!(parse_array_text("{{1,2},{3,4}}", &DataType::Int32).is_none());
        assert!(parse_array_text("1,2", &DataType::Int32).is_none());
        assert!(parse_array_text("{1,x}", &DataType::Int32)
            .unwrap()
            .is_err());
    }
}
