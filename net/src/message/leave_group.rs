//! LeaveGroup (12): leave a consumer group now (instead of after the session timeout).

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::LeaveGroupRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::LeaveGroupResponse<'buf>;

/// LeaveGroup request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// The member's id; may be empty when `instance_id` names a static member.
    pub member_id: &'a str,
    /// A static member's instance id (Kafka's `group.instance.id`); empty for a dynamic member.
    pub instance_id: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::LeaveGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = Some(fbb.create_string(self.member_id));
        let instance_id = opt_string(fbb, self.instance_id);
        let root = protocol::LeaveGroupRequest::create(
            fbb,
            &protocol::LeaveGroupRequestArgs {
                group,
                member_id,
                instance_id,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// LeaveGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response<'a> {
    /// Result.
    pub status: Status<'a>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::LeaveGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let root = protocol::LeaveGroupResponse::create(
            fbb,
            &protocol::LeaveGroupResponseArgs {
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
    use crate::message::test_support::round_trip;
    use crate::message::{Decode, ResponseStatus as _};

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "",
            instance_id: "pod-0",
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(
            (view.group(), view.member_id(), view.instance_id()),
            ("g", "", Some("pod-0"))
        );
        let body = round_trip::<_, ResponseView>(&Response::default());
        assert!(ResponseView::decode(body).unwrap().status().is_ok());
    }
}
