//! Topics: names, configuration, metadata files and which shard owns each partition.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Longest topic name, as in Kafka (file names stay under common limits).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Most partitions one topic may have.
pub const PARTITIONS_MAX: u32 = 100_000;
/// Name of the metadata file inside a topic directory.
pub const TOPIC_FILE_NAME: &str = "topic.toml";

/// A topic's id (Kafka's topic UUID): random, given at creation and kept with the topic, so
/// that a topic deleted and created again under the same name is told apart by clients that
/// name topics by id (Kafka's share groups, newer fetches). Written as 32 hex digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicId(pub u128);

impl TopicId {
    /// No id: a topic created by a version that gave none, until it is given one at the next
    /// start.
    pub const NIL: TopicId = TopicId(0);

    /// A new random id (never nil).
    pub fn random() -> Result<TopicId, TopicError> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).map_err(|error| TopicError::Random(error.to_string()))?;
        // As a version 4 UUID, which is what Kafka's clients expect to see.
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Ok(TopicId(u128::from_be_bytes(bytes)))
    }

    /// Whether this is [`TopicId::NIL`].
    pub fn is_nil(&self) -> bool {
        self.0 == 0
    }
}

impl Serialize for TopicId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{:032x}", self.0))
    }
}

impl<'de> Deserialize<'de> for TopicId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.len() != 32 {
            return Err(serde::de::Error::custom("a topic id is 32 hex digits"));
        }
        u128::from_str_radix(&text, 16)
            .map(TopicId)
            .map_err(serde::de::Error::custom)
    }
}

/// A topic's configuration, persisted in `<data>/<topic>/topic.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    /// The topic's id; nil in the file of a topic made before ids existed (given one, and
    /// written back, when the server starts).
    #[serde(default, skip_serializing_if = "TopicId::is_nil")]
    pub id: TopicId,
    /// Number of partitions (fixed at creation).
    pub partitions: u32,
    /// Delete segments whose newest record is older than this; `None` keeps them forever.
    pub retention_ms: Option<u64>,
    /// Delete oldest segments while a partition holds more than this; `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Roll a segment when it reaches this size.
    pub segment_bytes: u64,
}

/// Default segment size: large segments keep appends sequential and the file count low.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;

