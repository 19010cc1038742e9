//! Server configuration: TOML file, then `RINGLOG_<FIELD>` environment variables (see
//! [`ServerConfig::from_toml_and_env`]), then the binary's flags; every limit has a default
//! that is safe on a small machine.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use ringlog_engine::topic::{TopicConfig, TopicId};
use serde::{Deserialize, Serialize};

/// Everything `ringlog serve` can be told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Where topics and segments live.
    pub data_dir: PathBuf,
    /// Native protocol listener (every shard listens on it with SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Kafka protocol listener (every shard listens on it with SO_REUSEPORT); `None`: off.
    /// Written `ADDR:PORT`, or [`LISTEN_OFF`] (see [`OptionalListen`]).
    #[serde(deserialize_with = "deserialize_optional_listen")]
    pub kafka_listen: Option<SocketAddr>,
    /// Prometheus metrics listener (HTTP, `GET /metrics`; every shard listens on it with
    /// SO_REUSEPORT); `None`: off. Written `ADDR:PORT`, or [`LISTEN_OFF`].
    #[serde(deserialize_with = "deserialize_optional_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Shard threads; `None`: one per CPU the process may run on.
    pub shards: Option<usize>,
    /// Largest request frame accepted; larger ones get FrameTooLarge and the connection closes.
    pub frame_bytes_max: usize,
    /// Connections held open at once per server; more are accepted and closed at once.
    pub connections_max: usize,
    /// Requests one connection may have in flight; past it the server stops reading from it.
    pub requests_in_flight_max: usize,
    /// Bytes of recently written data each shard keeps in memory to serve tail fetches.
    pub cache_bytes_per_shard: usize,
    /// Bytes of segment data each shard may hold read ahead of consumers reading from disk,
    /// all its partitions together (whole MiB extents; a partition reads up to 8 MiB ahead).
    /// At the bound, a partition takes idle extents back from partitions that stopped reading
    /// or hold more than it (a consumer that stopped half-way gives its window up), else
    /// reads without read-ahead. 0 turns read-ahead off.
    pub read_ahead_bytes_per_shard: u64,
    /// Messages each shard-to-shard queue holds before senders wait.
    pub mail_queue_depth: usize,
    /// Default segment size for new topics.
    pub segment_bytes: u64,
    /// Sends of at least this many bytes use SEND_ZC. Off by default (`usize::MAX`): on
    /// loopback the kernel copies anyway and each zero-copy send waits for its notification,
    /// which the peer's delayed ACK can hold back ~40 ms; plain sends measured 6x faster for
    /// hot fetches here. Worth enabling on real NICs with large fetches.
    pub send_zero_copy_min_bytes: usize,
    /// Consumer and share groups the server keeps (split evenly between the shards that
    /// coordinate them); creating more is refused with Throttled.
    pub groups_max: usize,
    /// Members one consumer group may have.
    pub group_members_max: usize,
    /// In-flight records per share partition for share groups that do not set their own.
    pub share_in_flight_records_max: u32,
    /// Segment writes plus fdatasyncs per second the whole server starts at most, split
    /// evenly between the shards (a fifth of each shard's for syncs); 0 (the default): no
    /// limit. Below the limit every write and sync starts at once; at it, appends gather into
    /// fewer, larger writes and durable acks share fewer syncs (see
    /// `ringlog_engine::io_budget`). For volumes that charge per operation: cloud volumes
    /// sold in IOPS, and VMs whose host stalls them when I/O requests come too fast (the
    /// development VM: e2e p99 21 ms unlimited, 4.5 ms at 2000). Many partitions with durable
    /// appends pay for it: each sync covers one partition, so 10,000 partitions' first
    /// writes took 25 s at 2000 instead of 1.5 s.
    pub disk_ops_per_s_max: u32,
    /// Retention by age of topics created without their own `retention_ms` (Kafka's
    /// `log.retention.ms`): segments whose newest record is older are deleted. Absent (the
    /// default): kept forever.
    pub retention_ms: Option<u64>,
    /// Retention by size of topics created without their own `retention_bytes` (Kafka's
    /// `log.retention.bytes`): the oldest segment of a partition is deleted while what is left
    /// without it still holds at least this much (so, as in Kafka, a partition stays up to a
    /// segment over it, never below). Absent (the default): no limit.
    pub retention_bytes: Option<u64>,
    /// How often each shard deletes the segments past their topic's retention (Kafka's
    /// `log.retention.check.interval.ms`). A consumer still reading a deleted segment gets
    /// OffsetOutOfRange and starts again at the oldest record kept.
    pub retention_check_interval_ms: u64,
    /// How far ahead of this server's clock a produced batch's timestamp (its newest
    /// CreateTime) may be, else the produce is refused with InvalidTimestamp (Kafka 4.0's
    /// `log.message.timestamp.after.max.ms`, one hour by default). Retention by age goes by a
    /// segment's newest timestamp: one record from a client whose clock is years ahead would
    /// keep its segment, and every later one, forever. A very large value (Kafka's
    /// `9223372036854775807`) lifts the bound.
    pub message_timestamp_after_max_ms: u64,
    /// A group without members for this long is deleted with its committed offsets or share
    /// state, as DeleteGroup would (Kafka's `offsets.retention.minutes`, 7 days by default),
    /// so abandoned groups do not pile up against `groups_max`. Counted from when the server
    /// first saw the group empty; a restart starts the count again.
    pub group_retention_ms: u64,
}

