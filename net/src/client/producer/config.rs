//! Producer settings.

use crate::client::connection::ConnectionConfig;
use crate::client::error::ClientError;
use crate::message::produce::Acks;
use ringlog_engine::batch::{Compression, BATCH_HEADER_BYTES};

/// How batches' records are compressed: Kafka's producer `compression.type`. Each batch's
/// records section is compressed when the batch is closed, in the format Kafka's Java
/// producer writes (see [`ringlog_engine::compression`]), so Kafka consumers (through the
/// Kafka listener) and ringlog's own consumers read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CompressionType {
    /// Uncompressed (the default, as in Kafka's producer).
    #[default]
    None,
    /// gzip, at deflate's default level.
    Gzip,
    /// Snappy in xerial framing.
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard frame.
    Zstd,
}

impl CompressionType {
    /// The batch attributes codec this type writes.
    pub fn codec(self) -> Compression {
        match self {
            CompressionType::None => Compression::None,
            CompressionType::Gzip => Compression::Gzip,
            CompressionType::Snappy => Compression::Snappy,
            CompressionType::Lz4 => Compression::Lz4,
            CompressionType::Zstd => Compression::Zstd,
        }
    }
}

/// How a [`super::Producer`] batches, bounds and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Durability to wait for (default: durable).
    pub acks: Acks,
    /// Largest batch; a record that does not fit an empty batch is refused (default 1 MiB).
    pub batch_bytes_max: usize,
    /// How long a batch may wait for more records before it is sent (default 5 ms). Past it,
    /// a batch that cannot be sent yet (no request slot free, an earlier batch of its partition
    /// waiting) keeps taking records until it can, as in Kafka's producer.
    pub linger_ms: u64,
    /// Produce requests in flight at once (default 5). Without idempotence, a retried batch
    /// may land after a later batch of the same partition (set 1 for strict order under
    /// retries); with it, order holds (at most 5 batches per partition are in flight).
    pub in_flight_requests_max: usize,
    /// Largest produce request: ready batches of several partitions share a request up to
    /// this size (default 8 MiB; keep it under the server's frame limit).
    pub request_bytes_max: usize,
    /// Bytes of records buffered, queued and in flight before `send` blocks (default 64 MiB).
    pub buffer_bytes_max: usize,
    /// Longest `send` blocks for buffer space before failing with Timeout (default 60 s).
    pub max_block_ms: u64,
    /// Times a batch is sent again after a retriable error (default unbounded, as Kafka's
    /// `retries`): a batch is retried until `delivery_timeout_ms` after it was created, so a
    /// full disk or a busy server for less than that loses nothing.
    pub retries_max: u32,
    /// Wait before a retry (default 100 ms).
    pub retry_backoff_ms: u64,
    /// Wait before connecting again after the connection failed (default 50 ms, Kafka's
    /// `reconnect.backoff.ms`); doubled after each failed attempt up to
    /// `reconnect_backoff_max_ms`.
    pub reconnect_backoff_ms: u64,
    /// Longest wait between two connection attempts (default 1 s).
    pub reconnect_backoff_max_ms: u64,
    /// A batch created longer ago than this is not retried again (default 120 s, Kafka's
    /// `delivery.timeout.ms`): it fails with its last retriable error, or, while the server
    /// cannot be reached, with the connection's, so `flush` and a `send` blocked on a full
    /// buffer end.
    pub delivery_timeout_ms: u64,
    /// Idempotent delivery (default on): the producer gets an id from the server
    /// (InitProducerId) and numbers its batches, so that a retried batch the server already
    /// wrote is not written twice, and batches of a partition are written in order even with
    /// several requests in flight. Off with [`Acks::None`], which has no retries. A server
    /// without InitProducerId is used without idempotence.
    pub idempotence: bool,
    /// How often the topic's partition count is asked for again, so that partitions added
    /// to the topic are used (default 5 minutes, as Kafka's `metadata.max.age.ms`).
    pub metadata_max_age_ms: u64,
    /// Compression of each batch's records (default none, as Kafka's `compression.type`).
    /// A batch is compressed when it is closed (full, lingered or flushed), under the
    /// producer's lock, so `send` may wait for it. Batches are filled by their uncompressed
    /// size (`batch_bytes_max` bounds the records before compression), where Kafka's producer
    /// fills by an estimate of the compressed size: compressed batches come out smaller than
    /// `batch_bytes_max`. A batch whose records do not shrink is sent uncompressed, as
    /// librdkafka does (Kafka's Java producer sends it compressed anyway).
    pub compression: CompressionType,
    /// Connection settings; its `request_timeout_ms` bounds the wait for each response.
    pub connection: ConnectionConfig,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            acks: Acks::Durable,
            batch_bytes_max: 1024 * 1024,
            linger_ms: 5,
            in_flight_requests_max: 5,
            request_bytes_max: 8 * 1024 * 1024,
            buffer_bytes_max: 64 * 1024 * 1024,
            max_block_ms: 60_000,
            retries_max: u32::MAX,
            retry_backoff_ms: 100,
            reconnect_backoff_ms: 50,
            reconnect_backoff_max_ms: 1000,
            delivery_timeout_ms: 120_000,
            idempotence: true,
            metadata_max_age_ms: 300_000,
            compression: CompressionType::None,
            connection: ConnectionConfig::default(),
        }
    }
}

impl ProducerConfig {
    /// Checks that the limits are consistent.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |what: &str| Err(ClientError::InvalidArgument(what.to_owned()));
        if self.batch_bytes_max <= BATCH_HEADER_BYTES {
            return invalid("batch_bytes_max must exceed a batch header (61 bytes)");
        }
        if self.in_flight_requests_max == 0 {
            return invalid("in_flight_requests_max must be at least 1");
        }
        if self.request_bytes_max < self.batch_bytes_max {
            return invalid("request_bytes_max must be at least batch_bytes_max");
        }
        if self.buffer_bytes_max < self.batch_bytes_max {
            return invalid("buffer_bytes_max must be at least batch_bytes_max");
        }
        // At least 1 ms: a zero backoff would connect in a busy loop while the server is away.
        // At most i32::MAX, as Kafka's ints: the bound keeps deadlines in range.
        let ms_range = 1..=i32::MAX as u64;
        if !ms_range.contains(&self.reconnect_backoff_ms)
            || !ms_range.contains(&self.reconnect_backoff_max_ms)
            || self.reconnect_backoff_max_ms < self.reconnect_backoff_ms
        {
            return invalid(
                "reconnect_backoff_ms and reconnect_backoff_max_ms must be between 1 and \
                 2147483647, the maximum at least the minimum",
            );
        }
        if !ms_range.contains(&self.delivery_timeout_ms) {
            return invalid("delivery_timeout_ms must be between 1 and 2147483647");
        }
        if !(1..=i32::MAX as u64).contains(&self.metadata_max_age_ms) {
            // Kafka's metadata.max.age.ms is an int too; the bound keeps deadlines in range.
            return invalid("metadata_max_age_ms must be between 1 and 2147483647");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_limits_are_refused() {
        assert!(ProducerConfig::default().validate().is_ok());
        let bad = ProducerConfig {
            batch_bytes_max: 10,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ProducerConfig {
            in_flight_requests_max: 0,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
        let bad = ProducerConfig {
            request_bytes_max: 1000,
            ..ProducerConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
