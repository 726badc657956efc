//! COPY name [(columns)] FROM STDIN, in Postgres text (tab-separated, `\N` for NULL), CSV or
//! binary format. Data is decoded into Arrow batches as it arrives; the rows become visible
//! atomically when the copy completes, like a Postgres COPY.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use datafusion::arrow::array::{new_null_array, Array, ArrayRef};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::util::display::FormatOptions;
use runnel_common::{Result, RunnelError, SqlState};
use runnel_pgwire::copy_format::{BinaryCopyDecoder, CopyDecoder, CopyFormat};
use runnel_pgwire::{pg_type, pg_type_of, type_name, CopyInSink, PgError, QueryResponse};
use runnel_sql::statement::CopyOptions;
use runnel_sql::{CatalogEntry, ObjectKind};

use super::dml::{conform_each, insert_rows};
use crate::session::{to_pg_error, RunnelSession};
use crate::shared::Shared;
use crate::transaction::SharedPendingWrites;

const COPY_BATCH_ROWS: usize = 65536;

pub fn handle(
    session: &mut RunnelSession,
    table: &str,
    columns: &[String],
    options: &CopyOptions,
) -> Result<QueryResponse> {
    let entry = session.shared.catalog.snapshot().resolve(table)?.clone();
    if entry.kind == ObjectKind::MaterializedView {
        return Err(RunnelError::plan(
            SqlState::WRONG_OBJECT_TYPE,
            format!("cannot copy into materialized view \"{table}\""),
        ));
    }
    super::dml::refuse_kafka(&session.shared, &entry)?;
    crate::privileges::Principal::of(session)
        .require(&entry, runnel_sql::access::Privileges::INSERT)?;
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
    let format = copy_format(options);
    let decoder = if options.binary {
        let type_oids = indices
            .iter()
            .map(|&i| pg_type_of(entry.schema.field(i)).oid)
            .collect();
        Decoder::Binary(BinaryCopyDecoder::new(type_oids, COPY_BATCH_ROWS))
    } else {
        Decoder::Text(CopyDecoder::new(format, indices.len(), COPY_BATCH_ROWS))
    };
    Ok(QueryResponse::CopyIn {
        columns: indices.len(),
        sink: Box::new(CopySink {
            shared: session.shared.clone(),
            pending: session.pending_writes(),
            decoder,
            entry,
            indices,
            text: Vec::new(),
            batches: Vec::new(),
            rows_typed: 0,
            time_zone: session.settings().time_zone(),
            date_order: session.settings().date_order(),
        }),
    })
}

/// Turns COPY data into batches of text columns.
enum Decoder {
    Text(CopyDecoder),
    Binary(BinaryCopyDecoder),
}

impl Decoder {
    fn write(&mut self, data: &[u8], out: &mut Vec<RecordBatch>) -> Result<(), PgError> {
        match self {
            Decoder::Text(d) => d.write(data, out),
            Decoder::Binary(d) => d.write(data, out),
        }
    }

    fn finish(&mut self, out: &mut Vec<RecordBatch>) -> Result<u64, PgError> {
        match self {
            Decoder::Text(d) => d.finish(out),
            Decoder::Binary(d) => d.finish(out),
        }
    }
}

/// How text or CSV COPY data is framed, from the statement's options.
pub fn copy_format(options: &CopyOptions) -> CopyFormat {
    CopyFormat {
        csv: options.csv,
        header: options.header,
        delimiter: options.delimiter,
        quote: options.quote,
        escape: options.escape,
        null: options.null.as_bytes().to_vec(),
    }
}

struct CopySink {
    shared: Arc<Shared>,
    /// The writes of the transaction block the COPY runs in: its rows are kept for COMMIT.
    pending: Option<SharedPendingWrites>,
    entry: Arc<CatalogEntry>,
    indices: Vec<usize>,
    decoder: Decoder,
    /// Decoded batches of text columns not yet converted.
    text: Vec<RecordBatch>,
    /// Converted batches, in the relation's schema, held until the copy completes.
    batches: Vec<RecordBatch>,
    /// Rows converted so far, for the row number in a message.
    rows_typed: u64,
    /// The session's `TimeZone`: `timestamptz` text without an offset is a time there.
    time_zone: String,
    /// The session's DateStyle order: how `03/01/2026` is read.
    date_order: runnel_common::date_text::FieldOrder,
}

impl CopySink {
    /// Converts decoded text batches to the relation's column types, widened to its full
    /// schema (NULL in columns the COPY does not list).
    fn convert_pending(&mut self) -> Result<()> {
        let text = std::mem::take(&mut self.text);
        for batch in text {
            let typed = self.convert(&batch)?;
            self.rows_typed += batch.num_rows() as u64;
            self.batches.push(typed);
        }
        Ok(())
    }

