//! The protocol end to end: tokio-postgres (and, for what it cannot do, hand-made messages)
//! against the fake engine of `support`.

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Date64Array, Decimal128Array,
    Decimal256Array, DictionaryArray, DurationSecondArray, Float32Array, Float64Array, Int16Array,
    Int32Array, Int64Array, Int8Array, IntervalDayTimeArray, IntervalMonthDayNanoArray,
    IntervalYearMonthArray, LargeStringArray, ListArray, NullArray, StringArray, StringViewArray,
    Time32MillisecondArray, Time64MicrosecondArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, TimestampSecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow::datatypes::{i256, Int32Type, IntervalDayTime, IntervalMonthDayNano};
use arrow::record_batch::RecordBatch;
use bytes::{BufMut, Bytes, BytesMut};
use chrono::NaiveDate;
use futures::SinkExt;
use support::{FakeEngine, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::error::{ErrorPosition, SqlState};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};
use tokio_postgres::SimpleQueryMessage;

const NS_PER_SEC: i64 = 1_000_000_000;

fn days(year: i32, month: u32, day: u32) -> i32 {
    let date = NaiveDate::from_ymd_opt(year, month, day).expect("valid date");
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid date");
    i32::try_from((date - epoch).num_days()).expect("small day count")
}

/// Microseconds since 1970-01-01 of a date and time.
fn micros(ymd: (i32, u32, u32), hms: (u32, u32, u32), micro: u32) -> i64 {
    NaiveDate::from_ymd_opt(ymd.0, ymd.1, ymd.2)
        .and_then(|d| d.and_hms_micro_opt(hms.0, hms.1, hms.2, micro))
        .expect("valid timestamp")
        .and_utc()
        .timestamp_micros()
}

fn engine() -> FakeEngine {
    let mut engine = FakeEngine::default();
    engine.column("one", Arc::new(Int32Array::from(vec![1])));
    let series = |values: Vec<i64>| {
        RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(values)) as ArrayRef)])
            .expect("one column is a batch")
    };
    engine.table(
        "series",
        vec![series(vec![0, 1]), series(vec![]), series(vec![2, 3, 4])],
    );
    engine
}

