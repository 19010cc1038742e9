//! ErrorResponse: a body carrying only an error, readable as any api's response.
//!
//! Every response table has `error_code` as field 0 and `error_message` as field 1 and no
//! required fields at the top level, so this body decodes as whichever `<Api>Response` the
//! client expects. Servers use it for requests they cannot decode or do not support.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Status};
use crate::protocol;

/// Writes an ErrorResponse body into `fbb` (reset first) and returns it.
pub fn encode<'b>(fbb: &'b mut FlatBufferBuilder<'_>, status: Status<'_>) -> &'b [u8] {
    fbb.reset();
    let error_message = opt_string(fbb, status.message);
    let root = protocol::ErrorResponse::create(
        fbb,
        &protocol::ErrorResponseArgs {
            error_code: status.code.as_u16(),
            error_message,
        },
    );
    fbb.finish_size_prefixed(root, None);
    fbb.finished_data()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::message::{self, Decode, ResponseStatus};

    fn status_as<'b, V: Decode<'b> + ResponseStatus>(body: &'b [u8]) -> (ErrorCode, String) {
        let view = V::decode(body).unwrap();
        let status = view.status();
        (status.code, status.message.to_owned())
    }

    #[test]
    fn readable_as_every_response() {
        let mut fbb = FlatBufferBuilder::new();
        let body = encode(
            &mut fbb,
            Status::error(ErrorCode::UnsupportedVersion, "Produce v9"),
        )
        .to_vec();
        let expected = (ErrorCode::UnsupportedVersion, "Produce v9".to_owned());
        assert_eq!(
            status_as::<message::api_versions::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::metadata::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::create_topic::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::delete_topic::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::list_topics::ResponseView>(&body),
            expected
        );
        assert_eq!(status_as::<message::produce::ResponseView>(&body), expected);
        assert_eq!(status_as::<message::fetch::ResponseView>(&body), expected);
        assert_eq!(
            status_as::<message::list_offsets::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::join_group::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::heartbeat::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::leave_group::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::offset_commit::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::offset_fetch::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::list_groups::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::describe_group::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::reset_group_offsets::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::configure_group::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::share_fetch::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::share_acknowledge::ResponseView>(&body),
            expected
        );
        assert_eq!(
            status_as::<message::init_producer_id::ResponseView>(&body),
            expected
        );
    }
}
