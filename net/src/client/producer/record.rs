//! A record to produce.

/// A record for [`super::Producer::send`], borrowing its data (copied into a batch at once).
///
/// ```
/// use ringlog_net::client::ProducerRecord;
///
/// let record = ProducerRecord::new(b"hello")
///     .with_key(b"user-42")
///     .with_headers(&[("source", Some(b"cli"))]);
/// assert_eq!(record.partition, None); // chosen by key hash
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProducerRecord<'a> {
    /// Explicit partition; `None` partitions by key (murmur2) or, without a key, sticky.
    pub partition: Option<u32>,
    /// Key, `None` for null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` for null (a tombstone).
    pub value: Option<&'a [u8]>,
    /// Headers: UTF-8 key and nullable value.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
    /// Create time in ms since the Unix epoch; `None` for now.
    pub timestamp_ms: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with this value and nothing else set.
    pub fn new(value: &'a [u8]) -> Self {
        Self {
            value: Some(value),
            ..Self::default()
        }
    }

    /// Sets the key (which also picks the partition unless one is given).
    pub fn with_key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the headers.
    pub fn with_headers(mut self, headers: &'a [(&'a str, Option<&'a [u8]>)]) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the create time.
    pub fn with_timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }
}
