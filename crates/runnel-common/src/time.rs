//! Event time: a stream's watermark definition and the clock that enforces it.
//!
//! A stream declared with `WATERMARK FOR ts AS ts - INTERVAL 'd'` keeps, per partition, the
//! largest `ts` it accepted; the partition's watermark is that minus `d`, and the stream's
//! watermark (its event-time clock) is the minimum over partitions that are not idle, never
//! moving backwards. A row whose `ts` is behind the clock when it arrives is late: it is
//! dropped and counted. The clock runs where rows are appended to the stream's log and every
//! log entry records the clock after it, so a view replaying the log sees exactly the clock
//! the live run saw (see `runnel-runtime`'s dataflow).
//!
//! Times are microseconds since the Unix epoch (Arrow's `Timestamp(Microsecond, _)`, the
//! type of Runnel's TIMESTAMP columns).

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, BooleanArray, Int32Array, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::IntervalMonthDayNano;
use serde::{Deserialize, Serialize};

/// Schema metadata key of a stored log entry: the stream's watermark after the entry
/// (microseconds, decimal text).
pub const WATERMARK_METADATA: &str = "runnel.watermark";

/// A stream's `WATERMARK FOR column AS column - INTERVAL 'delay'`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkDef {
    /// The event-time column (a TIMESTAMP or TIMESTAMPTZ column of the stream).
    pub column: usize,
    /// How far the watermark trails the largest event time seen, in microseconds (>= 0).
    pub delay_micros: i64,
}

/// A fixed-length interval in microseconds: months are refused (their length varies), days
/// count as 24 hours (event time is UTC). `None` for month intervals or overflow.
pub fn interval_micros(interval: IntervalMonthDayNano) -> Option<i64> {
    if interval.months != 0 {
        return None;
    }
    (interval.days as i64)
        .checked_mul(86_400_000_000)?
        .checked_add(interval.nanoseconds / 1_000)
}

/// Formats microseconds since the epoch as an ISO-8601 UTC timestamp (for SHOW output).
pub fn format_micros(micros: i64) -> String {
    use datafusion::arrow::temporal_conversions::timestamp_us_to_datetime;
    match timestamp_us_to_datetime(micros) {
        Some(t) => {
            // Like Postgres: the fraction without trailing zeros.
            let us = micros.rem_euclid(1_000_000);
            let fraction = match us {
                0 => String::new(),
                us => format!(".{us:06}").trim_end_matches('0').to_string(),
            };
            format!("{}{fraction}+00", t.format("%Y-%m-%d %H:%M:%S"))
        }
        None => micros.to_string(),
    }
}

/// Formats a duration in microseconds the way Postgres prints an interval (`00:00:05`,
/// `1 day 02:00:00.5`).
pub fn format_duration_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let days = m / 86_400_000_000;
    let rest = m % 86_400_000_000;
    let (h, mi, s, us) = (
        rest / 3_600_000_000,
        rest / 60_000_000 % 60,
        rest / 1_000_000 % 60,
        rest % 1_000_000,
    );
    let fraction = if us == 0 {
        String::new()
    } else {
        format!(".{us:06}").trim_end_matches('0').to_string()
    };
    let time = format!("{sign}{h:02}:{mi:02}:{s:02}{fraction}");
    match days {
        0 => time,
        1 => format!("{sign}1 day {time}"),
        d => format!("{sign}{d} days {time}"),
    }
}

/// One partition's part of the clock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionClock {
    /// The largest event time accepted from this partition.
    pub max_event_time: Option<i64>,
    /// An idle partition does not hold the stream's watermark back until it sends again.
    pub idle: bool,
    /// A finished partition sends nothing ever again (a generator's partition past its last
    /// event): it never holds the watermark back.
    #[serde(default)]
    pub finished: bool,
}

/// The event-time clock of one stream, persisted with every append to its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatermarkClock {
    pub def: WatermarkDef,
    pub partitions: BTreeMap<i32, PartitionClock>,
    /// The stream's watermark: no row with an earlier event time is accepted any more.
    pub watermark: Option<i64>,
    /// Rows dropped because they were behind the watermark (or had no event time).
    pub late_rows: u64,
}

impl WatermarkClock {
    /// A fresh clock. Embedded streams have one partition, 0; Kafka streams register theirs
    /// with [`WatermarkClock::add_partitions`].
    pub fn new(def: WatermarkDef) -> Self {
        WatermarkClock {
            def,
            partitions: BTreeMap::new(),
            watermark: None,
            late_rows: 0,
        }
    }

