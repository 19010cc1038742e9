//! The `ringlog` command line against a real server started as a child process.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::now_ms;
use common::{
    run_ringlog, run_ringlog_in, seq, signal, spawn_ringlog, unused_addr, wait_bounded, TestServer,
    RINGLOG,
};
use serde_json::Value;

/// Small segments: tests must not preallocate 1 GiB files.
const SEGMENT_BYTES: &str = "8388608";
/// Records of the round-trip tests.
const RECORDS: u64 = 100_000;

/// Creates `topic` with `partitions` partitions and small segments.
fn create_topic(server: &TestServer, topic: &str, partitions: u32) {
    let partitions = partitions.to_string();
    let args = ["topic", "create", topic, "--partitions", &partitions];
    let out = server.ok(&[&args[..], &["--segment-bytes", SEGMENT_BYTES]].concat());
    assert!(
        out.starts_with(&format!("created topic {topic}: ")),
        "{out}"
    );
}

/// One consumed JSON line.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Consumed {
    partition: u64,
    offset: u64,
    timestamp_ms: i64,
    key: Option<String>,
    value: String,
}

/// Parses `consume --format json` output.
fn parse_json_lines(out: &str) -> Vec<Consumed> {
    out.lines()
        .map(|line| {
            let json: Value = serde_json::from_str(line).expect("one JSON object per line");
            assert_eq!(json["headers"], Value::Array(Vec::new()), "{line}");
            Consumed {
                partition: json["partition"].as_u64().expect("partition"),
                offset: json["offset"].as_u64().expect("offset"),
                timestamp_ms: json["timestamp"].as_i64().expect("timestamp"),
                key: json["key"].as_str().map(str::to_owned),
                value: json["value"].as_str().expect("value").to_owned(),
            }
        })
        .collect()
}

/// Records grouped by partition, in the order they were printed.
fn by_partition(records: &[Consumed]) -> BTreeMap<u64, Vec<Consumed>> {
    let mut partitions: BTreeMap<u64, Vec<Consumed>> = BTreeMap::new();
    for record in records {
        partitions
            .entry(record.partition)
            .or_default()
            .push(record.clone());
    }
    partitions
}

/// The error line of a failed command: exactly one line, starting with "error: ".
fn error_line(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(stderr.starts_with("error: "), "{stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(!stderr.contains("panicked"), "{stderr:?}");
    stderr.trim_end().to_owned()
}

#[test]
fn topic_create_list_describe_delete() {
    let server = TestServer::start(2);
    create_topic(&server, "orders", 3);
    let out = server.ok(&["topic", "create", "logs", "--partitions", "1"]);
    assert!(
        out.contains("segment_bytes 1073741824"),
        "server default: {out}"
    );
    let failed = server.ringlog(&["topic", "create", "orders", "--partitions", "3"]);
    assert_eq!(error_line(&failed), "error: topic orders already exists");

    let list = server.ok(&["topic", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0][0], "NAME");
    let orders = rows
        .iter()
        .find(|row| row[0] == "orders")
        .expect("orders listed");
    assert_eq!(orders[1..], ["3", "unlimited", "unlimited", SEGMENT_BYTES]);
    assert!(rows.iter().any(|row| row[0] == "logs"));

    let table = server.ok(&["topic", "describe", "orders"]);
    assert!(table.starts_with("topic orders: 3 partitions"), "{table}");
    assert_eq!(table.lines().count(), 2 + 3, "{table}");
    let json: Value =
        serde_json::from_str(&server.ok(&["topic", "describe", "orders", "--format", "json"]))
            .unwrap();
    assert_eq!(json["partition_count"], 3);
    let partitions = json["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, partition) in partitions.iter().enumerate() {
        assert_eq!(partition["partition"], i as u64);
        assert!(partition["shard"].as_u64().unwrap() < 2);
        assert_eq!(partition["log_start_offset"], 0);
        assert_eq!(partition["high_watermark"], 0);
        assert_eq!(partition["size_bytes"], 0);
    }

    assert_eq!(
        server.ok(&["topic", "delete", "orders"]),
        "deleted topic orders\n"
    );
    let failed = server.ringlog(&["topic", "describe", "orders"]);
    assert_eq!(error_line(&failed), "error: topic orders does not exist");
    let list = server.ok(&["topic", "list", "--format", "json"]);
    let names: Vec<Value> = serde_json::from_str::<Vec<Value>>(&list)
        .unwrap()
        .into_iter()
        .map(|topic| topic["name"].clone())
        .collect();
    assert_eq!(names, [Value::from("logs")]);
}

#[test]
fn topic_alter_changes_retention_and_partitions_and_the_changes_persist() {
    let mut server = TestServer::start(2);
    create_topic(&server, "aging", 2);
    let out = server.ok(&["topic", "alter", "aging", "--retention-ms", "3600000"]);
    assert_eq!(
        out,
        format!(
            "altered topic aging: 2 partitions, retention_ms 3600000, retention_bytes \
             unlimited, segment_bytes {SEGMENT_BYTES}\n"
        )
    );
    let args = ["topic", "alter", "aging", "--retention-bytes", "1MiB"];
    let out = server.ok(&args);
    assert!(
        out.contains("retention_ms 3600000, retention_bytes 1048576"),
        "{out}"
    );
    let out = server.ok(&["topic", "alter", "aging", "--partitions", "3"]);
    assert!(
        out.starts_with("altered topic aging: 3 partitions"),
        "{out}"
    );
    let failed = server.ringlog(&["topic", "alter", "aging", "--partitions", "1"]);
    assert!(error_line(&failed).contains("partitions can be added, not removed"));
    server.restart();
    let list = server.ok(&["topic", "list"]);
    let row: Vec<&str> = list
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells[0] == "aging")
        .expect("aging listed");
    assert_eq!(row[1..], ["3", "3600000", "1048576", SEGMENT_BYTES]);
    server.ok_with_input(&["produce", "aging", "--partition", "2"], b"late\n");
    let args = [
        "consume",
        "aging",
        "--partition",
        "2",
        "--from",
        "earliest",
        "--count",
        "1",
    ];
    assert_eq!(server.ok(&args), "late\n");
    let args = ["topic", "alter", "aging", "--retention-ms", "-1"];
    assert!(server.ok(&args).contains("retention_ms unlimited"));

    let failed = server.ringlog(&["topic", "alter", "nope", "--retention-ms", "1000"]);
    assert_eq!(error_line(&failed), "error: topic nope does not exist");
    let failed = server.ringlog(&["topic", "alter", "aging", "--retention-bytes", "0"]);
    assert!(error_line(&failed).contains("retention"));
    let failed = server.ringlog(&["topic", "alter", "aging", "--retention-bytes", "1 parsec"]);
    assert!(error_line(&failed).contains("unknown size suffix 'parsec'"));
    let failed = server.ringlog(&["topic", "alter", "aging"]);
    assert!(error_line(&failed).contains("--retention-ms"));
}

