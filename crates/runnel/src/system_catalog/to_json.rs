//! `to_json`, `to_jsonb` and `row_to_json`: any value as JSON, as Postgres writes it. A record
//! (`ROW(...)`, a whole-row reference `t`) becomes an object keyed by its field names, an array
//! a JSON array, numbers and booleans themselves, JSON values their own JSON, dates and
//! timestamps ISO 8601 strings (`"2026-03-01T12:00:00+00:00"`, timestamptz in UTC), and
//! anything else the string of its Postgres text. The result is `json` (`to_jsonb`: `jsonb`,
//! printed as Postgres prints jsonb).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_datafusion_err, DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use runnel_common::TextType;

/// Registers `to_json`, `to_jsonb` and `row_to_json` on `ctx`.
pub fn register(ctx: &SessionContext) {
    for (name, jsonb) in [
        ("to_json", false),
        ("row_to_json", false),
        ("to_jsonb", true),
    ] {
        ctx.register_udf(ScalarUDF::new_from_impl(ToJson {
            name,
            jsonb,
            signature: Signature::any(1, Volatility::Immutable),
        }));
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToJson {
    name: &'static str,
    jsonb: bool,
    signature: Signature,
}

impl ScalarUDFImpl for ToJson {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, _args: ReturnFieldArgs) -> Result<FieldRef> {
        let kind = if self.jsonb {
            TextType::Jsonb
        } else {
            TextType::Json
        };
        Ok(Arc::new(kind.field(self.name, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return Err(exec_datafusion_err!("{} takes one argument", self.name));
        };
        let array = value.to_array(args.number_rows)?;
        let json = json_texts(&array, args.arg_fields[0].as_ref())?;
        let mut out = StringBuilder::with_capacity(json.len(), json.len() * 16);
        for value in json {
            match value {
                None => out.append_null(),
                Some(text) if self.jsonb => out.append_value(
                    TextType::Jsonb
                        .normalize(&text)
                        .map_err(|e| DataFusionError::External(Box::new(e)))?,
                ),
                Some(text) => out.append_value(text),
            }
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

/// The JSON text of every value of `array` (`None` for SQL NULL).
fn json_texts(array: &ArrayRef, field: &Field) -> Result<Vec<Option<String>>> {
    let valid = |row: usize| array.is_valid(row);
    let out: Vec<Option<String>> = match array.data_type() {
        DataType::Null => vec![None; array.len()],
        DataType::Struct(fields) => {
            let record = array.as_struct();
            let children = record
                .columns()
                .iter()
                .zip(fields.iter())
                .map(|(child, field)| json_texts(child, field))
                .collect::<Result<Vec<_>>>()?;
            (0..array.len())
                .map(|row| {
                    valid(row).then(|| {
                        let mut text = String::from("{");
                        for (index, (field, child)) in fields.iter().zip(&children).enumerate() {
                            if index > 0 {
                                text.push(',');
                            }
                            text.push_str(&json_string(field.name()));
                            text.push(':');
                            text.push_str(child[row].as_deref().unwrap_or("null"));
                        }
                        text.push('}');
                        text
                    })
                })
                .collect()
        }
        DataType::List(element) | DataType::LargeList(element) => {
            let (offsets, values): (Vec<usize>, ArrayRef) = match array.data_type() {
                DataType::List(_) => {
                    let list = array.as_list::<i32>();
                    let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                    (offsets, list.values().clone())
                }
                _ => {
                    let list = array.as_list::<i64>();
                    let offsets = list.value_offsets().iter().map(|&o| o as usize).collect();
                    (offsets, list.values().clone())
                }
            };
            let items = json_texts(&values, element)?;
            (0..array.len())
                .map(|row| {
                    valid(row).then(|| {
                        let parts: Vec<&str> = items[offsets[row]..offsets[row + 1]]
                            .iter()
                            .map(|item| item.as_deref().unwrap_or("null"))
                            .collect();
                        format!("[{}]", parts.join(","))
                    })
                })
                .collect()
        }
        DataType::Boolean => array
            .as_boolean()
            .iter()
            .map(|v| v.map(|b| b.to_string()))
            .collect(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = datafusion::arrow::compute::cast(array, &DataType::Utf8)?;
            let is_json = matches!(TextType::of(field), Some(TextType::Json | TextType::Jsonb));
            text.as_string::<i32>()
                .iter()
                .map(|v| {
                    v.map(|s| {
                        if is_json {
                            s.to_string()
                        } else {
                            json_string(s)
                        }
                    })
                })
                .collect()
        }
        data_type => {
            let text = runnel_pgwire::types::text_column(
                array.as_ref(),
                &runnel_pgwire::types::OutputStyle::default(),
            )
            .map_err(|e| DataFusionError::Execution(e.to_string()))?;
            let number = data_type.is_numeric();
            let timestamp = match data_type {
                DataType::Timestamp(_, zone) => Some(zone.is_some()),
                _ => None,
            };
            text.iter()
                .map(|v| {
                    v.map(|s| match (number, timestamp) {
                        // NaN and the infinities are no JSON numbers: Postgres writes strings.
                        (true, _) if s.bytes().any(|b| b.is_ascii_alphabetic() && b != b'e') => {
                            json_string(s)
                        }
                        (true, _) => s.to_string(),
                        (_, Some(zoned)) => json_string(&iso_timestamp(s, zoned)),
                        _ => json_string(s),
                    })
                })
                .collect()
        }
    };
    Ok(out)
}

/// `2026-03-01 12:00:00+00` as JSON writes it: `2026-03-01T12:00:00+00:00`.
fn iso_timestamp(text: &str, zoned: bool) -> String {
    let mut iso = text.replacen(' ', "T", 1);
    if zoned && iso.len() >= 3 {
        let tail = &iso[iso.len() - 3..];
        if tail.starts_with(['+', '-']) {
            iso.push_str(":00");
        }
    }
    iso
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_in_iso_8601() {
        assert_eq!(
            iso_timestamp("2026-03-01 12:00:00+00", true),
            "2026-03-01T12:00:00+00:00"
        );
        assert_eq!(
            iso_timestamp("2026-03-01 12:00:00.5", false),
            "2026-03-01T12:00:00.5"
        );
    }
}
