//! Fetch (6): read raw record batches, with long polling.
//!
//! The server answers once `min_bytes` of batches are available or `max_wait_ms` passed. The
//! response has one topic entry per request topic and one partition entry per request
//! partition, in request order; each partition's `batch_bytes` raw bytes follow the body in that
//! same order (topics, then partitions). The server writes the body with [`Encode::encode`] and
//! sends the raw bytes from its own buffers right after it; the header's frame length covers both
//! (`FrameHeader::for_message(.., body.len(), raw_bytes)`).

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, VectorIter};

use super::{
    check_raw_len, opt_string, table_vector, Call, DecodeError, Encode, RawCursor, Status,
};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::FetchRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::FetchResponse<'buf>;

/// Default `max_bytes` of a request (schema default): 50 MiB.
pub const MAX_BYTES_DEFAULT: u32 = 50 * 1024 * 1024;

/// One partition to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPartition {
    /// Partition id.
    pub partition: u32,
    /// First offset wanted.
    pub offset: i64,
    /// Upper bound on this partition's raw bytes (a larger first batch still comes whole).
    pub partition_max_bytes: u32,
}

/// The partitions to read of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchTopic<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partitions of the topic.
    pub partitions: &'a [FetchPartition],
}

/// Fetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Longest the server may wait for `min_bytes`.
    pub max_wait_ms: u32,
    /// Bytes that end the wait early.
    pub min_bytes: u32,
    /// Upper bound on all raw bytes in the response.
    pub max_bytes: u32,
    /// What to read.
    pub topics: &'a [FetchTopic<'a>],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::Fetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let topics = Some(table_vector(fbb, self.topics, |fbb, t| {
            let topic = Some(fbb.create_string(t.topic));
            let partitions = Some(fbb.create_vector_from_iter(t.partitions.iter().map(|p| {
                protocol::FetchPartition::new(p.offset, p.partition, p.partition_max_bytes)
            })));
            protocol::FetchTopic::create(fbb, &protocol::FetchTopicArgs { topic, partitions })
        }));
        let root = protocol::FetchRequest::create(
            fbb,
            &protocol::FetchRequestArgs {
                max_wait_ms: self.max_wait_ms,
                min_bytes: self.min_bytes,
                max_bytes: self.max_bytes,
                topics,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Result for one requested partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResult<'a> {
    /// Partition id (as requested).
    pub partition: u32,
    /// Outcome (OffsetOutOfRange, UnknownPartition, ...).
    pub status: Status<'a>,
    /// Offset the next record will get; -1 when unknown.
    pub high_watermark: i64,
    /// First offset still stored; -1 when unknown.
    pub log_start_offset: i64,
    /// Raw bytes of whole batches the server sends for this partition after the body.
    pub batch_bytes: u32,
}

impl Default for PartitionResult<'_> {
    fn default() -> Self {
        Self {
            partition: 0,
            status: Status::OK,
            high_watermark: -1,
            log_start_offset: -1,
            batch_bytes: 0,
        }
    }
}

/// Results for one requested topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicResult<'a> {
    /// Topic name (as requested).
    pub topic: &'a str,
    /// One entry per requested partition, in request order.
    pub partitions: &'a [PartitionResult<'a>],
}

/// Fetch answer (the body; raw bytes are sent separately, see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// One entry per requested topic, in request order.
    pub topics: &'a [TopicResult<'a>],
}

impl Response<'_> {
    /// Raw bytes that must follow the body: the sum of every partition's `batch_bytes`.
    pub fn raw_bytes(&self) -> u64 {
        self.topics
            .iter()
            .flat_map(|t| t.partitions)
            .map(|p| u64::from(p.batch_bytes))
            .sum()
    }
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::Fetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, |fbb, t| {
            let topic = Some(fbb.create_string(t.topic));
            let partitions = Some(table_vector(fbb, t.partitions, |fbb, p| {
                let error_message = opt_string(fbb, p.status.message);
                protocol::FetchPartitionResponse::create(
                    fbb,
                    &protocol::FetchPartitionResponseArgs {
                        partition: p.partition,
                        error_code: p.status.code.as_u16(),
                        error_message,
                        high_watermark: p.high_watermark,
                        log_start_offset: p.log_start_offset,
                        batch_bytes: p.batch_bytes,
                    },
                )
            }));
            protocol::FetchTopicResponse::create(
                fbb,
                &protocol::FetchTopicResponseArgs { topic, partitions },
            )
        }));
        let root = protocol::FetchResponse::create(
            fbb,
            &protocol::FetchResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                topics,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

/// One partition of a received fetch response, with its raw batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedPartition<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Outcome.
    pub status: Status<'a>,
    /// Offset the next record will get; -1 when unknown.
    pub high_watermark: i64,
    /// First offset still stored; -1 when unknown.
    pub log_start_offset: i64,
    /// Whole RecordBatch v2 batches; the first may start before the requested offset.
    pub batches: &'a [u8],
}