/// `topic delete-records` moves partitions' log starts (Kafka's DeleteRecords): what is
/// below is no longer read, `end` empties a partition, and an offset past a partition's end
/// is refused in one line while the other partitions are done.
#[test]
fn delete_records_moves_the_log_start_of_each_partition() {
    let server = TestServer::start(2);
    create_topic(&server, "trim", 2);
    server.ok_with_input(&["produce", "trim", "--partition", "0"], b"a\nb\nc\nd\n");
    server.ok_with_input(&["produce", "trim", "--partition", "1"], b"x\ny\n");
    let args = [
        "topic",
        "delete-records",
        "trim",
        "--before",
        "2",
        "--partition",
        "0",
    ];
    assert_eq!(server.ok(&args), "PARTITION  LOG_START\n0          2\n");
    let args = [
        "consume",
        "trim",
        "--partition",
        "0",
        "--from",
        "earliest",
        "--count",
        "2",
    ];
    assert_eq!(server.ok(&args), "c\nd\n");

    let refused = server.ringlog(&["topic", "delete-records", "trim", "--before", "3"]);
    let line = error_line(&refused);
    assert!(
        line.starts_with("error: 1 partition(s) of trim refused; first: partition 1: "),
        "{line}"
    );
    assert_eq!(
        String::from_utf8_lossy(&refused.stdout),
        "PARTITION  LOG_START\n0          3\n"
    );
    let args = ["topic", "delete-records", "trim", "--before", "end"];
    assert_eq!(
        server.ok(&args),
        "PARTITION  LOG_START\n0          4\n1          2\n"
    );
    let described = server.ok(&["topic", "describe", "trim"]);
    let starts: Vec<(&str, &str)> = described
        .lines()
        .skip(2)
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells[2], cells[4])
        })
        .collect();
    assert_eq!(
        starts,
        [("4", "0"), ("2", "0")],
        "log start, records: {described}"
    );
    let bad = server.ringlog(&["topic", "delete-records", "trim", "--before", "-5"]);
    assert!(!bad.status.success());
}

/// `consume` without `--partition` takes up the partitions added while it follows the
/// topic, and reads them from their first record.
#[test]
fn a_follower_reads_the_partitions_added_while_it_runs() {
    use std::io::Read;

    let server = TestServer::start(2);
    create_topic(&server, "growing", 1);
    server.ok_with_input(&["produce", "growing", "--partition", "0"], b"first\n");
    let args = [
        "consume",
        "growing",
        "--from",
        "earliest",
        "--count",
        "2",
        "--metadata-max-age-ms",
        "50",
        "--server",
        server.addr(),
    ];
    let (mut child, stdout) = spawn_ringlog(&args);
    let mut stdout = BufReader::new(stdout);
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert_eq!(first, "first\n", "following partition 0");
    let out = server.ok(&["topic", "alter", "growing", "--partitions", "2"]);
    assert!(
        out.starts_with("altered topic growing: 2 partitions"),
        "{out}"
    );
    server.ok_with_input(&["produce", "growing", "--partition", "1"], b"second\n");
    // Without the added partition the consumer waits for a second record forever.
    let status = wait_bounded(&mut child, "consume of a topic that grew");
    assert!(status.success(), "{status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "second\n");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(
            "note: topic growing has 2 partitions now; reading partition 1 from its first record"
        ),
        "{stderr}"
    );
}

