//! Postgres types Runnel keeps as text: `json`, `jsonb` and `uuid`. Arrow has no such types, so
//! a column of one is a `Utf8` field tagged in its metadata ([`METADATA_KEY`]); the tag travels
//! with the field through DataFusion's plans, the catalog and the wire, which reports the
//! column as the Postgres type. Values are checked and normalised where they enter (a write,
//! COPY, a cast), as Postgres does on input: `json` keeps its text once it parses, `jsonb` is
//! printed as Postgres prints it (keys ordered by length then bytes, the last of duplicate keys
//! kept, `", "` and `": "` separators, numbers as `numeric`), `uuid` as 32 lowercase hex digits
//! in 8-4-4-4-12 groups.

use std::borrow::Cow;
use std::collections::HashMap;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};

use crate::{Result, RunnelError, SqlState};

/// The field metadata key that names a column's Postgres type; the wire layer
/// (`runnel_pgwire::pg_type_of`) reads the same key.
pub const METADATA_KEY: &str = "runnel.pg_type";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TextType {
    Json,
    Jsonb,
    Uuid,
}

impl TextType {
    pub fn sql_name(self) -> &'static str {
        match self {
            TextType::Json => "json",
            TextType::Jsonb => "jsonb",
            TextType::Uuid => "uuid",
        }
    }

    pub fn from_sql_name(name: &str) -> Option<TextType> {
        match name {
            "json" => Some(TextType::Json),
            "jsonb" => Some(TextType::Jsonb),
            "uuid" => Some(TextType::Uuid),
            _ => None,
        }
    }

    /// The text type a field is tagged with.
    pub fn of(field: &Field) -> Option<TextType> {
        if !matches!(field.data_type(), DataType::Utf8) {
            return None;
        }
        field
            .metadata()
            .get(METADATA_KEY)
            .and_then(|name| TextType::from_sql_name(name))
    }

    /// The metadata that tags a field with this type.
    pub fn metadata(self) -> HashMap<String, String> {
        HashMap::from([(METADATA_KEY.to_string(), self.sql_name().to_string())])
    }

    /// A `Utf8` field of this type.
    pub fn field(self, name: impl Into<String>, nullable: bool) -> Field {
        Field::new(name, DataType::Utf8, nullable).with_metadata(self.metadata())
    }

    fn invalid(self, text: &str) -> RunnelError {
        RunnelError::execution(
            SqlState::INVALID_TEXT_REPRESENTATION,
            format!(
                "invalid input syntax for type {}: \"{text}\"",
                self.sql_name()
            ),
        )
    }

    /// The value as Postgres keeps it, or 22P02 for text that is not one.
    pub fn normalize(self, text: &str) -> Result<Cow<'_, str>> {
        match self {
            TextType::Json => {
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|_| self.invalid(text))?;
                Ok(Cow::Borrowed(text))
            }
            TextType::Jsonb => {
                let mut parser = JsonParser {
                    text,
                    at: 0,
                    depth: 0,
                };
                let mut out = String::with_capacity(text.len());
                parser
                    .value(&mut out)
                    .and_then(|()| parser.end())
                    .ok_or_else(|| self.invalid(text))?;
                Ok(Cow::Owned(out))
            }
            TextType::Uuid => normalize_uuid(text)
                .map(Cow::Owned)
                .ok_or_else(|| self.invalid(text)),
        }
    }

    /// Every value of a text column normalised; the first bad one fails the whole column.
    pub fn normalize_array(self, array: &dyn Array) -> Result<ArrayRef> {
        let strings = array
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| {
                RunnelError::internal(format!("{} column is not Utf8", self.sql_name()))
            })?;
        let mut builder = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
        for value in strings.iter() {
            match value {
                Some(text) => builder.append_value(self.normalize(text)?),
                None => builder.append_null(),
            }
        }
        Ok(std::sync::Arc::new(builder.finish()))
    }
}

/// `a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11` from any form Postgres accepts: upper or lower case,
/// with or without braces, hyphens after any group of four digits.
/// The field metadata key holding the length `n` of a `varchar(n)` column.
pub const MAX_LENGTH_KEY: &str = "runnel.max_length";

/// The length limit of a `varchar(n)` field.
pub fn max_length(field: &Field) -> Option<usize> {
    field.metadata().get(MAX_LENGTH_KEY)?.parse().ok()
}

