//! Records: whole-row references and the [`ROW_FUNCTION`] that builds them.
//!
//! `SELECT t FROM items t` and `row_to_json(t)` name a relation of the FROM clause where a
//! value is expected, meaning the row as a record. DataFusion has no such reference, so each
//! is written out as `runnel_row('col', t.col, ...)` over the relation's columns, which clients
//! receive as Postgres's `record` (`(1,abc)`) and `row_to_json` turns into an object keyed by
//! the column names. Only relations of Runnel's catalog are expanded (not subqueries or
//! catalog tables), and a name that is also a column stays the column, as in Postgres.
//! `runnel_row` is DataFusion's `named_struct` that keeps each field's type tag (a `jsonb`
//! column stays `jsonb` inside the record).

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StructArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields};
use datafusion::common::{exec_datafusion_err, plan_datafusion_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, Ident, ObjectNamePart, Select, SelectItem, Statement, TableFactor,
    Value, VisitMut, VisitorMut,
};

use crate::catalog::Catalog;
use crate::statement::{ident_name, object_name};

/// Expands every whole-row reference of `statement` to a record of the relation's columns.
pub fn expand_whole_row_references(statement: &mut Statement, catalog: &Catalog) {
    let _ = statement.visit(&mut WholeRows { catalog });
}

struct WholeRows<'a> {
    catalog: &'a Catalog,
}

impl VisitorMut for WholeRows<'_> {
    type Break = ();

    fn post_visit_select(&mut self, select: &mut Select) -> ControlFlow<()> {
        // The relations the SELECT reads, by the name it refers to them with, with their
        // columns.
        let mut relations: Vec<(Ident, Vec<String>)> = Vec::new();
        for from in &select.from {
            let factors =
                std::iter::once(&from.relation).chain(from.joins.iter().map(|j| &j.relation));
            for factor in factors {
                let TableFactor::Table { name, alias, .. } = factor else {
                    continue;
                };
                let Some(entry) = self.catalog.get(&object_name(name)) else {
                    continue;
                };
                let reference = match alias {
                    Some(alias) => alias.name.clone(),
                    None => match name.0.last().and_then(ObjectNamePart::as_ident) {
                        Some(ident) => ident.clone(),
                        None => continue,
                    },
                };
                let columns = entry
                    .schema
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                relations.push((reference, columns));
            }
        }
        if relations.is_empty() {
            return ControlFlow::Continue(());
        }
        let is_column = |name: &str| {
            relations
                .iter()
                .any(|(_, columns)| columns.iter().any(|c| c == name))
        };
        let expand = |expr: &mut Expr| {
            if let Expr::Identifier(ident) = expr {
                let name = ident_name(ident);
                if is_column(&name) {
                    return ControlFlow::<()>::Continue(());
                }
                if let Some((reference, columns)) = relations
                    .iter()
                    .find(|(reference, _)| ident_name(reference) == name)
                {
                    *expr = record(reference, columns);
                }
            }
            ControlFlow::Continue(())
        };
        // A whole-row item is named after the relation, as in Postgres.
        for item in &mut select.projection {
            if let SelectItem::UnnamedExpr(Expr::Identifier(ident)) = item {
                let alias = ident.clone();
                let mut expr = Expr::Identifier(ident.clone());
                let _ = expand(&mut expr);
                if !matches!(expr, Expr::Identifier(_)) {
                    *item = SelectItem::ExprWithAlias { expr, alias };
                }
            }
        }
        let _ = visit_expressions_mut(&mut select.projection, expand);
        ControlFlow::Continue(())
    }
}

/// `runnel_row('a', t.a, 'b', t.b, ...)`.
fn record(reference: &Ident, columns: &[String]) -> Expr {
    let mut arguments = Vec::with_capacity(columns.len() * 2);
    for column in columns {
        arguments.push(Expr::value(Value::SingleQuotedString(column.clone())));
        arguments.push(Expr::CompoundIdentifier(vec![
            reference.clone(),
            Ident::with_quote('"', column.clone()),
        ]));
    }
    crate::pg_compat::call(ROW_FUNCTION, arguments)
}

/// The function a record is built with: `runnel_row('name', value, ...)`.
pub const ROW_FUNCTION: &str = "runnel_row";

/// Registers [`ROW_FUNCTION`] on `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(ScalarUDF::new_from_impl(RowFunction {
        signature: Signature::variadic_any(Volatility::Immutable),
    }));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RowFunction {
    signature: Signature,
}

impl ScalarUDFImpl for RowFunction {
    fn name(&self) -> &str {
        ROW_FUNCTION
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Err(plan_datafusion_err!(
            "{ROW_FUNCTION} is typed from its arguments' fields"
        ))
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if !args.arg_fields.len().is_multiple_of(2) {
            return Err(plan_datafusion_err!(
                "{ROW_FUNCTION} takes name, value pairs"
            ));
        }
        let mut fields = Vec::with_capacity(args.arg_fields.len() / 2);
        for pair in 0..args.arg_fields.len() / 2 {
            let name = match args.scalar_arguments.get(2 * pair).copied().flatten() {
                Some(ScalarValue::Utf8(Some(name))) => name.clone(),
                _ => return Err(plan_datafusion_err!("{ROW_FUNCTION} needs literal names")),
            };
            let value = &args.arg_fields[2 * pair + 1];
            fields.push(
                Field::new(name, value.data_type().clone(), true)
                    .with_metadata(value.metadata().clone()),
            );
        }
        Ok(Arc::new(Field::new(
            ROW_FUNCTION,
            DataType::Struct(Fields::from(fields)),
            true,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let DataType::Struct(fields) = args.return_field.data_type() else {
            return Err(exec_datafusion_err!("{ROW_FUNCTION} returns a struct"));
        };
        let rows = args.number_rows;
        let values = args
            .args
            .iter()
            .skip(1)
            .step_by(2)
            .map(|value| value.to_array(rows))
            .collect::<Result<Vec<ArrayRef>>>()?;
        Ok(ColumnarValue::Array(Arc::new(StructArray::try_new(
            fields.clone(),
            values,
            None,
        )?)))
    }
}