/// `ringlog produce --compression zstd` stores zstd batches (the partition takes a fraction of
/// the lines' bytes), and `ringlog consume` prints every line back, keys and values, in order.
#[test]
fn produce_compressed_then_consume() {
    let server = TestServer::start(1);
    create_topic(&server, "zipped", 1);
    let lines: Vec<String> = (0..20_000)
        .map(|i| format!("key-{}:value {i} of a line that repeats itself", i % 10))
        .collect();
    let input = lines.join("\n") + "\n";
    let args = ["produce", "zipped", "--key-separator", ":", "--compression"];
    let produced = server.ringlog_with_input(&[&args[..], &["zstd"]].concat(), input.as_bytes());
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(produced.status.success(), "{stderr}");
    assert!(stderr.starts_with("produced 20000 records"), "{stderr}");

    let describe: Value =
        serde_json::from_str(&server.ok(&["topic", "describe", "zipped", "--format", "json"]))
            .unwrap();
    let size = describe["partitions"][0]["size_bytes"].as_u64().unwrap();
    assert!(
        size < input.len() as u64 / 4,
        "{size} bytes stored for {} bytes of lines",
        input.len()
    );

    let out = server.ok(&[
        "consume", "zipped", "--from", "earliest", "--count", "20000", "--format", "json",
    ]);
    let read: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(read.len(), lines.len());
    for (offset, (record, line)) in read.iter().zip(&lines).enumerate() {
        let (key, value) = line.split_once(':').unwrap();
        assert_eq!(record["offset"].as_u64(), Some(offset as u64), "{record}");
        assert_eq!(record["key"].as_str(), Some(key), "{record}");
        assert_eq!(record["value"].as_str(), Some(value), "{record}");
    }

    let failed = server.ringlog_with_input(&[&args[..], &["brotli"]].concat(), b"x\n");
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("invalid value 'brotli'"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

/// `seq 1 100000 | ringlog produce t`, then everything back per partition in order, before
/// and after a restart.
fn round_trip(shards: usize) {
    let mut server = TestServer::start(shards);
    create_topic(&server, "t", 4);
    let produced = server.ringlog_with_input(&["produce", "t"], &seq(RECORDS));
    let stderr = String::from_utf8_lossy(&produced.stderr);
    assert!(produced.status.success(), "{stderr}");
    assert!(
        stderr.starts_with(&format!("produced {RECORDS} records (488895 bytes) in ")),
        "{stderr}"
    );

    let describe: Value =
        serde_json::from_str(&server.ok(&["topic", "describe", "t", "--format", "json"])).unwrap();
    let partitions = describe["partitions"].as_array().unwrap();
    let shards_used: BTreeSet<u64> = partitions
        .iter()
        .map(|p| p["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(shards_used.len(), shards, "4 partitions cover every shard");
    let total: u64 = partitions
        .iter()
        .map(|p| p["high_watermark"].as_u64().unwrap())
        .sum();
    assert_eq!(total, RECORDS);
    for partition in partitions {
        // Each record is at least its value's digits in bytes, plus batch headers.
        let records = partition["high_watermark"].as_u64().unwrap();
        assert!(
            partition["size_bytes"].as_u64().unwrap() > records,
            "{partition}"
        );
    }

    let count = RECORDS.to_string();
    let consume = ["consume", "t", "--from", "earliest", "--count", &count];
    let json_consume = [&consume[..], &["--format", "json"]].concat();
    let before = by_partition(&parse_json_lines(&server.ok(&json_consume)));
    check_all_lines_in_partition_order(&before);

    server.restart();
    let after = by_partition(&parse_json_lines(&server.ok(&json_consume)));
    assert_eq!(before, after, "the same records after a restart");

    // The plain form gives the lines themselves.
    let values = server.ok(&consume);
    let mut numbers: Vec<u64> = values.lines().map(|line| line.parse().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=RECORDS).collect::<Vec<_>>());

    // A reader that goes away (`| head -1`) ends a following consume quietly.
    let following = [
        "consume",
        "t",
        "--from",
        "earliest",
        "--server",
        server.addr(),
    ];
    let (mut child, stdout) = spawn_ringlog(&following);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(!first.is_empty());
    let status = wait_bounded(&mut child, "consume into a closed pipe");
    assert!(status.success(), "closed pipe: {status}");
}

/// Every number 1..=RECORDS once, each partition's offsets dense and values increasing.
fn check_all_lines_in_partition_order(partitions: &BTreeMap<u64, Vec<Consumed>>) {
    let mut seen = 0;
    for records in partitions.values() {
        let values: Vec<u64> = records.iter().map(|r| r.value.parse().unwrap()).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "partition order");
        let offsets: Vec<u64> = records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (0..records.len() as u64).collect::<Vec<_>>());
        assert!(records.iter().all(|r| r.key.is_none()));
        seen += records.len() as u64;
    }
    assert_eq!(seen, RECORDS);
}

#[test]
fn produce_consume_restart_one_shard() {
    round_trip(1);
}

#[test]
fn produce_consume_restart_two_shards() {
    round_trip(2);
}

#[test]
fn key_separator_lands_equal_keys_on_one_partition() {
    let server = TestServer::start(2);
    create_topic(&server, "keyed", 8);
    let input: String = (0..400)
        .map(|i| format!("user-{}:{i}:x\n", i % 7))
        .collect();
    let args = [
        "produce",
        "keyed",
        "--key-separator",
        ":",
        "--acks",
        "leader",
    ];
    server.ok_with_input(&args, input.as_bytes());
    let out = server.ok(&[
        "consume", "keyed", "--from", "earliest", "--count", "400", "--format", "json",
    ]);
    let records = parse_json_lines(&out);
    assert_eq!(records.len(), 400);
    let mut key_partition: BTreeMap<String, u64> = BTreeMap::new();
    let mut key_values: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in &records {
        let key = record.key.clone().expect("keyed record");
        let partition = *key_partition.entry(key.clone()).or_insert(record.partition);
        assert_eq!(partition, record.partition, "key {key} on one partition");
        // Split at the first separator only.
        let number = record
            .value
            .strip_suffix(":x")
            .expect("value keeps the rest");
        key_values
            .entry(key)
            .or_default()
            .push(number.parse().unwrap());
    }
    assert_eq!(key_partition.len(), 7);
    for (key, values) in key_values {
        assert!(values.windows(2).all(|w| w[0] < w[1]), "order of {key}");
    }

    let failed = server.ringlog_with_input(&args, b"k:v\nno separator\n");
    assert_eq!(
        error_line(&failed),
        "error: line 2 has no key separator \":\""
    );
}

#[test]
fn from_offset_and_timestamp_on_one_partition() {
    let server = TestServer::start(1);
    create_topic(&server, "ts", 2);
    let first: String = (1..=10).map(|i| format!("a{i}\n")).collect();
    let args = ["produce", "ts", "--partition", "1"];
    server.ok_with_input(&args, first.as_bytes());
    // Every later record is stamped at or after `split_ms`, every earlier one before it.
    let split_ms = now_ms() + 1;
    while now_ms() < split_ms {
        std::hint::spin_loop();
    }
    let second: String = (1..=10).map(|i| format!("b{i}\n")).collect();
    server.ok_with_input(&args, second.as_bytes());

    let from_time = format!("@{split_ms}");
    let out = server.ok(&[
        "consume",
        "ts",
        "--partition",
        "1",
        "--from",
        &from_time,
        "--count",
        "10",
    ]);
    let expected: Vec<String> = (1..=10).map(|i| format!("b{i}")).collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), expected);

    let out = server.ok(&[
        "consume",
        "ts",
        "--partition",
        "1",
        "--from",
        "5",
        "--count",
        "3",
        "--format",
        "json",
    ]);
    let records = parse_json_lines(&out);
    let got: Vec<(u64, u64, &str)> = records
        .iter()
        .map(|r| (r.partition, r.offset, r.value.as_str()))
        .collect();
    assert_eq!(got, [(1, 5, "a6"), (1, 6, "a7"), (1, 7, "a8")]);
    assert!(records.iter().all(|r| r.timestamp_ms < split_ms));

    let failed = server.ringlog(&["consume", "ts", "--partition", "0", "--from", "3"]);
    assert_eq!(
        error_line(&failed),
        "error: offset 3 is out of range for partition 0 (log start 0, high watermark 0)"
    );
    let failed = server.ringlog(&["consume", "ts", "--partition", "2", "--count", "1"]);
    assert_eq!(
        error_line(&failed),
        "error: topic ts has no partition 2 (it has 2)"
    );
}

