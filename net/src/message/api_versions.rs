//! ApiVersions (0): the handshake. Version 0 is never removed, so any client can always ask.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, Call, Encode, Status};
use crate::api::{ApiKey, ApiVersionRange};
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ApiVersionsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ApiVersionsResponse<'buf>;

/// Handshake request: who the client is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Client software name, e.g. "ringlog-rust".
    pub client_name: &'a str,
    /// Client software version.
    pub client_version: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::ApiVersions;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let client_name = opt_string(fbb, self.client_name);
        let client_version = opt_string(fbb, self.client_version);
        let root = protocol::ApiVersionsRequest::create(
            fbb,
            &protocol::ApiVersionsRequestArgs {
                client_name,
                client_version,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// Handshake response: who the server is and what it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Server software name.
    pub server_name: &'a str,
    /// Server software version.
    pub server_version: &'a str,
    /// Shards (cores) serving partitions.
    pub shard_count: u16,
    /// Supported apis and versions (normally [`crate::api::SUPPORTED_APIS`]).
    pub apis: &'a [ApiVersionRange],
    /// Largest frame the server accepts, length field included.
    pub frame_bytes_max: u32,
    /// Requests a connection may have in flight.
    pub in_flight_requests_max: u32,
    /// Shard serving this connection.
    pub connection_shard: u16,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ApiVersions;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let server_name = opt_string(fbb, self.server_name);
        let server_version = opt_string(fbb, self.server_version);
        let apis = Some(fbb.create_vector_from_iter(self.apis.iter().map(|range| {
            protocol::ApiVersionRange::new(range.api.as_u16(), range.min_version, range.max_version)
        })));
        let root = protocol::ApiVersionsResponse::create(
            fbb,
            &protocol::ApiVersionsResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                server_name,
                server_version,
                shard_count: self.shard_count,
                apis,
                frame_bytes_max: self.frame_bytes_max,
                in_flight_requests_max: self.in_flight_requests_max,
                connection_shard: self.connection_shard,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SUPPORTED_APIS;
    use crate::message::test_support::round_trip;
    use crate::message::{Decode, ResponseStatus as _};

    #[test]
    fn request_round_trip() {
        let body = round_trip::<_, RequestView>(&Request {
            client_name: "ringlog-rust",
            client_version: "0.1.0",
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.client_name(), Some("ringlog-rust"));
        assert_eq!(view.client_version(), Some("0.1.0"));
    }

    #[test]
    fn response_round_trip() {
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            server_name: "ringlog",
            server_version: "0.1.0",
            shard_count: 4,
            apis: &SUPPORTED_APIS,
            frame_bytes_max: 1 << 26,
            in_flight_requests_max: 64,
            connection_shard: 3,
        });
        let view = ResponseView::decode(body).unwrap();
        assert!(view.status().is_ok());
        assert_eq!(view.server_name(), Some("ringlog"));
        assert_eq!(view.shard_count(), 4);
        assert_eq!(view.frame_bytes_max(), 1 << 26);
        assert_eq!(view.in_flight_requests_max(), 64);
        assert_eq!(view.connection_shard(), 3);
        let apis = view.apis().unwrap();
        assert_eq!(apis.len(), SUPPORTED_APIS.len());
        assert_eq!(apis.get(5).api(), ApiKey::Produce.as_u16());
    }
}
