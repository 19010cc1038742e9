//! ListOffsets (7): earliest, latest, or first offset at or after a timestamp.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, table_vector, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ListOffsetsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ListOffsetsResponse<'buf>;

/// An offset asked for by position or time (also used by ResetGroupOffsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark: the offset the next record will get.
    Latest,
    /// The first offset whose record timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
    /// Exactly this offset (ResetGroupOffsets only; ListOffsets answers InvalidRequest).
    Offset(i64),
}

impl OffsetSpec {
    /// The wire pair `(spec, value)`.
    pub fn to_wire(self) -> (protocol::OffsetSpec, i64) {
        match self {
            OffsetSpec::Earliest => (protocol::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (protocol::OffsetSpec::Latest, 0),
            OffsetSpec::Timestamp(ms) => (protocol::OffsetSpec::Timestamp, ms),
            OffsetSpec::Offset(offset) => (protocol::OffsetSpec::Offset, offset),
        }
    }

    /// Reads the wire pair; `None` for spec values this build does not know.
    pub fn from_wire(spec: protocol::OffsetSpec, value: i64) -> Option<Self> {
        match spec {
            protocol::OffsetSpec::Earliest => Some(OffsetSpec::Earliest),
            protocol::OffsetSpec::Latest => Some(OffsetSpec::Latest),
            protocol::OffsetSpec::Timestamp => Some(OffsetSpec::Timestamp(value)),
            protocol::OffsetSpec::Offset => Some(OffsetSpec::Offset(value)),
            _ => None,
        }
    }
}

/// One query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetQuery {
    /// Partition id.
    pub partition: u32,
    /// What to look up.
    pub spec: OffsetSpec,
}

/// ListOffsets request for partitions of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Queries, answered in order.
    pub partitions: &'a [OffsetQuery],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ListOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let topic = Some(fbb.create_string(self.topic));
        let partitions = Some(fbb.create_vector_from_iter(self.partitions.iter().map(|q| {
            let (spec, value) = q.spec.to_wire();
            protocol::OffsetQuery::new(value, q.partition, spec)
        })));
        let root = protocol::ListOffsetsRequest::create(
            fbb,
            &protocol::ListOffsetsRequestArgs { topic, partitions },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResult<'a> {
    /// Partition id (as requested).
    pub partition: u32,
    /// Outcome.
    pub status: Status<'a>,
    /// The offset found (for Timestamp: the high watermark when no record is that new).
    pub offset: i64,
    /// Timestamp of the record at `offset` for Timestamp queries that found one, else -1.
    pub timestamp_ms: i64,
}

impl Default for PartitionResult<'_> {
    fn default() -> Self {
        Self {
            partition: 0,
            status: Status::OK,
            offset: -1,
            timestamp_ms: -1,
        }
    }
}

/// ListOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Topic name (as requested).
    pub topic: &'a str,
    /// One entry per query, in request order.
    pub partitions: &'a [PartitionResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ListOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topic = opt_string(fbb, self.topic);
        let partitions = Some(table_vector(fbb, self.partitions, |fbb, p| {
            let error_message = opt_string(fbb, p.status.message);
            protocol::ListOffsetsPartitionResponse::create(
                fbb,
                &protocol::ListOffsetsPartitionResponseArgs {
                    partition: p.partition,
                    error_code: p.status.code.as_u16(),
                    error_message,
                    offset: p.offset,
                    timestamp_ms: p.timestamp_ms,
                },
            )
        }));
        let root = protocol::ListOffsetsResponse::create(
            fbb,
            &protocol::ListOffsetsResponseArgs {
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
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn request_round_trip() {
        let queries = [
            OffsetQuery {
                partition: 0,
                spec: OffsetSpec::Earliest,
            },
            OffsetQuery {
                partition: 1,
                spec: OffsetSpec::Latest,
            },
            OffsetQuery {
                partition: 2,
                spec: OffsetSpec::Timestamp(1_700_000_000_000),
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            topic: "t",
            partitions: &queries,
        });
        let view = RequestView::decode(body).unwrap();
        let read: Vec<_> = view
            .partitions()
            .unwrap()
            .iter()
            .map(|q| OffsetQuery {
                partition: q.partition(),
                spec: OffsetSpec::from_wire(q.spec(), q.value()).unwrap(),
            })
            .collect();
        assert_eq!(read, queries);
    }

    #[test]
    fn response_round_trip() {
        let results = [PartitionResult {
            partition: 2,
            offset: 41,
            timestamp_ms: 1_700_000_000_005,
            ..Default::default()
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topic: "t",
            partitions: &results,
        });
        let view = ResponseView::decode(body).unwrap();
        let p = view.partitions().unwrap().get(0);
        assert_eq!(
            (p.partition(), p.offset(), p.timestamp_ms()),
            (2, 41, 1_700_000_000_005)
        );
    }

    #[test]
    fn unknown_spec_is_none() {
        assert_eq!(OffsetSpec::from_wire(protocol::OffsetSpec(9), 0), None);
    }
}