async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .expect("query succeeds")
        .into_iter()
        .filter_map(|message| match message {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn simple_query_returns_rows_and_command_tags() {
    let server = Server::start(engine()).await;
    let client = server.client().await;

    let messages = client
        .simple_query("select one; insert; select series")
        .await
        .expect("query succeeds");
    let summary: Vec<String> = messages
        .iter()
        .map(|message| match message {
            SimpleQueryMessage::RowDescription(columns) => format!(
                "T:{}",
                columns
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            SimpleQueryMessage::Row(row) => format!("D:{}", row.get(0).unwrap_or("NULL")),
            SimpleQueryMessage::CommandComplete(n) => format!("C:{n}"),
            _ => "?".into(),
        })
        .collect();
    assert_eq!(
        summary,
        ["T:one", "D:1", "C:1", "C:1", "T:n", "D:0", "D:1", "D:2", "D:3", "D:4", "C:5"]
    );
    assert_eq!(server.engine.inserts.load(Ordering::SeqCst), 1);

    // An empty query string and a comment both answer EmptyQueryResponse.
    for empty in ["", "  ", "-- nothing"] {
        let messages = client
            .simple_query(empty)
            .await
            .expect("empty query is fine");
        assert!(
            matches!(
                messages.as_slice(),
                [SimpleQueryMessage::CommandComplete(0)]
            ),
            "{empty:?}"
        );
    }

    let startups = server.engine.startups.lock().expect("lock").clone();
    assert_eq!(startups.len(), 1);
    assert_eq!(startups[0].user, "tester");
    assert_eq!(startups[0].database, "testdb");
}

#[tokio::test]
async fn errors_are_reported_and_the_connection_goes_on() {
    let server = Server::start(engine()).await;
    let client = server.client().await;

    // A failing statement stops the rest of the query string.
    let error = client
        .simple_query("insert; nonsense; insert")
        .await
        .expect_err("the second statement fails");
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::SYNTAX_ERROR);
    assert_eq!(db.severity(), "ERROR");
    assert_eq!(db.position(), Some(&ErrorPosition::Original(1)));
    assert_eq!(server.engine.inserts.load(Ordering::SeqCst), 0);
    assert_eq!(
        simple_rows(&client, "select one").await,
        [[Some("1".into())]]
    );

    // Extended protocol: an error at Parse, then one at Execute with detail and hint.
    let error = client.query("nonsense", &[]).await.expect_err("bad syntax");
    assert_eq!(error.code(), Some(&SqlState::SYNTAX_ERROR));
    let error = client.query("fail", &[]).await.expect_err("fails to run");
    let db = error.as_db_error().expect("a server error");
    assert_eq!(db.code(), &SqlState::DIVISION_BY_ZERO);
    assert_eq!(db.message(), "division by zero");
    assert_eq!(db.detail(), Some("the divisor was 0"));
    assert_eq!(db.hint(), Some("divide by something else"));

    let rows = client.query("select one", &[]).await.expect("works again");
    assert_eq!(rows[0].get::<_, i32>(0), 1);
}

#[tokio::test]
async fn extended_query_decodes_binary_parameters() {
    let server = Server::start(engine()).await;
    let client = server.client().await;

    let at = UNIX_EPOCH
        + Duration::from_micros(
            u64::try_from(micros((2026, 6, 10), (12, 34, 56), 123_456)).expect("after 1970"),
        );
    let rows = client
        .query(
            "echo 16 21 23 20 700 701 25 17 1114 1184",
            &[
                &true,
                &-3i16,
                &42i32,
                &-7i64,
                &1.5f32,
                &1e20f64,
                &"héllo",
                &vec![0xdeu8, 0xad],
                &at,
                &at,
            ],
        )
        .await
        .expect("echo runs");
    let texts: Vec<String> = (0..11).map(|i| rows[0].get::<_, String>(i)).collect();
    assert_eq!(
        texts,
        [
            "t",
            "-3",
            "42",
            "-7",
            "1.5",
            "1e+20",
            "héllo",
            "\\xdead",
            "2026-06-10 12:34:56.123456",
            "2026-06-10 12:34:56.123456+00",
            "16 21 23 20 700 701 25 17 1114 1184",
        ]
    );

    // Types tokio-postgres has no Rust type for, sent as raw binary values.
    let mut interval = Vec::new();
    interval.extend_from_slice(&4_000_000i64.to_be_bytes());
    interval.extend_from_slice(&3i32.to_be_bytes());
    interval.extend_from_slice(&14i32.to_be_bytes());
    let rows = client
        .query(
            "echo 1082 1700 1186 1083",
            &[
                // 2000-01-03: two days after the Postgres epoch.
                &RawParam(2i32.to_be_bytes().to_vec()),
                // -12.50: one base-10000 digit per group: 12 (weight 0), 5000 (weight -1).
                &RawParam(vec![0, 2, 0, 0, 0x40, 0, 0, 2, 0, 12, 0x13, 0x88]),
                &RawParam(interval),
                &RawParam(3_723_000_000i64.to_be_bytes().to_vec()),
            ],
        )
        .await
        .expect("echo runs");
    let texts: Vec<String> = (0..4).map(|i| rows[0].get::<_, String>(i)).collect();
    assert_eq!(
        texts,
        [
            "2000-01-03",
            "-12.50",
            "1 year 2 mons 3 days 00:00:04",
            "01:02:03"
        ]
    );

    // A parameter of unknown type (0) is described as text and arrives as text.
    let rows = client.query("echo 0", &[&"abc"]).await.expect("echo runs");
    assert_eq!(rows[0].get::<_, String>(0), "abc");
    assert_eq!(rows[0].get::<_, String>(1), "0");

    // NULL parameters, and a prepared statement run twice.
    let statement = client.prepare("echo 23 25").await.expect("prepares");
    assert_eq!(statement.params(), &[Type::INT4, Type::TEXT]);
    for value in [Some(5), None] {
        let rows = client
            .query(&statement, &[&value, &None::<&str>])
            .await
            .expect("runs");
        assert_eq!(
            rows[0].get::<_, Option<String>>(0),
            value.map(|v| v.to_string())
        );
        assert_eq!(rows[0].get::<_, Option<String>>(1), None);
    }
}

#[tokio::test]
async fn binary_results_decode_in_tokio_postgres() {
    let mut engine = engine();
    let ts = micros((2026, 6, 10), (12, 34, 56), 123_456);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("b", Arc::new(BooleanArray::from(vec![true]))),
        ("i1", Arc::new(Int8Array::from(vec![-8]))),
        ("u1", Arc::new(UInt8Array::from(vec![200]))),
        ("i2", Arc::new(Int16Array::from(vec![-300]))),
        ("i4", Arc::new(Int32Array::from(vec![70_000]))),
        ("u4", Arc::new(UInt32Array::from(vec![4_000_000_000]))),
        ("i8", Arc::new(Int64Array::from(vec![i64::MIN]))),
        ("f4", Arc::new(Float32Array::from(vec![0.1]))),
        ("f8", Arc::new(Float64Array::from(vec![-2.5e-300]))),
        ("t", Arc::new(StringViewArray::from(vec!["héllo"]))),
        ("y", Arc::new(BinaryArray::from(vec![&b"\x00\xff"[..]]))),
        ("ts", Arc::new(TimestampMicrosecondArray::from(vec![ts]))),
        (
            "tz",
            Arc::new(TimestampMillisecondArray::from(vec![ts / 1000]).with_timezone("UTC")),
        ),
        ("d", Arc::new(Date32Array::from(vec![days(2000, 1, 2)]))),
        (
            "n",
            Arc::new(
                Decimal128Array::from(vec![12_345])
                    .with_precision_and_scale(10, 2)
                    .expect("valid decimal type"),
            ),
        ),
        (
            "iv",
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                IntervalMonthDayNano::new(1, 2, 3_000),
            ])),
        ),
        (
            "tm",
            Arc::new(Time64MicrosecondArray::from(vec![3_600_000_000])),
        ),
        ("big", Arc::new(UInt64Array::from(vec![u64::MAX]))),
    ];
    let batch = RecordBatch::try_from_iter(columns).expect("valid batch");
    engine.table("binary", vec![batch]);
    let server = Server::start(engine).await;
    let client = server.client().await;

    let rows = client.query("select binary", &[]).await.expect("runs");
    let row = &rows[0];
    let types: Vec<&Type> = row.columns().iter().map(|c| c.type_()).collect();
    assert_eq!(
        types,
        [
            &Type::BOOL,
            &Type::INT2,
            &Type::INT2,
            &Type::INT2,
            &Type::INT4,
            &Type::OID,
            &Type::INT8,
            &Type::FLOAT4,
            &Type::FLOAT8,
            &Type::TEXT,
            &Type::BYTEA,
            &Type::TIMESTAMP,
            &Type::TIMESTAMPTZ,
            &Type::DATE,
            &Type::NUMERIC,
            &Type::INTERVAL,
            &Type::TIME,
            &Type::NUMERIC,
        ]
    );
    assert!(row.get::<_, bool>("b"));
    assert_eq!(row.get::<_, i16>("i1"), -8);
    assert_eq!(row.get::<_, i16>("u1"), 200);
    assert_eq!(row.get::<_, i16>("i2"), -300);
    assert_eq!(row.get::<_, i32>("i4"), 70_000);
    assert_eq!(row.get::<_, u32>("u4"), 4_000_000_000);
    assert_eq!(row.get::<_, i64>("i8"), i64::MIN);
    assert_eq!(row.get::<_, f32>("f4"), 0.1);
    assert_eq!(row.get::<_, f64>("f8"), -2.5e-300);
    assert_eq!(row.get::<_, &str>("t"), "héllo");
    assert_eq!(row.get::<_, Vec<u8>>("y"), [0, 255]);
    let at = UNIX_EPOCH + Duration::from_micros(u64::try_from(ts).expect("after 1970"));
    assert_eq!(row.get::<_, SystemTime>("ts"), at);
    assert_eq!(
        row.get::<_, SystemTime>("tz"),
        at - Duration::from_micros(456)
    );
    assert_eq!(row.get::<_, Raw>("d").0, 1i32.to_be_bytes());
    // numeric 123.45: ndigits 2, weight 0, positive, dscale 2, digits 123 and 4500.
    assert_eq!(
        row.get::<_, Raw>("n").0,
        [0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94]
    );
    // interval: microseconds, days, months.
    assert_eq!(
        row.get::<_, Raw>("iv").0,
        [0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1]
    );
    assert_eq!(row.get::<_, Raw>("tm").0, 3_600_000_000i64.to_be_bytes());
    // 18446744073709551615: groups 1844 6744 0737 0955 1615 of weights 4..0.
    assert_eq!(
        row.get::<_, Raw>("big").0,
        [0, 5, 0, 4, 0, 0, 0, 0, 0x07, 0x34, 0x1a, 0x58, 0x02, 0xe1, 0x03, 0xbb, 0x06, 0x4f]
    );
}