/// Default [`ServerConfig::message_timestamp_after_max_ms`]: an hour, as Kafka 4.0.
pub const MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT: u64 = 3_600_000;

/// Default [`ServerConfig::disk_ops_per_s_max`]: no limit.
pub const DISK_OPS_PER_S_MAX_DEFAULT: u32 = 0;

/// Largest `mail_queue_depth`: each of the shard count squared queues is allocated whole at
/// the start.
pub const MAIL_QUEUE_DEPTH_MAX: usize = 1 << 16;

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("ringlog-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 9292)),
            kafka_listen: None,
            metrics_listen: None,
            shards: None,
            frame_bytes_max: 64 << 20,
            connections_max: 10_000,
            requests_in_flight_max: 64,
            cache_bytes_per_shard: 256 << 20,
            read_ahead_bytes_per_shard: 128 << 20,
            mail_queue_depth: 1024,
            segment_bytes: ringlog_engine::topic::SEGMENT_BYTES_DEFAULT,
            send_zero_copy_min_bytes: usize::MAX,
            groups_max: 10_000,
            group_members_max: 1_000,
            share_in_flight_records_max: 2_000,
            disk_ops_per_s_max: DISK_OPS_PER_S_MAX_DEFAULT,
            retention_ms: None,
            retention_bytes: None,
            retention_check_interval_ms: 30_000,
            message_timestamp_after_max_ms: MESSAGE_TIMESTAMP_AFTER_MAX_MS_DEFAULT,
            group_retention_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The value of an optional listener (`kafka_listen`, `metrics_listen`) that turns it off. A
/// file can leave the field out instead, but a variable or a flag overrides a lower layer that
/// set an address, so each layer needs a way to say "none".
pub const LISTEN_OFF: &str = "off";

/// An optional listener as written in the config file, a `RINGLOG_` variable or a flag of
/// `ringlog serve`: `ADDR:PORT`, or [`LISTEN_OFF`] for none. One parser for all three, so
/// that the same text means the same thing wherever it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalListen(
    /// The address to listen on; `None`: no listener.
    pub Option<SocketAddr>,
);

/// An optional listener's value that is neither `ADDR:PORT` nor [`LISTEN_OFF`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected ADDR:PORT or {LISTEN_OFF}, got {0:?}")]
pub struct OptionalListenError(
    /// The text as given.
    pub String,
);