impl TopicConfig {
    /// A config with `partitions` and defaults for the rest.
    pub fn new(partitions: u32) -> TopicConfig {
        TopicConfig {
            id: TopicId::NIL,
            partitions,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), TopicError> {
        if self.partitions == 0 || self.partitions > PARTITIONS_MAX {
            return Err(TopicError::InvalidConfig(format!(
                "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                self.partitions
            )));
        }
        if self.segment_bytes < SEGMENT_BYTES_MIN || self.segment_bytes > u64::from(u32::MAX) {
            return Err(TopicError::InvalidConfig(format!(
                "segment_bytes must be between {SEGMENT_BYTES_MIN} and {}, got {}",
                u32::MAX,
                self.segment_bytes
            )));
        }
        if self.retention_ms == Some(0) || self.retention_bytes == Some(0) {
            return Err(TopicError::InvalidConfig(
                "retention values must be positive (omit them to keep data forever)".into(),
            ));
        }
        Ok(())
    }
}

/// Errors about topics.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// The name breaks the naming rules.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A configuration value is out of range.
    #[error("invalid topic config: {0}")]
    InvalidConfig(String),
    /// The metadata file cannot be read or written.
    #[error("topic metadata {path}: {message}")]
    Metadata {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The system's random source failed (a topic id cannot be made).
    #[error("no random topic id: {0}")]
    Random(String),
}

/// Checks a topic name against Kafka's rules: 1-249 characters of `[a-zA-Z0-9._-]`, not `.`
/// or `..`; nor the names of the data directory's own entries.
pub fn validate_name(name: &str) -> Result<(), TopicError> {
    let invalid = |reason| TopicError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(invalid("longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    // The data directory's own entries: a topic named so would clash with them (one named
    // `.deleted-...` would be removed at the next start as a deleted topic's remains).
    if name == ".lock" || name.starts_with(".deleted-") || name.starts_with(".producer-ids-") {
        return Err(invalid(
            "'.lock', '.deleted-*' and '.producer-ids-*' are reserved",
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(invalid(
            "only ASCII letters, digits, '.', '_' and '-' are allowed",
        ));
    }
    Ok(())
}

/// A stable 64-bit FNV-1a hash of a topic name. Part of the on-disk contract: partition
/// ownership must not change between releases or restarts.
pub fn stable_hash(topic: &str) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    topic.bytes().fold(OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The shard that owns `partition` of `topic`: `(stable_hash(topic) + partition) % shards`.
pub fn owner_shard(topic: &str, partition: u32, shards: usize) -> usize {
    assert!(shards > 0);
    (stable_hash(topic).wrapping_add(u64::from(partition)) % shards as u64) as usize
}

/// Reads `<topic_dir>/topic.toml`; a topic without an id (made before ids existed) is given
/// one, written back before it is used. A write-back that fails (a full or read-only disk) is
/// logged and the topic served all the same: its records matter more than an id that will be
/// another one at the next start. Startup only (blocking).
pub fn read_config(topic_dir: &Path) -> Result<TopicConfig, TopicError> {
    let path = topic_dir.join(TOPIC_FILE_NAME);
    let metadata_error = |message: String| TopicError::Metadata {
        path: path.display().to_string(),
        message,
    };
    let text = fs::read_to_string(&path).map_err(|e| metadata_error(e.to_string()))?;
    let mut config: TopicConfig =
        toml::from_str(&text).map_err(|e| metadata_error(e.to_string()))?;
    config.validate()?;
    if config.id.is_nil() {
        config.id = TopicId::random()?;
        if let Err(error) = write_config_blocking(topic_dir, &config) {
            tracing::warn!(path = %path.display(), %error,
                "could not store the topic's new id; serving it with an id kept in memory only");
        }
    }
    Ok(config)
}

/// Replaces `<topic_dir>/topic.toml` with `config` durably (a new file renamed over the old
/// one, both synced), so that a crash leaves the old file or the new one. Startup only.
fn write_config_blocking(topic_dir: &Path, config: &TopicConfig) -> io::Result<()> {
    let path = topic_dir.join(TOPIC_FILE_NAME);
    let staged = topic_dir.join(format!("{TOPIC_FILE_NAME}.new"));
    let mut file = fs::File::create(&staged)?;
    io::Write::write_all(&mut file, config_file_text(config).as_bytes())?;
    file.sync_all()?;
    fs::rename(&staged, &path)?;
    fs::File::open(topic_dir)?.sync_all()
}

/// The TOML text of a topic's metadata file.
pub fn config_file_text(config: &TopicConfig) -> String {
    toml::to_string(config).expect("TopicConfig always serialises")
}

/// Lists the topics in a data directory with their configs. Startup only (blocking).
/// Directories without a valid `topic.toml` (an interrupted create) are skipped with a warning.
pub fn scan(data_dir: &Path) -> io::Result<Vec<(String, TopicConfig)>> {
    let mut topics = Vec::new();
    for entry in fs::read_dir(data_dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if validate_name(&name).is_err() {
            continue;
        }
        match read_config(&entry.path()) {
            Ok(config) => topics.push((name, config)),
            Err(error) => tracing::warn!(topic = %name, %error, "skipping topic directory"),
        }
    }
    topics.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        assert!(validate_name("events.v1_A-b").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "ü",
            &"x".repeat(250),
            ".lock",
            ".deleted-x",
            ".producer-ids-0",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ownership_spreads_consecutive_partitions() {
        let owners: Vec<usize> = (0..4).map(|p| owner_shard("t", p, 2)).collect();
        assert_ne!(owners[0], owners[1]);
        assert_eq!(owners[0], owners[2]);
        assert_eq!(stable_hash("t"), stable_hash("t"));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let mut config = TopicConfig::new(3);
        config.id = TopicId::random().unwrap();
        config.retention_ms = Some(60_000);
        let text = config_file_text(&config);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOPIC_FILE_NAME), text).unwrap();
        assert_eq!(read_config(dir.path()).unwrap(), config);
        assert!(TopicConfig::new(0).validate().is_err());
    }

    #[test]
    fn a_topic_without_an_id_is_given_one_that_it_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOPIC_FILE_NAME);
        fs::write(&path, "partitions = 2\nsegment_bytes = 1048576\n").unwrap();
        let first = read_config(dir.path()).unwrap();
        assert!(!first.id.is_nil());
        assert_eq!(first.partitions, 2);
        assert!(fs::read_to_string(&path).unwrap().contains("id = "));
        assert_eq!(
            read_config(dir.path()).unwrap().id,
            first.id,
            "written back"
        );
        assert_ne!(TopicId::random().unwrap(), TopicId::random().unwrap());
        let version = (TopicId::random().unwrap().0 >> 76) & 0xf;
        assert_eq!(version, 4, "a version 4 UUID");
    }

    #[test]
    fn a_topic_whose_new_id_cannot_be_stored_is_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TOPIC_FILE_NAME);
        let text = "partitions = 1\nsegment_bytes = 1048576\n";
        fs::write(&path, text).unwrap();
        // The staging file's name taken by a directory: the write-back fails.
        fs::create_dir(dir.path().join(format!("{TOPIC_FILE_NAME}.new"))).unwrap();
        let config = read_config(dir.path()).unwrap();
        assert!(!config.id.is_nil(), "an id for this run");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            text,
            "the file as it was"
        );
    }
}
