//! ShareAcknowledge (21): settle share-group records by offset range (KIP-932).
//!
//! Each range is applied on its own: a range naming records this member does not hold
//! (InvalidRecordState) or whose lock expired (LeaseExpired) fails without changing their state,
//! and the other ranges are still applied. Results come one per range, in request order.

use flatbuffers::FlatBufferBuilder;

use super::{build_ack_results, opt_string, AckRangeResult, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ShareAcknowledgeRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ShareAcknowledgeResponse<'buf>;

/// How a share consumer settles records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckType {
    /// Processed: never delivered again.
    Accept,
    /// Give back: available again now (the delivery still counts).
    Release,
    /// Unprocessable: archived, never delivered again.
    Reject,
    /// Still working: the lock is extended by the group's lock_ms.
    Renew,
}

impl AckType {
    /// The wire value.
    pub fn to_wire(self) -> protocol::AckType {
        match self {
            AckType::Accept => protocol::AckType::Accept,
            AckType::Release => protocol::AckType::Release,
            AckType::Reject => protocol::AckType::Reject,
            AckType::Renew => protocol::AckType::Renew,
        }
    }

    /// Reads a wire value; `None` for values this build does not know.
    pub fn from_wire(ack: protocol::AckType) -> Option<Self> {
        match ack {
            protocol::AckType::Accept => Some(AckType::Accept),
            protocol::AckType::Release => Some(AckType::Release),
            protocol::AckType::Reject => Some(AckType::Reject),
            protocol::AckType::Renew => Some(AckType::Renew),
            _ => None,
        }
    }
}

/// An acknowledgement of the inclusive range `first_offset..=last_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckRange {
    /// First offset.
    pub first_offset: i64,
    /// Last offset, inclusive.
    pub last_offset: i64,
    /// What to do with the records.
    pub ack_type: AckType,
}

impl AckRange {
    /// The wire struct.
    pub fn to_wire(self) -> protocol::AckRange {
        protocol::AckRange::new(self.first_offset, self.last_offset, self.ack_type.to_wire())
    }

    /// Reads the wire struct; `None` for an unknown ack type.
    pub fn from_wire(range: &protocol::AckRange) -> Option<Self> {
        Some(Self {
            first_offset: range.first_offset(),
            last_offset: range.last_offset(),
            ack_type: AckType::from_wire(range.ack_type())?,
        })
    }
}

/// ShareAcknowledge request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Share group name.
    pub group: &'a str,
    /// Member id used when acquiring.
    pub member_id: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Ranges to settle.
    pub ranges: &'a [AckRange],
    /// The member leaves the partition once the ranges are applied: what it still holds there
    /// is released, and it no longer counts as a member (a share consumer closing).
    pub leave: bool,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ShareAcknowledge;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = Some(fbb.create_string(self.member_id));
        let topic = Some(fbb.create_string(self.topic));
        let ranges = Some(fbb.create_vector_from_iter(self.ranges.iter().map(|r| r.to_wire())));
        let root = protocol::ShareAcknowledgeRequest::create(
            fbb,
            &protocol::ShareAcknowledgeRequestArgs {
                group,
                member_id,
                topic,
                partition: self.partition,
                ranges,
                leave: self.leave,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// ShareAcknowledge answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result (UnknownGroup, UnknownTopic, ...).
    pub status: Status<'a>,
    /// One entry per request range, in request order.
    pub results: &'a [AckRangeResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ShareAcknowledge;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let results = Some(build_ack_results(fbb, self.results));
        let root = protocol::ShareAcknowledgeResponse::create(
            fbb,
            &protocol::ShareAcknowledgeResponseArgs {
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
    fn round_trips() {
        let ranges = [
            AckRange {
                first_offset: 0,
                last_offset: 9,
                ack_type: AckType::Accept,
            },
            AckRange {
                first_offset: 10,
                last_offset: 10,
                ack_type: AckType::Renew,
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "m",
            topic: "t",
            partition: 1,
            ranges: &ranges,
            leave: true,
        });
        let view = RequestView::decode(body).unwrap();
        assert!(view.leave());
        let read: Vec<_> = view
            .ranges()
            .unwrap()
            .iter()
            .map(|r| AckRange::from_wire(r).unwrap())
            .collect();
        assert_eq!(read, ranges);

        let results = [AckRangeResult {
            first_offset: 10,
            last_offset: 10,
            status: Status::error(ErrorCode::LeaseExpired, ""),
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            results: &results,
        });
        let view = ResponseView::decode(body).unwrap();
        let r = view.results().unwrap().get(0);
        assert_eq!((r.first_offset(), r.last_offset()), (10, 10));
        assert_eq!(r.error_code(), ErrorCode::LeaseExpired.as_u16());
    }
}
