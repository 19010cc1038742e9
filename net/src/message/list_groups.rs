//! ListGroups (15).

use flatbuffers::FlatBufferBuilder;

use super::group::{GroupKind, GroupState};
use super::{opt_string, table_vector, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ListGroupsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ListGroupsResponse<'buf>;

/// Lists every group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request;

impl Encode for Request {
    const API: ApiKey = ApiKey::ListGroups;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let root = protocol::ListGroupsRequest::create(fbb, &protocol::ListGroupsRequestArgs {});
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request {
    type Response<'buf> = ResponseView<'buf>;
}

/// One group in the listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupListing<'a> {
    /// Group name.
    pub group: &'a str,
    /// Consumer or share group.
    pub kind: GroupKind,
    /// Current state.
    pub state: GroupState,
    /// Current members.
    pub member_count: u32,
}

/// ListGroups answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Every group, sorted by name.
    pub groups: &'a [GroupListing<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ListGroups;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let groups = Some(table_vector(fbb, self.groups, |fbb, g| {
            let group = Some(fbb.create_string(g.group));
            protocol::GroupListing::create(
                fbb,
                &protocol::GroupListingArgs {
                    group,
                    kind: g.kind.to_wire(),
                    state: g.state.to_wire(),
                    member_count: g.member_count,
                },
            )
        }));
        let root = protocol::ListGroupsResponse::create(
            fbb,
            &protocol::ListGroupsResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                groups,
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
        round_trip::<_, RequestView>(&Request);
        let groups = [GroupListing {
            group: "g",
            kind: GroupKind::Share,
            state: GroupState::Stable,
            member_count: 8,
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            groups: &groups,
        });
        let view = ResponseView::decode(body).unwrap();
        let g = view.groups().unwrap().get(0);
        assert_eq!(g.group(), "g");
        assert_eq!(GroupKind::from_wire(g.kind()), Some(GroupKind::Share));
        assert_eq!(GroupState::from_wire(g.state()), Some(GroupState::Stable));
        assert_eq!(g.member_count(), 8);
    }
}