impl FromStr for OptionalListen {
    type Err = OptionalListenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text == LISTEN_OFF {
            return Ok(OptionalListen(None));
        }
        text.parse::<SocketAddr>()
            .map(|addr| OptionalListen(Some(addr)))
            .map_err(|_| OptionalListenError(text.to_owned()))
    }
}

/// Deserializes `kafka_listen` and `metrics_listen` through [`OptionalListen`]: a
/// `RINGLOG_` variable reaches the fields as a TOML string, so this is what makes `off` work
/// there as well as in the file.
fn deserialize_optional_listen<'de, D>(deserializer: D) -> Result<Option<SocketAddr>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    struct Visitor;

    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<SocketAddr>;

        fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
            write!(formatter, "ADDR:PORT or {LISTEN_OFF}")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            text.parse::<OptionalListen>()
                .map(|listen| listen.0)
                .map_err(E::custom)
        }

        // What the derived Serialize writes for `None` where a format has a null (JSON), so
        // that a serialized config reads back.
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: serde::Deserializer<'de>>(
            self,
            deserializer: D,
        ) -> Result<Self::Value, D::Error> {
            deserializer.deserialize_str(Visitor)
        }
    }

    deserializer.deserialize_option(Visitor)
}

/// A configuration value out of range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

/// Prefix of environment variables that set config fields (`RINGLOG_CACHE_BYTES_PER_SHARD`).
pub const ENV_PREFIX: &str = "RINGLOG_";

/// Variables with [`ENV_PREFIX`] that are not config fields: the command line's own, and the
/// knobs of the project's own tests and scripts, so that a shell where one is exported can
/// still start a server.
pub const ENV_NOT_CONFIG: [&str; 9] = [
    "RINGLOG_SERVER",
    "RINGLOG_CONFIG",
    "RINGLOG_LOG",
    "RINGLOG_FUZZ_CASES",
    "RINGLOG_FUZZ_SEEDS_DIR",
    "RINGLOG_POWER_LOSS_CYCLES",
    "RINGLOG_POWER_LOSS_SEED",
    "RINGLOG_ALLOC_TRACE",
    "RINGLOG_SMALL_FS",
];

