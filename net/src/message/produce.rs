//! Produce (5): append raw RecordBatch v2 bytes to partitions of one topic.
//!
//! The request body lists `(partition, batch_bytes)` entries; the raw bytes of the entries follow
//! the body in the same order. The response has one entry per request entry, in order. With
//! [`Acks::None`] the server sends no response at all.

use flatbuffers::FlatBufferBuilder;

use super::{
    check_raw_len, opt_string, table_vector, Call, DecodeError, Encode, RawCursor, Status,
};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ProduceRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ProduceResponse<'buf>;

/// Durability a producer waits for before the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Acks {
    /// No response at all (fire and forget).
    None,
    /// Answer once the write to the segment file completed.
    Leader,
    /// Answer once the write and an fdatasync covering it completed (the default).
    #[default]
    Durable,
}

impl Acks {
    /// The wire value.
    pub fn to_wire(self) -> protocol::Acks {
        match self {
            Acks::None => protocol::Acks::None,
            Acks::Leader => protocol::Acks::Leader,
            Acks::Durable => protocol::Acks::Durable,
        }
    }

    /// Reads a wire value; `None` for values this build does not know.
    pub fn from_wire(acks: protocol::Acks) -> Option<Self> {
        match acks {
            protocol::Acks::None => Some(Acks::None),
            protocol::Acks::Leader => Some(Acks::Leader),
            protocol::Acks::Durable => Some(Acks::Durable),
            _ => None,
        }
    }
}

/// Raw batches for one partition: one or more whole RecordBatch v2 batches, back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBatches<'a> {
    /// Partition id.
    pub partition: u32,
    /// The batches' bytes (baseOffset is stamped by the broker).
    pub batches: &'a [u8],
}

/// Produce request. Its raw parts ([`Encode::raw_parts`]) are each entry's `batches`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Durability to wait for.
    pub acks: Acks,
    /// How long the server may wait for `acks` before answering Timeout.
    pub timeout_ms: u32,
    /// Topic name.
    pub topic: &'a str,
    /// Entries, each followed on the wire by its raw bytes in this order.
    pub partitions: &'a [PartitionBatches<'a>],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::Produce;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let topic = Some(fbb.create_string(self.topic));
        let partitions = Some(fbb.create_vector_from_iter(self.partitions.iter().map(|p| {
            // Over-long entries cannot be framed anyway (frames are u32-sized); saturating keeps
            // the mismatch visible to the receiver instead of wrapping.
            let batch_bytes = u32::try_from(p.batches.len()).unwrap_or(u32::MAX);
            protocol::PartitionBatches::new(p.partition, batch_bytes)
        })));
        let root = protocol::ProduceRequest::create(
            fbb,
            &protocol::ProduceRequestArgs {
                acks: self.acks.to_wire(),
                timeout_ms: self.timeout_ms,
                topic,
                partitions,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }

    fn raw_parts(&self) -> impl Iterator<Item = &[u8]> {
        self.partitions.iter().map(|p| p.batches)
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Pairs each request entry with its raw bytes: yields `(partition, batches)` in request order.
/// Fails (InvalidRequest) when the described lengths do not add up to `raw`.
pub fn batches<'a>(
    request: &RequestView<'a>,
    raw: &'a [u8],
) -> Result<impl Iterator<Item = (u32, &'a [u8])> + 'a, DecodeError> {
    let entries = request.partitions().unwrap_or_default();
    check_raw_len(entries.iter().map(|e| e.batch_bytes()), raw)?;
    let mut cursor = RawCursor::new(raw);
    Ok(entries
        .iter()
        .map(move |e| (e.partition(), cursor.take(e.batch_bytes()))))
}

/// Result for one request entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResult<'a> {
    /// Partition id (as requested).
    pub partition: u32,
    /// Outcome.
    pub status: Status<'a>,
    /// Offset of the first record of the entry's first batch; -1 on error.
    pub base_offset: i64,
    /// Broker timestamp when the topic uses log-append time, else -1.
    pub log_append_time_ms: i64,
    /// Partition's log start offset after the append; -1 when unknown.
    pub log_start_offset: i64,
}

impl Default for PartitionResult<'_> {
    fn default() -> Self {
        Self {
            partition: 0,
            status: Status::OK,
            base_offset: -1,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }
    }
}

/// Produce answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result (entries carry their own).
    pub status: Status<'a>,
    /// Topic name (as requested).
    pub topic: &'a str,
    /// One entry per request entry, in request order.
    pub partitions: &'a [PartitionResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::Produce;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topic = opt_string(fbb, self.topic);
        let partitions = Some(table_vector(fbb, self.partitions, |fbb, p| {
            let error_message = opt_string(fbb, p.status.message);
            protocol::ProducePartitionResponse::create(
                fbb,
                &protocol::ProducePartitionResponseArgs {
                    partition: p.partition,
                    error_code: p.status.code.as_u16(),
                    error_message,
                    base_offset: p.base_offset,
                    log_append_time_ms: p.log_append_time_ms,
                    log_start_offset: p.log_start_offset,
                },
            )
        }));
        let root = protocol::ProduceResponse::create(
            fbb,
            &protocol::ProduceResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                topic,
                partitions,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn request_round_trip_with_raw() {
        let request = Request {
            acks: Acks::Leader,
            timeout_ms: 500,
            topic: "t",
            partitions: &[
                PartitionBatches {
                    partition: 3,
                    batches: b"abc",
                },
                PartitionBatches {
                    partition: 1,
                    batches: b"de",
                },
            ],
        };
        let body = round_trip::<_, RequestView>(&request);
        let raw: Vec<u8> = request.raw_parts().flatten().copied().collect();
        assert_eq!(raw, b"abcde");

        let view = RequestView::decode(body).unwrap();
        assert_eq!(Acks::from_wire(view.acks()), Some(Acks::Leader));
        assert_eq!(view.timeout_ms(), 500);
        assert_eq!(view.topic(), "t");
        let pairs: Vec<_> = batches(&view, &raw).unwrap().collect();
        assert_eq!(pairs, [(3, &b"abc"[..]), (1, &b"de"[..])]);
        assert!(matches!(
            batches(&view, &raw[..4]),
            Err(DecodeError::RawLengthMismatch { .. })
        ));
        assert!(batches(&view, b"abcdef").is_err());
    }

    #[test]
    fn default_acks_is_durable_and_omitted() {
        let request = Request {
            acks: Acks::default(),
            timeout_ms: 30_000,
            topic: "t",
            partitions: &[],
        };
        let body = round_trip::<_, RequestView>(&request);
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.acks(), protocol::Acks::Durable);
        assert_eq!(batches(&view, b"").unwrap().count(), 0);
    }

    #[test]
    fn response_round_trip() {
        let partitions = [
            PartitionResult {
                partition: 3,
                base_offset: 100,
                log_start_offset: 0,
                ..Default::default()
            },
            PartitionResult {
                partition: 1,
                status: Status::error(ErrorCode::CorruptBatch, "crc mismatch"),
                ..Default::default()
            },
        ];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topic: "t",
            partitions: &partitions,
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.topic(), Some("t"));
        let entries = view.partitions().unwrap();
        assert_eq!(entries.get(0).partition(), 3);
        assert_eq!(entries.get(0).base_offset(), 100);
        assert_eq!(entries.get(0).log_append_time_ms(), -1);
        assert_eq!(
            entries.get(1).error_code(),
            ErrorCode::CorruptBatch.as_u16()
        );
        assert_eq!(entries.get(1).error_message(), Some("crc mismatch"));
        assert_eq!(entries.get(1).base_offset(), -1);
    }
}
