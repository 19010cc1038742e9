//! ResetGroupOffsets (17): move a group's offsets (consumer groups) or share start offsets,
//! only while the group has no members (GroupNotEmpty otherwise).

use flatbuffers::FlatBufferBuilder;

use super::list_offsets::OffsetSpec;
use super::{opt_string, table_vector, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ResetGroupOffsetsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ResetGroupOffsetsResponse<'buf>;

/// ResetGroupOffsets request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partitions to reset; empty for every partition of the topic.
    pub partitions: &'a [u32],
    /// Where to move the offsets.
    pub spec: OffsetSpec,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ResetGroupOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let topic = Some(fbb.create_string(self.topic));
        let partitions = (!self.partitions.is_empty()).then(|| fbb.create_vector(self.partitions));
        let (spec, value) = self.spec.to_wire();
        let root = protocol::ResetGroupOffsetsRequest::create(
            fbb,
            &protocol::ResetGroupOffsetsRequestArgs {
                group,
                topic,
                partitions,
                spec,
                value,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// New offset of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionResult<'a> {
    /// Partition id.
    pub partition: u32,
    /// Outcome.
    pub status: Status<'a>,
    /// The offset now committed; -1 on error.
    pub offset: i64,
}

/// ResetGroupOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result (GroupNotEmpty, UnknownTopic, ...).
    pub status: Status<'a>,
    /// Topic name.
    pub topic: &'a str,
    /// One entry per reset partition.
    pub partitions: &'a [PartitionResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ResetGroupOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topic = opt_string(fbb, self.topic);
        let partitions = Some(table_vector(fbb, self.partitions, |fbb, p| {
            let error_message = opt_string(fbb, p.status.message);
            protocol::PartitionOffsetResult::create(
                fbb,
                &protocol::PartitionOffsetResultArgs {
                    partition: p.partition,
                    error_code: p.status.code.as_u16(),
                    error_message,
                    offset: p.offset,
                },
            )
        }));
        let root = protocol::ResetGroupOffsetsResponse::create(
            fbb,
            &protocol::ResetGroupOffsetsResponseArgs {
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
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            topic: "t",
            partitions: &[0, 1],
            spec: OffsetSpec::Offset(42),
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(
            OffsetSpec::from_wire(view.spec(), view.value()),
            Some(OffsetSpec::Offset(42))
        );
        assert_eq!(view.partitions().unwrap().len(), 2);

        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topic: "t",
            partitions: &[PartitionResult {
                partition: 1,
                status: Status::OK,
                offset: 42,
            }],
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.partitions().unwrap().get(0).offset(), 42);
    }
}
