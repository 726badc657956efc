//! CREATE STREAM / CREATE TABLE: column types mapped from SQL to Arrow, NOT NULL and PRIMARY
//! KEY constraints, and `WITH (...)` options.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, IntervalUnit, Schema, SchemaRef, TimeUnit};
use datafusion::sql::sqlparser::ast::{self, ColumnOption, ExactNumberInfo, TableConstraint};
use runnel_common::text_types::MAX_LENGTH_KEY;
use runnel_common::time::interval_micros;
use runnel_common::{Result, RunnelError, SqlState, TextType, WatermarkDef};

use crate::statement::{ident_name, object_name, ObjectKind, WatermarkClause};

/// The time zone Runnel attaches to TIMESTAMPTZ columns (DataFusion's default).
pub const UTC: &str = "+00:00";

#[derive(Debug, Clone)]
pub struct RelationDef {
    pub name: String,
    pub kind: ObjectKind,
    pub schema: SchemaRef,
    /// Column indices of the primary key (tables only).
    pub primary_key: Vec<usize>,
    /// The stream's event-time column and watermark delay.
    pub watermark: Option<WatermarkDef>,
    pub options: Vec<(String, String)>,
}

/// Postgres's character types (`text`, `varchar(n)`, `char(n)`, ...).
pub fn is_string_type(data_type: &ast::DataType) -> bool {
    use ast::DataType as S;
    matches!(
        data_type,
        S::Text
            | S::Varchar(_)
            | S::CharacterVarying(_)
            | S::CharVarying(_)
            | S::Char(_)
            | S::Character(_)
            | S::String(_)
    )
}

/// The `n` of `varchar(n)` (`character varying(n)`), which Runnel enforces on input.
pub fn varchar_length(data_type: &ast::DataType) -> Option<u64> {
    use ast::DataType as S;
    match data_type {
        S::Varchar(Some(length))
        | S::CharacterVarying(Some(length))
        | S::CharVarying(Some(length)) => match length {
            ast::CharacterLength::IntegerLength { length, .. } => Some(*length),
            ast::CharacterLength::Max => None,
        },
        _ => None,
    }
}

/// The Postgres type a column declared `data_type` keeps as tagged text.
pub fn text_type(data_type: &ast::DataType) -> Option<TextType> {
    match data_type {
        ast::DataType::JSON => Some(TextType::Json),
        ast::DataType::JSONB => Some(TextType::Jsonb),
        ast::DataType::Uuid => Some(TextType::Uuid),
        _ => None,
    }
}