#[test]
fn user_errors_are_one_line_and_fail() {
    let server = TestServer::start(1);
    let failed = server.ringlog(&["consume", "missing", "--count", "1"]);
    assert_eq!(error_line(&failed), "error: topic missing does not exist");
    let failed = server.ringlog(&["consume", "missing", "--group", "g", "--count", "1"]);
    assert_eq!(error_line(&failed), "error: topic missing does not exist");
    let failed = server.ringlog_with_input(&["produce", "missing"], b"a\nb\n");
    assert_eq!(error_line(&failed), "error: topic missing does not exist");

    let nowhere = unused_addr();
    let failed = run_ringlog(&["topic", "list", "--server", &nowhere], b"");
    assert_eq!(
        error_line(&failed),
        format!("error: cannot connect to {nowhere}: Connection refused")
    );

    let failed = server.ringlog(&["topic", "create", "t"]);
    assert_eq!(failed.status.code(), Some(2), "usage error");
    let line = error_line(&failed);
    assert!(line.contains("--partitions"), "{line}");
    let failed = server.ringlog(&["consume", "t", "--from", "yesterday"]);
    assert!(error_line(&failed).contains("--from"));
}

/// `ringlog serve` that cannot start says why in one line, each cause once.
#[test]
fn serve_startup_failures_are_one_line_each_cause_once() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let failed = run_ringlog(&["serve", "--listen", &addr, "--data-dir", data_dir], b"");
    let line = error_line(&failed);
    assert_eq!(failed.status.code(), Some(1), "{line}");
    assert!(
        line.starts_with(&format!(
            "error: cannot start the server: cannot listen on {addr}: "
        )),
        "{line}"
    );
    assert_eq!(line.matches("Address already in use").count(), 1, "{line}");

    let file = dir.path().join("file");
    std::fs::write(&file, b"").unwrap();
    let args = ["serve", "--listen", "127.0.0.1:0", "--data-dir"];
    let failed = run_ringlog(&[&args[..], &[file.to_str().unwrap()]].concat(), b"");
    let line = error_line(&failed);
    assert_eq!(
        line,
        format!(
            "error: cannot start the server: data directory {} exists and is not a directory",
            file.display()
        )
    );
}

