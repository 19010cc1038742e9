//! DeleteRecords (23): moves partitions' log start offsets up, as Kafka's DeleteRecords does.
//!
//! Records below a partition's new start are no longer served (reads there are
//! OffsetOutOfRange, ListOffsets earliest answers the start). The start is stored before the
//! answer and kept over restarts; the segments wholly below it go at the next retention pass.
//! An offset past the high watermark is OffsetOutOfRange; one at or below the start changes
//! nothing. Each entry is answered on its own, in request order.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, table_vector, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::DeleteRecordsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::DeleteRecordsResponse<'buf>;

/// The offset meaning "the high watermark": every record stored now.
pub const HIGH_WATERMARK: i64 = -1;

/// One partition's new start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeleteBefore {
    /// Partition id.
    pub partition: u32,
    /// The new log start offset, or [`HIGH_WATERMARK`].
    pub offset: i64,
}

/// DeleteRecords request for partitions of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Entries, answered in order.
    pub partitions: &'a [DeleteBefore],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::DeleteRecords;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let topic = Some(fbb.create_string(self.topic));
        let partitions = Some(
            fbb.create_vector_from_iter(
                self.partitions
                    .iter()
                    .map(|p| protocol::DeleteRecordsPartition::new(p.partition, p.offset)),
            ),
        );
        let root = protocol::DeleteRecordsRequest::create(
            fbb,
            &protocol::DeleteRecordsRequestArgs { topic, partitions },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// The answer for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResult<'a> {
    /// Partition id (as requested).
    pub partition: u32,
    /// Outcome.
    pub status: Status<'a>,
    /// The log start offset after the request; -1 on error.
    pub log_start_offset: i64,
}

/// DeleteRecords answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Whole-request result (UnknownTopic, InvalidRequest).
    pub status: Status<'a>,
    /// One entry per request entry, in request order.
    pub results: &'a [PartitionResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::DeleteRecords;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let results = Some(table_vector(fbb, self.results, |fbb, r| {
            let error_message = opt_string(fbb, r.status.message);
            protocol::DeleteRecordsResult::create(
                fbb,
                &protocol::DeleteRecordsResultArgs {
                    partition: r.partition,
                    error_code: r.status.code.as_u16(),
                    error_message,
                    log_start_offset: r.log_start_offset,
                },
            )
        }));
        let root = protocol::DeleteRecordsResponse::create(
            fbb,
            &protocol::DeleteRecordsResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                results,
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
    fn request_and_response_round_trip() {
        let asked = [
            DeleteBefore {
                partition: 0,
                offset: 42,
            },
            DeleteBefore {
                partition: 3,
                offset: HIGH_WATERMARK,
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            topic: "t",
            partitions: &asked,
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.topic(), "t");
        let read: Vec<DeleteBefore> = view
            .partitions()
            .unwrap()
            .iter()
            .map(|p| DeleteBefore {
                partition: p.partition(),
                offset: p.offset(),
            })
            .collect();
        assert_eq!(read, asked);

        let results = [
            PartitionResult {
                partition: 0,
                status: Status::OK,
                log_start_offset: 42,
            },
            PartitionResult {
                partition: 3,
                status: Status::error(ErrorCode::OffsetOutOfRange, "past the end"),
                log_start_offset: -1,
            },
        ];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            results: &results,
        });
        let view = ResponseView::decode(body).unwrap();
        let read: Vec<(u32, u16, Option<&str>, i64)> = view
            .results()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.partition(),
                    r.error_code(),
                    r.error_message(),
                    r.log_start_offset(),
                )
            })
            .collect();
        assert_eq!(
            read,
            [
                (0, 0, None, 42),
                (
                    3,
                    ErrorCode::OffsetOutOfRange.as_u16(),
                    Some("past the end"),
                    -1
                )
            ]
        );
    }
}