/// Each case: a column, its type OID, and its values' text output as the Postgres
/// documentation specifies it (DateStyle ISO, IntervalStyle postgres, bytea_output hex).
fn text_cases() -> Vec<(&'static str, ArrayRef, u32, Vec<Option<&'static str>>)> {
    let ts = micros((2026, 6, 10), (12, 34, 56), 123_456);
    let nano = |s: i64| s * NS_PER_SEC;
    vec![
        (
            "bool",
            Arc::new(BooleanArray::from(vec![Some(true), Some(false), None])),
            16,
            vec![Some("t"), Some("f"), None],
        ),
        (
            "int8",
            Arc::new(Int8Array::from(vec![-128, 127])),
            21,
            vec![Some("-128"), Some("127")],
        ),
        (
            "int16",
            Arc::new(Int16Array::from(vec![i16::MIN, 0])),
            21,
            vec![Some("-32768"), Some("0")],
        ),
        (
            "int32",
            Arc::new(Int32Array::from(vec![Some(i32::MAX), None])),
            23,
            vec![Some("2147483647"), None],
        ),
        (
            "int64",
            Arc::new(Int64Array::from(vec![i64::MIN])),
            20,
            vec![Some("-9223372036854775808")],
        ),
        (
            "uint8",
            Arc::new(UInt8Array::from(vec![255])),
            21,
            vec![Some("255")],
        ),
        (
            "uint16",
            Arc::new(UInt16Array::from(vec![65_535])),
            23,
            vec![Some("65535")],
        ),
        (
            "uint32",
            Arc::new(UInt32Array::from(vec![4_294_967_295])),
            26,
            vec![Some("4294967295")],
        ),
        (
            "uint64",
            Arc::new(UInt64Array::from(vec![u64::MAX])),
            1700,
            vec![Some("18446744073709551615")],
        ),
        (
            "float32",
            Arc::new(Float32Array::from(vec![
                1.5,
                0.1,
                1e6,
                123_456.0,
                -1e-5,
                f32::NAN,
                f32::INFINITY,
            ])),
            700,
            vec![
                Some("1.5"),
                Some("0.1"),
                Some("1e+06"),
                Some("123456"),
                Some("-1e-05"),
                Some("NaN"),
                Some("Infinity"),
            ],
        ),
        (
            "float64",
            Arc::new(Float64Array::from(vec![
                Some(0.1),
                Some(1e20),
                Some(1.5e-5),
                Some(1e15),
                Some(123_456_789_012_345.0),
                Some(0.0001),
                Some(-0.0),
                Some(f64::NEG_INFINITY),
                None,
            ])),
            701,
            vec![
                Some("0.1"),
                Some("1e+20"),
                Some("1.5e-05"),
                Some("1e+15"),
                Some("123456789012345"),
                Some("0.0001"),
                Some("-0"),
                Some("-Infinity"),
                None,
            ],
        ),
        (
            "decimal",
            Arc::new(
                Decimal128Array::from(vec![Some(12_345), Some(-5), Some(0), None])
                    .with_precision_and_scale(10, 2)
                    .expect("valid decimal type"),
            ),
            1700,
            vec![Some("123.45"), Some("-0.05"), Some("0.00"), None],
        ),
        (
            "decimal256",
            Arc::new(
                Decimal256Array::from(vec![i256::from_i128(1_000), i256::from_i128(-42)])
                    .with_precision_and_scale(40, 3)
                    .expect("valid decimal type"),
            ),
            1700,
            vec![Some("1.000"), Some("-0.042")],
        ),
        (
            "utf8",
            Arc::new(StringArray::from(vec![Some("héllo"), Some(""), None])),
            25,
            vec![Some("héllo"), Some(""), None],
        ),
        (
            "largeutf8",
            Arc::new(LargeStringArray::from(vec!["large"])),
            25,
            vec![Some("large")],
        ),
        (
            "utf8view",
            Arc::new(StringViewArray::from(vec![
                "a view longer than twelve bytes",
            ])),
            25,
            vec![Some("a view longer than twelve bytes")],
        ),
        (
            "bytea",
            Arc::new(BinaryArray::from(vec![
                Some(&b"\xde\xad\xbe\xef"[..]),
                Some(&b""[..]),
                None,
            ])),
            17,
            vec![Some("\\xdeadbeef"), Some("\\x"), None],
        ),
        (
            "date32",
            Arc::new(Date32Array::from(vec![
                Some(days(2026, 6, 10)),
                Some(days(0, 12, 31)),
                None,
            ])),
            1082,
            vec![Some("2026-06-10"), Some("0001-12-31 BC"), None],
        ),
        (
            "date64",
            Arc::new(Date64Array::from(vec![
                i64::from(days(1999, 12, 31)) * 86_400_000,
            ])),
            1082,
            vec![Some("1999-12-31")],
        ),
        (
            "time64",
            Arc::new(Time64MicrosecondArray::from(vec![
                45_296_500_000,
                0,
                86_399_999_999,
            ])),
            1083,
            vec![
                Some("12:34:56.5"),
                Some("00:00:00"),
                Some("23:59:59.999999"),
            ],
        ),
        (
            "time32",
            Arc::new(Time32MillisecondArray::from(vec![3_723_004])),
            1083,
            vec![Some("01:02:03.004")],
        ),
        (
            "timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![
                Some(ts),
                Some(micros((2026, 6, 10), (12, 34, 56), 500_000)),
                Some(micros((1970, 1, 1), (0, 0, 0), 0)),
                None,
            ])),
            1114,
            vec![
                Some("2026-06-10 12:34:56.123456"),
                Some("2026-06-10 12:34:56.5"),
                Some("1970-01-01 00:00:00"),
                None,
            ],
        ),
        (
            "timestamps",
            Arc::new(TimestampSecondArray::from(vec![ts / 1_000_000])),
            1114,
            vec![Some("2026-06-10 12:34:56")],
        ),
        (
            "timestamptz",
            Arc::new(TimestampMicrosecondArray::from(vec![ts]).with_timezone("UTC")),
            1184,
            vec![Some("2026-06-10 12:34:56.123456+00")],
        ),
        (
            // A zone other than UTC (the session's TimeZone): the instant in that zone, with
            // its offset, as Postgres prints it.
            "timestamptz2",
            Arc::new(TimestampMillisecondArray::from(vec![ts / 1000]).with_timezone("+02:00")),
            1184,
            vec![Some("2026-06-10 14:34:56.123+02")],
        ),
        (
            "interval",
            Arc::new(IntervalMonthDayNanoArray::from(vec![
                Some(IntervalMonthDayNano::new(
                    14,
                    3,
                    nano(4 * 3600 + 5 * 60 + 6) + NS_PER_SEC / 2,
                )),
                Some(IntervalMonthDayNano::new(0, 0, 0)),
                Some(IntervalMonthDayNano::new(0, -1, 0)),
                Some(IntervalMonthDayNano::new(0, -1, nano(3600))),
                Some(IntervalMonthDayNano::new(1, 1, 0)),
                None,
            ])),
            1186,
            vec![
                Some("1 year 2 mons 3 days 04:05:06.5"),
                Some("00:00:00"),
                Some("-1 days"),
                Some("-1 days +01:00:00"),
                Some("1 mon 1 day"),
                None,
            ],
        ),
        (
            "yearmonth",
            Arc::new(IntervalYearMonthArray::from(vec![-14, 24])),
            1186,
            vec![Some("-1 years -2 mons"), Some("2 years")],
        ),
        (
            "daytime",
            Arc::new(IntervalDayTimeArray::from(vec![IntervalDayTime::new(
                1, -3_600_000,
            )])),
            1186,
            vec![Some("1 day -01:00:00")],
        ),
        (
            // A duration is what subtracting timestamps gives; Postgres's `timestamp -
            // timestamp` is days and time (`'2024-01-02 01:01:01' - '2024-01-01'`).
            "duration",
            Arc::new(DurationSecondArray::from(vec![90_061])),
            1186,
            vec![Some("1 day 01:01:01")],
        ),
        (
            "dictionary",
            Arc::new(
                vec![Some("x"), None, Some("y")]
                    .into_iter()
                    .collect::<DictionaryArray<Int32Type>>(),
            ),
            25,
            vec![Some("x"), None, Some("y")],
        ),
        (
            // Types without a Postgres counterpart are text in Arrow's display form.
            "list",
            Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
                Some(vec![Some(1), Some(2)]),
                None,
            ])),
            1007,
            vec![Some("{1,2}"), None],
        ),
        ("null", Arc::new(NullArray::new(2)), 25, vec![None, None]),
    ]
}

