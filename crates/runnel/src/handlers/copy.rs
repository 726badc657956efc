//! COPY name [(columns)] FROM STDIN, in Postgres text (tab-separated, `\N` for NULL) or CSV
//! format. Data is decoded into Arrow batches as it arrives; the rows become visible
//! atomically when the copy completes, like a Postgres COPY.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Buf, Bytes, BytesMut};
use datafusion::arrow::array::{new_null_array, ArrayRef};
use datafusion::arrow::csv::reader::Decoder;
use datafusion::arrow::csv::ReaderBuilder;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::{CopyInSink, PgError, QueryResponse};
use runnel_sql::statement::CopyOptions;
use runnel_sql::{CatalogEntry, ObjectKind};

use super::dml::{conform_each, insert_rows};
use crate::engine::Shared;
use crate::session::{to_pg_error, RunnelSession};

const COPY_BATCH_ROWS: usize = 65536;

pub fn handle(
    session: &mut RunnelSession,
    table: &str,
    columns: &[String],
    options: &CopyOptions,
) -> Result<QueryResponse> {
    let entry = session.shared.catalog().resolve(table)?.clone();
    if entry.kind == ObjectKind::MaterializedView {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!("cannot copy into materialized view \"{table}\""),
        ));
    }
    // The columns the data holds, in order.
    let indices: Vec<usize> = if columns.is_empty() {
        (0..entry.schema.fields().len()).collect()
    } else {
        columns
            .iter()
            .map(|c| {
                entry.schema.index_of(c).map_err(|_| {
                    RunnelError::plan(
                        SqlState::UNDEFINED_COLUMN,
                        format!("column \"{c}\" of relation \"{table}\" does not exist"),
                    )
                })
            })
            .collect::<Result<_>>()?
    };
    let data_schema: SchemaRef = Arc::new(Schema::new(
        indices
            .iter()
            .map(|&i| entry.schema.field(i).clone().with_nullable(true))
            .collect::<Vec<Field>>(),
    ));
    let mut builder = ReaderBuilder::new(data_schema.clone())
        .with_header(options.header)
        .with_delimiter(options.delimiter)
        .with_batch_size(COPY_BATCH_ROWS);
    if !options.csv {
        // Text format has no quoting; pick a byte that never occurs in text data.
        builder = builder.with_quote(0x1f);
    }
    if !options.null.is_empty() {
        let pattern = format!("^{}$", regex::escape(&options.null));
        let re = regex::Regex::new(&pattern).map_err(|e| {
            RunnelError::plan(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("bad NULL string: {e}"),
            )
        })?;
        builder = builder.with_null_regex(re);
    }
    let decoder = builder.build_decoder();
    Ok(QueryResponse::CopyIn {
        columns: indices.len(),
        sink: Box::new(CopySink {
            shared: session.shared.clone(),
            entry,
            indices,
            decoder,
            pending: BytesMut::new(),
            batches: Vec::new(),
            text_format: !options.csv,
        }),
    })
}

struct CopySink {
    shared: Arc<Shared>,
    entry: Arc<CatalogEntry>,
    indices: Vec<usize>,
    decoder: Decoder,
    pending: BytesMut,
    batches: Vec<RecordBatch>,
    text_format: bool,
}

impl CopySink {
    fn decode_pending(&mut self, eof: bool) -> Result<()> {
        loop {
            let consumed = self.decoder.decode(&self.pending)?;
            self.pending.advance(consumed);
            if self.decoder.capacity() == 0 {
                self.flush_batch()?;
                continue;
            }
            if consumed == 0 || self.pending.is_empty() {
                break;
            }
        }
        if eof {
            // An empty slice tells the decoder the input ended (completes a last unterminated line).
            self.decoder.decode(&[])?;
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if let Some(batch) = self.decoder.flush()? {
            if batch.num_rows() > 0 {
                self.batches.push(batch);
            }
        }
        Ok(())
    }

    /// Widens a batch of the copied columns to the relation's full schema (NULL elsewhere).
    fn widen(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let mut columns: Vec<ArrayRef> = self
            .entry
            .schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        for (pos, &i) in self.indices.iter().enumerate() {
            columns[i] = batch.column(pos).clone();
        }
        let schema = Arc::new(Schema::new(
            self.entry
                .schema
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?)
    }
}

#[async_trait]
impl CopyInSink for CopySink {
    async fn write(&mut self, data: Bytes) -> Result<(), PgError> {
        self.pending.extend_from_slice(&data);
        self.decode_pending(false).map_err(to_pg_error)
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, PgError> {
        let finish = async {
            if self.text_format {
                // psql may send the end-of-data marker line `\.`.
                let trimmed_len = {
                    let p = &self.pending[..];
                    if p.ends_with(b"\\.\n") {
                        p.len() - 3
                    } else if p.ends_with(b"\\.") {
                        p.len() - 2
                    } else {
                        p.len()
                    }
                };
                self.pending.truncate(trimmed_len);
            }
            self.decode_pending(true)?;
            let widened = self
                .batches
                .iter()
                .map(|b| self.widen(b))
                .collect::<Result<Vec<_>>>()?;
            let rows = conform_each(&self.entry.schema, &widened, 0)?;
            insert_rows(&self.shared, &self.entry, rows).await
        };
        finish.await.map_err(to_pg_error)
    }

    async fn abort(self: Box<Self>, message: String) {
        tracing::info!(
            "COPY into {} aborted by the client: {message}",
            self.entry.name
        );
    }
}