/// `ringlog serve ARGS` in `dir` with `vars` set and no `RINGLOG_CONFIG`; for a serve that
/// fails at once.
fn serve_failing(dir: &Path, args: &[&str], vars: &[(&str, &OsStr)]) -> Output {
    let mut command = Command::new(RINGLOG);
    command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_remove("RINGLOG_CONFIG");
    for (key, value) in vars {
        command.env(key, value);
    }
    run_ringlog_in(&mut command, b"")
}

/// Bad config files and variables fail in one line naming the field or variable; a
/// variable's value that looks like a number is still a string where the field takes one;
/// other programs' variables, whatever their bytes, do not stop a server.
#[test]
fn config_errors_name_their_field_and_variables_take_any_value_their_field_takes() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        name.to_owned()
    };
    let bad_toml = file("bad.toml", "shards = 1\nlisten = \n");
    let failed = serve_failing(dir.path(), &["--config", &bad_toml], &[]);
    assert_eq!(
        error_line(&failed),
        "error: config file bad.toml is not valid TOML: line 2, column 10: invalid string, \
         expected `\"`, `'`"
    );
    let wrong_type = file(
        "type.toml",
        "shards = 1\ncache_bytes_per_shard = \"1GiB\"\n",
    );
    let failed = serve_failing(dir.path(), &["--config", &wrong_type], &[]);
    assert_eq!(
        error_line(&failed),
        "error: invalid configuration: cache_bytes_per_shard: invalid type: string \"1GiB\", \
         expected usize"
    );
    let failed = serve_failing(dir.path(), &[], &[("RINGLOG_RETENTION_MS", "-1".as_ref())]);
    assert_eq!(
        error_line(&failed),
        "error: invalid configuration: RINGLOG_RETENTION_MS: invalid value: integer `-1`, \
         expected u64"
    );
    let failed = serve_failing(dir.path(), &[], &[("RINGLOG_SHARDZ", "2".as_ref())]);
    assert!(
        error_line(&failed)
            .starts_with("error: invalid configuration: RINGLOG_SHARDZ: unknown field `shardz`"),
        "{failed:?}"
    );
    let not_utf8 = OsStr::from_bytes(b"127.0.0.1:\xff");
    let failed = serve_failing(dir.path(), &[], &[("RINGLOG_LISTEN", not_utf8)]);
    assert_eq!(
        error_line(&failed),
        "error: environment variable RINGLOG_LISTEN is not valid UTF-8"
    );

    // A data directory named 2024, with a variable of someone else's that is not UTF-8, and
    // a variable out of range that the flag overrides (checked after the flags apply).
    let mut server = Command::new(RINGLOG)
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"])
        .current_dir(dir.path())
        .env_remove("RINGLOG_CONFIG")
        .env("RINGLOG_LOG", "warn")
        .env("RINGLOG_DATA_DIR", "2024")
        .env("RINGLOG_SHARDS", "0")
        .env("SOMEONE_ELSES", OsStr::from_bytes(b"\xff\xfe"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let expected = dir.path().canonicalize().unwrap().join("2024");
    let stopped = signal(server.id(), "TERM");
    let status = wait_bounded(&mut server, "ringlog serve");
    assert!(
        first
            .trim_end()
            .ends_with(&format!("data in {}", expected.display())),
        "{first:?}, {:?}",
        std::io::read_to_string(server.stderr.take().unwrap())
    );
    assert!(stopped && status.success(), "{status}");
}

/// `ringlog serve --listen 127.0.0.1:0 --shards 1 --data-dir data`, to run in `dir` with
/// `RINGLOG_LOG` at `log`, no config file, stdin closed and stdout and stderr piped.
fn serve_command(dir: &Path, log: &str) -> Command {
    let mut command = Command::new(RINGLOG);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "1"])
        .args(["--data-dir", "data"])
        .current_dir(dir)
        .env_remove("RINGLOG_CONFIG")
        .env("RINGLOG_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Everything `ringlog serve --listen 127.0.0.1:0 --shards 1 --data-dir data ARGS`, run in
/// `dir` with `vars` set, prints on stdout while it starts: the lines that say which
/// listeners are open. It is stopped with SIGTERM once its first line is out; the server
/// blocks the signal before it starts and takes it only after printing every startup line,
/// so the lines read after it exits are all of them, with no waiting for a quiet moment.
fn serve_startup_lines(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Vec<String> {
    let mut command = serve_command(dir, "warn");
    command.args(args);
    for (key, value) in vars {
        command.env(key, value);
    }
    let mut server = command.spawn().expect("spawn ringlog serve");
    let mut stdout = BufReader::new(server.stdout.take().expect("piped stdout"));
    let mut first = String::new();
    stdout.read_line(&mut first).expect("read the first line");
    // An empty first line is a server that failed: it exits by itself.
    let stopped = !first.is_empty() && signal(server.id(), "TERM");
    let status = wait_bounded(&mut server, "ringlog serve");
    let rest = std::io::read_to_string(stdout).expect("read the rest of stdout");
    let stderr =
        std::io::read_to_string(server.stderr.take().expect("piped stderr")).expect("read stderr");
    assert!(
        stopped && status.success(),
        "{args:?} {vars:?}: {status}: {stderr}"
    );
    assert!(first.starts_with("ringlog serving on "), "{first:?}");
    first
        .lines()
        .chain(rest.lines())
        .map(str::to_owned)
        .collect()
}

/// Whether `lines` (of [`serve_startup_lines`]) say the Kafka listener and the metrics
/// listener are open.
fn listeners_open(lines: &[String]) -> (bool, bool) {
    let kafka = lines
        .iter()
        .any(|line| line.starts_with("Kafka protocol on 127.0.0.1:"));
    let metrics = lines
        .iter()
        .any(|line| line.starts_with("Prometheus metrics on http://127.0.0.1:"));
    (kafka, metrics)
}

/// `--kafka-listen off` and `--metrics-listen off` turn off the listeners a config file
/// opens, each leaving the other one alone.
#[test]
fn off_flags_turn_off_the_listeners_of_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = "kafka_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("ringlog.toml"), config).unwrap();
    let with = |flags: &[&str]| {
        let args = [&["--config", "ringlog.toml"], flags].concat();
        listeners_open(&serve_startup_lines(dir.path(), &args, &[]))
    };
    assert_eq!(with(&[]), (true, true), "the file opens both");
    assert_eq!(with(&["--kafka-listen", "off"]), (false, true));
    assert_eq!(with(&["--metrics-listen", "off"]), (true, false));
    let both_off = ["--kafka-listen", "off", "--metrics-listen", "off"];
    assert_eq!(with(&both_off), (false, false));
}

/// `off` in `RINGLOG_KAFKA_LISTEN` / `RINGLOG_METRICS_LISTEN` turns off what the file opens,
/// and the flag's `off` turns off what a variable opens, as with addresses.
#[test]
fn off_in_variables_turns_off_the_file_and_off_flags_turn_off_variables() {
    let dir = tempfile::tempdir().unwrap();
    let config = "kafka_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("ringlog.toml"), config).unwrap();
    let file = ["--config", "ringlog.toml"];
    let vars = [
        ("RINGLOG_KAFKA_LISTEN", "off"),
        ("RINGLOG_METRICS_LISTEN", "off"),
    ];
    let lines = serve_startup_lines(dir.path(), &file, &vars);
    assert_eq!(listeners_open(&lines), (false, false), "{lines:?}");

    let vars = [
        ("RINGLOG_KAFKA_LISTEN", "127.0.0.1:0"),
        ("RINGLOG_METRICS_LISTEN", "127.0.0.1:0"),
    ];
    let lines = serve_startup_lines(dir.path(), &[], &vars);
    assert_eq!(listeners_open(&lines), (true, true), "{lines:?}");
    let off = ["--kafka-listen", "off", "--metrics-listen", "off"];
    let lines = serve_startup_lines(dir.path(), &off, &vars);
    assert_eq!(listeners_open(&lines), (false, false), "{lines:?}");
}

/// A listener value that is neither an address nor `off` fails in one line naming the flag
/// or the variable and what it takes.
#[test]
fn bad_listener_values_fail_in_one_line_naming_the_flag_or_variable() {
    let dir = tempfile::tempdir().unwrap();
    let failed = serve_failing(dir.path(), &["--kafka-listen", "of"], &[]);
    assert_eq!(failed.status.code(), Some(2), "usage error");
    assert_eq!(
        error_line(&failed),
        "error: invalid value 'of' for '--kafka-listen <ADDR:PORT|off>': expected ADDR:PORT \
         or off, got \"of\" (see --help)"
    );
    let vars = [("RINGLOG_METRICS_LISTEN", "OFF".as_ref())];
    let failed = serve_failing(dir.path(), &[], &vars);
    assert_eq!(
        error_line(&failed),
        "error: invalid configuration: RINGLOG_METRICS_LISTEN: expected ADDR:PORT or off, got \
         \"OFF\""
    );
}

/// A topic may not take the name of the data directory's own entries: `.deleted-x` was
/// created, took durable records and was removed at the next start as a deleted topic.
#[test]
fn topic_names_of_the_data_directory_entries_are_refused() {
    let server = TestServer::start(1);
    for name in [".deleted-x", ".lock", ".producer-ids-0"] {
        let failed = server.ringlog(&["topic", "create", name, "--partitions", "1"]);
        let line = error_line(&failed);
        assert!(
            line.contains(&format!("invalid topic name {name:?}")),
            "{line}"
        );
    }
    create_topic(&server, ".hidden", 1);
}

/// Ctrl-C on `consume --group` leaves the group at once (and the command still ends as
/// interrupted): the group can be deleted right away instead of after the session timeout.
/// `ringlog produce --delivery-timeout-ms` bounds how long lines wait for a server that went
/// away mid-stream: the command fails soon after, naming the lost records, instead of waiting
/// out the default 120 s (past the 60 s this test waits).
#[test]
fn produce_gives_up_on_a_stopped_server_after_its_delivery_timeout() {
    use std::io::Write;
    use std::time::{Duration, Instant};

    let mut server = TestServer::start(1);
    create_topic(&server, "gone", 1);
    let mut child = Command::new(RINGLOG)
        .args([
            "produce",
            "gone",
            "--delivery-timeout-ms",
            "300",
            "--server",
        ])
        .arg(server.addr())
        .env_remove("RINGLOG_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringlog produce");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    let mut client = ringlog_net::client::Client::connect(server.addr()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.metadata(&["gone"]).unwrap()[0].partitions[0].high_watermark < 1 {
        assert!(Instant::now() < deadline, "the first line was never stored");
    }
    server.stop();
    stdin.write_all(b"second\n").unwrap();
    drop(stdin);
    let mut child_stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut child_stderr, &mut text).map(|_| text)
    });
    let status = wait_bounded(&mut child, "produce to a stopped server");
    let stderr = reader.join().unwrap().unwrap();
    assert!(!status.success(), "{stderr}");
    // A warning per failed connection attempt, then the error line.
    let last = stderr.trim_end().lines().last().unwrap_or_default();
    assert!(last.starts_with("error: 1 record(s) failed"), "{stderr}");
}

