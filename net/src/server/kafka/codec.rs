//! Kafka request and response envelopes. Headers and bodies are decoded and encoded with the
//! `kafka-protocol` crate; this module adds the i32 size prefix of responses and says why a
//! request could not be served.

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::server::connection::RawPart;

/// Bytes of the size prefix in front of every request and response.
pub(crate) const SIZE_PREFIX_BYTES: usize = 4;

/// A request whose header has been decoded.
pub(crate) struct KafkaRequest {
    pub(crate) api_key: ApiKey,
    pub(crate) header: RequestHeader,
    /// The body after the header (a view of `frame`).
    pub(crate) body: Bytes,
    /// The whole request after its size prefix; produce regains it mutably to stamp offsets.
    pub(crate) frame: Bytes,
}

impl KafkaRequest {
    /// The request's api version.
    pub(crate) fn version(&self) -> i16 {
        self.header.request_api_version
    }

    /// Decodes the body as `T` at the request's version.
    pub(crate) fn decode_body<T: Decodable>(&self) -> Result<T, KafkaError> {
        let mut body = self.body.clone();
        T::decode(&mut body, self.version()).map_err(|error| KafkaError::Decode {
            api_key: self.api_key,
            version: self.version(),
            message: error.to_string(),
        })
    }
}

/// One piece of a response as it goes out: encoded bytes or record batches sent from where
/// they are stored.
pub(crate) enum OutPart {
    Encoded(Vec<u8>),
    Raw(RawPart),
}

impl OutPart {
    /// Bytes this part sends.
    pub(crate) fn len(&self) -> usize {
        match self {
            OutPart::Encoded(bytes) => bytes.len(),
            OutPart::Raw(raw) => raw.len(),
        }
    }
}

/// A finished response, size prefix included.
pub(crate) struct KafkaResponse {
    pub(crate) parts: Vec<OutPart>,
}

/// Why a request cannot be answered; the connection is closed (as Kafka brokers do), since
/// the client and the server no longer agree on the byte stream or the protocol.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KafkaError {
    /// The frame is shorter than a request header.
    #[error("request of {0} bytes is too short for a header")]
    Truncated(usize),
    /// An api key this server does not know.
    #[error("unknown api key {0}")]
    UnknownApi(i16),
    /// An api or version this server does not serve, with no error response to give.
    #[error("{api_key:?} version {version} is not supported")]
    Unsupported { api_key: ApiKey, version: i16 },
    /// The header or body does not decode.
    #[error("cannot decode {api_key:?} v{version}: {message}")]
    Decode {
        api_key: ApiKey,
        version: i16,
        message: String,
    },
    /// A produce with acks=0 was refused for a partition. There is no response to carry the
    /// error, so the connection is closed, as Kafka does: the client notices and refreshes
    /// its metadata instead of sending into the void.
    #[error("produce with acks=0 refused: {0}")]
    RefusedWithoutResponse(String),
    /// The response does not encode (a bug: a field set that the version lacks).
    #[error("cannot encode the {api_key:?} v{version} response: {message}")]
    Encode {
        api_key: ApiKey,
        version: i16,
        message: String,
    },
}

/// Encodes `body` as the response to `request` (at its version), size prefix first.
pub(crate) fn respond<R: Encodable + HeaderVersion>(
    request: &KafkaRequest,
    body: &R,
) -> Result<KafkaResponse, KafkaError> {
    encode_response(
        request.api_key,
        request.header.correlation_id,
        request.version(),
        body,
    )
}

/// Encodes `body` at `version` as the response to `correlation_id`, size prefix first.
pub(crate) fn encode_response<R: Encodable + HeaderVersion>(
    api_key: ApiKey,
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<KafkaResponse, KafkaError> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    // Sized up front so the response is one allocation, however many records it carries.
    let encoded_bytes = header
        .compute_size(header_version)
        .and_then(|header_bytes| Ok(header_bytes + body.compute_size(version)?))
        .map_err(encode_error(api_key, version))?;
    let mut out = Vec::with_capacity(SIZE_PREFIX_BYTES + encoded_bytes);
    out.extend_from_slice(&[0; SIZE_PREFIX_BYTES]);
    header
        .encode(&mut out, header_version)
        .map_err(encode_error(api_key, version))?;
    body.encode(&mut out, version)
        .map_err(encode_error(api_key, version))?;
    let size = i32::try_from(out.len() - SIZE_PREFIX_BYTES).map_err(|_| KafkaError::Encode {
        api_key,
        version,
        message: format!("response of {} bytes is too large", out.len()),
    })?;
    out[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_be_bytes());
    Ok(KafkaResponse {
        parts: vec![OutPart::Encoded(out)],
    })
}

fn encode_error<E: std::fmt::Display>(
    api_key: ApiKey,
    version: i16,
) -> impl FnOnce(E) -> KafkaError {
    move |error| KafkaError::Encode {
        api_key,
        version,
        message: error.to_string(),
    }
}

/// A topic id as Kafka's messages carry it.
pub(crate) fn kafka_topic_id(id: ringlog_engine::topic::TopicId) -> uuid::Uuid {
    uuid::Uuid::from_u128(id.0)
}

/// A crate string from an owned string (no copy).
pub(crate) fn str_bytes(text: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(text.into())
}