    /// Makes `partitions` part of the clock: a partition that never sent a row holds the
    /// watermark back (until it is idle), as it may still send old events.
    pub fn add_partitions(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for p in partitions {
            self.partitions.entry(p).or_default();
        }
    }

    /// Partitions currently idle.
    pub fn idle_partitions(&self) -> usize {
        self.partitions.values().filter(|p| p.idle).count()
    }

    /// Minimum partition watermark over partitions that are neither idle nor finished; `None`
    /// when one of them has sent nothing yet. When none is left, the minimum over the idle
    /// ones that sent something: nothing is arriving, so what was sent is all there is (an
    /// idle partition may still send again, so not beyond what it sent). When only finished
    /// partitions are left, the largest event time of any: no row can come any more, as with
    /// one partition that sent its last row.
    fn combined(&self) -> Option<i64> {
        let mut active: Option<Option<i64>> = None;
        let mut idle: Option<i64> = None;
        let mut finished: Option<i64> = None;
        for p in self.partitions.values() {
            if p.finished {
                if let Some(t) = p.max_event_time {
                    finished = Some(finished.map_or(t, |m| m.max(t)));
                }
            } else if p.idle {
                if let Some(t) = p.max_event_time {
                    idle = Some(idle.map_or(t, |m| m.min(t)));
                }
            } else {
                let t = p.max_event_time;
                active = Some(match active {
                    None => t,
                    Some(m) => m.zip(t).map(|(a, b)| a.min(b)),
                });
            }
        }
        let t = match active {
            Some(t) => t?,
            None => idle.or(finished)?,
        };
        Some(t - self.def.delay_micros)
    }

    /// Whether a partition whose largest event time was `before` may be what holds the
    /// watermark where it is. The watermark is never below the partitions' combined one (it
    /// moves up to it after every change that can raise it: a partition's new largest time,
    /// a partition waking, going idle or finishing), so a partition already past the
    /// watermark is not the minimum and raising it cannot move anything: skipping
    /// [`WatermarkClock::advance`] then saves a pass over every partition per row.
    fn could_hold_back(&self, before: Option<i64>) -> bool {
        match (before, self.watermark) {
            (Some(m), Some(wm)) => m - self.def.delay_micros <= wm,
            _ => true,
        }
    }

    /// Moves the stream's watermark up to the partitions' combined watermark; true if it moved.
    fn advance(&mut self) -> bool {
        match self.combined() {
            Some(wm) if self.watermark.is_none_or(|current| wm > current) => {
                self.watermark = Some(wm);
                true
            }
            _ => false,
        }
    }

    /// Runs rows through the clock in order: each row is late if its event time is null or
    /// behind the watermark as it stands when the row arrives; the others advance their
    /// partition. Returns which rows to keep (`None`: all of them).
    pub fn observe(
        &mut self,
        event_times: &TimestampMicrosecondArray,
        partitions: Option<&Int32Array>,
    ) -> Option<BooleanArray> {
        let n = event_times.len();
        let mut keep: Option<Vec<bool>> = None;
        let single = partitions.is_none() || self.partitions.len() <= 1;
        for i in 0..n {
            let partition = partitions.map_or(0, |p| p.value(i));
            // Any record, late or not, shows the partition is sending again. Waking it can
            // raise the combined watermark (when every partition was idle, the minimum was
            // over all of them), so it is recomputed at once.
            let woke = self
                .partitions
                .get_mut(&partition)
                .is_some_and(|clock| std::mem::replace(&mut clock.idle, false));
            if woke && !single {
                self.advance();
            }
            let late = event_times.is_null(i)
                || self.watermark.is_some_and(|wm| event_times.value(i) < wm);
            if late {
                self.late_rows += 1;
                keep.get_or_insert_with(|| vec![true; n])[i] = false;
                continue;
            }
            let ts = event_times.value(i);
            let clock = self.partitions.entry(partition).or_default();
            clock.idle = false;
            let before = clock.max_event_time;
            if before.is_none_or(|m| ts > m) {
                clock.max_event_time = Some(ts);
                if single {
                    // One partition: its watermark is the stream's.
                    let wm = ts - self.def.delay_micros;
                    if self.watermark.is_none_or(|current| wm > current) {
                        self.watermark = Some(wm);
                    }
                } else if self.could_hold_back(before) {
                    self.advance();
                }
            }
        }
        keep.map(BooleanArray::from)
    }