#[tokio::test]
async fn every_type_has_postgres_text_output() {
    let mut engine = engine();
    let cases = text_cases();
    for (name, array, _, _) in &cases {
        engine.column(name, Arc::clone(array));
    }
    let server = Server::start(engine).await;
    let client = server.client().await;
    for (name, _, oid, expected) in cases {
        let sql = format!("select {name}");
        let rows = simple_rows(&client, &sql).await;
        let got: Vec<Option<String>> = rows.into_iter().map(|mut row| row.remove(0)).collect();
        let expected: Vec<Option<String>> = expected
            .into_iter()
            .map(|v| v.map(str::to_string))
            .collect();
        assert_eq!(got, expected, "{name}");
        let statement = client.prepare(&sql).await.expect("prepares");
        assert_eq!(statement.columns()[0].type_().oid(), oid, "{name}");
    }
}

#[tokio::test]
async fn copy_from_stdin_through_tokio_postgres() {
    let server = Server::start(engine()).await;
    let client = server.client().await;

    let sink = client
        .copy_in("copy t from stdin")
        .await
        .expect("copy starts");
    let mut sink = std::pin::pin!(sink);
    // Chunks need not end at line breaks.
    sink.send(Bytes::from_static(b"1\ta\n2\t"))
        .await
        .expect("data sent");
    sink.send(Bytes::from_static(b"b\n3\tc\n"))
        .await
        .expect("data sent");
    let rows = sink.as_mut().finish().await.expect("copy completes");
    assert_eq!(rows, 3);
    assert_eq!(
        server.engine.copies.lock().expect("lock").as_slice(),
        ["1\ta\n2\tb\n3\tc\n"]
    );

    // A sink error fails the COPY; the connection goes on.
    let sink = client
        .copy_in("copy t from stdin")
        .await
        .expect("copy starts");
    let mut sink = std::pin::pin!(sink);
    let result = async {
        sink.send(Bytes::from_static(b"1\nbad\n")).await?;
        sink.as_mut().finish().await
    }
    .await;
    let error = result.expect_err("the sink refuses the data");
    assert_eq!(error.code(), Some(&SqlState::INVALID_TEXT_REPRESENTATION));
    assert_eq!(server.engine.aborted.lock().expect("lock").len(), 1);
    assert_eq!(
        simple_rows(&client, "select one").await,
        [[Some("1".into())]]
    );
}

