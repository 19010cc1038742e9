//! What is durable about a group itself: its kind and, for share groups, its configuration.
//!
//! Each group has a small text file `<data>/~groups/<group>.group` (the `~` keeps the
//! directory from ever being taken for a topic), written atomically through the ring by the
//! group's coordinator when the group is created or configured, and read by every shard at
//! startup. Membership is not durable: members rejoin after a restart, as in Kafka.
//!
//! ```text
//! kind = share
//! lock_ms = 30000
//! delivery_limit = 5
//! in_flight_records_max = 2000
//! dead_letter_topic = orders.dlq
//! ```

use std::path::{Path, PathBuf};

use ringlog_engine::reactor::fs;

use crate::error_code::ErrorCode;
use crate::message::group::GroupKind;
use crate::server::message::Failure;

/// Directory of group files inside the data directory.
pub(crate) const GROUPS_DIR_NAME: &str = "~groups";
/// Suffix of a group file.
const GROUP_FILE_SUFFIX: &str = ".group";
/// Longest file name Linux file systems take (NAME_MAX).
const FILE_NAME_BYTES_MAX: usize = 255;
/// Longest group name: the group's file is written as `<name>.group.tmp`, then renamed, and
/// that name must fit a directory entry (Kafka's 249 for topics would not).
pub(crate) const GROUP_NAME_BYTES_MAX: usize =
    FILE_NAME_BYTES_MAX - GROUP_FILE_SUFFIX.len() - ".tmp".len();
/// Default lock duration of acquired share records.
pub(crate) const LOCK_MS_DEFAULT: u32 = 30_000;
/// Shortest lock duration accepted.
pub(crate) const LOCK_MS_MIN: u32 = 10;
/// Longest lock duration accepted.
pub(crate) const LOCK_MS_MAX: u32 = 3_600_000;
/// Default delivery limit.
pub(crate) const DELIVERY_LIMIT_DEFAULT: u16 = 5;
/// Largest delivery limit accepted.
pub(crate) const DELIVERY_LIMIT_MAX: u16 = 1_000;
/// Largest in-flight window a share group may ask for. Replaying a state file relies on no
/// window having spanned more (see `Window::replay`): raise it if need be, never lower it.
pub(crate) const IN_FLIGHT_RECORDS_LIMIT: u32 = 100_000;

/// Settings of a share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShareConfig {
    /// How long an acquired record stays locked to its member.
    pub(crate) lock_ms: u32,
    /// Deliveries after which a released or expired record is archived.
    pub(crate) delivery_limit: u16,
    /// Where archived records are copied; empty for none.
    pub(crate) dead_letter_topic: String,
    /// Cap on the in-flight window of each share partition.
    pub(crate) in_flight_records_max: u32,
}

impl ShareConfig {
    /// The defaults, with the server's in-flight cap.
    pub(crate) fn with_defaults(in_flight_records_max: u32) -> ShareConfig {
        ShareConfig {
            lock_ms: LOCK_MS_DEFAULT,
            delivery_limit: DELIVERY_LIMIT_DEFAULT,
            dead_letter_topic: String::new(),
            in_flight_records_max,
        }
    }

    /// Checks every value is in range.
    pub(crate) fn validate(&self) -> Result<(), Failure> {
        let invalid = |message: String| Err(Failure::new(ErrorCode::InvalidConfig, message));
        if !(LOCK_MS_MIN..=LOCK_MS_MAX).contains(&self.lock_ms) {
            return invalid(format!(
                "lock_ms must be between {LOCK_MS_MIN} and {LOCK_MS_MAX}, got {}",
                self.lock_ms
            ));
        }
        if !(1..=DELIVERY_LIMIT_MAX).contains(&self.delivery_limit) {
            return invalid(format!(
                "delivery_limit must be between 1 and {DELIVERY_LIMIT_MAX}, got {}",
                self.delivery_limit
            ));
        }
        if !(1..=IN_FLIGHT_RECORDS_LIMIT).contains(&self.in_flight_records_max) {
            return invalid(format!(
                "in_flight_records_max must be between 1 and {IN_FLIGHT_RECORDS_LIMIT}, got {}",
                self.in_flight_records_max
            ));
        }
        if !self.dead_letter_topic.is_empty() {
            ringlog_engine::topic::validate_name(&self.dead_letter_topic)
                .map_err(|error| Failure::new(ErrorCode::InvalidConfig, error.to_string()))?;
        }
        Ok(())
    }
}

/// A group's durable description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMeta {
    /// Consumer or share group.
    pub(crate) kind: GroupKind,
    /// Settings (meaningful for share groups only).
    pub(crate) share: ShareConfig,
}