/// A `varchar(n)` column's values as Postgres stores them: a value longer than `n` characters
/// is refused (22001), unless what is past `n` is only spaces, which are cut off.
pub fn enforce_max_length(field: &Field, column: ArrayRef) -> Result<ArrayRef> {
    let Some(limit) = max_length(field) else {
        return Ok(column);
    };
    let Some(strings) = column.as_any().downcast_ref::<StringArray>() else {
        return Ok(column);
    };
    let mut needs_cut = false;
    for text in strings.iter().flatten() {
        let fitted = fit_varchar(text, limit).ok_or_else(|| too_long(field, limit))?;
        needs_cut |= fitted.len() < text.len();
    }
    if !needs_cut {
        return Ok(column);
    }
    let cut: StringArray = strings
        .iter()
        .map(|value| value.map(|text| fit_varchar(text, limit).unwrap_or(text)))
        .collect();
    Ok(std::sync::Arc::new(cut))
}

/// `text` as a `varchar(limit)` keeps it: whole when it has at most `limit` characters, cut
/// to `limit` when only spaces follow, `None` (too long) otherwise.
pub fn fit_varchar(text: &str, limit: usize) -> Option<&str> {
    match text.char_indices().nth(limit) {
        None => Some(text),
        Some((end, _)) if text[end..].bytes().all(|b| b == b' ') => Some(&text[..end]),
        Some(_) => None,
    }
}

/// The error for a value longer than its `varchar(limit)` column.
pub fn too_long(field: &Field, limit: usize) -> RunnelError {
    RunnelError::execution(
        SqlState::STRING_DATA_RIGHT_TRUNCATION,
        format!(
            "value too long for type character varying({limit}) (column \"{}\")",
            field.name()
        ),
    )
}

fn normalize_uuid(text: &str) -> Option<String> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut digits = Vec::with_capacity(32);
    let mut since_hyphen = 0;
    for (i, c) in inner.chars().enumerate() {
        if c == '-' {
            // A hyphen only after a whole group of four digits, never first, last or doubled.
            if i == 0 || since_hyphen == 0 || since_hyphen % 4 != 0 || i + 1 == inner.len() {
                return None;
            }
            since_hyphen = 0;
            continue;
        }
        digits.push(c.to_digit(16)? as u8);
        since_hyphen += 1;
    }
    if digits.len() != 32 {
        return None;
    }
    let hex = |d: u8| char::from_digit(u32::from(d), 16).unwrap_or('0');
    let mut out = String::with_capacity(36);
    for (i, &d) in digits.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(hex(d));
    }
    Some(out)
}

