//! Test support: runs a real `runnel serve` process on a free port with its own data directory,
//! and connects to it with tokio-postgres, so tests exercise the same wire protocol users do.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

/// A running server process. Dropping it kills the process.
pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
}

/// A state cache of 1 KiB (`--state-cache-mb`), room for a handful of keys: every operator
/// evicts and re-reads its state all the time, and checkpoints come after nearly every batch
/// (see `runnel_state::CacheBudget`).
pub const TINY_STATE_CACHE: &[&str] = &["--state-cache-mb", "0.001"];

impl TestServer {
    /// Starts a server on a fresh data directory inside `dir`.
    pub fn start(dir: &Path) -> TestServer {
        Self::start_on(dir.join("data"))
    }

    /// Starts a server on a fresh data directory inside `dir`, with extra `serve` arguments.
    pub fn start_with(dir: &Path, args: &[&str]) -> TestServer {
        Self::start_on_with(dir.join("data"), args)
    }

    /// Starts a server on `data_dir` (new or existing).
    pub fn start_on(data_dir: PathBuf) -> TestServer {
        Self::start_on_with(data_dir, &[])
    }

    /// Starts a server on `data_dir` (new or existing), with extra `serve` arguments.
    pub fn start_on_with(data_dir: PathBuf, args: &[&str]) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            .env("RUNNEL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the runnel binary must start (built by cargo for integration tests)");
        let stdout = child.stdout.take().expect("stdout was piped");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        let addr = loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("reading server stdout");
            assert!(n > 0, "server exited before listening");
            if let Some(rest) = line.strip_prefix("runnel listening on ") {
                break rest.split_whitespace().next().expect("address").to_string();
            }
            assert!(Instant::now() < deadline, "server did not start in time");
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        TestServer {
            child: Some(child),
            addr,
            data_dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port")
    }

    /// A connection string for tokio-postgres / psql.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=runnel dbname=runnel",
            self.port()
        )
    }

    pub async fn connect(&self) -> Client {
        let (client, connection) = tokio_postgres::connect(&self.conninfo(), NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }

    /// kill -9: no shutdown hook runs.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the process and starts a new one on the same data directory.
    pub fn restart(mut self) -> TestServer {
        self.kill();
        TestServer::start_on(self.data_dir.clone())
    }

    /// Kills the process and starts a new one on the same data directory with `args`.
    pub fn restart_with(mut self, args: &[&str]) -> TestServer {
        self.kill();
        TestServer::start_on_with(self.data_dir.clone(), args)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, then waits (up to two minutes) for the process to exit; returns its exit
    /// status. Kills it and panics if it does not exit in time.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the server is running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed: {status}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the server did not exit within two minutes of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (clean shutdown, which must succeed) and a new process on the same data
    /// directory.
    pub fn restart_gracefully(mut self) -> TestServer {
        let status = self.terminate();
        assert!(
            status.success(),
            "the server exited with {status} after SIGTERM"
        );
        TestServer::start_on(self.data_dir.clone())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every row of a simple-protocol query as text cells (`None` for NULL).
pub async fn query_text(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}
