//! Bound parameters: both wire formats become the Postgres text form the engine parses.

use super::format::{
    numeric_binary_to_text, push_display, write_bytea, write_date, write_float4, write_float8,
    write_interval, write_time, write_timestamp, PG_EPOCH_DAYS, PG_EPOCH_MICROS,
};
use super::{oid, Format};
use crate::engine::ParamValue;
use crate::error::PgError;

/// Decodes parameter `$index` (1-based, for messages) of type `type_oid` sent in `format`.
pub(crate) fn decode_param(
    index: usize,
    type_oid: u32,
    format: Format,
    raw: Option<&[u8]>,
) -> Result<ParamValue, PgError> {
    let text = match raw {
        None => None,
        Some(raw) => Some(match format {
            Format::Text => utf8(index, raw)?,
            Format::Binary => decode_binary(index, type_oid, raw)?,
        }),
    };
    Ok(ParamValue { type_oid, text })
}

fn utf8(index: usize, raw: &[u8]) -> Result<String, PgError> {
    String::from_utf8(raw.to_vec()).map_err(|_| {
        PgError::new(
            "22021",
            format!("invalid byte sequence for encoding \"UTF8\" in parameter ${index}"),
        )
    })
}

fn bad_format(index: usize) -> PgError {
    PgError::new(
        "22P03",
        format!("incorrect binary data format in bind parameter {index}"),
    )
}

/// Reads exactly `N` bytes.
fn fixed<const N: usize>(index: usize, raw: &[u8]) -> Result<[u8; N], PgError> {
    raw.try_into().map_err(|_| bad_format(index))
}

fn decode_binary(index: usize, type_oid: u32, raw: &[u8]) -> Result<String, PgError> {
    let mut out = Vec::new();
    match type_oid {
        oid::BOOL => match raw {
            [0] => out.push(b'f'),
            [1] => out.push(b't'),
            _ => return Err(bad_format(index)),
        },
        oid::INT2 => push_display(&mut out, i16::from_be_bytes(fixed(index, raw)?)),
        oid::INT4 => push_display(&mut out, i32::from_be_bytes(fixed(index, raw)?)),
        oid::INT8 => push_display(&mut out, i64::from_be_bytes(fixed(index, raw)?)),
        oid::OID => push_display(&mut out, u32::from_be_bytes(fixed(index, raw)?)),
        oid::FLOAT4 => write_float4(&mut out, f32::from_be_bytes(fixed(index, raw)?)),
        oid::FLOAT8 => write_float8(&mut out, f64::from_be_bytes(fixed(index, raw)?)),
        // Unspecified (0) and `unknown` parameters are textual in either format.
        0
        | oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::CHAR
        | oid::UNKNOWN
        | oid::JSON => return utf8(index, raw),
        oid::JSONB => match raw.split_first() {
            Some((1, json)) => return utf8(index, json),
            _ => return Err(bad_format(index)),
        },
        oid::BYTEA => write_bytea(&mut out, raw),
        oid::UUID => {
            let bytes: [u8; 16] = fixed(index, raw)?;
            for (i, byte) in bytes.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push(b'-');
                }
                push_fmt_hex(&mut out, *byte);
            }
        }
        oid::NUMERIC => return numeric_binary_to_text(raw).ok_or_else(|| bad_format(index)),
        oid::DATE => match i32::from_be_bytes(fixed(index, raw)?) {
            i32::MAX => out.extend_from_slice(b"infinity"),
            i32::MIN => out.extend_from_slice(b"-infinity"),
            days => write_date(&mut out, i64::from(days) + PG_EPOCH_DAYS),
        },
        oid::TIME => write_time(&mut out, i64::from_be_bytes(fixed(index, raw)?)),
        oid::TIMESTAMP | oid::TIMESTAMPTZ => match i64::from_be_bytes(fixed(index, raw)?) {
            i64::MAX => out.extend_from_slice(b"infinity"),
            i64::MIN => out.extend_from_slice(b"-infinity"),
            micros => write_timestamp(
                &mut out,
                micros.saturating_add(PG_EPOCH_MICROS),
                type_oid == oid::TIMESTAMPTZ,
            ),
        },
        oid::INTERVAL => {
            let bytes: [u8; 16] = fixed(index, raw)?;
            let [m0, m1, m2, m3, m4, m5, m6, m7, d0, d1, d2, d3, o0, o1, o2, o3] = bytes;
            write_interval(
                &mut out,
                i32::from_be_bytes([o0, o1, o2, o3]),
                i32::from_be_bytes([d0, d1, d2, d3]),
                i64::from_be_bytes([m0, m1, m2, m3, m4, m5, m6, m7]),
            );
        }
        other => {
            return Err(PgError::new(
                "42883",
                format!("no binary input function available for type {other} (parameter ${index})"),
            ))
        }
    }
    // Every formatter above writes ASCII.
    String::from_utf8(out).map_err(|_| bad_format(index))
}