#[tokio::test]
async fn portals_return_rows_in_chunks() {
    let server = Server::start(engine()).await;
    let mut client = server.client().await;
    let transaction = client.transaction().await.expect("begin");
    let portal = transaction.bind("select series", &[]).await.expect("bind");
    let mut chunks = Vec::new();
    for _ in 0..4 {
        let rows = transaction.query_portal(&portal, 2).await.expect("execute");
        chunks.push(rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>());
    }
    assert_eq!(chunks, [vec![0, 1], vec![2, 3], vec![4], vec![]]);
    transaction.commit().await.expect("commit");
}

/// A binary value tokio-postgres passes through untouched.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

#[derive(Debug)]
struct RawParam(Vec<u8>);

impl ToSql for RawParam {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

// ---- Hand-made protocol messages, for what tokio-postgres does not send. ----

fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(i32::try_from(body.len()).expect("small") + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(s: &str) -> Vec<u8> {
    let mut out = s.as_bytes().to_vec();
    out.push(0);
    out
}

fn startup_packet(version: i32, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (name, value) in params {
        body.extend(cstr(name));
        body.extend(cstr(value));
    }
    body.push(0);
    let mut out = (i32::try_from(body.len()).expect("small") + 4)
        .to_be_bytes()
        .to_vec();
    out.extend(body);
    out
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend(0i16.to_be_bytes());
    message(b'P', &body)
}

fn bind(portal: &str, formats: &[i16], params: &[Option<&[u8]>], results: &[i16]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.extend(cstr(portal));
    body.extend(cstr(""));
    body.put_i16(i16::try_from(formats.len()).expect("small"));
    formats.iter().for_each(|&f| body.put_i16(f));
    body.put_i16(i16::try_from(params.len()).expect("small"));
    for param in params {
        match param {
            None => body.put_i32(-1),
            Some(value) => {
                body.put_i32(i32::try_from(value.len()).expect("small"));
                body.extend_from_slice(value);
            }
        }
    }
    body.put_i16(i16::try_from(results.len()).expect("small"));
    results.iter().for_each(|&f| body.put_i16(f));
    message(b'B', &body)
}

fn describe(kind: u8, name: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(cstr(name));
    message(b'D', &body)
}

fn execute(portal: &str, max_rows: i32) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(max_rows.to_be_bytes());
    message(b'E', &body)
}

fn sync() -> Vec<u8> {
    message(b'S', &[])
}

fn query(sql: &str) -> Vec<u8> {
    message(b'Q', &cstr(sql))
}

/// Fields of an ErrorResponse body by their code.
fn error_field(body: &[u8], code: u8) -> Option<String> {
    body.split(|&b| b == 0)
        .find(|field| field.first() == Some(&code))
        .map(|field| String::from_utf8_lossy(&field[1..]).into_owned())
}

/// Values of a DataRow body.
fn data_row(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut body = Bytes::copy_from_slice(body);
    let count = bytes::Buf::get_i16(&mut body);
    (0..count)
        .map(|_| {
            let len = bytes::Buf::get_i32(&mut body);
            usize::try_from(len)
                .ok()
                .map(|len| body.split_to(len).to_vec())
        })
        .collect()
}

/// Format codes of a RowDescription body.
fn row_formats(body: &[u8]) -> Vec<i16> {
    let mut body = Bytes::copy_from_slice(body);
    let count = bytes::Buf::get_i16(&mut body);
    (0..count)
        .map(|_| {
            let end = body.iter().position(|&b| b == 0).expect("field name");
            bytes::Buf::advance(&mut body, end + 1 + 16);
            bytes::Buf::get_i16(&mut body)
        })
        .collect()
}

struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    async fn connect(server: &Server) -> RawClient {
        let stream = TcpStream::connect(server.addr).await.expect("connect");
        RawClient { stream }
    }