impl ServerConfig {
    /// The fields of `table` (a parsed TOML file, or empty) with `RINGLOG_<FIELD>` variables
    /// from `vars` over them, defaults for the rest; not validated, since flags may still
    /// override a value (call [`ServerConfig::validate`] on the result). An unknown field, in the
    /// table or a variable, is an error naming the field (or the variable); variable values
    /// are integers when they parse as one and the field takes integers, else strings (so
    /// `RINGLOG_DATA_DIR=2024` is a directory name).
    pub fn from_toml_and_env(
        mut table: toml::Table,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<ServerConfig, ConfigError> {
        // (field, variable) of each field a variable set, to name the variable in errors.
        let mut set_by_env: Vec<(String, String)> = Vec::new();
        for (key, value) in vars {
            let Some(field) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            if ENV_NOT_CONFIG.contains(&key.as_str()) || field.is_empty() {
                continue;
            }
            let field = field.to_ascii_lowercase();
            let value = env_value(&field, value);
            table.insert(field.clone(), value);
            set_by_env.push((field, key));
        }
        let config: ServerConfig = table.clone().try_into().map_err(|error: toml::de::Error| {
            ConfigError(field_error(&table, &set_by_env, &error))
        })?;
        Ok(config)
    }

    /// This process's `RINGLOG_*` environment variables, to pass as `vars`. Other variables
    /// are not looked at, so one that is not UTF-8 does not matter (`std::env::vars` would
    /// panic on it); a `RINGLOG_*` one that is not is an error naming it.
    pub fn env_vars() -> Result<Vec<(String, String)>, ConfigError> {
        let mut vars = Vec::new();
        for (key, value) in std::env::vars_os() {
            let Some(key) = key.to_str().filter(|key| key.starts_with(ENV_PREFIX)) else {
                continue;
            };
            let Ok(value) = value.into_string() else {
                return Err(ConfigError(format!(
                    "environment variable {key} is not valid UTF-8"
                )));
            };
            vars.push((key.to_owned(), value));
        }
        Ok(vars)
    }

    /// Defaults with `RINGLOG_<FIELD>` variables from `vars` over them (no file).
    pub fn from_env(
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<ServerConfig, ConfigError> {
        Self::from_toml_and_env(toml::Table::new(), vars)
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let check = |ok: bool, message: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError(message.to_string()))
            }
        };
        check(self.shards != Some(0), "shards must be at least 1")?;
        check(
            self.shards.unwrap_or(1) <= 1024,
            "shards must be at most 1024",
        )?;
        check(
            (64 << 10..=1 << 30).contains(&self.frame_bytes_max),
            "frame_bytes_max must be between 64 KiB and 1 GiB",
        )?;
        check(
            self.connections_max > 0,
            "connections_max must be at least 1",
        )?;
        check(
            (1..=4096).contains(&self.requests_in_flight_max),
            "requests_in_flight_max must be between 1 and 4096",
        )?;
        check(
            self.cache_bytes_per_shard >= 1 << 20,
            "cache_bytes_per_shard must be at least 1 MiB",
        )?;
        check(
            self.read_ahead_bytes_per_shard == 0 || self.read_ahead_bytes_per_shard >= 1 << 20,
            "read_ahead_bytes_per_shard must be 0 (off) or at least 1 MiB",
        )?;
        check(
            (2..=MAIL_QUEUE_DEPTH_MAX).contains(&self.mail_queue_depth),
            "mail_queue_depth must be between 2 and 65536",
        )?;
        check(
            (ringlog_engine::topic::SEGMENT_BYTES_MIN..=u64::from(u32::MAX))
                .contains(&self.segment_bytes),
            "segment_bytes must be between 1 MiB and 4 GiB - 1 (what a topic takes)",
        )?;
        check(self.groups_max > 0, "groups_max must be at least 1")?;
        check(
            self.group_members_max > 0,
            "group_members_max must be at least 1",
        )?;
        check(
            (1..=100_000).contains(&self.share_in_flight_records_max),
            "share_in_flight_records_max must be between 1 and 100000",
        )?;
        check(
            self.retention_ms != Some(0) && self.retention_bytes != Some(0),
            "retention_ms and retention_bytes must be positive (omit them to keep data forever)",
        )?;
        check(
            self.retention_check_interval_ms > 0,
            "retention_check_interval_ms must be at least 1",
        )?;
        check(
            self.group_retention_ms > 0,
            "group_retention_ms must be at least 1",
        )?;
        Ok(())
    }

    /// The configuration of a new topic of `partitions` that sets nothing of its own.
    pub fn topic_defaults(&self, partitions: u32) -> TopicConfig {
        TopicConfig {
            // Given at creation.
            id: TopicId::NIL,
            partitions,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_bytes: self.segment_bytes,
        }
    }

    /// Each shard's part of [`ServerConfig::disk_ops_per_s_max`] (0: no limit), at least 1
    /// when limited.
    pub fn disk_ops_per_s_per_shard(&self, shard_count: usize) -> u32 {
        assert!(shard_count > 0);
        if self.disk_ops_per_s_max == 0 {
            return 0;
        }
        let shards = u32::try_from(shard_count).unwrap_or(u32::MAX);
        self.disk_ops_per_s_max.div_ceil(shards)
    }
}

/// A variable's value as TOML: an integer when it parses as one, unless `field` takes a
/// string and not that integer; else the string as given.
fn env_value(field: &str, value: String) -> toml::Value {
    let Ok(number) = value.parse::<i64>() else {
        return toml::Value::String(value);
    };
    let integer = toml::Value::Integer(number);
    if field_alone(field, &integer).is_err() {
        let string = toml::Value::String(value);
        if field_alone(field, &string).is_ok() {
            return string;
        }
    }
    integer
}

