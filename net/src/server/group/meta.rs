//! What is durable about a group itself: its kind and, for share groups, its configuration.
//!
//! Each group has a small text file `<data>/~groups/<group>.group` (the `~` keeps the
//! directory from ever being taken for a topic), written atomically through the ring by the
//! group's coordinator when the group is created or configured, and read by every shard at
//! startup. Membership is not durable: members rejoin after a restart, as in Kafka.
//!
//! Group names are Kafka's group ids, which may hold any character (`app:orders`,
//! `team/job 7`), so the file name is the name percent-encoded: the bytes of
//! `[a-zA-Z0-9._-]` stand for themselves (so names of topic characters, the only ones earlier
//! builds took, keep their files), every other byte is `%XX` in upper-case hex, and the names
//! `.` and `..` are written `%2E` and `%2E%2E`.
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
/// Longest encoded group name (see the module comment): the group's file is written as
/// `<encoded name>.group.tmp`, then renamed, and that name must fit a directory entry. A name
/// of topic characters may be this long; others are shorter by two bytes per byte encoded.
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

/// Checks a group name: not empty, no control characters (they would break the lines of
/// `ringlog group` and of logs), and short enough that its file name (see the module comment)
/// is at most [`GROUP_NAME_BYTES_MAX`] (245) bytes. Any other character is allowed, as Kafka
/// allows any group id.
pub(crate) fn validate_group_name(name: &str) -> Result<(), Failure> {
    let invalid = |reason: &str| {
        Err(Failure::new(
            ErrorCode::InvalidGroupName,
            format!("invalid group name {name:?}: {reason}"),
        ))
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.chars().any(char::is_control) {
        return invalid("control characters are not allowed");
    }
    let file_name_bytes = encoded_len(name);
    if file_name_bytes > GROUP_NAME_BYTES_MAX {
        return invalid(&format!(
            "its file name would take {file_name_bytes} bytes, more than {GROUP_NAME_BYTES_MAX} \
             (each byte outside [a-zA-Z0-9._-] takes three)"
        ));
    }
    Ok(())
}

/// Whether `byte` stands for itself in a group's file name.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Whether every byte of `name` is written as `%XX` in its file name: `.` and `..` would name
/// directories.
fn is_all_encoded(name: &str) -> bool {
    name == "." || name == ".."
}

/// Length in bytes of `name` percent-encoded.
fn encoded_len(name: &str) -> usize {
    let all = is_all_encoded(name);
    name.bytes()
        .map(|byte| if is_plain(byte) && !all { 1 } else { 3 })
        .sum()
}

/// The file name stem of group `name`: `name` percent-encoded (see the module comment).
fn encode(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let all = is_all_encoded(name);
    let mut encoded = String::with_capacity(encoded_len(name));
    for byte in name.bytes() {
        if is_plain(byte) && !all {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0xF)]));
        }
    }
    encoded
}

/// The group name a file name stem stands for; `None` when the stem is not what [`encode`]
/// writes for a valid name (a stray file).
fn decode(stem: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(first);
            rest = tail;
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    (validate_group_name(&name).is_ok() && encode(&name) == stem).then_some(name)
}

/// Path of group `name`'s file.
fn file_path(data_dir: &Path, name: &str) -> PathBuf {
    groups_dir(data_dir).join(format!("{}{GROUP_FILE_SUFFIX}", encode(name)))
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
            .and_then(decode)
        else {
            continue;
        };
        let parsed = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| parse_file(&text, in_flight_default));
        match parsed {
            Some(meta) => groups.push((name, meta)),
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
    fs::write_file_atomic(&file_path(data_dir, name), file_text(meta).as_bytes()).await
}

/// Removes a deleted group's file durably (a missing file is already removed).
pub(crate) async fn remove(data_dir: &Path, name: &str) -> std::io::Result<()> {
    match fs::remove_file(&file_path(data_dir, name)).await {
        Ok(()) => fs::sync_dir(&groups_dir(data_dir)).await,
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
    fn file_names_stand_for_their_group_names_alone() {
        let cases = [
            ("orders.v1_A-b", "orders.v1_A-b"),
            ("app:orders", "app%3Aorders"),
            ("team/job 7", "team%2Fjob%207"),
            ("%41", "%2541"),
            ("grü", "gr%C3%BC"),
            (".", "%2E"),
            ("..", "%2E%2E"),
            ("...", "..."),
        ];
        for (name, stem) in cases {
            assert_eq!(encode(name), stem);
            assert_eq!(encoded_len(name), stem.len());
            assert_eq!(decode(stem).as_deref(), Some(name));
        }
        // Stems encode would not write: lower-case hex, encoded plain bytes, a cut escape,
        // bad UTF-8, a control character, and the names of directories.
        for stray in ["app%3aorders", "%61", "a%3", "%FF", "a%0Ab", ".", "..", ""] {
            assert_eq!(decode(stray), None, "{stray:?}");
        }
    }

    #[test]
    fn names_and_ranges() {
        for good in [
            "orders.v1_A-b",
            ".",
            "..",
            "a/b",
            "a b",
            "app:orders",
            "grüße",
            "%41",
        ] {
            assert!(validate_group_name(good).is_ok(), "{good:?}");
        }
        let longest_encoded = format!("{}:", "x".repeat(GROUP_NAME_BYTES_MAX - 3));
        assert!(validate_group_name(&longest_encoded).is_ok());
        let too_long_encoded = format!("{}:", "x".repeat(GROUP_NAME_BYTES_MAX - 2));
        for bad in ["", "a\nb", "\u{7f}", &"x".repeat(250), &too_long_encoded] {
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