#[test]
fn interrupted_group_consumer_leaves_its_group() {
    use std::os::unix::process::ExitStatusExt;

    let server = TestServer::start(1);
    create_topic(&server, "t", 2);
    server.ok_with_input(&["produce", "t"], b"a\nb\n");
    let args = [
        "consume",
        "t",
        "--group",
        "g",
        "--from",
        "earliest",
        "--server",
        server.addr(),
    ];
    let (mut child, stdout) = spawn_ringlog(&args);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(!first.is_empty(), "a record as a member");
    assert!(signal(child.id(), "INT"), "kill -INT failed");
    let status = wait_bounded(&mut child, "interrupted consume --group");
    assert_eq!(status.signal(), Some(2), "ends as interrupted: {status}");
    assert_eq!(server.ok(&["group", "delete", "g"]), "deleted group g\n");
}

/// A pipe whose read end is already closed: writing to the returned write end fails with
/// EPIPE, as a `| head` that has exited does to the writer.
fn closed_pipe() -> Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` is a live array of two ints; pipe2 fills both on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2");
    // SAFETY: both descriptors were just created and are owned by nothing else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    Stdio::from(write)
}

/// A `mail_queue_depth` too large to allocate is refused in one line, as `shards` or
/// `frame_bytes_max` are, not met by a panic when the queues are made.
#[test]
fn huge_mail_queue_depth_is_refused_in_one_line_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--shards",
        "1",
        "--data-dir",
        "data",
    ];
    let vars = [("RINGLOG_MAIL_QUEUE_DEPTH", "9223372036854775807".as_ref())];
    let failed = serve_failing(dir.path(), &args, &vars);
    assert_eq!(
        failed.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    let line = error_line(&failed);
    assert!(line.contains("mail_queue_depth"), "{line}");
}

/// A server `segment_bytes` above what a topic takes (4 GiB - 1) is refused at the start,
/// rather than accepted and then failing every `topic create` without `--segment-bytes`.
#[test]
fn server_segment_bytes_that_no_topic_accepts_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_command(dir.path(), "warn")
        .env("RINGLOG_SEGMENT_BYTES", "8589934592")
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(server.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    if first.is_empty() {
        // Refused at start: what this test asks for.
        let status = wait_bounded(&mut server, "ringlog serve");
        let stderr = std::io::read_to_string(server.stderr.take().unwrap()).unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("segment_bytes"), "{stderr}");
        return;
    }
    let addr = first.split_whitespace().nth(3).unwrap().to_owned();
    let created = run_ringlog(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "1",
            "--server",
            &addr,
        ],
        b"",
    );
    signal(server.id(), "TERM");
    wait_bounded(&mut server, "ringlog serve");
    panic!(
        "the server started with segment_bytes 8589934592; topic create without \
         --segment-bytes then: {}{}",
        String::from_utf8_lossy(&created.stdout),
        String::from_utf8_lossy(&created.stderr)
    );
}

/// `ringlog produce` exits 0 once every line is stored, even when its stderr is a closed pipe
/// (`ringlog produce t < f 2>&1 | head -0`): a script must not take it for a failure.
#[test]
fn produce_with_a_closed_stderr_still_exits_zero() {
    let server = TestServer::start(1);
    create_topic(&server, "quiet", 1);
    let mut command = Command::new(RINGLOG);
    command.args(["produce", "quiet", "--server", server.addr()]);
    let args: Vec<_> = command.get_args().map(|arg| arg.to_owned()).collect();
    let mut child = command
        .env_remove("RINGLOG_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(closed_pipe())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"a\nb\nc\n").unwrap();
    }
    let status = wait_bounded(&mut child, &format!("ringlog {args:?}"));
    let out = server.ok(&["consume", "quiet", "--from", "earliest", "--count", "3"]);
    assert_eq!(out, "a\nb\nc\n", "every line was stored");
    assert!(
        status.success(),
        "all 3 lines stored, yet produce exited with {status}"
    );
}

/// `ringlog serve` serves until SIGTERM when its stdout is a closed pipe (`ringlog serve |
/// head -0`, or a supervisor whose log reader went away): its startup lines cannot end it.
#[test]
fn serve_with_a_closed_stdout_keeps_serving_until_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve_command(dir.path(), "info")
        .env("RUST_BACKTRACE", "0")
        .stdout(closed_pipe())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut log = String::new();
    // The server logs "ringlog serving" (to stderr) once it is up, before its stdout line.
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 || line.contains("ringlog serving") {
            log.push_str(&line);
            break;
        }
        log.push_str(&line);
    }
    // SIGTERM is blocked until the main thread waits for it: a server that is still
    // running takes it then and exits 0; one that died on its stdout line does not.
    signal(server.id(), "TERM");
    let status = wait_bounded(&mut server, "ringlog serve");
    log.push_str(&std::io::read_to_string(stderr).unwrap());
    assert!(status.success(), "{status}: {log}");
}

