//! Errors of the client commands, worded for the person at the terminal: the server address
//! when it cannot be reached, the topic or partition a request was about.

use std::io;

use ringlog_net::client::ClientError;
use ringlog_net::error_code::ErrorCode;
use thiserror::Error;

/// Why a client command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// The server could not be reached.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The address as given (`--server`).
        server: String,
        /// The operating system's reason, without its error number.
        reason: String,
    },
    /// The topic does not exist.
    #[error("topic {topic} does not exist")]
    UnknownTopic {
        /// Topic name.
        topic: String,
    },
    /// CreateTopic of an existing name.
    #[error("topic {topic} already exists")]
    TopicExists {
        /// Topic name.
        topic: String,
    },
    /// The group does not exist (describe, delete).
    #[error("group {group} does not exist")]
    UnknownGroup {
        /// Group name.
        group: String,
    },
    /// `--partition` names a partition the topic does not have.
    #[error("topic {topic} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// The topic's partition count.
        partitions: u32,
    },
    /// `--from OFFSET` outside a partition's stored records.
    #[error(
        "offset {offset} is out of range for partition {partition} \
         (log start {log_start_offset}, high watermark {high_watermark})"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: i64,
        /// The partition.
        partition: u32,
        /// First stored offset.
        log_start_offset: i64,
        /// Offset of the next record to be written.
        high_watermark: i64,
    },
    /// `produce --key-separator` and a line without the separator.
    #[error("line {line} has no key separator {separator:?}")]
    MissingKeySeparator {
        /// 1-based line number.
        line: u64,
        /// The separator.
        separator: String,
    },
    /// Reading stdin failed.
    #[error("cannot read stdin")]
    Input(#[source] io::Error),
    /// Writing stdout failed (a closed pipe is not reported: see [`CliError::is_closed_output`]).
    #[error("cannot write stdout")]
    Output(#[source] io::Error),
    /// Any other client failure.
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl CliError {
    /// A failure of a call that connects (`Client::connect`, `Producer::connect`, ...): socket
    /// errors there mean the server is unreachable.
    pub fn connecting(server: &str, topic: Option<&str>, error: ClientError) -> Self {
        match error {
            ClientError::Io(io_error) => CliError::Connect {
                server: server.to_owned(),
                reason: io_reason(&io_error),
            },
            other => Self::about(topic, other),
        }
    }

    /// A client failure of a request about `topic`, with the codes a user can act on named.
    pub fn about(topic: Option<&str>, error: ClientError) -> Self {
        match (error.code(), topic) {
            (Some(ErrorCode::UnknownTopic), Some(topic)) => CliError::UnknownTopic {
                topic: topic.to_owned(),
            },
            (Some(ErrorCode::TopicExists), Some(topic)) => CliError::TopicExists {
                topic: topic.to_owned(),
            },
            _ => CliError::Client(error),
        }
    }

    /// A client failure of a request about group `group` (describe, delete), with an unknown
    /// group named as such.
    pub fn about_group(group: &str, error: ClientError) -> Self {
        match error.code() {
            Some(ErrorCode::UnknownGroup) => CliError::UnknownGroup {
                group: group.to_owned(),
            },
            _ => CliError::Client(error),
        }
    }

    /// True when stdout was closed by its reader (`| head`): the command just stops, quietly.
    pub fn is_closed_output(&self) -> bool {
        matches!(self, CliError::Output(error) if error.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// "Connection refused" rather than "Connection refused (os error 111)".
fn io_reason(error: &io::Error) -> String {
    let text = error.to_string();
    match text.rfind(" (os error ") {
        Some(end) => text[..end].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_name_the_server_without_errno() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        let error = CliError::connecting("127.0.0.1:9292", None, refused.into());
        assert_eq!(
            error.to_string(),
            "cannot connect to 127.0.0.1:9292: Connection refused"
        );
    }

    #[test]
    fn server_codes_name_the_topic() {
        use ringlog_net::api::ApiKey;
        let unknown = ClientError::server(ApiKey::Metadata, ErrorCode::UnknownTopic, "t");
        let error = CliError::connecting("x:1", Some("t"), unknown);
        assert_eq!(error.to_string(), "topic t does not exist");
        let unknown = ClientError::server(ApiKey::DescribeGroup, ErrorCode::UnknownGroup, "g");
        assert_eq!(
            CliError::about_group("g", unknown).to_string(),
            "group g does not exist"
        );
        let throttled = ClientError::server(ApiKey::Produce, ErrorCode::Throttled, "");
        assert!(matches!(
            CliError::about(Some("t"), throttled),
            CliError::Client(_)
        ));
    }
}
