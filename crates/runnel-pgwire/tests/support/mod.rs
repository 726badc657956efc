//! A tiny fake engine that answers a handful of canned statements, and a server harness.
//!
//! Statements (case-insensitive, one per `;`-separated part of a simple query):
//! - `select <table>`: the batches registered under `<table>`.
//! - `echo <oid> ...`: one parameter per listed type OID; returns one text column per
//!   parameter with the text it received, plus a `types` column listing the received OIDs.
//! - `copy <table> from stdin`: COPY into a sink that counts lines and fails on a line `bad`.
//! - `insert`: `INSERT 0 1`, counted. `begin` (or `start transaction`), `commit`, `rollback`:
//!   transaction state.
//! - `fail`: prepares fine but fails when executed, with detail and hint.
//! - `-- ...`: an empty query.
//! - anything else: a syntax error pointing at the first character.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arrow::array::{ArrayRef, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use bytes::Bytes;
use runnel_pgwire::{
    CopyInSink, ParamValue, PgEngine, PgError, PgSession, QueryResponse, StartupInfo,
    StatementDescription, TransactionStatus,
};

#[derive(Default)]
pub struct FakeEngine {
    pub tables: HashMap<String, (SchemaRef, Vec<RecordBatch>)>,
    /// The data of every finished COPY.
    pub copies: Arc<Mutex<Vec<String>>>,
    /// The messages of every aborted COPY.
    pub aborted: Arc<Mutex<Vec<String>>>,
    pub inserts: Arc<AtomicU64>,
    pub startups: Arc<Mutex<Vec<StartupInfo>>>,
}

impl FakeEngine {
    /// Registers a one-column table `name` holding `array`.
    pub fn column(&mut self, name: &str, array: ArrayRef) {
        let batch = RecordBatch::try_from_iter([(name, array)]).expect("one column is a batch");
        self.tables
            .insert(name.to_string(), (batch.schema(), vec![batch]));
    }

    pub fn table(&mut self, name: &str, batches: Vec<RecordBatch>) {
        let schema = batches.first().expect("at least one batch").schema();
        self.tables.insert(name.to_string(), (schema, batches));
    }
}

#[async_trait]
impl PgEngine for FakeEngine {
    type Session = FakeSession;

    async fn open_session(&self, startup: &StartupInfo) -> Result<FakeSession, PgError> {
        if startup.user == "nobody" {
            return Err(PgError::new("28000", "role \"nobody\" does not exist"));
        }
        self.startups
            .lock()
            .expect("lock not poisoned")
            .push(startup.clone());
        Ok(FakeSession {
            tables: self.tables.clone(),
            copies: Arc::clone(&self.copies),
            aborted: Arc::clone(&self.aborted),
            inserts: Arc::clone(&self.inserts),
            status: TransactionStatus::Idle,
        })
    }
}

pub struct FakeSession {
    tables: HashMap<String, (SchemaRef, Vec<RecordBatch>)>,
    copies: Arc<Mutex<Vec<String>>>,
    aborted: Arc<Mutex<Vec<String>>>,
    inserts: Arc<AtomicU64>,
    status: TransactionStatus,
}

#[derive(Debug)]
pub enum FakeStatement {
    Select(String),
    Echo(Vec<u32>),
    Copy,
    Insert,
    Begin,
    Commit,
    Rollback,
    Fail,
    Empty,
}

impl FakeSession {
    fn parse_one(&self, sql: &str) -> Result<FakeStatement, PgError> {
        let sql = sql.trim();
        let lower = sql.to_ascii_lowercase();
        let words: Vec<&str> = lower.split_whitespace().collect();
        Ok(match words.as_slice() {
            [] => FakeStatement::Empty,
            [first, ..] if first.starts_with("--") => FakeStatement::Empty,
            ["select", table] if self.tables.contains_key(*table) => {
                FakeStatement::Select(table.to_string())
            }
            ["echo", oids @ ..] => FakeStatement::Echo(
                oids.iter()
                    .map(|oid| oid.parse().map_err(|_| syntax_error()))
                    .collect::<Result<_, _>>()?,
            ),
            ["copy", _, "from", "stdin"] => FakeStatement::Copy,
            ["insert"] => FakeStatement::Insert,
            ["begin"] | ["start", "transaction"] => FakeStatement::Begin,
            ["commit"] => FakeStatement::Commit,
            ["rollback"] => FakeStatement::Rollback,
            ["fail"] => FakeStatement::Fail,
            _ => return Err(syntax_error()),
        })
    }

    fn describe(&self, statement: &FakeStatement) -> StatementDescription {
        match statement {
            FakeStatement::Select(table) => StatementDescription {
                param_oids: vec![],
                fields: Some(self.tables[table].0.clone()),
            },
            FakeStatement::Echo(oids) => StatementDescription {
                param_oids: oids.clone(),
                fields: Some(echo_schema(oids.len())),
            },
            _ => StatementDescription {
                param_oids: vec![],
                fields: None,
            },
        }
    }
}

fn syntax_error() -> PgError {
    let mut error = PgError::new("42601", "syntax error at or near \"nonsense\"");
    error.position = Some(1);
    error
}