    /// Connects and completes startup.
    async fn start(server: &Server) -> RawClient {
        let mut client = Self::connect(server).await;
        client
            .send(&startup_packet(0x0003_0000, &[("user", "raw")]))
            .await;
        let messages = client.until_ready().await;
        assert_eq!(messages.first().map(|m| m.0), Some(b'R'));
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next message, or `None` when the server closed the connection.
    async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut header = [0u8; 5];
            if self.stream.read_exact(&mut header).await.is_err() {
                return None;
            }
            let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
            let mut body = vec![0; usize::try_from(len - 4).expect("valid length")];
            self.stream.read_exact(&mut body).await.ok()?;
            Some((header[0], body))
        })
        .await
        .expect("the server answers in time")
    }

    /// Messages up to and including ReadyForQuery.
    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut messages = Vec::new();
        loop {
            let message = self.recv().await.expect("connection open");
            let done = message.0 == b'Z';
            messages.push(message);
            if done {
                return messages;
            }
        }
    }
}

fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|m| char::from(m.0)).collect()
}

#[tokio::test]
async fn startup_declines_ssl_and_reports_parameters() {
    let server = Server::start(engine()).await;
    let mut client = RawClient::connect(&server).await;
    let mut ssl = 8i32.to_be_bytes().to_vec();
    ssl.extend(80_877_103i32.to_be_bytes());
    client.send(&ssl).await;
    let mut answer = [0u8; 1];
    client
        .stream
        .read_exact(&mut answer)
        .await
        .expect("one byte");
    assert_eq!(&answer, b"N");

    // Protocol 3.1 does not exist: negotiated down to the newest the server speaks (3.2).
    client
        .send(&startup_packet(
            0x0003_0001,
            &[("user", "u"), ("application_name", "app")],
        ))
        .await;
    let messages = client.until_ready().await;
    let (tag, body) = &messages[0];
    assert_eq!(*tag, b'v');
    assert_eq!(body[..8], [0, 3, 0, 2, 0, 0, 0, 0]);
    assert_eq!(messages[1], (b'R', vec![0, 0, 0, 0]));
    let statuses: Vec<String> = messages
        .iter()
        .filter(|m| m.0 == b'S')
        .map(|m| String::from_utf8_lossy(&m.1).replace('\0', "="))
        .collect();
    for expected in [
        "server_version=15.0=",
        "server_encoding=UTF8=",
        "client_encoding=UTF8=",
        "DateStyle=ISO, MDY=",
        "TimeZone=UTC=",
        "integer_datetimes=on=",
        "standard_conforming_strings=on=",
        "application_name=app=",
    ] {
        assert!(statuses.iter().any(|s| s == expected), "{expected}");
    }
    assert_eq!(tags(&messages[messages.len() - 2..]), "KZ");
    assert_eq!(messages.last().map(|m| m.1.clone()), Some(b"I".to_vec()));

    client.send(&message(b'X', &[])).await;
    assert!(client.recv().await.is_none());
}