fn push_fmt_hex(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(HEX[usize::from(byte >> 4)]);
    out.push(HEX[usize::from(byte & 0xf)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(type_oid: u32, raw: &[u8]) -> Result<Option<String>, PgError> {
        decode_param(1, type_oid, Format::Binary, Some(raw)).map(|p| p.text)
    }

    #[test]
    fn decodes_binary_parameters() {
        let ok = |oid: u32, raw: &[u8], expected: &str| {
            assert_eq!(
                binary(oid, raw).ok().flatten().as_deref(),
                Some(expected),
                "oid {oid}"
            );
        };
        ok(oid::BOOL, &[1], "t");
        ok(oid::INT2, &(-2i16).to_be_bytes(), "-2");
        ok(oid::INT4, &123_456i32.to_be_bytes(), "123456");
        ok(oid::INT8, &i64::MIN.to_be_bytes(), "-9223372036854775808");
        ok(oid::FLOAT4, &1.5f32.to_be_bytes(), "1.5");
        ok(oid::FLOAT8, &1e20f64.to_be_bytes(), "1e+20");
        ok(oid::TEXT, "héllo".as_bytes(), "héllo");
        ok(oid::UNKNOWN, b"x", "x");
        ok(oid::JSONB, b"\x01{}", "{}");
        ok(oid::BYTEA, &[0, 255], "\\x00ff");
        ok(
            oid::UUID,
            &[
                0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38,
                0x0a, 0x11,
            ],
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        );
        ok(
            oid::NUMERIC,
            &[0, 2, 0, 0, 0, 0, 0, 2, 0, 123, 0x11, 0x94],
            "123.45",
        );
        ok(oid::DATE, &0i32.to_be_bytes(), "2000-01-01");
        ok(oid::DATE, &i32::MAX.to_be_bytes(), "infinity");
        ok(
            oid::TIME,
            &3_723_000_001i64.to_be_bytes(),
            "01:02:03.000001",
        );
        ok(
            oid::TIMESTAMP,
            &(-1i64).to_be_bytes(),
            "1999-12-31 23:59:59.999999",
        );
        ok(
            oid::TIMESTAMPTZ,
            &86_400_000_000i64.to_be_bytes(),
            "2000-01-02 00:00:00+00",
        );
        let mut interval = Vec::new();
        interval.extend_from_slice(&(-3_600_000_000i64).to_be_bytes());
        interval.extend_from_slice(&1i32.to_be_bytes());
        interval.extend_from_slice(&14i32.to_be_bytes());
        ok(oid::INTERVAL, &interval, "1 year 2 mons 1 day -01:00:00");
    }

    #[test]
    fn rejects_bad_parameters() {
        let code = |r: Result<Option<String>, PgError>| r.err().map(|e| e.sqlstate);
        assert_eq!(code(binary(oid::INT4, &[0, 1])).as_deref(), Some("22P03"));
        assert_eq!(code(binary(oid::BOOL, &[2])).as_deref(), Some("22P03"));
        assert_eq!(code(binary(600, &[0; 16])).as_deref(), Some("42883"));
        let text = decode_param(1, oid::TEXT, Format::Text, Some(&[0xff]));
        assert_eq!(text.err().map(|e| e.sqlstate).as_deref(), Some("22021"));
        assert_eq!(
            decode_param(1, oid::INT4, Format::Binary, None),
            Ok(ParamValue {
                type_oid: oid::INT4,
                text: None
            })
        );
    }
}
