//! Extreme rows: what an exchange sends to an aggregate of only `min`/`max` calls over an
//! input of inserts only.
//!
//! Such an aggregate's output depends, per group, only on each call's extreme value (its
//! accumulators over inserts keep nothing else, and no retraction can ever bring a smaller
//! maximum back). So of a batch's rows of one group, only the rows holding a call's extreme
//! can change it: the others are left on the worker that read them. Nexmark q7's maximum bid
//! per 10-second window is the case: every bid of a window would cross to the one worker
//! owning that window's key, where now each sender's batch sends the few rows holding its
//! maximum, so that worker no longer does the aggregate's work of the whole stream.
//!
//! Values compare as their order-preserving encoding (`runnel_state::codec`, the order the
//! `min`/`max` accumulators use: `-0.0 = +0.0`, NaN greater than every number); NULLs are
//! skipped as the accumulators skip them. A group whose values are all NULL keeps its first
//! row, so that the group still exists after the exchange (its result is NULL).

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::common::DFSchema;
use runnel_common::{ChangeBatch, Result};
use runnel_plan::{AggregateCall, AggregateFunction};
use runnel_state::codec::{encode_rows, EncodedRows};

use crate::exchange::{group_equal_keys, keys_at};
use crate::expr::{compile, evaluate, CompiledExpr};

/// The `min`/`max` calls of an aggregate: each call's argument, and whether it is a `min`.
pub struct ExtremeCalls {
    args: Vec<(CompiledExpr, bool)>,
}

impl ExtremeCalls {
    /// The calls of `aggregates` over `schema` when every one is a `min` or `max` of an
    /// argument without a FILTER (a FILTER decides per row which rows count, so a row
    /// dropped here might have been the one that counted); `None` otherwise.
    pub fn of(aggregates: &[AggregateCall], schema: &DFSchema) -> Result<Option<Arc<Self>>> {
        let mut args = Vec::with_capacity(aggregates.len());
        for call in aggregates {
            let is_min = match call.function {
                AggregateFunction::Min => true,
                AggregateFunction::Max => false,
                _ => return Ok(None),
            };
            let (Some(arg), None) = (&call.arg, &call.filter) else {
                return Ok(None);
            };
            args.push((compile(arg, schema)?, is_min));
        }
        Ok((!args.is_empty()).then(|| Arc::new(ExtremeCalls { args })))
    }