#[tokio::test]
async fn failed_session_and_protocol_violations_are_fatal() {
    let server = Server::start(engine()).await;
    let mut client = RawClient::connect(&server).await;
    client
        .send(&startup_packet(0x0003_0000, &[("user", "nobody")]))
        .await;
    let (tag, body) = client.recv().await.expect("an error");
    assert_eq!(tag, b'E');
    assert_eq!(error_field(&body, b'S').as_deref(), Some("FATAL"));
    assert_eq!(error_field(&body, b'C').as_deref(), Some("28000"));
    assert!(client.recv().await.is_none());

    // A message that is not one of the protocol's ends the connection.
    let mut client = RawClient::start(&server).await;
    client.send(&message(b'F', &[0, 0, 0, 0])).await;
    assert!(client.recv().await.is_none());

    // A CancelRequest is not acted on; its connection just closes.
    let mut client = RawClient::connect(&server).await;
    let mut cancel = 16i32.to_be_bytes().to_vec();
    cancel.extend(80_877_102i32.to_be_bytes());
    cancel.extend(1i32.to_be_bytes());
    cancel.extend(2i32.to_be_bytes());
    client.send(&cancel).await;
    assert!(client.recv().await.is_none());
}

#[tokio::test]
async fn extended_protocol_by_hand() {
    let server = Server::start(engine()).await;
    let mut client = RawClient::start(&server).await;

    // After an error, everything up to Sync is discarded.
    let mut batch = parse("", "nonsense");
    batch.extend(bind("", &[], &[], &[]));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(sync());
    client.send(&batch).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "EZ");
    assert_eq!(error_field(&messages[0].1, b'C').as_deref(), Some("42601"));
    assert_eq!(error_field(&messages[0].1, b'P').as_deref(), Some("1"));

    // Text parameters, Describe of statement and portal, binary results: RowDescription is
    // sent for Describe only, not again at Execute.
    let mut batch = parse("s1", "echo 23 25");
    batch.extend(describe(b'S', "s1"));
    batch.extend(bind_named("p1", "s1", &[0], &[Some(b"5"), None], &[1]));
    batch.extend(describe(b'P', "p1"));
    batch.extend(execute("p1", 0));
    batch.extend(sync());
    client.send(&batch).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "1tT2TDCZ");
    assert_eq!(messages[1].1, [0, 2, 0, 0, 0, 23, 0, 0, 0, 25]);
    assert_eq!(row_formats(&messages[2].1), [0, 0, 0]);
    assert_eq!(row_formats(&messages[4].1), [1, 1, 1]);
    assert_eq!(
        data_row(&messages[5].1),
        [Some(b"5".to_vec()), None, Some(b"23 25".to_vec())]
    );
    assert_eq!(messages[6].1, b"SELECT 1\0");

    // Commands describe as NoData; max_rows suspends; closing answers CloseComplete.
    let mut batch = parse("", "insert");
    batch.extend(describe(b'S', ""));
    batch.extend(bind("", &[], &[], &[]));
    batch.extend(describe(b'P', ""));
    batch.extend(execute("", 0));
    batch.extend(parse("", "select series"));
    batch.extend(bind("", &[], &[], &[]));
    batch.extend(execute("", 3));
    batch.extend(execute("", 3));
    batch.extend(message(b'C', b"Ss1\0"));
    batch.extend(sync());
    client.send(&batch).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "1tn2nC12DDDsDDC3Z");
    assert_eq!(messages[5].1, b"INSERT 0 1\0");
    assert_eq!(messages[14].1, b"SELECT 2\0");

    // The closed statement is gone; binding a wrong number of parameters is an error.
    let mut batch = bind_named("", "s1", &[], &[], &[]);
    batch.extend(sync());
    batch.extend(parse("", "echo 23"));
    batch.extend(bind("", &[], &[], &[]));
    batch.extend(sync());
    client.send(&batch).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "EZ");
    assert_eq!(error_field(&messages[0].1, b'C').as_deref(), Some("26000"));
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "1EZ");
    assert_eq!(error_field(&messages[1].1, b'C').as_deref(), Some("08P01"));

    // Flush sends what is pending without ReadyForQuery.
    let mut batch = parse("", "select one");
    batch.extend(message(b'H', &[]));
    client.send(&batch).await;
    assert_eq!(client.recv().await.map(|m| m.0), Some(b'1'));
    client.send(&sync()).await;
    assert_eq!(tags(&client.until_ready().await), "Z");
}

