//! InitProducerId (22): a producer id and epoch for idempotent batches.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::InitProducerIdRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::InitProducerIdResponse<'buf>;

/// Asks for a new producer id (`producer_id` -1), or bumps the epoch of an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// -1 for a new producer.
    pub producer_id: i64,
    /// Current epoch of `producer_id`, -1 for a new producer.
    pub producer_epoch: i16,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            producer_id: -1,
            producer_epoch: -1,
        }
    }
}

impl Encode for Request {
    const API: ApiKey = ApiKey::InitProducerId;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let root = protocol::InitProducerIdRequest::create(
            fbb,
            &protocol::InitProducerIdRequestArgs {
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request {
    type Response<'buf> = ResponseView<'buf>;
}

/// InitProducerId answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result (InvalidProducerEpoch when fenced).
    pub status: Status<'a>,
    /// The producer id to stamp into batches.
    pub producer_id: i64,
    /// The epoch to stamp into batches.
    pub producer_epoch: i16,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::InitProducerId;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let root = protocol::InitProducerIdResponse::create(
            fbb,
            &protocol::InitProducerIdResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                producer_id: self.producer_id,
                producer_epoch: self.producer_epoch,
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
        let body = round_trip::<_, RequestView>(&Request::default());
        let view = RequestView::decode(body).unwrap();
        assert_eq!((view.producer_id(), view.producer_epoch()), (-1, -1));
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            producer_id: 7,
            producer_epoch: 2,
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!((view.producer_id(), view.producer_epoch()), (7, 2));
    }
}
