//! Progress of view backfills. A new view replays its inputs before it goes live (see
//! `Dataflow::add_view`); this module counts how far that replay is, and tells:
//! - other threads, through [`Backfills`] (`SHOW PROGRESS` lists running backfills; the
//!   worker thread itself cannot be asked, it is busy replaying);
//! - the log: INFO `view backfill` every [`LOG_EVERY`] while it runs, and `view backfill done`;
//! - the client that created the view: a NOTICE once the backfill has run [`NOTICE_AFTER`],
//!   then every [`NOTICE_EVERY`], through the session's channel in [`BackfillReport`].
//!
//! Progress is counted in input rows: the rows of the source-log entries the backfill replays
//! (embedded and Kafka streams and tables alike, all read from the local log; rows a view's
//! `start` leaves out count too, they are read) and the rows of the snapshots of the views
//! it reads. The total is fixed when the backfill starts: each log up to the position the
//! replay stops at (rows appended later reach the view live, after the backfill).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use runnel_plan::ObjectId;
use tokio::sync::mpsc::UnboundedSender;

/// How often a running backfill writes its `view backfill` log line.
pub const LOG_EVERY: Duration = Duration::from_secs(5);
/// A backfill that has run this long starts sending NOTICEs to its client.
pub const NOTICE_AFTER: Duration = Duration::from_secs(1);
/// How often NOTICEs follow the first.
pub const NOTICE_EVERY: Duration = Duration::from_secs(2);

/// Rows of the first slice a backfill pushes, before its rate is known. A log entry can hold a
/// whole COPY, so a backfill pushes large entries in slices to report between them; but every
/// slice boundary costs output (an aggregate emits, per slice, each group the slice touched),
/// so slices are as large as the reports allow: an entry up to this size is pushed whole.
pub const FIRST_SLICE_ROWS: usize = 1 << 20;
/// Later slices: about this much work at the backfill's rate so far...
pub const SLICE_TIME: Duration = NOTICE_EVERY;
/// ...and never fewer rows than this.
pub const MIN_SLICE_ROWS: usize = 1 << 16;

/// Who hears about a new view's backfill.
#[derive(Debug, Clone)]
pub struct BackfillReport {
    /// The view's name, for the log, the NOTICEs and SHOW PROGRESS.
    pub view_name: String,
    /// Where progress NOTICEs go (the creating session); `None`: the log only.
    pub notices: Option<UnboundedSender<String>>,
}

/// A running backfill, as SHOW PROGRESS shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillStatus {
    pub view: ObjectId,
    pub name: String,
    pub rows_done: u64,
    pub rows_total: u64,
    pub elapsed: Duration,
}

impl BackfillStatus {
    /// Share done, 0 to 100 (100 for a backfill with nothing to read).
    pub fn percent(&self) -> f64 {
        match self.rows_total {
            0 => 100.0,
            total => 100.0 * self.rows_done.min(total) as f64 / total as f64,
        }
    }

    /// Whole percent done, rounded down (what the NOTICE says).
    pub fn percent_floor(&self) -> u64 {
        match self.rows_total {
            0 => 100,
            total => self.rows_done.min(total) * 100 / total,
        }
    }

    pub fn rows_per_sec(&self) -> f64 {
        match self.elapsed.as_secs_f64() {
            secs if secs > 0.0 => self.rows_done as f64 / secs,
            _ => 0.0,
        }
    }

    /// The time left at the rate so far; `None` before any row is done.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rows_per_sec();
        (rate > 0.0).then(|| {
            Duration::from_secs_f64(self.rows_total.saturating_sub(self.rows_done) as f64 / rate)
        })
    }

    /// The NOTICE text: `backfilling v: 1200000 of 3000000 rows (40%), 410000 rows/s,
    /// about 4 s left`.
    pub fn notice(&self) -> String {
        let left = match self.eta() {
            Some(eta) => format!("about {} s left", eta.as_secs_f64().ceil() as u64),
            None => "time left unknown".to_string(),
        };
        format!(
            "backfilling {}: {} of {} rows ({}%), {:.0} rows/s, {left}",
            self.name,
            self.rows_done,
            self.rows_total,
            self.percent_floor(),
            self.rows_per_sec(),
        )
    }
}

/// The backfills running now, readable from any thread.
#[derive(Debug, Default)]
pub struct Backfills {
    running: Mutex<BTreeMap<ObjectId, Running>>,
}

#[derive(Debug, Clone)]
struct Running {
    name: String,
    rows_done: u64,
    rows_total: u64,
    started: Instant,
}

impl Backfills {
    /// Every running backfill, by view id.
    pub fn snapshot(&self) -> Vec<BackfillStatus> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .iter()
            .map(|(&view, r)| BackfillStatus {
                view,
                name: r.name.clone(),
                rows_done: r.rows_done,
                rows_total: r.rows_total,
                elapsed: r.started.elapsed(),
            })
            .collect()
    }

    fn set(&self, view: ObjectId, running: Running) {
        let mut all = self.running.lock().unwrap_or_else(|p| p.into_inner());
        all.insert(view, running);
    }

    /// Moves a listed backfill's counts (no allocation: called per replayed slice).
    fn update(&self, view: ObjectId, rows_done: u64, rows_total: u64) {
        let mut all = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = all.get_mut(&view) {
            running.rows_done = rows_done;
            running.rows_total = rows_total;
        }
    }

    fn remove(&self, view: ObjectId) {
        let mut all = self.running.lock().unwrap_or_else(|p| p.into_inner());
        all.remove(&view);
    }
}

