//! DeleteTopic (3).

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::DeleteTopicRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::DeleteTopicResponse<'buf>;

/// Deletes a topic and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Topic name.
    pub name: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::DeleteTopic;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let name = Some(fbb.create_string(self.name));
        let root =
            protocol::DeleteTopicRequest::create(fbb, &protocol::DeleteTopicRequestArgs { name });
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// DeleteTopic answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response<'a> {
    /// Result (UnknownTopic, ...).
    pub status: Status<'a>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::DeleteTopic;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let root = protocol::DeleteTopicResponse::create(
            fbb,
            &protocol::DeleteTopicResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
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
    use crate::message::{Decode, ResponseStatus as _};

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request { name: "t" });
        assert_eq!(RequestView::decode(body).unwrap().name(), "t");
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::error(ErrorCode::UnknownTopic, "no topic t"),
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(
            view.status(),
            Status::error(ErrorCode::UnknownTopic, "no topic t")
        );
    }
}
