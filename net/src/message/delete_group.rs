//! DeleteGroup (19).

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::DeleteGroupRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::DeleteGroupResponse<'buf>;

/// Deletes a group without members, with its committed offsets and share state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::DeleteGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let root =
            protocol::DeleteGroupRequest::create(fbb, &protocol::DeleteGroupRequestArgs { group });
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// DeleteGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response<'a> {
    /// Result (UnknownGroup, GroupNotEmpty, ...).
    pub status: Status<'a>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::DeleteGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let root = protocol::DeleteGroupResponse::create(
            fbb,
            &protocol::DeleteGroupResponseArgs {
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
        let body = round_trip::<_, RequestView>(&Request { group: "g" });
        assert_eq!(RequestView::decode(body).unwrap().group(), "g");
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::error(ErrorCode::GroupNotEmpty, "g has members"),
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(
            view.status(),
            Status::error(ErrorCode::GroupNotEmpty, "g has members")
        );
    }
}
