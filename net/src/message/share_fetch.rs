//! ShareFetch (20): acquire share-group records of one partition (KIP-932), applying
//! piggy-backed acknowledgements first.
//!
//! The response's raw bytes (`batch_bytes`, after the body) are the whole batches containing
//! the acquired records; they may contain other records, which the consumer skips using the
//! `acquired` ranges.

use flatbuffers::FlatBufferBuilder;

use super::share_acknowledge::AckRange;
use super::{build_ack_results, check_raw_len, opt_string, AckRangeResult};
use super::{Call, DecodeError, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ShareFetchRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ShareFetchResponse<'buf>;

/// Default `max_records` (schema default).
pub const MAX_RECORDS_DEFAULT: u32 = 500;

/// ShareFetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Share group name.
    pub group: &'a str,
    /// Member id chosen by the client (e.g. a random UUID); holder of acquired records.
    pub member_id: &'a str,
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Most records to acquire.
    pub max_records: u32,
    /// Longest the server may wait for an available record.
    pub max_wait_ms: u32,
    /// Upper bound on the raw bytes in the response.
    pub max_bytes: u32,
    /// Acknowledgements applied before acquiring.
    pub acks: &'a [AckRange],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ShareFetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = Some(fbb.create_string(self.member_id));
        let topic = Some(fbb.create_string(self.topic));
        let acks = (!self.acks.is_empty())
            .then(|| fbb.create_vector_from_iter(self.acks.iter().map(|r| r.to_wire())));
        let root = protocol::ShareFetchRequest::create(
            fbb,
            &protocol::ShareFetchRequestArgs {
                group,
                member_id,
                topic,
                partition: self.partition,
                max_records: self.max_records,
                max_wait_ms: self.max_wait_ms,
                max_bytes: self.max_bytes,
                acks,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Records `first_offset..=last_offset` acquired by this member, each delivered
/// `delivery_count` times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquiredRange {
    /// First offset.
    pub first_offset: i64,
    /// Last offset, inclusive.
    pub last_offset: i64,
    /// Deliveries so far, this one included (1 on first delivery).
    pub delivery_count: u16,
}

/// ShareFetch answer (the body; raw bytes are sent after it by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result of the fetch part (UnknownGroup, UnknownPartition, ...).
    pub status: Status<'a>,
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Acquired records, ascending and non-overlapping.
    pub acquired: &'a [AcquiredRange],
    /// When the acquired records' lock expires, ms since the Unix epoch.
    pub lock_expires_ms: i64,
    /// Raw bytes of the batches holding the acquired records, sent after the body.
    pub batch_bytes: u32,
    /// One entry per piggy-backed ack range, in request order.
    pub ack_results: &'a [AckRangeResult<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ShareFetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topic = opt_string(fbb, self.topic);
        let acquired = Some(fbb.create_vector_from_iter(self.acquired.iter().map(|a| {
            protocol::AcquiredRange::new(a.first_offset, a.last_offset, a.delivery_count)
        })));
        let ack_results =
            (!self.ack_results.is_empty()).then(|| build_ack_results(fbb, self.ack_results));
        let root = protocol::ShareFetchResponse::create(
            fbb,
            &protocol::ShareFetchResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                topic,
                partition: self.partition,
                acquired,
                lock_expires_ms: self.lock_expires_ms,
                batch_bytes: self.batch_bytes,
                ack_results,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

/// The raw batches of a received response, after checking `batch_bytes` against `raw`.
pub fn batches<'a>(response: &ResponseView<'a>, raw: &'a [u8]) -> Result<&'a [u8], DecodeError> {
    check_raw_len(std::iter::once(response.batch_bytes()), raw)?;
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::message::share_acknowledge::AckType;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn round_trips() {
        let acks = [AckRange {
            first_offset: 3,
            last_offset: 4,
            ack_type: AckType::Release,
        }];
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "m",
            topic: "t",
            partition: 0,
            max_records: MAX_RECORDS_DEFAULT,
            max_wait_ms: 100,
            max_bytes: 1 << 20,
            acks: &acks,
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.max_records(), MAX_RECORDS_DEFAULT);
        assert_eq!(
            AckRange::from_wire(view.acks().unwrap().get(0)),
            Some(acks[0])
        );

        let acquired = [
            AcquiredRange {
                first_offset: 5,
                last_offset: 9,
                delivery_count: 1,
            },
            AcquiredRange {
                first_offset: 11,
                last_offset: 11,
                delivery_count: 2,
            },
        ];
        let ack_results = [AckRangeResult {
            first_offset: 3,
            last_offset: 4,
            status: Status::error(ErrorCode::InvalidRecordState, "not held"),
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topic: "t",
            partition: 0,
            acquired: &acquired,
            lock_expires_ms: 1_700_000_030_000,
            batch_bytes: 4,
            ack_results: &ack_results,
        });
        let view = ResponseView::decode(body).unwrap();
        let read: Vec<_> = view
            .acquired()
            .unwrap()
            .iter()
            .map(|a| (a.first_offset(), a.last_offset(), a.delivery_count()))
            .collect();
        assert_eq!(read, [(5, 9, 1), (11, 11, 2)]);
        assert_eq!(view.lock_expires_ms(), 1_700_000_030_000);
        assert_eq!(batches(&view, b"abcd").unwrap(), b"abcd");
        assert!(batches(&view, b"abc").is_err());
        let r = view.ack_results().unwrap().get(0);
        assert_eq!(r.error_code(), ErrorCode::InvalidRecordState.as_u16());
    }
}