/// One backfill's progress, kept by the worker thread while it replays. Counted per replayed
/// slice of rows, never per row. Dropping it takes it off the board (a failed backfill too).
pub struct BackfillProgress {
    view: ObjectId,
    notices: Option<UnboundedSender<String>>,
    board: Arc<Backfills>,
    state: Running,
    next_log: Instant,
    next_notice: Instant,
}

impl BackfillProgress {
    /// Starts the clock of `view`'s backfill; the total follows from
    /// [`BackfillProgress::add_total`], and the backfill is listed once
    /// [`BackfillProgress::counted`] says the total is complete.
    pub fn start(view: ObjectId, report: BackfillReport, board: Arc<Backfills>) -> Self {
        let started = Instant::now();
        let state = Running {
            name: report.view_name,
            rows_done: 0,
            rows_total: 0,
            started,
        };
        BackfillProgress {
            view,
            notices: report.notices,
            board,
            state,
            next_log: started + LOG_EVERY,
            next_notice: started + NOTICE_AFTER,
        }
    }

    /// Rows the backfill will read on top of those known.
    pub fn add_total(&mut self, rows: u64) {
        self.state.rows_total += rows;
    }

    /// The total is complete: the backfill is listed from now on (never with a partial
    /// total).
    pub fn counted(&mut self) {
        self.board.set(self.view, self.state.clone());
    }

    /// How many rows to push at most in the next slice (see [`FIRST_SLICE_ROWS`]).
    pub fn slice_rows(&self) -> usize {
        let secs = self.state.started.elapsed().as_secs_f64();
        if self.state.rows_done == 0 || secs <= 0.0 {
            return FIRST_SLICE_ROWS;
        }
        let rate = self.state.rows_done as f64 / secs;
        ((rate * SLICE_TIME.as_secs_f64()) as usize).max(MIN_SLICE_ROWS)
    }

    /// `rows` more rows were replayed: publishes the count, and logs or notifies when due.
    pub fn advance(&mut self, rows: u64) {
        self.state.rows_done += rows;
        self.board
            .update(self.view, self.state.rows_done, self.state.rows_total);
        let now = Instant::now();
        if now < self.next_log && (self.notices.is_none() || now < self.next_notice) {
            return;
        }
        let status = self.status();
        if now >= self.next_log {
            self.next_log = now + LOG_EVERY;
            tracing::info!(
                view = %status.name,
                rows_done = status.rows_done,
                rows_total = status.rows_total,
                percent = (status.percent() * 10.0).round() / 10.0,
                rows_per_sec = status.rows_per_sec().round() as u64,
                eta_seconds = status.eta().map(|eta| eta.as_secs_f64().ceil() as u64),
                "view backfill"
            );
        }
        if now >= self.next_notice {
            self.next_notice = now + NOTICE_EVERY;
            if let Some(notices) = &self.notices {
                // The client may be gone: the view is built all the same.
                let _ = notices.send(status.notice());
            }
        }
    }

    /// Every input row is replayed; writing the view's state (the checkpoint) is left. A
    /// backfill long enough to have sent NOTICEs says so, so that the wait is not silent.
    pub fn replayed(&mut self) {
        let status = self.status();
        if status.elapsed < NOTICE_AFTER {
            return;
        }
        if let Some(notices) = &self.notices {
            let _ = notices.send(format!(
                "backfilling {}: all {} rows read, writing the view",
                status.name, status.rows_done
            ));
        }
    }

    /// The backfill is committed: the final log line.
    pub fn finish(self) {
        let status = self.status();
        tracing::info!(
            view = %status.name,
            rows = status.rows_done,
            duration_ms = (status.elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "view backfill done"
        );
    }

    fn status(&self) -> BackfillStatus {
        BackfillStatus {
            view: self.view,
            name: self.state.name.clone(),
            rows_done: self.state.rows_done,
            rows_total: self.state.rows_total,
            elapsed: self.state.started.elapsed(),
        }
    }
}

impl Drop for BackfillProgress {
    fn drop(&mut self) {
        self.board.remove(self.view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(done: u64, total: u64, secs: u64) -> BackfillStatus {
        BackfillStatus {
            view: 7,
            name: "v".into(),
            rows_done: done,
            rows_total: total,
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn notice_reads_like_the_docs() {
        assert_eq!(
            status(1_200_000, 3_000_000, 3).notice(),
            "backfilling v: 1200000 of 3000000 rows (40%), 400000 rows/s, about 5 s left"
        );
        assert_eq!(
            status(0, 10, 0).notice(),
            "backfilling v: 0 of 10 rows (0%), 0 rows/s, time left unknown"
        );
        assert_eq!(status(0, 0, 1).percent(), 100.0);
    }

    #[test]
    fn board_lists_a_backfill_until_it_is_dropped() {
        let board = Arc::new(Backfills::default());
        let report = BackfillReport {
            view_name: "v".into(),
            notices: None,
        };
        let mut progress = BackfillProgress::start(3, report, board.clone());
        progress.add_total(10);
        assert!(
            board.snapshot().is_empty(),
            "listed before its total is known"
        );
        progress.counted();
        progress.advance(4);
        let running = board.snapshot();
        assert_eq!(running.len(), 1);
        assert_eq!((running[0].rows_done, running[0].rows_total), (4, 10));
        progress.finish();
        assert!(board.snapshot().is_empty());
    }
}