/// Deserializes `field = value` alone (every other field at its default).
fn field_alone(field: &str, value: &toml::Value) -> Result<ServerConfig, toml::de::Error> {
    let mut table = toml::Table::new();
    table.insert(field.to_owned(), value.clone());
    table.try_into()
}

/// `error` (deserializing `table`, whose messages do not say where) with the field, or the
/// variable that set it, in front: the first field that fails on its own.
fn field_error(
    table: &toml::Table,
    set_by_env: &[(String, String)],
    error: &toml::de::Error,
) -> String {
    let culprit = table
        .iter()
        .find_map(|(field, value)| Some((field, field_alone(field, value).err()?)));
    let Some((field, error)) = culprit else {
        return error.message().to_owned();
    };
    let message = error.message();
    match set_by_env.iter().rev().find(|(set, _)| set == field) {
        Some((_, variable)) => format!("{variable}: {message}"),
        // "unknown field `x`, ..." names it already.
        None if message.contains(&format!("`{field}`")) => message.to_owned(),
        None => format!("{field}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ahead_per_shard_is_off_or_at_least_one_extent() {
        let with = |read_ahead_bytes_per_shard| ServerConfig {
            read_ahead_bytes_per_shard,
            ..ServerConfig::default()
        };
        assert!(ServerConfig::default().validate().is_ok());
        assert!(with(0).validate().is_ok());
        assert!(with(1 << 20).validate().is_ok());
        let error = with(4096).validate().unwrap_err();
        assert!(
            error.to_string().contains("read_ahead_bytes_per_shard"),
            "{error}"
        );
    }

    #[test]
    fn new_topics_take_the_server_retention_and_zero_is_refused() {
        let vars = [
            ("RINGLOG_RETENTION_MS".to_owned(), "604800000".to_owned()),
            ("RINGLOG_SEGMENT_BYTES".to_owned(), "8388608".to_owned()),
        ];
        let config = ServerConfig::from_env(vars.into_iter()).unwrap();
        let topic = config.topic_defaults(3);
        assert_eq!(
            (topic.partitions, topic.retention_ms, topic.retention_bytes),
            (3, Some(604_800_000), None)
        );
        assert_eq!(topic.segment_bytes, 8 << 20);
        for (field, value) in [
            ("RINGLOG_RETENTION_BYTES", "0"),
            ("RINGLOG_RETENTION_CHECK_INTERVAL_MS", "0"),
        ] {
            let vars = [(field.to_owned(), value.to_owned())];
            let config = ServerConfig::from_env(vars.into_iter()).unwrap();
            let error = config.validate().unwrap_err();
            assert!(
                error.to_string().contains(&field[8..].to_ascii_lowercase()),
                "{error}"
            );
        }
    }

    #[test]
    fn optional_listeners_parse_an_address_or_off() {
        let addr = |text: &str| Some(text.parse::<SocketAddr>().unwrap());
        assert_eq!("off".parse(), Ok(OptionalListen(None)));
        assert_eq!(
            "127.0.0.1:9092".parse(),
            Ok(OptionalListen(addr("127.0.0.1:9092")))
        );
        assert_eq!("[::1]:0".parse(), Ok(OptionalListen(addr("[::1]:0"))));
        // Only the one spelling: anything else is a mistyped address, not a request for none.
        for bad in [
            "",
            "Off",
            "OFF",
            "none",
            "127.0.0.1",
            "localhost:9092",
            " off",
        ] {
            let error = bad.parse::<OptionalListen>().unwrap_err();
            assert_eq!(
                error.to_string(),
                format!("expected ADDR:PORT or off, got {bad:?}")
            );
        }
    }

    #[test]
    fn off_turns_listeners_off_in_the_file_and_in_variables_over_the_file() {
        let table: toml::Table = "kafka_listen = \"off\"\nmetrics_listen = \"127.0.0.1:9644\"\n"
            .parse()
            .unwrap();
        let config = ServerConfig::from_toml_and_env(table, std::iter::empty()).unwrap();
        assert_eq!(config.kafka_listen, None);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9644".parse().unwrap())
        );

        let table: toml::Table =
            "kafka_listen = \"127.0.0.1:9092\"\nmetrics_listen = \"127.0.0.1:9644\"\n"
                .parse()
                .unwrap();
        let vars = [
            ("RINGLOG_KAFKA_LISTEN".to_owned(), "off".to_owned()),
            ("RINGLOG_METRICS_LISTEN".to_owned(), "off".to_owned()),
        ];
        let config = ServerConfig::from_toml_and_env(table, vars.into_iter()).unwrap();
        assert_eq!((config.kafka_listen, config.metrics_listen), (None, None));

        let vars = [("RINGLOG_KAFKA_LISTEN".to_owned(), "[::1]:9092".to_owned())];
        let config = ServerConfig::from_env(vars.into_iter()).unwrap();
        assert_eq!(config.kafka_listen, Some("[::1]:9092".parse().unwrap()));
    }

    #[test]
    fn bad_listener_values_name_the_field_or_variable_in_one_line() {
        let table: toml::Table = "metrics_listen = \"9644\"\n".parse().unwrap();
        let error = ServerConfig::from_toml_and_env(table, std::iter::empty()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: metrics_listen: expected ADDR:PORT or off, got \"9644\""
        );
        let table: toml::Table = "kafka_listen = 9092\n".parse().unwrap();
        let error = ServerConfig::from_toml_and_env(table, std::iter::empty()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: kafka_listen: invalid type: integer `9092`, expected \
             ADDR:PORT or off"
        );
        let vars = [("RINGLOG_KAFKA_LISTEN".to_owned(), "Off".to_owned())];
        let error = ServerConfig::from_env(vars.into_iter()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid configuration: RINGLOG_KAFKA_LISTEN: expected ADDR:PORT or off, got \"Off\""
        );
    }

    #[test]
    fn a_serialized_config_without_listeners_reads_back() {
        // The derived Serialize writes `None` as JSON's null.
        let json = serde_json::to_string(&ServerConfig::default()).unwrap();
        let config: ServerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(config, ServerConfig::default());
    }

    #[test]
    fn env_variables_override_the_file_and_unknown_fields_are_errors() {
        let table: toml::Table = "listen = \"127.0.0.1:7000\"\nrequests_in_flight_max = 8\n"
            .parse()
            .unwrap();
        let vars = [
            ("RINGLOG_REQUESTS_IN_FLIGHT_MAX", "16"),
            ("RINGLOG_DATA_DIR", "/var/lib/ringlog"),
            ("RINGLOG_LOG", "debug"),
            ("RINGLOG_FUZZ_CASES", "3000"),
            ("HOME", "/root"),
        ];
        let vars = vars.map(|(key, value)| (key.to_string(), value.to_string()));
        let config = ServerConfig::from_toml_and_env(table, vars.into_iter()).unwrap();
        assert_eq!(config.listen.port(), 7000);
        assert_eq!(config.requests_in_flight_max, 16);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/ringlog"));
        let bad = [("RINGLOG_NO_SUCH_FIELD".to_string(), "1".to_string())];
        let error = ServerConfig::from_toml_and_env(toml::Table::new(), bad.into_iter());
        let error = error.unwrap_err().to_string();
        assert!(error.contains("no_such_field"), "{error}");
        let out_of_range = [("RINGLOG_SHARDS".to_string(), "0".to_string())];
        // Read as given (a flag may still override it), refused by validation.
        let config =
            ServerConfig::from_toml_and_env(toml::Table::new(), out_of_range.into_iter()).unwrap();
        assert_eq!(config.shards, Some(0));
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("shards"));
    }
}