fn echo_schema(params: usize) -> SchemaRef {
    let mut fields: Vec<Field> = (1..=params)
        .map(|i| Field::new(format!("p{i}"), DataType::Utf8, true))
        .collect();
    fields.push(Field::new("types", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

#[async_trait]
impl PgSession for FakeSession {
    type Statement = FakeStatement;

    fn parse_simple(&mut self, sql: &str) -> Result<Vec<Arc<FakeStatement>>, PgError> {
        sql.split(';')
            .filter(|part| !part.trim().is_empty())
            .map(|part| self.parse_one(part).map(Arc::new))
            .collect()
    }

    async fn prepare(
        &mut self,
        sql: &str,
        _param_oids: &[u32],
    ) -> Result<(Arc<FakeStatement>, StatementDescription), PgError> {
        let statement = self.parse_one(sql)?;
        let description = self.describe(&statement);
        Ok((Arc::new(statement), description))
    }

    async fn execute(
        &mut self,
        statement: &FakeStatement,
        params: &[ParamValue],
    ) -> Result<QueryResponse, PgError> {
        let command = |tag: &str| {
            Ok(QueryResponse::Command {
                tag: tag.to_string(),
            })
        };
        match statement {
            FakeStatement::Select(table) => {
                let (schema, batches) = self.tables[table].clone();
                Ok(QueryResponse::Rows {
                    schema,
                    batches: runnel_pgwire::batch_stream(batches),
                })
            }
            FakeStatement::Echo(_) => {
                let schema = echo_schema(params.len());
                let mut columns: Vec<ArrayRef> = params
                    .iter()
                    .map(|p| Arc::new(StringArray::from(vec![p.text.clone()])) as ArrayRef)
                    .collect();
                let types = params
                    .iter()
                    .map(|p| p.type_oid.to_string())
                    .collect::<Vec<_>>()
                    .join(" ");
                columns.push(Arc::new(StringArray::from(vec![types])));
                let batch = RecordBatch::try_new(schema.clone(), columns)
                    .map_err(|e| PgError::new("XX000", e.to_string()))?;
                Ok(QueryResponse::Rows {
                    schema,
                    batches: runnel_pgwire::batch_stream(vec![batch]),
                })
            }
            FakeStatement::Copy => Ok(QueryResponse::CopyIn {
                columns: 2,
                sink: Box::new(CountingSink {
                    data: Vec::new(),
                    copies: Arc::clone(&self.copies),
                    aborted: Arc::clone(&self.aborted),
                }),
            }),
            FakeStatement::Insert => {
                self.inserts.fetch_add(1, Ordering::SeqCst);
                command("INSERT 0 1")
            }
            FakeStatement::Begin => {
                self.status = TransactionStatus::InTransaction;
                command("BEGIN")
            }
            FakeStatement::Commit => {
                self.status = TransactionStatus::Idle;
                command("COMMIT")
            }
            FakeStatement::Rollback => {
                self.status = TransactionStatus::Idle;
                command("ROLLBACK")
            }
            FakeStatement::Fail => {
                if self.status == TransactionStatus::InTransaction {
                    self.status = TransactionStatus::Failed;
                }
                let mut error = PgError::new("22012", "division by zero");
                error.detail = Some("the divisor was 0".into());
                error.hint = Some("divide by something else".into());
                Err(error)
            }
            FakeStatement::Empty => Ok(QueryResponse::Empty),
        }
    }

    fn transaction_status(&self) -> TransactionStatus {
        self.status
    }
}

/// Collects COPY data; counts complete lines; refuses a line `bad`.
struct CountingSink {
    data: Vec<u8>,
    copies: Arc<Mutex<Vec<String>>>,
    aborted: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl CopyInSink for CountingSink {
    async fn write(&mut self, data: Bytes) -> Result<(), PgError> {
        self.data.extend_from_slice(&data);
        if self.data.split(|&b| b == b'\n').any(|line| line == b"bad") {
            return Err(PgError::new(
                "22P02",
                "invalid input syntax for type integer: \"bad\"",
            ));
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, PgError> {
        let text = String::from_utf8(self.data).map_err(|_| PgError::new("22021", "not UTF-8"))?;
        let rows = text.matches('\n').count() as u64;
        self.copies.lock().expect("lock not poisoned").push(text);
        Ok(rows)
    }

    async fn abort(self: Box<Self>, message: String) {
        self.aborted
            .lock()
            .expect("lock not poisoned")
            .push(message);
    }
}

/// A server on a loopback port serving `engine`.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Arc<FakeEngine>,
}

impl Server {
    pub async fn start(engine: FakeEngine) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("bound socket has an address");
        let engine = Arc::new(engine);
        tokio::spawn(runnel_pgwire::serve(
            listener,
            Arc::clone(&engine),
            runnel_pgwire::ServeOptions::default(),
        ));
        Server { addr, engine }
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let config = format!(
            "host={} port={} user=tester dbname=testdb application_name=wiretest",
            self.addr.ip(),
            self.addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                eprintln!("connection error: {error}");
            }
        });
        client
    }
}