    fn convert(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let n = batch.num_rows();
        let fields = self.entry.schema.fields();
        let mut columns: Vec<ArrayRef> = fields
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        for (pos, &i) in self.indices.iter().enumerate() {
            columns[i] = self.parse_column(batch.column(pos), &fields[i])?;
        }
        let schema = Arc::new(Schema::new(
            fields
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        Ok(RecordBatch::try_new_with_options(
            schema, columns, &options,
        )?)
    }

    /// Parses a column of text values as the column's type, with Postgres's message for the
    /// first value that is not valid.
    fn parse_column(&self, text: &ArrayRef, field: &Field) -> Result<ArrayRef> {
        let target = field.data_type();
        let spelled;
        let text = match target {
            DataType::Date32 | DataType::Timestamp(..) => {
                spelled = crate::text_casts::postgres_date_column(text, target, self.date_order)?;
                &spelled
            }
            _ => text,
        };
        let in_zone;
        let text = match target {
            DataType::Timestamp(_, Some(_)) if self.time_zone != "UTC" => {
                in_zone = super::query::timestamps_in_zone(text, &self.time_zone, self.date_order)?;
                &in_zone
            }
            _ => text,
        };
        if target == &DataType::Utf8 {
            return runnel_common::text_types::enforce_max_length(field, text.clone());
        }
        crate::convert::check_bare_numeric(
            text.as_ref(),
            target,
            &format!("column \"{}\"", field.name()),
        )?;
        if target == &DataType::Binary {
            return crate::convert::text_to_bytea(text);
        }
        if let DataType::Interval(_) = target {
            let intervals = runnel_common::interval_text::intervals_from_text(text.as_ref())
                .map_err(|error| {
                    RunnelError::execution(
                        SqlState::INVALID_DATETIME_FORMAT,
                        format!(
                            "{error} (COPY {}, column {})",
                            self.entry.name,
                            field.name()
                        ),
                    )
                })?;
            return Ok(cast_with_options(
                &intervals,
                target,
                &CastOptions::default(),
            )?);
        }
        let strict = CastOptions {
            safe: false,
            format_options: FormatOptions::default(),
        };
        match cast_with_options(text, target, &strict) {
            Ok(parsed) => Ok(parsed),
            Err(error) => {
                // Find the value that failed: it is the first one the lenient cast nulls out.
                let lenient = cast_with_options(text, target, &CastOptions::default())?;
                let bad = (0..text.len()).find(|&r| !text.is_null(r) && lenient.is_null(r));
                let strings = text
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::StringArray>()
                    .ok_or_else(|| RunnelError::internal("COPY decoded a non-text column"))?;
                let type_name = type_name(pg_type(target).oid);
                Err(match bad {
                    Some(r) if matches!(target, DataType::Int16 | DataType::Int32 | DataType::Int64) => {
                        runnel_common::integer_text::integer_input_error(
                            strings.value(r),
                            target,
                            &format!(
                                " (COPY {}, row {}, column {})",
                                self.entry.name,
                                self.rows_typed + r as u64 + 1,
                                field.name()
                            ),
                        )
                    }
                    Some(r) => RunnelError::execution(
                        SqlState::INVALID_TEXT_REPRESENTATION,
                        format!(
                            "invalid input syntax for type {type_name}: \"{}\" (COPY {}, row {}, column {})",
                            strings.value(r),
                            self.entry.name,
                            self.rows_typed + r as u64 + 1,
                            field.name()
                        ),
                    ),
                    None => RunnelError::execution(
                        SqlState::INVALID_TEXT_REPRESENTATION,
                        format!(
                            "invalid input for column {} of type {type_name} (COPY {}): {error}",
                            field.name(),
                            self.entry.name
                        ),
                    ),
                })
            }
        }
    }
}

#[async_trait]
impl CopyInSink for CopySink {
    async fn write(&mut self, data: Bytes) -> Result<(), PgError> {
        self.decoder.write(&data, &mut self.text)?;
        self.convert_pending().map_err(to_pg_error)
    }

    async fn finish(mut self: Box<Self>) -> Result<u64, PgError> {
        self.decoder.finish(&mut self.text)?;
        let finish = async {
            self.convert_pending()?;
            let rows = conform_each(&self.entry.schema, &self.batches, 0)?;
            insert_rows(&self.shared, &self.entry, rows, self.pending.as_ref()).await
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