    /// Moves the watermark up to the partitions' combined one, for a clock read back from
    /// the store. Rows skip recomputing the watermark when their partition cannot be the
    /// minimum, which relies on the watermark never lagging the combined one; a clock stored
    /// by an older version can (a late row used to wake an idle partition without the
    /// watermark following), and would then stay behind until a partition went idle.
    pub fn settle(&mut self) {
        self.advance();
    }

    /// Marks partitions finished: they will never send again (a generator's partitions past
    /// its last event). True if the watermark moved as a result.
    pub fn finish(&mut self, partitions: &[i32]) -> bool {
        self.mark(partitions, |clock| &mut clock.finished)
    }

    /// Marks partitions idle (they stop holding the watermark back), all at once; true if
    /// the watermark moved as a result.
    pub fn set_idle(&mut self, partitions: &[i32]) -> bool {
        self.mark(partitions, |clock| &mut clock.idle)
    }

    /// Sets `flag` on `partitions` (registering those the clock did not know) and moves the
    /// watermark if a flag changed; true if it moved.
    fn mark(&mut self, partitions: &[i32], flag: fn(&mut PartitionClock) -> &mut bool) -> bool {
        let mut changed = false;
        for &p in partitions {
            let set = flag(self.partitions.entry(p).or_default());
            changed |= !*set;
            *set = true;
        }
        changed && self.advance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock(delay: i64) -> WatermarkClock {
        WatermarkClock::new(WatermarkDef {
            column: 0,
            delay_micros: delay,
        })
    }

    #[test]
    fn one_partition_drops_rows_behind_the_watermark() {
        let mut c = clock(5);
        let ts =
            TimestampMicrosecondArray::from(vec![Some(100), Some(96), Some(94), None, Some(120)]);
        let keep = c.observe(&ts, None).expect("some rows are late");
        // 100 sets the watermark to 95: 96 is kept, 94 is late, null is late.
        assert_eq!(
            keep.iter().collect::<Vec<_>>(),
            vec![Some(true), Some(true), Some(false), Some(false), Some(true)]
        );
        assert_eq!(c.watermark, Some(115));
        assert_eq!(c.late_rows, 2);
    }

    #[test]
    fn partitions_combine_by_minimum_and_idle_ones_stop_holding_back() {
        let mut c = clock(0);
        c.add_partitions([0, 1]);
        let ts = TimestampMicrosecondArray::from(vec![100, 200]);
        let parts = Int32Array::from(vec![0, 0]);
        assert!(c.observe(&ts, Some(&parts)).is_none());
        // Partition 1 has sent nothing: no watermark yet.
        assert_eq!(c.watermark, None);
        let ts = TimestampMicrosecondArray::from(vec![50]);
        let parts = Int32Array::from(vec![1]);
        c.observe(&ts, Some(&parts));
        assert_eq!(c.watermark, Some(50));
        assert!(c.set_idle(&[1]));
        assert_eq!(c.watermark, Some(200));
        // The idle partition sends again, behind the watermark: late, and active again.
        let ts = TimestampMicrosecondArray::from(vec![60, 300]);
        let parts = Int32Array::from(vec![1, 1]);
        let keep = c.observe(&ts, Some(&parts)).expect("60 is late");
        assert!(!keep.value(0));
        assert!(!c.partitions[&1].idle);
        // Never backwards: partition 0 (at 200) is now the minimum.
        assert_eq!(c.watermark, Some(200));
    }

    #[test]
    fn all_idle_partitions_release_what_they_sent_whatever_their_order() {
        for sender in [0, 1] {
            let mut c = clock(5);
            c.add_partitions([0, 1]);
            let ts = TimestampMicrosecondArray::from(vec![100]);
            c.observe(&ts, Some(&Int32Array::from(vec![sender])));
            assert_eq!(c.watermark, None);
            assert!(c.set_idle(&[0, 1]));
            assert_eq!(c.watermark, Some(95), "data in partition {sender}");
        }
    }

    #[test]
    fn finished_partitions_never_hold_back_and_release_their_latest_time() {
        let mut c = clock(5);
        c.add_partitions([0, 1, 2]);
        let ts = TimestampMicrosecondArray::from(vec![100, 300]);
        c.observe(&ts, Some(&Int32Array::from(vec![0, 1])));
        // Partition 2 has sent nothing.
        assert_eq!(c.watermark, None);
        // A finished partition that sent nothing does not hold the others back.
        assert!(c.finish(&[2]));
        assert_eq!(c.watermark, Some(95));
        // Partition 0 finishes: partition 1, still sending, is the minimum.
        assert!(c.finish(&[0]));
        assert_eq!(c.watermark, Some(295));
        // An idle partition may send again: it holds the watermark at what it sent, finished
        // ones do not.
        let mut d = clock(5);
        d.add_partitions([0, 1]);
        d.observe(
            &TimestampMicrosecondArray::from(vec![100, 300]),
            Some(&Int32Array::from(vec![0, 1])),
        );
        // Partition 0 is the minimum: partition 1 finishing moves nothing, nor 0 going idle.
        assert!(!d.finish(&[1]));
        assert!(!d.set_idle(&[0]));
        assert_eq!(d.watermark, Some(95));
        // Every partition finished: everything sent is closed, as with one partition.
        assert!(d.finish(&[0]));
        assert_eq!(d.watermark, Some(295));
        assert!(!d.finish(&[0, 1]));
    }

    /// The clock's watermark after every row, against its definition computed from scratch
    /// (minimum over active partitions, or over the idle ones when none is active; never
    /// backwards): skipping the recomputation for rows of partitions that cannot be the
    /// minimum must not change a single step, nor may a partition woken by a late row.
    #[test]
    fn many_partitions_move_the_watermark_as_defined_row_by_row() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for round in 0..50 {
            let partitions = 1 + next(6) as i32;
            let mut c = clock(next(40) as i64);
            c.add_partitions(0..partitions);
            let mut max: BTreeMap<i32, i64> = BTreeMap::new();
            let mut idle: BTreeMap<i32, bool> = BTreeMap::new();
            let mut expected: Option<i64> = None;
            let mut base = 1_000i64;
            for _ in 0..200 {
                if next(10) == 0 {
                    let p = next(partitions as u64) as i32;
                    c.set_idle(&[p]);
                    idle.insert(p, true);
                } else {
                    base += next(20) as i64;
                    let ts = base - next(60) as i64;
                    let p = next(partitions as u64) as i32;
                    let keep = c.observe(
                        &TimestampMicrosecondArray::from(vec![ts]),
                        Some(&Int32Array::from(vec![p])),
                    );
                    idle.insert(p, false);
                    let late = expected.is_some_and(|wm| ts < wm);
                    assert_eq!(keep.is_some(), late, "round {round}");
                    if !late {
                        let m = max.entry(p).or_insert(ts);
                        *m = (*m).max(ts);
                    }
                }
                let active: Vec<i32> = (0..partitions)
                    .filter(|p| !idle.get(p).copied().unwrap_or(false))
                    .collect();
                let combined = if active.is_empty() {
                    max.values().copied().min()
                } else if active.iter().all(|p| max.contains_key(p)) {
                    active.iter().map(|p| max[p]).min()
                } else {
                    None
                };
                if let Some(t) = combined.map(|t| t - c.def.delay_micros) {
                    expected = Some(expected.map_or(t, |e| e.max(t)));
                }
                assert_eq!(c.watermark, expected, "round {round}");
            }
        }
    }