/// The 16 bytes of a normalised uuid.
pub fn uuid_bytes(normalized: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = normalized.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// One JSON value's text taken apart one level: an object's members (decoded keys and the raw
/// text of their values, in order), an array's elements (raw text), or a scalar (its text).
/// Raw text is the value exactly as written, so numbers keep every digit.
#[derive(Debug, PartialEq)]
pub enum JsonParts<'a> {
    Object(Vec<(String, &'a str)>),
    Array(Vec<&'a str>),
    Scalar(&'a str),
}

/// `text` taken apart one level; `None` when it is not one JSON value.
pub fn json_parts(text: &str) -> Option<JsonParts<'_>> {
    let mut parser = JsonParser {
        text,
        at: 0,
        depth: 0,
    };
    let mut scratch = String::new();
    let mut raw_value = |parser: &mut JsonParser<'_>| -> Option<(usize, usize)> {
        parser.skip_whitespace();
        let start = parser.at;
        scratch.clear();
        parser.value(&mut scratch)?;
        Some((start, parser.at))
    };
    let parts = match parser.peek()? {
        b'{' => {
            parser.at += 1;
            let mut members = Vec::new();
            if !parser.eat(b'}') {
                loop {
                    if parser.peek()? != b'"' {
                        return None;
                    }
                    let key = parser.string()?;
                    if !parser.eat(b':') {
                        return None;
                    }
                    let (start, end) = raw_value(&mut parser)?;
                    members.push((key, &text[start..end]));
                    if parser.eat(b',') {
                        continue;
                    }
                    if parser.eat(b'}') {
                        break;
                    }
                    return None;
                }
            }
            JsonParts::Object(members)
        }
        b'[' => {
            parser.at += 1;
            let mut elements = Vec::new();
            if !parser.eat(b']') {
                loop {
                    let (start, end) = raw_value(&mut parser)?;
                    elements.push(&text[start..end]);
                    if parser.eat(b',') {
                        continue;
                    }
                    if parser.eat(b']') {
                        break;
                    }
                    return None;
                }
            }
            JsonParts::Array(elements)
        }
        _ => {
            let (start, end) = raw_value(&mut parser)?;
            JsonParts::Scalar(&text[start..end])
        }
    };
    parser.end()?;
    Some(parts)
}

/// Nesting deeper than this is refused, as Postgres refuses a too-deep stack.
const MAX_DEPTH: usize = 1000;

/// Reads JSON text and writes it as Postgres prints `jsonb`. String contents are decoded and
/// re-escaped by serde_json; the structure and numbers are read here because jsonb orders keys
/// its own way and keeps numbers as `numeric`, exactly.
struct JsonParser<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl JsonParser<'_> {
    fn skip_whitespace(&mut self) {
        let rest = &self.text.as_bytes()[self.at..];
        self.at += rest
            .iter()
            .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn end(&mut self) -> Option<()> {
        (self.peek().is_none()).then_some(())
    }

    fn value(&mut self, out: &mut String) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(out),
            b'[' => self.array(out),
            b'"' => {
                let s = self.string()?;
                out.push_str(&serde_json::to_string(&s).ok()?);
                Some(())
            }
            b't' => self.literal("true", out),
            b'f' => self.literal("false", out),
            b'n' => self.literal("null", out),
            _ => self.number(out),
        }
    }

    fn literal(&mut self, word: &str, out: &mut String) -> Option<()> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            out.push_str(word);
            Some(())
        } else {
            None
        }
    }

    fn nested(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn object(&mut self, out: &mut String) -> Option<()> {
        self.nested()?;
        self.at += 1;
        let mut members: Vec<(String, String)> = Vec::new();
        if !self.eat(b'}') {
            loop {
                if self.peek()? != b'"' {
                    return None;
                }
                let key = self.string()?;
                if !self.eat(b':') {
                    return None;
                }
                let mut value = String::new();
                self.value(&mut value)?;
                // The last of duplicate keys wins.
                members.retain(|(k, _)| *k != key);
                members.push((key, value));
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b'}') {
                    break;
                }
                return None;
            }
        }
        members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        out.push('{');
        for (i, (key, value)) in members.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(&serde_json::to_string(key).ok()?);
            out.push_str(": ");
            out.push_str(value);
        }
        out.push('}');
        self.depth -= 1;
        Some(())
    }

    fn array(&mut self, out: &mut String) -> Option<()> {
        self.nested()?;
        self.at += 1;
        out.push('[');
        if !self.eat(b']') {
            let mut first = true;
            loop {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                self.value(out)?;
                if self.eat(b',') {
                    continue;
                }
                if self.eat(b']') {
                    break;
                }
                return None;
            }
        }
        out.push(']');
        self.depth -= 1;
        Some(())
    }

    /// A string token, decoded (serde_json checks its escapes).
    fn string(&mut self) -> Option<String> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start + 1;
        loop {
            match bytes.get(i)? {
                b'\\' => i += 2,
                b'"' => break,
                _ => i += 1,
            }
        }
        self.at = i + 1;
        serde_json::from_str::<String>(&self.text[start..=i]).ok()
    }

    /// A number, written as Postgres's `numeric` prints it (`1e2` is `100`, `1.50` keeps its
    /// scale, `1E-2` is `0.01`).
    fn number(&mut self, out: &mut String) -> Option<()> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut i = start;
        let negative = bytes.get(i) == Some(&b'-');
        if negative {
            i += 1;
        }
        let int_start = i;
        match bytes.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => {
                while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                    i += 1;
                }
            }
            _ => return None,
        }
        let int_digits = &self.text[int_start..i];
        let mut frac_digits = "";
        if bytes.get(i) == Some(&b'.') {
            let frac_start = i + 1;
            i = frac_start;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == frac_start {
                return None;
            }
            frac_digits = &self.text[frac_start..i];
        }
        let mut exponent: i64 = 0;
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            let exp_start = i;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let digits_start = i;
            while bytes.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == digits_start {
                return None;
            }
            exponent = self.text[exp_start..i].parse().ok()?;
            if exponent.abs() > 100_000 {
                return None;
            }
        }
        self.at = i;
        // digits × 10^(exponent - fraction length), printed with scale max(0, -that).
        let digits: String = format!("{int_digits}{frac_digits}");
        let shift = exponent - frac_digits.len() as i64;
        let (whole, fraction) = if shift >= 0 {
            (
                format!("{digits}{}", "0".repeat(shift as usize)),
                String::new(),
            )
        } else {
            let scale = (-shift) as usize;
            let padded = if digits.len() <= scale {
                format!("{}{digits}", "0".repeat(scale - digits.len() + 1))
            } else {
                digits
            };
            let (w, f) = padded.split_at(padded.len() - scale);
            (w.to_string(), f.to_string())
        };
        let whole = whole.trim_start_matches('0');
        let whole = if whole.is_empty() { "0" } else { whole };
        let is_zero = whole == "0" && fraction.bytes().all(|b| b == b'0');
        if negative && !is_zero {
            out.push('-');
        }
        out.push_str(whole);
        if !fraction.is_empty() {
            out.push('.');
            out.push_str(&fraction);
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jsonb(text: &str) -> String {
        TextType::Jsonb.normalize(text).unwrap().into_owned()
    }

    /// Expected outputs are what Postgres 16 prints for `SELECT '<input>'::jsonb`.
    #[test]
    fn jsonb_prints_as_postgres_does() {
        assert_eq!(
            jsonb(r#"{"b":1,"a":2,"aa":[1,2 ,{}]}"#),
            r#"{"a": 2, "b": 1, "aa": [1, 2, {}]}"#
        );
        assert_eq!(jsonb(r#"{"a":1,"a":2}"#), r#"{"a": 2}"#);
        assert_eq!(jsonb("1e2"), "100");
        assert_eq!(jsonb("1.50"), "1.50");
        assert_eq!(jsonb("1E-2"), "0.01");
        assert_eq!(jsonb("-0"), "0");
        assert_eq!(jsonb("12345678901234567890123"), "12345678901234567890123");
        assert_eq!(jsonb(r#" "\u00e9\n" "#), "\"é\\n\"");
        assert_eq!(jsonb("[]"), "[]");
        assert_eq!(jsonb("{}"), "{}");
        assert_eq!(jsonb(" null "), "null");
        for bad in [
            "", "{", "[1,]", "{\"a\"}", "01", "1.", "tru", "{} x", "\"\\x\"",
        ] {
            let err = TextType::Jsonb.normalize(bad).unwrap_err();
            assert_eq!(
                err.sqlstate(),
                SqlState::INVALID_TEXT_REPRESENTATION,
                "{bad}"
            );
        }
    }

    #[test]
    fn json_parts_keep_raw_text() {
        assert_eq!(
            json_parts(r#" {"a": 12345678901234567890123, "b" : [1, {"c":2}], "a": "x"} "#),
            Some(JsonParts::Object(vec![
                ("a".to_string(), "12345678901234567890123"),
                ("b".to_string(), r#"[1, {"c":2}]"#),
                ("a".to_string(), r#""x""#),
            ]))
        );
        assert_eq!(
            json_parts("[1.50, null ,true]"),
            Some(JsonParts::Array(vec!["1.50", "null", "true"]))
        );
        assert_eq!(json_parts(" 1e2 "), Some(JsonParts::Scalar("1e2")));
        assert_eq!(json_parts("{\"a\":1} x"), None);
        assert_eq!(json_parts("[1,"), None);
    }

    #[test]
    fn json_keeps_its_text_and_uuid_is_canonical() {
        assert_eq!(
            TextType::Json.normalize(r#"{"b":1, "a":2}"#).unwrap(),
            r#"{"b":1, "a":2}"#
        );
        assert!(TextType::Json.normalize("{").is_err());
        for form in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        ] {
            assert_eq!(
                TextType::Uuid.normalize(form).unwrap(),
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "{form}"
            );
        }
        for bad in [
            "a0eebc99",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99--9c0b4ef8bb6d6bb9bd380a11",
            "g0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert!(TextType::Uuid.normalize(bad).is_err(), "{bad}");
        }
        assert_eq!(
            uuid_bytes("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()[..2],
            [0xa0, 0xee]
        );
    }
}
