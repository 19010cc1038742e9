//! Errors of the blocking client.

use std::sync::Arc;

use ringlog_engine::batch::BatchError;
use ringlog_engine::compression::DecompressError;
use thiserror::Error;

use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::frame::FrameError;
use crate::message::DecodeError;

/// Anything a client call can fail with. Cloneable, so one failure can be reported to every
/// record of a batch.
#[derive(Debug, Clone, Error)]
pub enum ClientError {
    /// The socket failed (connect, read or write).
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Disconnected,
    /// No response within the request timeout, or a request the server did not take for
    /// that long; the connection is not used again.
    #[error("no response within {timeout_ms} ms")]
    Timeout {
        /// The timeout that passed.
        timeout_ms: u64,
    },
    /// A received frame is malformed or too large.
    #[error("bad frame from the server: {0}")]
    Frame(#[from] FrameError),
    /// A received body failed verification.
    #[error("bad response body: {0}")]
    Decode(#[from] DecodeError),
    /// A response does not belong to any request in flight, or to a different api.
    #[error("unexpected response: {0}")]
    UnexpectedResponse(String),
    /// The server answered with an error code.
    #[error("{api} failed: {code}{}", message_suffix(message))]
    Server {
        /// The api that failed.
        api: ApiKey,
        /// The code.
        code: ErrorCode,
        /// The server's message (may be empty).
        message: String,
    },
    /// A fetched batch or record could not be read.
    #[error("bad record batch: {0}")]
    Batch(#[from] BatchError),
    /// A fetched compressed batch could not be decompressed: its payload is corrupt, or its
    /// records are larger than the consumer's `decompressed_bytes_max`.
    #[error("batch at offset {base_offset} of partition {partition}: {source}")]
    Decompress {
        /// The batch's partition.
        partition: u32,
        /// The batch's base offset.
        base_offset: i64,
        /// What failed.
        source: DecompressError,
    },
    /// A record is larger than a batch may be (`batch_bytes_max`).
    #[error("record of {record_bytes} bytes exceeds batch_bytes_max {batch_bytes_max}")]
    RecordTooLarge {
        /// Bytes the record needs in a batch.
        record_bytes: usize,
        /// The producer's limit.
        batch_bytes_max: usize,
    },
    /// An argument is out of range (a partition the topic does not have, a bad config value).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The producer was closed, or failed earlier and can no longer send.
    #[error("producer is closed")]
    Closed,
    /// Records failed since the last flush (the first failure is given).
    #[error("{failed_records} record(s) failed; first error: {first}")]
    DeliveryFailed {
        /// How many records failed.
        failed_records: u64,
        /// The first failure.
        first: Box<ClientError>,
    },
}

impl ClientError {
    /// A server error from an api's status.
    pub fn server(api: ApiKey, code: ErrorCode, message: &str) -> Self {
        ClientError::Server {
            api,
            code,
            message: message.to_owned(),
        }
    }

    /// The server's error code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when sending the same request again later may succeed: retriable server codes.
    /// Connection-level failures are not retriable on the same connection.
    pub fn is_retriable(&self) -> bool {
        self.code().is_some_and(ErrorCode::is_retriable)
    }

    /// True when the connection itself failed (the socket, the end of the stream, no answer
    /// in time, a malformed frame): that connection is not used again, and a new one may
    /// succeed, as after a server restart.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            ClientError::Io(_)
                | ClientError::Disconnected
                | ClientError::Timeout { .. }
                | ClientError::Frame(_)
        )
    }
}

impl From<std::io::Error> for ClientError {
    fn from(error: std::io::Error) -> Self {
        ClientError::Io(Arc::new(error))
    }
}

/// ": message" or nothing.
fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_retriable() {
        let error = ClientError::server(ApiKey::Produce, ErrorCode::Throttled, "slow down");
        assert_eq!(
            error.to_string(),
            "Produce (5) failed: Throttled (12): slow down"
        );
        assert!(error.is_retriable());
        let error = ClientError::server(ApiKey::Fetch, ErrorCode::UnknownTopic, "");
        assert_eq!(error.to_string(), "Fetch (6) failed: UnknownTopic (3)");
        assert!(!error.is_retriable());
        assert!(!ClientError::Disconnected.is_retriable());
        assert!(ClientError::Disconnected.is_connection_failure());
        assert!(!error.is_connection_failure());
    }
}
