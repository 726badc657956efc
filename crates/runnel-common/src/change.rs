//! The change batch: rows of an Arrow `RecordBatch` plus a signed weight per row (+n inserts n
//! copies of the row, -n deletes them; an update is a -1/+1 pair). Every operator consumes and
//! produces change batches, so the whole dataflow is vectorised.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int32Array, Int64Array};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, kernels};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};

use crate::error::{Result, RunnelError};

/// Name of the weight column when a change batch is stored as one Arrow batch (source logs).
pub const WEIGHT_COLUMN: &str = "__weight";

/// Hidden columns a Kafka stream's log entries carry before the weight: each row's partition
/// (Int32) and offset (Int64), so that a view can start from a position of the topic.
pub const KAFKA_PARTITION_COLUMN: &str = "__kafka_partition";
pub const KAFKA_OFFSET_COLUMN: &str = "__kafka_offset";

#[derive(Debug, Clone)]
pub struct ChangeBatch {
    pub data: RecordBatch,
    pub weights: Int64Array,
}

impl ChangeBatch {
    pub fn new(data: RecordBatch, weights: Int64Array) -> Self {
        debug_assert_eq!(data.num_rows(), weights.len());
        ChangeBatch { data, weights }
    }

    /// Every row inserted once.
    pub fn inserts(data: RecordBatch) -> Self {
        let weights = Int64Array::from_value(1, data.num_rows());
        ChangeBatch { data, weights }
    }

    /// Every row with the same weight.
    pub fn uniform(data: RecordBatch, weight: i64) -> Self {
        let weights = Int64Array::from_value(weight, data.num_rows());
        ChangeBatch { data, weights }
    }

    pub fn num_rows(&self) -> usize {
        self.data.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.data.num_rows() == 0
    }

    pub fn schema(&self) -> SchemaRef {
        self.data.schema()
    }

    /// Keeps the rows where `mask` is true (null counts as false).
    pub fn filter(&self, mask: &BooleanArray) -> Result<ChangeBatch> {
        let data = filter_record_batch(&self.data, mask)?;
        let weights = kernels::filter::filter(&self.weights, mask)?;
        let weights = weights
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| RunnelError::internal("filter changed the weight column's type"))?
            .clone();
        Ok(ChangeBatch { data, weights })
    }

    /// The same rows under another schema with identical column types (renames, nullability).
    pub fn with_schema(self, schema: SchemaRef) -> Result<ChangeBatch> {
        let options = RecordBatchOptions::new().with_row_count(Some(self.data.num_rows()));
        let data =
            RecordBatch::try_new_with_options(schema, self.data.columns().to_vec(), &options)?;
        Ok(ChangeBatch {
            data,
            weights: self.weights,
        })
    }

    /// Flattens into one Arrow batch with a trailing `__weight` column (how logs store it).
    pub fn to_stored(&self) -> Result<RecordBatch> {
        let mut fields: Vec<Field> = self
            .data
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(WEIGHT_COLUMN, DataType::Int64, false));
        let mut columns: Vec<ArrayRef> = self.data.columns().to_vec();
        columns.push(Arc::new(self.weights.clone()));
        let options = RecordBatchOptions::new().with_row_count(Some(self.data.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            columns,
            &options,
        )?)
    }

    /// Inverse of [`ChangeBatch::to_stored`], relabelled with `schema`: the first
    /// `schema.fields().len()` columns are the data; hidden columns between them and the
    /// weight (see [`KAFKA_OFFSET_COLUMN`]) are left out.
    ///
    /// An entry without rows (one that only carries a stream's watermark) may have no columns
    /// at all; it reads as an empty batch.
    pub fn from_stored(stored: &RecordBatch, schema: SchemaRef) -> Result<ChangeBatch> {
        if stored.num_rows() == 0 {
            return Ok(ChangeBatch::inserts(RecordBatch::new_empty(schema)));
        }
        let n = stored.num_columns();
        let width = schema.fields().len();
        if n == 0 || width >= n || stored.schema().field(n - 1).name() != WEIGHT_COLUMN {
            return Err(RunnelError::internal(
                "stored change batch lacks its weight column",
            ));
        }
        let weights = stored
            .column(n - 1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| RunnelError::internal("stored weight column is not Int64"))?
            .clone();
        let options = RecordBatchOptions::new().with_row_count(Some(stored.num_rows()));
        let data = RecordBatch::try_new_with_options(
            schema,
            stored.columns()[..width].to_vec(),
            &options,
        )?;
        Ok(ChangeBatch { data, weights })
    }

    /// The per-row Kafka partition and offset of a stored log entry, if it has them.
    pub fn stored_kafka_positions(stored: &RecordBatch) -> Option<(Int32Array, Int64Array)> {
        let partition = stored.column_by_name(KAFKA_PARTITION_COLUMN)?;
        let offset = stored.column_by_name(KAFKA_OFFSET_COLUMN)?;
        Some((
            partition.as_any().downcast_ref::<Int32Array>()?.clone(),
            offset.as_any().downcast_ref::<Int64Array>()?.clone(),
        ))
    }

    /// Concatenates batches of one schema.
    pub fn concat(schema: &SchemaRef, batches: &[ChangeBatch]) -> Result<ChangeBatch> {
        let data = concat_batches(schema, batches.iter().map(|b| &b.data))?;
        let weights: Vec<&dyn Array> = batches.iter().map(|b| &b.weights as &dyn Array).collect();
        let weights = if weights.is_empty() {
            Int64Array::from(Vec::<i64>::new())
        } else {
            kernels::concat::concat(&weights)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| RunnelError::internal("concat changed the weight column's type"))?
                .clone()
        };
        Ok(ChangeBatch { data, weights })
    }
}

/// The schema with every field nullable: operators never rely on NOT NULL, so intermediate
/// schemas are relaxed to keep batches from different branches compatible.
pub fn nullable_schema(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}
