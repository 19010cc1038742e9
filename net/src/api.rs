//! API ids (`u16 api` in every frame header) and the versions this build supports.
//!
//! Ids are part of the wire protocol and never reused; gaps are reserved for related apis.

use thiserror::Error;

/// An API id, as carried in the frame header of a request and echoed by its response.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ApiKey {
    /// Handshake: client name/version in, server info and supported apis out.
    ApiVersions = 0,
    /// Topics with their partitions, owning shards, log start offsets and high watermarks.
    Metadata = 1,
    /// Create a topic.
    CreateTopic = 2,
    /// Delete a topic and its data.
    DeleteTopic = 3,
    /// Every topic with its retention configuration.
    ListTopics = 4,
    /// Append raw record batches to partitions of one topic.
    Produce = 5,
    /// Read raw record batches (long poll).
    Fetch = 6,
    /// Earliest / latest / by-timestamp offsets.
    ListOffsets = 7,
    /// Change a topic's retention.
    AlterTopic = 8,
    /// Join (or rejoin) a consumer group and receive an assignment.
    JoinGroup = 10,
    /// Keep a consumer-group membership alive.
    Heartbeat = 11,
    /// Leave a consumer group.
    LeaveGroup = 12,
    /// Commit consumer-group offsets.
    OffsetCommit = 13,
    /// Read committed offsets and lag.
    OffsetFetch = 14,
    /// List groups.
    ListGroups = 15,
    /// Describe one group (members, offsets, share state).
    DescribeGroup = 16,
    /// Move a group's offsets (only while it has no members).
    ResetGroupOffsets = 17,
    /// Configure a share group (lock duration, delivery limit, dead-letter topic).
    ConfigureGroup = 18,
    /// Delete a group without members, with its committed offsets and share state.
    DeleteGroup = 19,
    /// Acquire records of a share group (KIP-932), with piggy-backed acknowledgements.
    ShareFetch = 20,
    /// Acknowledge share-group records by offset range.
    ShareAcknowledge = 21,
    /// Obtain a producer id and epoch for idempotent batches.
    InitProducerId = 22,
    /// Move partitions' log start offsets up (Kafka's DeleteRecords).
    DeleteRecords = 23,
    /// Forget a consumer group's committed offsets of some partitions (Kafka's OffsetDelete).
    DeleteOffsets = 24,
}

/// The frame named an api id this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("unknown api id {0}")]
pub struct UnknownApi(pub u16);

impl ApiKey {
    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// The api's name as used in the schema (`<Name>Request` / `<Name>Response`).
    pub const fn name(self) -> &'static str {
        match self {
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::Metadata => "Metadata",
            ApiKey::CreateTopic => "CreateTopic",
            ApiKey::DeleteTopic => "DeleteTopic",
            ApiKey::ListTopics => "ListTopics",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::AlterTopic => "AlterTopic",
            ApiKey::JoinGroup => "JoinGroup",
            ApiKey::Heartbeat => "Heartbeat",
            ApiKey::LeaveGroup => "LeaveGroup",
            ApiKey::OffsetCommit => "OffsetCommit",
            ApiKey::OffsetFetch => "OffsetFetch",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::DescribeGroup => "DescribeGroup",
            ApiKey::ResetGroupOffsets => "ResetGroupOffsets",
            ApiKey::ConfigureGroup => "ConfigureGroup",
            ApiKey::DeleteGroup => "DeleteGroup",
            ApiKey::ShareFetch => "ShareFetch",
            ApiKey::ShareAcknowledge => "ShareAcknowledge",
            ApiKey::InitProducerId => "InitProducerId",
            ApiKey::DeleteRecords => "DeleteRecords",
            ApiKey::DeleteOffsets => "DeleteOffsets",
        }
    }

    /// The version range this build speaks for the api.
    pub fn supported_versions(self) -> ApiVersionRange {
        // Every entry of SUPPORTED_APIS is unique per api; the fallback cannot happen but keeps
        // this total without a panic path.
        SUPPORTED_APIS
            .iter()
            .copied()
            .find(|range| range.api == self)
            .unwrap_or(ApiVersionRange {
                api: self,
                min_version: 0,
                max_version: 0,
            })
    }

    /// True when this build speaks `version` of the api.
    pub fn supports_version(self, version: u16) -> bool {
        let range = self.supported_versions();
        (range.min_version..=range.max_version).contains(&version)
    }
}

