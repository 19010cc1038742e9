//! How `ringlog consume` prints a record: its value as-is, or a JSON object per line.

use std::borrow::Cow;
use std::io::{self, Write};

use clap::ValueEnum;
use ringlog_engine::batch::HeaderIter;
use ringlog_net::client::ConsumerRecord;
use serde::ser::{Error as _, SerializeSeq};
use serde::{Serialize, Serializer};

/// One line per record, in one of these forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RecordFormat {
    /// The value's bytes exactly as produced (a null value prints as an empty line).
    Value,
    /// {"partition", "offset", "timestamp", "key", "value", "headers"}; key and values are
    /// strings (invalid UTF-8 replaced by U+FFFD) or null.
    Json,
}

impl RecordFormat {
    /// Writes `record` and its line end. No allocation for UTF-8 data.
    pub fn write(self, out: &mut impl Write, record: &ConsumerRecord<'_>) -> io::Result<()> {
        match self {
            RecordFormat::Value => {
                out.write_all(record.value.unwrap_or_default())?;
                out.write_all(b"\n")
            }
            RecordFormat::Json => {
                serde_json::to_writer(&mut *out, &RecordJson::from(record))?;
                out.write_all(b"\n")
            }
        }
    }
}

/// A record as a JSON object.
#[derive(Debug, Serialize)]
struct RecordJson<'a> {
    partition: u32,
    offset: i64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: HeadersJson<'a>,
}

impl<'a> From<&ConsumerRecord<'a>> for RecordJson<'a> {
    fn from(record: &ConsumerRecord<'a>) -> Self {
        Self {
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp_ms,
            key: record.key.map(String::from_utf8_lossy),
            value: record.value.map(String::from_utf8_lossy),
            headers: HeadersJson(record.headers.clone()),
        }
    }
}

/// Headers as `[{"key": ..., "value": ...}]`, decoded while they are written (keys may repeat,
/// so not an object).
#[derive(Debug)]
struct HeadersJson<'a>(HeaderIter<'a>);

impl Serialize for HeadersJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for header in self.0.clone() {
            let header = header.map_err(S::Error::custom)?;
            seq.serialize_element(&HeaderJson {
                key: header.key,
                value: header.value.map(String::from_utf8_lossy),
            })?;
        }
        seq.end()
    }
}

/// One header.
#[derive(Debug, Serialize)]
struct HeaderJson<'a> {
    key: &'a str,
    value: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::batch::{self, BatchBuilder};

    /// Builds a one-record batch and reads it back as a consumer would see it.
    fn with_record(check: impl FnOnce(&ConsumerRecord<'_>)) {
        let mut builder = BatchBuilder::new(Vec::new(), 1_000);
        let headers: [(&str, Option<&[u8]>); 2] = [("h", Some(b"v")), ("n", None)];
        builder
            .push(1_000, Some(b"k"), Some(b"a\"b\xff"), &headers)
            .unwrap();
        let bytes = builder.finish().to_vec();
        let mut records = batch::records(&bytes).unwrap();
        let record = records.next().unwrap().unwrap();
        let consumed = ConsumerRecord {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp_ms: 1_000,
            key: record.key,
            value: record.value,
            headers: record.headers,
        };
        check(&consumed);
    }

    #[test]
    fn value_is_raw_and_json_is_one_parsable_line() {
        with_record(|record| {
            let mut out = Vec::new();
            RecordFormat::Value.write(&mut out, record).unwrap();
            assert_eq!(out, b"a\"b\xff\n");

            let mut out = Vec::new();
            RecordFormat::Json.write(&mut out, record).unwrap();
            assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
            let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(json["partition"], 2);
            assert_eq!(json["offset"], 7);
            assert_eq!(json["timestamp"], 1_000);
            assert_eq!(json["key"], "k");
            assert_eq!(json["value"], "a\"b\u{fffd}");
            assert_eq!(json["headers"][0]["key"], "h");
            assert_eq!(json["headers"][0]["value"], "v");
            assert!(json["headers"][1]["value"].is_null());
        });
    }
}
