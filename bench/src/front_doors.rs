//! The `kafka` scenario's side-by-side figures: the same records moved through the native
//! protocol (the bench's own clients) and through the Kafka front door (kcat, librdkafka), in
//! the same run. They appear in the JSON report (`front_doors`), the run table and the summary.
//!
//! Bytes here are record value bytes (records x record size) on both sides, so the two sides'
//! MB/s compare directly and their ratio equals the records/s ratio.

use serde::{Deserialize, Serialize};

use crate::units::{mb_per_s, per_s};

/// Which way the records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Records written to the server.
    Produce,
    /// Records read back from the server.
    Consume,
}

impl Direction {
    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Produce => "produce",
            Direction::Consume => "consume",
        }
    }
}

/// What one side moved, and how fast.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegFigures {
    /// Records moved.
    pub records: u64,
    /// Record value bytes moved.
    pub bytes: u64,
    /// Seconds it took.
    pub seconds: f64,
    /// MB/s, MB = 10^6 bytes.
    pub mb_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
}

impl LegFigures {
    /// `records` records of `bytes` value bytes in `seconds`.
    pub fn new(records: u64, bytes: u64, seconds: f64) -> Self {
        Self {
            records,
            bytes,
            seconds,
            mb_per_s: mb_per_s(bytes, seconds),
            records_per_s: per_s(records, seconds),
        }
    }
}

/// The same records moved both ways in one direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FrontDoorComparison {
    /// Produce or consume.
    pub direction: Direction,
    /// Through the native protocol.
    pub native: LegFigures,
    /// Through the Kafka front door.
    pub kafka: LegFigures,
    /// Kafka records/s divided by native records/s; `null` when the native side measured none.
    pub ratio: Option<f64>,
}

impl FrontDoorComparison {
    /// The comparison of `native` and `kafka` in `direction`, with their ratio.
    pub fn new(direction: Direction, native: LegFigures, kafka: LegFigures) -> Self {
        let ratio =
            (native.records_per_s > 0.0).then(|| kafka.records_per_s / native.records_per_s);
        Self {
            direction,
            native,
            kafka,
            ratio,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_kafka_over_native() {
        let native = LegFigures::new(1_000, 100_000, 0.5);
        let kafka = LegFigures::new(1_000, 100_000, 2.0);
        assert_eq!(native.records_per_s, 2_000.0);
        assert_eq!(kafka.mb_per_s, 0.05);
        let comparison = FrontDoorComparison::new(Direction::Produce, native, kafka);
        assert_eq!(comparison.ratio, Some(0.25));
        let none = FrontDoorComparison::new(Direction::Consume, LegFigures::default(), kafka);
        assert_eq!(none.ratio, None);
        let json = serde_json::to_value(&comparison).unwrap();
        assert_eq!(json["direction"], "produce");
        assert_eq!(json["kafka"]["records_per_s"], 500.0);
    }
}