impl TryFrom<u16> for ApiKey {
    type Error = UnknownApi;

    fn try_from(id: u16) -> Result<Self, Self::Error> {
        SUPPORTED_APIS
            .iter()
            .map(|range| range.api)
            .find(|api| api.as_u16() == id)
            .ok_or(UnknownApi(id))
    }
}

impl From<ApiKey> for u16 {
    fn from(api: ApiKey) -> u16 {
        api.as_u16()
    }
}

impl std::fmt::Display for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// Versions of one api (inclusive), as reported by ApiVersions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    /// The api.
    pub api: ApiKey,
    /// Oldest supported version.
    pub min_version: u16,
    /// Newest supported version.
    pub max_version: u16,
}

/// Every api of protocol v1 with the versions this build speaks, in id order. A server reports
/// exactly this list in its ApiVersions response.
pub const SUPPORTED_APIS: [ApiVersionRange; 24] = [
    v0(ApiKey::ApiVersions),
    v0(ApiKey::Metadata),
    v0(ApiKey::CreateTopic),
    v0(ApiKey::DeleteTopic),
    v0(ApiKey::ListTopics),
    v0(ApiKey::Produce),
    v0(ApiKey::Fetch),
    v0(ApiKey::ListOffsets),
    v0(ApiKey::AlterTopic),
    v0(ApiKey::JoinGroup),
    v0(ApiKey::Heartbeat),
    v0(ApiKey::LeaveGroup),
    v0(ApiKey::OffsetCommit),
    v0(ApiKey::OffsetFetch),
    v0(ApiKey::ListGroups),
    v0(ApiKey::DescribeGroup),
    v0(ApiKey::ResetGroupOffsets),
    v0(ApiKey::ConfigureGroup),
    v0(ApiKey::DeleteGroup),
    v0(ApiKey::ShareFetch),
    v0(ApiKey::ShareAcknowledge),
    v0(ApiKey::InitProducerId),
    v0(ApiKey::DeleteRecords),
    v0(ApiKey::DeleteOffsets),
];

/// An api supported at version 0 only.
const fn v0(api: ApiKey) -> ApiVersionRange {
    ApiVersionRange {
        api,
        min_version: 0,
        max_version: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_sorted() {
        let mut previous = None;
        for range in SUPPORTED_APIS {
            assert_eq!(ApiKey::try_from(range.api.as_u16()), Ok(range.api));
            assert!(previous < Some(range.api.as_u16()));
            previous = Some(range.api.as_u16());
        }
    }

    #[test]
    fn unknown_ids_are_rejected() {
        for id in [9, 25, 100, u16::MAX] {
            assert_eq!(ApiKey::try_from(id), Err(UnknownApi(id)));
        }
    }

    #[test]
    fn version_support() {
        assert!(ApiKey::Produce.supports_version(0));
        assert!(!ApiKey::Produce.supports_version(1));
    }

    #[test]
    fn schema_comment_table_matches() {
        let schema = include_str!("../protocol.fbs");
        for range in SUPPORTED_APIS {
            let needle = format!("{} {}", range.api.as_u16(), range.api.name());
            assert!(
                schema.lines().any(|line| line
                    .strip_prefix("//")
                    .is_some_and(|rest| rest.trim_start().starts_with(&needle))),
                "protocol.fbs lacks {needle}"
            );
        }
    }
}
