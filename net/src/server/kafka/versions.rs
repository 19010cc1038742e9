//! The Kafka apis and versions this server serves: exactly what ApiVersions advertises.
//!
//! Ranges stop before versions that need what ringlog does not have: topic ids in place of
//! names (Fetch 13+, Produce 13+, OffsetCommit 10+, OffsetFetch 10+), transactions v2
//! (Produce 12, InitProducerId 5), share and transaction coordinators (FindCoordinator 5+)
//! and offset lookups by max timestamp (ListOffsets 7+).

use kafka_protocol::messages::ApiKey;

/// An api and the versions served, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ApiRange {
    pub(crate) api_key: ApiKey,
    pub(crate) min_version: i16,
    pub(crate) max_version: i16,
}

const fn range(api_key: ApiKey, min_version: i16, max_version: i16) -> ApiRange {
    ApiRange {
        api_key,
        min_version,
        max_version,
    }
}

/// Every api served, in api key order.
pub(crate) const SUPPORTED_APIS: &[ApiRange] = &[
    range(ApiKey::Produce, 3, 11),
    range(ApiKey::Fetch, 4, 12),
    range(ApiKey::ListOffsets, 1, 6),
    range(ApiKey::Metadata, 0, 12),
    range(ApiKey::OffsetCommit, 2, 9),
    range(ApiKey::OffsetFetch, 1, 9),
    range(ApiKey::FindCoordinator, 0, 4),
    range(ApiKey::JoinGroup, 0, 9),
    range(ApiKey::Heartbeat, 0, 4),
    range(ApiKey::LeaveGroup, 0, 5),
    range(ApiKey::SyncGroup, 0, 5),
    range(ApiKey::DescribeGroups, 0, 6),
    range(ApiKey::ListGroups, 0, 5),
    range(ApiKey::ApiVersions, 0, 4),
    range(ApiKey::CreateTopics, 2, 7),
    range(ApiKey::DeleteTopics, 1, 6),
    range(ApiKey::DeleteRecords, 0, 2),
    range(ApiKey::InitProducerId, 0, 4),
    range(ApiKey::DescribeConfigs, 1, 4),
    range(ApiKey::AlterConfigs, 0, 2),
    range(ApiKey::DescribeLogDirs, 1, 4),
    range(ApiKey::CreatePartitions, 0, 3),
    range(ApiKey::DeleteGroups, 0, 2),
    range(ApiKey::IncrementalAlterConfigs, 0, 1),
    range(ApiKey::OffsetDelete, 0, 0),
    range(ApiKey::DescribeCluster, 0, 1),
    range(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    range(ApiKey::ShareGroupHeartbeat, 1, 1),
    range(ApiKey::ShareGroupDescribe, 1, 1),
    range(ApiKey::ShareFetch, 1, 1),
    range(ApiKey::ShareAcknowledge, 1, 1),
];

/// The versions of `api_key` served, if any.
pub(crate) fn supported(api_key: ApiKey) -> Option<ApiRange> {
    SUPPORTED_APIS
        .iter()
        .copied()
        .find(|range| range.api_key == api_key)
}

/// Whether `version` of `api_key` is served.
pub(crate) fn is_supported(api_key: ApiKey, version: i16) -> bool {
    supported(api_key)
        .is_some_and(|range| (range.min_version..=range.max_version).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ApiKey;

    #[test]
    fn every_advertised_version_is_one_the_codec_knows() {
        for api in SUPPORTED_APIS {
            let known = api.api_key.valid_versions();
            assert!(
                known.min <= api.min_version && api.max_version <= known.max,
                "{:?} {}..={} outside the codec's {known}",
                api.api_key,
                api.min_version,
                api.max_version
            );
        }
    }

    #[test]
    fn api_keys_are_listed_once_in_order() {
        for pair in SUPPORTED_APIS.windows(2) {
            assert!((pair[0].api_key as i16) < (pair[1].api_key as i16));
        }
        assert!(is_supported(ApiKey::ApiVersions, 3));
        assert!(!is_supported(ApiKey::Fetch, 13));
    }
}