fn bind_named(
    portal: &str,
    statement: &str,
    formats: &[i16],
    params: &[Option<&[u8]>],
    results: &[i16],
) -> Vec<u8> {
    let mut body = bind(portal, formats, params, results);
    // Replace the empty statement name `bind` writes after the portal name.
    let at = 5 + portal.len() + 1;
    body.remove(at);
    for (i, b) in cstr(statement).into_iter().enumerate() {
        body.insert(at + i, b);
    }
    let len = i32::try_from(body.len() - 1).expect("small");
    body[1..5].copy_from_slice(&len.to_be_bytes());
    body
}

#[tokio::test]
async fn copy_in_over_the_simple_protocol() {
    let server = Server::start(engine()).await;
    let mut client = RawClient::start(&server).await;

    client.send(&query("copy t from stdin")).await;
    let (tag, body) = client.recv().await.expect("CopyInResponse");
    assert_eq!(tag, b'G');
    assert_eq!(body, [0, 0, 2, 0, 0, 0, 0]);
    let mut data = message(b'd', b"1\ta\n2\t");
    data.extend(message(b'H', &[]));
    data.extend(message(b'd', b"b\n"));
    data.extend(message(b'c', &[]));
    client.send(&data).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "CZ");
    assert_eq!(messages[0].1, b"COPY 2\0");
    assert_eq!(
        server.engine.copies.lock().expect("lock").as_slice(),
        ["1\ta\n2\tb\n"]
    );

    // The statements after a COPY run once its data is in.
    client.send(&query("copy t from stdin; select one")).await;
    assert_eq!(client.recv().await.map(|m| m.0), Some(b'G'));
    let mut data = message(b'd', b"3\tc\n");
    data.extend(message(b'c', &[]));
    client.send(&data).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "CTDCZ");
    assert_eq!(messages[0].1, b"COPY 1\0");

    // CopyFail aborts the sink.
    client.send(&query("copy t from stdin")).await;
    assert_eq!(client.recv().await.map(|m| m.0), Some(b'G'));
    client.send(&message(b'f', b"user gave up\0")).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "EZ");
    assert_eq!(error_field(&messages[0].1, b'C').as_deref(), Some("57014"));
    assert_eq!(
        server.engine.aborted.lock().expect("lock").as_slice(),
        ["user gave up"]
    );

    // A sink error ends the COPY at once; what the client still sends of it is dropped.
    client.send(&query("copy t from stdin; insert")).await;
    assert_eq!(client.recv().await.map(|m| m.0), Some(b'G'));
    client.send(&message(b'd', b"bad\n")).await;
    let messages = client.until_ready().await;
    assert_eq!(tags(&messages), "EZ");
    assert_eq!(error_field(&messages[0].1, b'C').as_deref(), Some("22P02"));
    let mut late = message(b'd', b"more\n");
    late.extend(message(b'c', &[]));
    late.extend(query("select one"));
    client.send(&late).await;
    assert_eq!(tags(&client.until_ready().await), "TDCZ");
    assert_eq!(server.engine.inserts.load(Ordering::SeqCst), 0);
}