    /// The rows of `batch` (whose group keys are `keys`) that hold an extreme of a call in
    /// their group, in their order, with their keys; `None` when every row is kept or the
    /// batch has a row that is not an insert (then all must go as they are).
    pub fn keep(
        &self,
        batch: &ChangeBatch,
        keys: &EncodedRows,
    ) -> Result<Option<(ChangeBatch, EncodedRows)>> {
        let n = batch.num_rows();
        if batch.weights.values().iter().any(|&w| w <= 0) {
            return Ok(None);
        }
        let (group_of, first) = group_equal_keys(keys);
        if first.len() == n {
            // Every row is its group's only one, so every row holds its group's extremes.
            return Ok(None);
        }
        let calls = self.args.len();
        let mut values = Vec::with_capacity(calls);
        let mut encoded = Vec::with_capacity(calls);
        for (arg, _) in &self.args {
            let column = evaluate(arg, &batch.data)?;
            let mut rows = EncodedRows::new();
            encode_rows(&[], std::slice::from_ref(&column), &mut rows)?;
            values.push(column);
            encoded.push(rows);
        }
        // Per group and call, the row holding the extreme so far (`u32::MAX`: none yet, every
        // value NULL).
        let mut best = vec![u32::MAX; first.len() * calls];
        for (i, &group) in group_of.iter().enumerate() {
            let bests = &mut best[group as usize * calls..][..calls];
            for (c, held) in bests.iter_mut().enumerate() {
                if values[c].is_null(i) {
                    continue;
                }
                let better = *held == u32::MAX || {
                    let (value, current) = (encoded[c].row(i), encoded[c].row(*held as usize));
                    match self.args[c].1 {
                        true => value < current,
                        false => value > current,
                    }
                };
                if better {
                    *held = i as u32;
                }
            }
        }
        let mut rows: Vec<u32> = Vec::with_capacity(best.len());
        for (g, bests) in best.chunks(calls.max(1)).enumerate() {
            let found = rows.len();
            rows.extend(bests.iter().copied().filter(|&r| r != u32::MAX));
            if rows.len() == found {
                rows.push(first[g]);
            }
        }
        rows.sort_unstable();
        rows.dedup();
        if rows.len() == n {
            return Ok(None);
        }
        let kept_keys = keys_at(keys, &rows);
        let all_weights = batch.weights.values();
        let weights = Int64Array::from_iter_values(rows.iter().map(|&r| all_weights[r as usize]));
        let data = take_record_batch(&batch.data, &UInt32Array::from(rows))?;
        Ok(Some((ChangeBatch::new(data, weights), kept_keys)))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{ArrayRef, Float64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::logical_expr::col;

    use super::*;

    fn call(function: AggregateFunction, arg: &str) -> AggregateCall {
        AggregateCall {
            function,
            distinct: false,
            arg: Some(col(arg)),
            filter: None,
            output_type: DataType::Float64,
        }
    }

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]))
    }

    fn batch(groups: &[i64], values: &[Option<f64>], weights: &[i64]) -> ChangeBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(groups.to_vec())),
            Arc::new(Float64Array::from(values.to_vec())),
        ];
        let data = RecordBatch::try_new(schema(), columns).expect("a batch");
        ChangeBatch::new(data, Int64Array::from(weights.to_vec()))
    }

    fn keys(batch: &ChangeBatch) -> EncodedRows {
        let mut keys = EncodedRows::new();
        encode_rows(&[], &[batch.data.column(0).clone()], &mut keys).expect("encoded");
        keys
    }

    fn calls(functions: &[AggregateFunction]) -> Arc<ExtremeCalls> {
        let df_schema = DFSchema::try_from(schema().as_ref().clone()).expect("schema");
        let aggregates: Vec<AggregateCall> = functions.iter().map(|&f| call(f, "v")).collect();
        ExtremeCalls::of(&aggregates, &df_schema)
            .expect("compiled")
            .expect("only min/max")
    }

    fn column_values(batch: &ChangeBatch) -> (Vec<i64>, Vec<Option<f64>>) {
        let g = batch.data.column(0).as_any().downcast_ref::<Int64Array>();
        let v = batch.data.column(1).as_any().downcast_ref::<Float64Array>();
        let (g, v) = (g.expect("i64"), v.expect("f64"));
        (g.values().to_vec(), v.iter().collect())
    }

    /// Per group, the rows holding the maximum (and with min and max, the minimum too) are
    /// kept in order with their weights and keys; NULLs never win; a group of only NULLs
    /// keeps its first row; NaN is the greatest value and -0.0 equals +0.0.
    #[test]
    fn keeps_each_groups_extreme_rows() {
        let groups = [1, 1, 2, 1, 3, 2, 3, 4, 4, 4];
        let values = [
            Some(5.0),
            Some(9.0),
            None,
            Some(7.0),
            None,
            Some(-1.0),
            None,
            Some(-0.0),
            Some(f64::NAN),
            Some(0.0),
        ];
        let weights = [1, 2, 1, 1, 1, 3, 1, 1, 1, 1];
        let input = batch(&groups, &values, &weights);
        let max = calls(&[AggregateFunction::Max]);
        let (out, out_keys) = max.keep(&input, &keys(&input)).expect("ok").expect("fewer");
        let (g, v) = column_values(&out);
        // Rows 1 (group 1's 9), 4 (group 3's first, all NULL), 5 (group 2's -1), 8 (NaN).
        assert_eq!(g, vec![1, 3, 2, 4]);
        assert_eq!(v[..3], [Some(9.0), None, Some(-1.0)]);
        assert!(v[3].is_some_and(f64::is_nan));
        assert_eq!(out.weights.values().to_vec(), vec![2, 1, 3, 1]);
        assert!(out_keys.iter().eq(keys(&out).iter()));

        let min_max = calls(&[AggregateFunction::Min, AggregateFunction::Max]);
        let (out, _) = min_max
            .keep(&input, &keys(&input))
            .expect("ok")
            .expect("fewer");
        let (g, v) = column_values(&out);
        // Group 1: min 5 (row 0), max 9 (row 1); group 4: min -0.0 (row 7), max NaN (row 8).
        assert_eq!(g, vec![1, 1, 3, 2, 4, 4]);
        assert_eq!(v[..5], [Some(5.0), Some(9.0), None, Some(-1.0), Some(-0.0)]);
        assert!(v[5].is_some_and(f64::is_nan));
    }

    /// A batch with a retraction, or whose every row is an extreme, goes as it is; an
    /// aggregate with a call other than min/max, or a FILTER, gets no extreme rows.
    #[test]
    fn leaves_batches_it_cannot_thin() {
        let max = calls(&[AggregateFunction::Max]);
        let retracting = batch(&[1, 1], &[Some(1.0), Some(2.0)], &[1, -1]);
        assert!(max
            .keep(&retracting, &keys(&retracting))
            .expect("ok")
            .is_none());
        let distinct = batch(&[1, 2], &[Some(1.0), Some(2.0)], &[1, 1]);
        assert!(max.keep(&distinct, &keys(&distinct)).expect("ok").is_none());

        let df_schema = DFSchema::try_from(schema().as_ref().clone()).expect("schema");
        let count = AggregateCall {
            function: AggregateFunction::Count,
            ..call(AggregateFunction::Max, "v")
        };
        let with_count = [call(AggregateFunction::Max, "v"), count];
        assert!(ExtremeCalls::of(&with_count, &df_schema)
            .expect("ok")
            .is_none());
        let filtered = AggregateCall {
            filter: Some(col("v").gt(datafusion::logical_expr::lit(0.0))),
            ..call(AggregateFunction::Max, "v")
        };
        assert!(ExtremeCalls::of(&[filtered], &df_schema)
            .expect("ok")
            .is_none());
    }
}
