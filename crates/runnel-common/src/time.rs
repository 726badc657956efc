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

    /// Minimum partition watermark over partitions that are not idle; `None` when one of them
    /// has sent nothing yet. When every partition is idle, the minimum over those that sent
    /// something: nothing is arriving, so what was sent is all there is.
    fn combined(&self) -> Option<i64> {
        let active: Vec<&PartitionClock> = self.partitions.values().filter(|p| !p.idle).collect();
        let mut min: Option<i64> = None;
        if active.is_empty() {
            for t in self.partitions.values().filter_map(|p| p.max_event_time) {
                min = Some(min.map_or(t, |m| m.min(t)));
            }
            return min.map(|t| t - self.def.delay_micros);
        }
        for p in active {
            let wm = p.max_event_time? - self.def.delay_micros;
            min = Some(min.map_or(wm, |m| m.min(wm)));
        }
        min
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
            // Any record, late or not, shows the partition is sending again.
            if let Some(clock) = self.partitions.get_mut(&partition) {
                clock.idle = false;
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
            if clock.max_event_time.is_none_or(|m| ts > m) {
                clock.max_event_time = Some(ts);
                if single {
                    // One partition: its watermark is the stream's.
                    let wm = ts - self.def.delay_micros;
                    if self.watermark.is_none_or(|current| wm > current) {
                        self.watermark = Some(wm);
                    }
                } else {
                    self.advance();
                }
            }
        }
        keep.map(BooleanArray::from)
    }

    /// Marks partitions idle (they stop holding the watermark back), all at once; true if
    /// the watermark moved as a result.
    pub fn set_idle(&mut self, partitions: &[i32]) -> bool {
        let mut changed = false;
        for &p in partitions {
            let clock = self.partitions.entry(p).or_default();
            changed |= !clock.idle;
            clock.idle = true;
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
    fn intervals_in_micros() {
        assert_eq!(
            interval_micros(IntervalMonthDayNano::new(0, 1, 5_000_000_000)),
            Some(86_405_000_000)
        );
        assert_eq!(interval_micros(IntervalMonthDayNano::new(1, 0, 0)), None);
    }
}