/// Pairs every partition entry of a response with its raw bytes, in response order. Fails when
/// the described lengths do not add up to `raw`.
pub fn partitions<'a>(
    response: &ResponseView<'a>,
    raw: &'a [u8],
) -> Result<FetchedPartitions<'a>, DecodeError> {
    let topics = response.topics().unwrap_or_default();
    check_raw_len(
        topics.iter().flat_map(|t| {
            t.partitions()
                .unwrap_or_default()
                .iter()
                .map(|p| p.batch_bytes())
        }),
        raw,
    )?;
    Ok(FetchedPartitions {
        topics: topics.iter(),
        current: None,
        cursor: RawCursor::new(raw),
    })
}

/// Iterator returned by [`partitions`].
pub struct FetchedPartitions<'a> {
    topics: VectorIter<'a, ForwardsUOffset<protocol::FetchTopicResponse<'a>>>,
    current: Option<(
        &'a str,
        VectorIter<'a, ForwardsUOffset<protocol::FetchPartitionResponse<'a>>>,
    )>,
    cursor: RawCursor<'a>,
}

impl std::fmt::Debug for FetchedPartitions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchedPartitions")
            .field("raw_bytes_left", &self.cursor.remaining())
            .finish_non_exhaustive()
    }
}

impl<'a> Iterator for FetchedPartitions<'a> {
    type Item = FetchedPartition<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((topic, partitions)) = &mut self.current {
                if let Some(p) = partitions.next() {
                    return Some(FetchedPartition {
                        topic,
                        partition: p.partition(),
                        status: Status::from_wire(p.error_code(), p.error_message()),
                        high_watermark: p.high_watermark(),
                        log_start_offset: p.log_start_offset(),
                        batches: self.cursor.take(p.batch_bytes()),
                    });
                }
            }
            let topic = self.topics.next()?;
            self.current = Some((topic.topic(), topic.partitions().unwrap_or_default().iter()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn request_round_trip() {
        let parts = [
            FetchPartition {
                partition: 0,
                offset: 5,
                partition_max_bytes: 1024,
            },
            FetchPartition {
                partition: 2,
                offset: 0,
                partition_max_bytes: 2048,
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            max_wait_ms: 100,
            min_bytes: 1,
            max_bytes: MAX_BYTES_DEFAULT,
            topics: &[FetchTopic {
                topic: "t",
                partitions: &parts,
            }],
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.max_wait_ms(), 100);
        assert_eq!(view.max_bytes(), MAX_BYTES_DEFAULT);
        let topic = view.topics().unwrap().get(0);
        assert_eq!(topic.topic(), "t");
        let read: Vec<_> = topic
            .partitions()
            .unwrap()
            .iter()
            .map(|p| (p.partition(), p.offset(), p.partition_max_bytes()))
            .collect();
        assert_eq!(read, [(0, 5, 1024), (2, 0, 2048)]);
    }

    #[test]
    fn response_round_trip_with_raw() {
        let a = [
            PartitionResult {
                partition: 0,
                high_watermark: 10,
                log_start_offset: 0,
                batch_bytes: 3,
                ..Default::default()
            },
            PartitionResult {
                partition: 1,
                status: Status::error(ErrorCode::OffsetOutOfRange, "offset 99 > 10"),
                ..Default::default()
            },
        ];
        let b = [PartitionResult {
            partition: 7,
            batch_bytes: 2,
            ..Default::default()
        }];
        let response = Response {
            status: Status::OK,
            topics: &[
                TopicResult {
                    topic: "a",
                    partitions: &a,
                },
                TopicResult {
                    topic: "b",
                    partitions: &b,
                },
            ],
        };
        assert_eq!(response.raw_bytes(), 5);
        let body = round_trip::<_, ResponseView>(&response);
        let view = ResponseView::decode(body).unwrap();
        let read: Vec<_> = partitions(&view, b"xyzuv").unwrap().collect();
        assert_eq!(read.len(), 3);
        assert_eq!(
            (read[0].topic, read[0].partition, read[0].batches),
            ("a", 0, &b"xyz"[..])
        );
        assert_eq!(read[0].high_watermark, 10);
        assert_eq!(read[1].status.code, ErrorCode::OffsetOutOfRange);
        assert_eq!(read[1].batches, b"");
        assert_eq!(
            (read[2].topic, read[2].partition, read[2].batches),
            ("b", 7, &b"uv"[..])
        );
        assert!(partitions(&view, b"xyzu").is_err());
    }
}