/// Checks a group name: 1 to [`GROUP_NAME_BYTES_MAX`] (245) characters of `[a-zA-Z0-9._-]`,
/// not `.` or `..` (the topic rules, which keep group file names safe).
pub(crate) fn validate_group_name(name: &str) -> Result<(), Failure> {
    let invalid = |reason: &str| {
        Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!("invalid group name {name:?}: {reason}"),
        ))
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > GROUP_NAME_BYTES_MAX {
        return invalid(&format!("longer than {GROUP_NAME_BYTES_MAX} characters"));
    }
    if name == "." || name == ".." {
        return invalid("'.' and '..' are reserved");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return invalid("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// The file text of a group.
fn file_text(meta: &GroupMeta) -> String {
    let kind = match meta.kind {
        GroupKind::Consumer => "consumer",
        GroupKind::Share => "share",
    };
    let share = &meta.share;
    let mut text = format!(
        "kind = {kind}\nlock_ms = {}\ndelivery_limit = {}\nin_flight_records_max = {}\n",
        share.lock_ms, share.delivery_limit, share.in_flight_records_max
    );
    if !share.dead_letter_topic.is_empty() {
        text.push_str(&format!(
            "dead_letter_topic = {}\n",
            share.dead_letter_topic
        ));
    }
    text
}

/// Reads a group file's text; `None` when it is not one this build wrote.
fn parse_file(text: &str, in_flight_default: u32) -> Option<GroupMeta> {
    let mut kind = None;
    let mut share = ShareConfig::with_defaults(in_flight_default);
    for line in text.lines().map(str::trim).filter(|line| !line.is_empty()) {
        let (key, value) = line.split_once('=')?;
        let value = value.trim();
        match key.trim() {
            "kind" => {
                kind = Some(match value {
                    "consumer" => GroupKind::Consumer,
                    "share" => GroupKind::Share,
                    _ => return None,
                })
            }
            "lock_ms" => share.lock_ms = value.parse().ok()?,
            "delivery_limit" => share.delivery_limit = value.parse().ok()?,
            "in_flight_records_max" => share.in_flight_records_max = value.parse().ok()?,
            "dead_letter_topic" => share.dead_letter_topic = value.to_string(),
            // Keys from a newer build are ignored.
            _ => {}
        }
    }
    share.validate().ok()?;
    Some(GroupMeta { kind: kind?, share })
}

fn groups_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(GROUPS_DIR_NAME)
}

/// Every group of the data directory. Startup only (blocking); unreadable files are skipped
/// with a warning.
pub(crate) fn load_all(data_dir: &Path, in_flight_default: u32) -> Vec<(String, GroupMeta)> {
    let dir = groups_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut groups = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|name| name.strip_suffix(GROUP_FILE_SUFFIX))
        else {
            continue;
        };
        if validate_group_name(name).is_err() {
            continue;
        }
        let parsed = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| parse_file(&text, in_flight_default));
        match parsed {
            Some(meta) => groups.push((name.to_string(), meta)),
            None => {
                tracing::warn!(path = %entry.path().display(), "skipping unreadable group file")
            }
        }
    }
    groups.sort_by(|a, b| a.0.cmp(&b.0));
    groups
}

/// Writes a group's file durably (through the ring).
pub(crate) async fn store(data_dir: &Path, name: &str, meta: &GroupMeta) -> std::io::Result<()> {
    let dir = groups_dir(data_dir);
    match fs::create_dir(&dir).await {
        Ok(()) => fs::sync_dir(data_dir).await?,
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(error),
    }
    let path = dir.join(format!("{name}{GROUP_FILE_SUFFIX}"));
    fs::write_file_atomic(&path, file_text(meta).as_bytes()).await
}

/// Removes a deleted group's file durably (a missing file is already removed).
pub(crate) async fn remove(data_dir: &Path, name: &str) -> std::io::Result<()> {
    let dir = groups_dir(data_dir);
    let path = dir.join(format!("{name}{GROUP_FILE_SUFFIX}"));
    match fs::remove_file(&path).await {
        Ok(()) => fs::sync_dir(&dir).await,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip() {
        let mut share = ShareConfig::with_defaults(2000);
        share.dead_letter_topic = "dlq".into();
        share.lock_ms = 500;
        for kind in [GroupKind::Consumer, GroupKind::Share] {
            let meta = GroupMeta {
                kind,
                share: share.clone(),
            };
            assert_eq!(parse_file(&file_text(&meta), 7), Some(meta));
        }
        assert_eq!(parse_file("kind = other\n", 7), None);
        assert_eq!(parse_file("lock_ms = 5\n", 7), None);
    }

    #[test]
    fn names_and_ranges() {
        assert!(validate_group_name("orders.v1_A-b").is_ok());
        for bad in ["", ".", "a/b", "a b", &"x".repeat(250)] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
        let mut config = ShareConfig::with_defaults(2000);
        assert!(config.validate().is_ok());
        config.delivery_limit = 0;
        assert_eq!(
            config.validate().unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }
}