pub fn relation_def(
    kind: ObjectKind,
    create: &ast::CreateTable,
    watermark: Option<&WatermarkClause>,
) -> Result<RelationDef> {
    let name = object_name(&create.name);
    if create.query.is_some() {
        return Err(RunnelError::not_implemented(
            "CREATE TABLE ... AS SELECT; use CREATE MATERIALIZED VIEW",
        ));
    }
    let mut fields = Vec::with_capacity(create.columns.len());
    let mut primary_key: Vec<usize> = Vec::new();
    for (i, column) in create.columns.iter().enumerate() {
        let col_name = ident_name(&column.name);
        if fields.iter().any(|f: &Field| f.name() == &col_name) {
            return Err(RunnelError::plan(
                SqlState::DUPLICATE_COLUMN,
                format!("column \"{col_name}\" specified more than once"),
            ));
        }
        let data_type = sql_to_arrow_type(&column.data_type)?;
        let mut nullable = true;
        for option in &column.options {
            match &option.option {
                ColumnOption::NotNull => nullable = false,
                ColumnOption::Null => nullable = true,
                ColumnOption::PrimaryKey(_) => {
                    if !primary_key.is_empty() {
                        return Err(RunnelError::plan(
                            SqlState::INVALID_TABLE_DEFINITION,
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    nullable = false;
                    primary_key.push(i);
                }
                other => {
                    return Err(RunnelError::not_implemented(format!(
                        "column option {other} (column \"{col_name}\")"
                    )))
                }
            }
        }
        let field = Field::new(col_name, data_type, nullable);
        fields.push(
            match (
                text_type(&column.data_type),
                varchar_length(&column.data_type),
            ) {
                (Some(text_type), _) => field.with_metadata(text_type.metadata()),
                (None, Some(length)) => {
                    field.with_metadata([(MAX_LENGTH_KEY.to_string(), length.to_string())].into())
                }
                (None, None) => field,
            },
        );
    }
    if fields.is_empty() {
        return Err(RunnelError::plan(
            SqlState::INVALID_TABLE_DEFINITION,
            format!("{} \"{name}\" needs at least one column", kind.sql_name()),
        ));
    }
    for constraint in &create.constraints {
        match constraint {
            TableConstraint::PrimaryKey(pk) => {
                if !primary_key.is_empty() {
                    return Err(RunnelError::plan(
                        SqlState::INVALID_TABLE_DEFINITION,
                        format!("multiple primary keys for table \"{name}\" are not allowed"),
                    ));
                }
                for column in &pk.columns {
                    let col_name = match &column.column.expr {
                        ast::Expr::Identifier(ident) => ident_name(ident),
                        other => {
                            return Err(RunnelError::not_implemented(format!(
                                "primary key expression {other}"
                            )))
                        }
                    };
                    let idx = fields
                        .iter()
                        .position(|f| f.name() == &col_name)
                        .ok_or_else(|| {
                            RunnelError::plan(
                                SqlState::UNDEFINED_COLUMN,
                                format!("column \"{col_name}\" named in key does not exist"),
                            )
                        })?;
                    if primary_key.contains(&idx) {
                        return Err(RunnelError::plan(
                            SqlState::DUPLICATE_COLUMN,
                            format!(
                                "column \"{col_name}\" appears twice in primary key constraint"
                            ),
                        ));
                    }
                    fields[idx] = fields[idx].clone().with_nullable(false);
                    primary_key.push(idx);
                }
            }
            other => {
                return Err(RunnelError::not_implemented(format!(
                    "table constraint {other}"
                )))
            }
        }
    }
    match kind {
        ObjectKind::Stream if !primary_key.is_empty() => {
            return Err(RunnelError::plan(
                SqlState::INVALID_TABLE_DEFINITION,
                format!(
                "stream \"{name}\" is append-only and cannot have a PRIMARY KEY; use CREATE TABLE"
            ),
            ))
        }
        _ => {}
    }
    let watermark = watermark
        .map(|clause| watermark_def(clause, &fields))
        .transpose()?;
    // Connector options are checked by the server, which knows the connectors.
    let options = sql_options(&create.table_options)?;
    Ok(RelationDef {
        name,
        kind,
        schema: Arc::new(Schema::new(fields)),
        primary_key,
        watermark,
        options,
    })
}

/// `WATERMARK FOR ts AS ts - INTERVAL '...'` (or `AS ts`): the column must be a timestamp and
/// the expression that column minus a fixed, non-negative interval.
fn watermark_def(clause: &WatermarkClause, fields: &[Field]) -> Result<WatermarkDef> {
    let column = fields
        .iter()
        .position(|f| f.name() == &clause.column)
        .ok_or_else(|| {
            RunnelError::plan(
                SqlState::UNDEFINED_COLUMN,
                format!(
                    "column \"{}\" named in WATERMARK does not exist",
                    clause.column
                ),
            )
        })?;
    if !matches!(
        fields[column].data_type(),
        DataType::Timestamp(TimeUnit::Microsecond, _)
    ) {
        return Err(RunnelError::plan(
            SqlState::DATATYPE_MISMATCH,
            format!(
                "WATERMARK column \"{}\" must be a TIMESTAMP or TIMESTAMPTZ, not {}",
                clause.column,
                fields[column].data_type()
            ),
        ));
    }
    let shape_error = || {
        RunnelError::plan(
            SqlState::INVALID_TABLE_DEFINITION,
            format!(
                "WATERMARK FOR {c} must be AS {c} - INTERVAL '...' (a fixed delay), got {}",
                clause.expr,
                c = clause.column
            ),
        )
    };
    let is_column =
        |e: &ast::Expr| matches!(e, ast::Expr::Identifier(i) if ident_name(i) == clause.column);
    let delay_micros = match &clause.expr {
        e if is_column(e) => 0,
        ast::Expr::BinaryOp {
            left,
            op: ast::BinaryOperator::Minus,
            right,
        } if is_column(left) => match right.as_ref() {
            ast::Expr::Interval(interval) => interval_literal_micros(interval)?,
            _ => return Err(shape_error()),
        },
        _ => return Err(shape_error()),
    };
    if delay_micros < 0 {
        return Err(shape_error());
    }
    Ok(WatermarkDef {
        column,
        delay_micros,
    })
}

/// An `INTERVAL '...'` literal of fixed length, in microseconds.
pub fn interval_literal_micros(interval: &ast::Interval) -> Result<i64> {
    let text = match interval.value.as_ref() {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        other => other.to_string(),
    };
    let text = match &interval.leading_field {
        Some(field) => format!("{text} {field}"),
        None => text,
    };
    let bad = || {
        RunnelError::plan(
            SqlState::INVALID_DATETIME_FORMAT,
            format!("invalid interval \"{text}\" (a fixed length such as '5 seconds' is needed)"),
        )
    };
    // Without a unit after the string it is Postgres interval text (`'1 day 02:00:00'`).
    let parsed = match &interval.leading_field {
        None => runnel_common::interval_text::parse_interval(&text).ok_or_else(bad)?,
        Some(_) => {
            datafusion::arrow::compute::kernels::cast_utils::parse_interval_month_day_nano(&text)
                .map_err(|_| bad())?
        }
    };
    interval_micros(parsed).ok_or_else(bad)
}

/// `WITH (k = v, ...)` options as lower-cased keys and unquoted values.
pub fn sql_options(options: &ast::CreateTableOptions) -> Result<Vec<(String, String)>> {
    let list = match options {
        ast::CreateTableOptions::None => return Ok(Vec::new()),
        ast::CreateTableOptions::With(list)
        | ast::CreateTableOptions::Options(list)
        | ast::CreateTableOptions::Plain(list)
        | ast::CreateTableOptions::TableProperties(list) => list,
    };
    list.iter()
        .map(|option| match option {
            ast::SqlOption::KeyValue { key, value } => {
                let value = match value {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                            s.clone()
                        }
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                };
                Ok((key.value.to_ascii_lowercase(), value))
            }
            other => Err(RunnelError::plan(
                SqlState::SYNTAX_ERROR,
                format!("expected key = value in WITH options, found {other}"),
            )),
        })
        .collect()
}

/// Maps a SQL column type to the Arrow type Runnel stores it as.
pub fn sql_to_arrow_type(sql_type: &ast::DataType) -> Result<DataType> {
    use ast::DataType as S;
    Ok(match sql_type {
        S::Bool | S::Boolean => DataType::Boolean,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::Real | S::Float4 => DataType::Float32,
        S::DoublePrecision | S::Float8 | S::Double(_) | S::Float(_) => DataType::Float64,
        S::Numeric(info) | S::Decimal(info) | S::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
            ExactNumberInfo::Precision(p) => DataType::Decimal128(clamp_precision(*p)?, 0),
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                let p = clamp_precision(*p)?;
                let s = i8::try_from(*s)
                    .ok()
                    .filter(|s| (*s as u8) <= p)
                    .ok_or_else(|| {
                        RunnelError::plan(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!("NUMERIC scale {s} must be between 0 and precision {p}"),
                        )
                    })?;
                DataType::Decimal128(p, s)
            }
        },
        t if is_string_type(t) || text_type(t).is_some() => DataType::Utf8,
        S::Bytea => DataType::Binary,
        S::Date => DataType::Date32,
        S::Timestamp(_, tz) => match tz {
            ast::TimezoneInfo::Tz | ast::TimezoneInfo::WithTimeZone => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
            }
            _ => DataType::Timestamp(TimeUnit::Microsecond, None),
        },
        S::Time(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => {
            DataType::Time64(TimeUnit::Microsecond)
        }
        S::Interval { .. } => DataType::Interval(IntervalUnit::MonthDayNano),
        S::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
        }
        other => return Err(RunnelError::not_implemented(format!("column type {other}"))),
    })
}

fn clamp_precision(p: u64) -> Result<u8> {
    if (1..=38).contains(&p) {
        Ok(p as u8)
    } else {
        Err(RunnelError::plan(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("NUMERIC precision {p} must be between 1 and 38"),
        ))
    }
}
