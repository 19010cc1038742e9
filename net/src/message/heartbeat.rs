//! Heartbeat (11): keeps a consumer-group membership alive. RebalanceInProgress means: JoinGroup
//! again with the same member id.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::HeartbeatRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::HeartbeatResponse<'buf>;

/// Heartbeat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// The member's id.
    pub member_id: &'a str,
    /// Generation from the last JoinGroup.
    pub generation: i32,
    /// A static member's instance id (Kafka's `group.instance.id`); empty for a dynamic member.
    pub instance_id: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::Heartbeat;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = Some(fbb.create_string(self.member_id));
        let instance_id = opt_string(fbb, self.instance_id);
        let root = protocol::HeartbeatRequest::create(
            fbb,
            &protocol::HeartbeatRequestArgs {
                group,
                member_id,
                generation: self.generation,
                instance_id,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Heartbeat answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Response<'a> {
    /// Result.
    pub status: Status<'a>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::Heartbeat;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let root = protocol::HeartbeatResponse::create(
            fbb,
            &protocol::HeartbeatResponseArgs {
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
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "m",
            generation: 4,
            instance_id: "",
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(
            (
                view.group(),
                view.member_id(),
                view.generation(),
                view.instance_id()
            ),
            ("g", "m", 4, None)
        );
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::error(ErrorCode::RebalanceInProgress, ""),
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.status().code, ErrorCode::RebalanceInProgress);
    }
}
