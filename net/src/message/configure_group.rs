//! ConfigureGroup (18): configure a share group, creating it when it does not exist.

use flatbuffers::FlatBufferBuilder;

use super::group::{build_share_group_config, ShareGroupConfig};
use super::{opt_string, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ConfigureGroupRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ConfigureGroupResponse<'buf>;

/// ConfigureGroup request; `None` leaves a setting unchanged (or at the server default for a
/// new group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// Lock duration of acquired records.
    pub lock_ms: Option<u32>,
    /// Deliveries after which a record is archived.
    pub delivery_limit: Option<u16>,
    /// Dead-letter topic; `Some("")` removes it.
    pub dead_letter_topic: Option<&'a str>,
    /// Cap on in-flight records per share partition.
    pub in_flight_records_max: Option<u32>,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ConfigureGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        // An empty string is meaningful here (remove), so it is written, unlike opt_string.
        let dead_letter_topic = self.dead_letter_topic.map(|t| fbb.create_string(t));
        let root = protocol::ConfigureGroupRequest::create(
            fbb,
            &protocol::ConfigureGroupRequestArgs {
                group,
                lock_ms: self.lock_ms,
                delivery_limit: self.delivery_limit,
                dead_letter_topic,
                in_flight_records_max: self.in_flight_records_max,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// ConfigureGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result (InvalidConfig, InvalidGroupKind, ...).
    pub status: Status<'a>,
    /// The effective configuration after the change; absent on error.
    pub config: Option<ShareGroupConfig<'a>>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ConfigureGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let config = self
            .config
            .as_ref()
            .map(|c| build_share_group_config(fbb, c));
        let root = protocol::ConfigureGroupResponse::create(
            fbb,
            &protocol::ConfigureGroupResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                config,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::group::share_group_config;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            lock_ms: Some(1000),
            delivery_limit: None,
            dead_letter_topic: Some(""),
            in_flight_records_max: None,
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.lock_ms(), Some(1000));
        assert_eq!(view.delivery_limit(), None);
        assert_eq!(view.dead_letter_topic(), Some(""));
        assert_eq!(view.in_flight_records_max(), None);

        let config = ShareGroupConfig {
            lock_ms: 1000,
            delivery_limit: 5,
            dead_letter_topic: "",
            in_flight_records_max: 2000,
        };
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            config: Some(config),
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(share_group_config(&view.config().unwrap()), config);
    }
}