/// `topic create --retention-ms` takes -1 for "keep forever" and refuses other negative numbers
/// (the server would read them as "no limit" too), as `--retention-bytes -5` is refused and
/// as Kafka refuses `retention.ms` below -1.
#[test]
fn retention_ms_below_minus_one_is_refused() {
    let server = TestServer::start(1);
    for flag in ["--retention-bytes", "--retention-ms"] {
        let out = server.ringlog(&[
            "topic",
            "create",
            "typo",
            "--partitions",
            "1",
            "--segment-bytes",
            SEGMENT_BYTES,
            flag,
            "-5",
        ]);
        assert!(
            !out.status.success(),
            "{flag} -5 accepted: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// A retention of 0 or below -1 is refused by the command line in one line that says what it
/// takes (a positive value, or -1 for no limit), not by the server with advice about a
/// configuration file ("omit them"), nor as an "unknown size suffix '-2'".
#[test]
fn zero_or_negative_retention_is_refused_saying_what_is_taken() {
    let server = TestServer::start(1);
    create_topic(&server, "r", 1);
    let failed = server.ringlog(&["topic", "alter", "r", "--retention-ms", "0"]);
    assert_eq!(failed.status.code(), Some(2), "a usage error");
    assert_eq!(
        error_line(&failed),
        "error: invalid value '0' for '--retention-ms <MS>': expected a positive number of \
         milliseconds, or -1 to keep forever, got '0' (see --help)"
    );
    for bytes in ["0", "-2"] {
        let failed = server.ringlog(&["topic", "alter", "r", "--retention-bytes", bytes]);
        assert_eq!(failed.status.code(), Some(2), "a usage error");
        assert_eq!(
            error_line(&failed),
            format!(
                "error: invalid value '{bytes}' for '--retention-bytes <BYTES>': expected a \
                 positive size such as 10GiB, or -1 for no limit, got '{bytes}' (see --help)"
            )
        );
    }
    let args = [
        "topic",
        "create",
        "z",
        "--partitions",
        "1",
        "--retention-ms",
    ];
    let failed = server.ringlog(&[&args[..], &["0"]].concat());
    assert!(error_line(&failed).contains("-1 to keep forever"));
    // Nothing was changed or created; -1 and positive values still go through.
    let list = server.ok(&["topic", "list"]);
    assert!(!list.contains("\nz "), "{list}");
    let out = server.ok(&["topic", "alter", "r", "--retention-bytes", "1GiB"]);
    assert!(out.contains("retention_bytes 1073741824"), "{out}");
    let out = server.ok(&["topic", "alter", "r", "--retention-bytes", "-1"]);
    assert!(out.contains("retention_bytes unlimited"), "{out}");
}

/// `group describe` and `group delete` of a group that does not exist say so in the words
/// `consume` uses for a topic.
#[test]
fn unknown_group_is_named_as_such() {
    let server = TestServer::start(2);
    let failed = server.ringlog(&["group", "describe", "nosuch"]);
    assert_eq!(error_line(&failed), "error: group nosuch does not exist");
    let failed = server.ringlog(&["group", "delete", "nosuch"]);
    assert_eq!(error_line(&failed), "error: group nosuch does not exist");
}