    /// A clock stored by an older version, where a late row woke partition 1 while the
    /// watermark stayed at what idle partition 0 allowed: rows of partition 1 alone would not
    /// move it (none looks like the minimum) until the clock is settled.
    #[test]
    fn a_stored_clock_behind_its_partitions_is_settled() {
        let mut c = clock(5);
        c.add_partitions([0, 1]);
        c.partitions.get_mut(&0).unwrap().max_event_time = Some(100);
        c.partitions.get_mut(&0).unwrap().idle = true;
        c.partitions.get_mut(&1).unwrap().max_event_time = Some(200);
        c.watermark = Some(95);
        let mut stale = c.clone();
        let rows = || {
            (
                TimestampMicrosecondArray::from(vec![250, 300]),
                Int32Array::from(vec![1, 1]),
            )
        };
        let (ts, parts) = rows();
        stale.observe(&ts, Some(&parts));
        assert_eq!(stale.watermark, Some(95), "the lag this guards against");
        c.settle();
        assert_eq!(c.watermark, Some(195));
        let (ts, parts) = rows();
        c.observe(&ts, Some(&parts));
        assert_eq!(c.watermark, Some(295));
    }

    #[test]
    fn intervals_in_micros() {
        assert_eq!(
            interval_micros(IntervalMonthDayNano::new(0, 1, 5_000_000_000)),
            Some(86_405_000_000)
        );
        assert_eq!(interval_micros(IntervalMonthDayNano::new(1, 0, 0)), None);
    }
}
