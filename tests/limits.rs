//! Resource limits against real servers: a thousand idle connections are held, connections
//! past `connections_max` are refused cleanly, a consumer that stops reading does not grow the
//! server's memory past its bounds, and a full disk during durable produce loses nothing that
//! was acknowledged while reads go on and writes resume once space is back.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use ringlog_net::api::ApiKey;
use ringlog_net::client::{
    Client, Connection, ConnectionConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};
use ringlog_net::frame::{encode_header, FrameHeader};
use ringlog_net::message::fetch::{FetchPartition, FetchTopic, Request as FetchRequest};
use ringlog_net::message::produce::Acks;
use ringlog_net::message::share_fetch::Request as ShareFetchRequest;
use ringlog_net::message::{create_topic, Encode};
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

use common::create_topic_at;

fn config(dir: &Path) -> ServerConfig {
    ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        cache_bytes_per_shard: 8 << 20,
        ..ServerConfig::default()
    }
}

/// Descriptors a thousand connections take here: client and server ends in one process, and
/// the server's own files and rings.
const OPEN_FILES_NEEDED: u64 = 2_200;

/// Raises this process's soft limit on open files to `wanted` (client and server sockets of
/// the test share it), and the hard limit too where it is lower and the process may
/// (CAP_SYS_RESOURCE, as root in CI). Returns the soft limit now in force.
fn raise_open_files_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_max < wanted && common::has_capability(common::CAP_SYS_RESOURCE) {
            limit.rlim_max = wanted;
        }
        limit.rlim_cur = limit.rlim_cur.max(wanted.min(limit.rlim_max));
        assert_eq!(
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit),
            0,
            "setrlimit(RLIMIT_NOFILE, {} / {}): {}",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
    }
    limit.rlim_cur
}

#[test]
fn a_thousand_idle_connections_are_held_and_served() {
    let open_files = raise_open_files_limit(OPEN_FILES_NEEDED);
    if open_files < OPEN_FILES_NEEDED {
        // Only without CAP_SYS_RESOURCE: with it the hard limit was raised above.
        common::skip(
            "a_thousand_idle_connections_are_held_and_served",
            &format!(
                "the open files limit is {open_files} (its hard limit, and no CAP_SYS_RESOURCE \
                 to raise that); 1,000 connections need ~{OPEN_FILES_NEEDED} descriptors here"
            ),
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(config(dir.path())).unwrap();
    let addr = server.local_addr();
    create_topic_at(addr, "idle", 2);
    let mut clients: Vec<Client> = (0..1_000).map(|_| Client::connect(addr).unwrap()).collect();
    for client in &mut clients {
        client.api_versions("limits-test", "1").unwrap();
    }
    // While they idle, the server goes on serving others.
    let producer = Producer::connect(addr, "idle", ProducerConfig::default()).unwrap();
    producer
        .send(&ProducerRecord::new(b"still serving"))
        .unwrap()
        .wait()
        .unwrap();
    producer.close().unwrap();
    // And every idle connection is still open and answered.
    for client in &mut clients {
        let topics = client.metadata(&["idle"]).unwrap();
        assert_eq!(topics[0].partitions.len(), 2);
    }
    drop(clients);
    server.shutdown();
}

/// Whether the server closed `stream` without answering a request sent on it.
fn refused(stream: &mut TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut fbb = FlatBufferBuilder::new();
    let body = ringlog_net::message::api_versions::Request {
        client_name: "probe",
        client_version: "1",
    }
    .encode(&mut fbb)
    .to_vec();
    let header =
        FrameHeader::for_message(ApiKey::ApiVersions.as_u16(), 0, 1, body.len(), 0).unwrap();
    // The server may have closed already: a failed write is a refusal too.
    if stream.write_all(&encode_header(&header)).is_err() || stream.write_all(&body).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => matches!(
            error.kind(),
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
        ),
    }
}

#[test]
fn connections_past_the_limit_are_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        connections_max: 20,
        ..config(dir.path())
    })
    .unwrap();
    let addr = server.local_addr();
    // Each is answered before the next connects, so every one is counted.
    let mut held: Vec<Client> = (0..20)
        .map(|_| {
            let mut client = Client::connect(addr).unwrap();
            client.api_versions("limits-test", "1").unwrap();
            client
        })
        .collect();
    for _ in 0..5 {
        let mut extra = TcpStream::connect(addr).unwrap();
        assert!(
            refused(&mut extra),
            "a connection past connections_max is closed"
        );
    }
    // The held ones are unaffected.
    for client in &mut held {
        client.api_versions("limits-test", "1").unwrap();
    }
    // Once one goes, a new one is taken again (after the server noticed the close).
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).unwrap();
        if !refused(&mut stream) {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is never reused");
        std::thread::yield_now();
    }
    drop(held);
    server.shutdown();
}

/// Resident memory of a process in bytes, from /proc/PID/status.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A `ringlog serve` child process with settings from the environment.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(data_dir: &Path, env: &[(&str, &str)]) -> ChildServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringlog"));
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--shards", "1"])
            .env("RINGLOG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let addr = line
            .strip_prefix("ringlog serving on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // The pipe stays open (the child keeps its end; ours is dropped with nothing to read).
        std::mem::forget(stdout);
        ChildServer { child, addr }
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_consumer_that_stops_reading_does_not_grow_server_memory() {
    const IN_FLIGHT_MAX: u64 = 8;
    const FETCH_BYTES: u32 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(
        dir.path(),
        &[
            ("RINGLOG_CACHE_BYTES_PER_SHARD", "1048576"),
            ("RINGLOG_REQUESTS_IN_FLIGHT_MAX", "8"),
        ],
    );
    create_topic_at(server.addr, "slow", 1);
    // 48 MiB of data, mostly read from disk afterwards (the cache holds 1 MiB).
    let producer = Producer::connect(server.addr, "slow", ProducerConfig::default()).unwrap();
    let value = vec![b'v'; 4000];
    for _ in 0..12_000 {
        producer.send(&ProducerRecord::new(&value)).unwrap();
    }
    producer.close().unwrap();
    let before = rss_bytes(server.child.id());

    // The stuck consumer: pipelines fetch requests for 1 MiB each and never reads.
    let mut stuck = TcpStream::connect(server.addr).unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut fbb = FlatBufferBuilder::new();
    let mut sent = 0u64;
    let mut request_bytes = Vec::new();
    loop {
        let partitions = [FetchPartition {
            partition: 0,
            offset: (sent as i64 * 997) % 40_000,
            partition_max_bytes: FETCH_BYTES,
        }];
        let topics = [FetchTopic {
            topic: "slow",
            partitions: &partitions,
        }];
        let body = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: FETCH_BYTES,
            topics: &topics,
        }
        .encode(&mut fbb)
        .to_vec();
        let header =
            FrameHeader::for_message(ApiKey::Fetch.as_u16(), 0, sent as u32, body.len(), 0)
                .unwrap();
        request_bytes.clear();
        request_bytes.extend_from_slice(&encode_header(&header));
        request_bytes.extend_from_slice(&body);
        match stuck.write_all(&request_bytes) {
            Ok(()) => sent += 1,
            // The server stopped reading: its in-flight bound is reached and the socket
            // buffers are full.
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break
            }
            Err(error) => panic!("{error}"),
        }
        assert!(sent < 1_000_000, "the server never stopped reading");
    }
    let after = rss_bytes(server.child.id());
    let growth = after.saturating_sub(before);
    let bound = IN_FLIGHT_MAX * u64::from(FETCH_BYTES) + (16 << 20);
    eprintln!(
        "stuck consumer: {sent} requests written before the server stopped reading; server RSS {} -> {} MiB (bound {} MiB of growth)",
        before >> 20,
        after >> 20,
        bound >> 20
    );
    assert!(
        sent < 100_000,
        "a stuck consumer could queue {sent} requests"
    );
    assert!(growth <= bound, "server RSS grew by {growth} bytes");
    // Everyone else is still served.
    let mut consumer = Consumer::connect(server.addr, ConsumerConfig::default()).unwrap();
    consumer.assign("slow", &[0]);
    consumer.seek(0, SeekTo::Offset(100)).unwrap();
    let first = consumer
        .poll(Duration::from_secs(10))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.offset, 100);
    drop(stuck);
}

/// A small tmpfs mounted for the test, unmounted when dropped.
struct SmallFilesystem {
    dir: tempfile::TempDir,
}

impl SmallFilesystem {
    /// A tmpfs of `size_bytes` on a new temporary directory; `None` where this process may
    /// not mount (no CAP_SYS_ADMIN). With the capability (root, as in CI) a mount that
    /// fails is a failure, not a skip.
    fn mount(size_bytes: u64) -> Option<SmallFilesystem> {
        if !common::has_capability(common::CAP_SYS_ADMIN) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            output.status.success(),
            "mount -t tmpfs on {}: {} {}",
            dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Some(SmallFilesystem { dir })
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Sends records `first..` until the producer reports failures; returns (sent, acked
/// record numbers with their offsets).
fn produce_until_failure(producer: &Producer, first: u32, max: u32) -> (u32, HashMap<u32, i64>) {
    let mut acked = HashMap::new();
    let mut next = first;
    while next < first + max {
        let mut handles = Vec::new();
        for _ in 0..200 {
            let value = format!("{next:08}").repeat(100);
            handles.push((
                next,
                producer
                    .send(&ProducerRecord::new(value.as_bytes()))
                    .unwrap(),
            ));
            next += 1;
        }
        let mut failed = false;
        for (number, handle) in handles {
            match handle.wait() {
                Ok(written) => {
                    acked.insert(number, written.offset);
                }
                Err(error) => {
                    assert!(
                        matches!(error.code(), Some(code) if code.is_retriable()),
                        "disk full shows as a retriable error, not {error}"
                    );
                    failed = true;
                }
            }
        }
        if failed {
            break;
        }
    }
    (next, acked)
}

/// Every record of partition 0: offset -> record number.
fn read_numbers(addr: SocketAddr) -> Vec<(i64, u32)> {
    let mut consumer = Consumer::connect(addr, ConsumerConfig::default()).unwrap();
    consumer.assign("full", &[0]);
    consumer.seek(0, SeekTo::Earliest).unwrap();
    let mut out = Vec::new();
    loop {
        let records = consumer.poll(Duration::from_millis(300)).unwrap();
        let mut got = false;
        for record in records {
            let record = record.unwrap();
            let text = std::str::from_utf8(record.value.unwrap()).unwrap();
            out.push((record.offset, text[..8].parse().unwrap()));
            got = true;
        }
        if !got
            && consumer
                .high_watermark(0)
                .is_some_and(|end| consumer.position(0) >= Some(end))
        {
            return out;
        }
    }
}

fn check_acked_exactly_once(stored: &[(i64, u32)], acked: &HashMap<u32, i64>) {
    let mut copies: HashMap<u32, u32> = HashMap::new();
    let at: HashMap<i64, u32> = stored.iter().copied().collect();
    for (_, number) in stored {
        *copies.entry(*number).or_default() += 1;
    }
    assert!(
        copies.values().all(|count| *count == 1),
        "a record is stored twice"
    );
    for (number, offset) in acked {
        assert_eq!(
            at.get(offset),
            Some(number),
            "acknowledged record {number} lost"
        );
    }
}

#[test]
fn disk_full_fails_produce_keeps_acknowledged_data_and_recovers() {
    let Some(filesystem) = SmallFilesystem::mount(24 << 20) else {
        common::skip(
            "disk_full_fails_produce_keeps_acknowledged_data_and_recovers",
            "no CAP_SYS_ADMIN to mount the small tmpfs it fills (run as root)",
        );
        return;
    };
    let root = filesystem.path();
    // Ballast to delete later, when "space returns".
    std::fs::write(root.join("ballast"), vec![0u8; 8 << 20]).unwrap();
    let data_dir = root.join("data");
    let mut server = Some(
        Server::start(ServerConfig {
            shards: Some(1),
            ..config(&data_dir)
        })
        .unwrap(),
    );
    let addr = |server: &Option<ServerHandle>| server.as_ref().unwrap().local_addr();
    create_topic_at(addr(&server), "full", 1);
    let producer_config = ProducerConfig {
        retries_max: 2,
        retry_backoff_ms: 10,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr(&server), "full", producer_config).unwrap();
    let (next, mut acked) = produce_until_failure(&producer, 0, 100_000);
    assert!(!acked.is_empty(), "some records fit");
    assert!(next < 100_000, "the disk filled up");
    eprintln!("disk full after {} acknowledged records", acked.len());

    // Reads go on while the disk is full.
    let stored = read_numbers(addr(&server));
    check_acked_exactly_once(&stored, &acked);
    // Still full: produce keeps failing cleanly.
    let probe = format!("{next:08}").repeat(100);
    let error = producer
        .send(&ProducerRecord::new(probe.as_bytes()))
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(
        matches!(error.code(), Some(code) if code.is_retriable()),
        "{error}"
    );
    // Those failures are reported (once) by flush.
    assert!(producer.flush().is_err());

    // Space returns: the same producer goes on.
    std::fs::remove_file(root.join("ballast")).unwrap();
    let (_, more) = produce_until_failure(&producer, next + 1, 2_000);
    assert_eq!(more.len(), 2_000, "produce works again once space is back");
    acked.extend(more);
    producer.close().unwrap();

    // Nothing acknowledged is lost or doubled, also after a restart.
    check_acked_exactly_once(&read_numbers(addr(&server)), &acked);
    server.take().unwrap().shutdown();
    server = Some(
        Server::start(ServerConfig {
            shards: Some(1),
            ..config(&data_dir)
        })
        .unwrap(),
    );
    check_acked_exactly_once(&read_numbers(addr(&server)), &acked);
    drop(server);
}

/// A frame: header for `api` and `correlation_id`, then `body` (a size-prefixed flatbuffer).
fn request_frame(api: ApiKey, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let header = FrameHeader::for_message(api.as_u16(), 0, correlation_id, body.len(), 0).unwrap();
    let mut frame = encode_header(&header).to_vec();
    frame.extend_from_slice(body);
    frame
}

/// Reads one response frame; returns its correlation id.
fn read_correlation_id(stream: &mut TcpStream) -> u32 {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).unwrap();
    let mut rest = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut rest).unwrap();
    u32::from_le_bytes(rest[4..8].try_into().unwrap())
}

/// A server taking two connections, with `topic` (2 partitions) and a client holding one of
/// the two connections.
fn server_of_two_connections(dir: &Path, topic: &str) -> (ServerHandle, Client) {
    server_of_two_connections_with(config(dir), topic)
}

/// [`server_of_two_connections`] from `config` (its other limits).
fn server_of_two_connections_with(config: ServerConfig, topic: &str) -> (ServerHandle, Client) {
    let server = Server::start(ServerConfig {
        connections_max: 2,
        ..config
    })
    .unwrap();
    let mut admin = Client::connect(server.local_addr()).unwrap();
    admin
        .create_topic(&create_topic::Request {
            name: topic,
            partitions: 2,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: Some(1 << 20),
        })
        .unwrap();
    (server, admin)
}

/// The body of a fetch of both (empty) partitions of `topic`, one of them on the other shard,
/// with the longest wait the protocol allows.
fn longest_long_poll_body(topic: &str) -> Vec<u8> {
    let partitions = [0, 1].map(|partition| FetchPartition {
        partition,
        offset: 0,
        partition_max_bytes: 1 << 20,
    });
    let topics = [FetchTopic {
        topic,
        partitions: &partitions,
    }];
    let mut fbb = FlatBufferBuilder::new();
    FetchRequest {
        max_wait_ms: u32::MAX,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: &topics,
    }
    .encode(&mut fbb)
    .to_vec()
}

/// The body of an ApiVersions request.
fn api_versions_body() -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    ringlog_net::message::api_versions::Request {
        client_name: "limits-test",
        client_version: "1",
    }
    .encode(&mut fbb)
    .to_vec()
}

/// Waits until the server at `addr` takes a new connection again; fails with `what` after 10 s.
fn await_a_free_connection(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stream = TcpStream::connect(addr).unwrap();
        if !refused(&mut stream) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

#[test]
fn a_client_gone_during_a_long_poll_frees_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut admin) = server_of_two_connections(dir.path(), "quiet");
    let addr = server.local_addr();
    // The other: a consumer long-polls both (empty) partitions, one of them on the other
    // shard, with the longest wait the protocol allows, then goes away.
    let mut gone = TcpStream::connect(addr).unwrap();
    gone.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    gone.write_all(&request_frame(
        ApiKey::Fetch,
        1,
        &longest_long_poll_body("quiet"),
    ))
    .unwrap();
    gone.write_all(&request_frame(ApiKey::ApiVersions, 2, &api_versions_body()))
        .unwrap();
    // Requests start in the order they arrive: once this is answered the fetch is waiting.
    assert_eq!(read_correlation_id(&mut gone), 2);
    drop(gone);
    // Nobody will read the fetch's answer: its connection must not hold a slot meanwhile.
    await_a_free_connection(
        addr,
        "a client gone during a long poll still holds its connection",
    );
    admin.api_versions("limits-test", "1").unwrap();
    drop(admin);
    server.shutdown();
}

/// A share consumer gone during a long ShareFetch frees its connection, as a fetch's does,
/// and acquires nothing: a record produced after it left goes to the next member at its
/// first delivery, instead of staying locked for a member that is gone (and counting a
/// delivery) until the lock expires. With the share partition on the connection's shard
/// and on the other one.
#[test]
fn a_share_consumer_gone_during_a_long_poll_frees_its_connection_and_acquires_nothing() {
    for owner in [0u16, 1] {
        let dir = tempfile::tempdir().unwrap();
        let (server, mut admin) = server_of_two_connections(dir.path(), "jobs");
        let addr = server.local_addr();
        let owners = &admin.metadata(&["jobs"]).unwrap()[0].partitions;
        let partition = owners.iter().find(|p| p.shard == owner).unwrap().partition;
        let mut gone =
            Connection::connect_to_shard(addr, 0, 2, ConnectionConfig::default()).unwrap();
        gone.send(&ShareFetchRequest {
            group: "workers",
            member_id: "gone",
            topic: "jobs",
            partition,
            max_records: 10,
            max_wait_ms: u32::MAX,
            max_bytes: 1 << 20,
            acks: &[],
        })
        .unwrap();
        // Requests start in the order they arrive: once this is answered the fetch waits.
        gone.call(&ringlog_net::message::api_versions::Request {
            client_name: "limits-test",
            client_version: "1",
        })
        .unwrap();
        drop(gone);
        let what = format!(
            "a share consumer gone during a long poll still holds its connection (owner {owner})"
        );
        await_a_free_connection(addr, &what);
        // Through the admin's connection: the server may not have counted the probe's close.
        let now_ms = common::now_ms();
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), now_ms);
        builder.push(now_ms, None, Some(b"job"), &[]).unwrap();
        let stored = admin
            .produce("jobs", partition, Acks::Leader, builder.finish())
            .unwrap();
        assert_eq!(stored, Some(0));
        let fetched = admin
            .share_fetch(&ShareFetchRequest {
                group: "workers",
                member_id: "live",
                topic: "jobs",
                partition,
                max_records: 10,
                max_wait_ms: 5_000,
                max_bytes: 1 << 20,
                acks: &[],
            })
            .unwrap();
        let acquired = fetched.acquired().unwrap();
        assert_eq!(acquired.len(), 1, "owner {owner}: {acquired:?}");
        assert_eq!(
            (acquired[0].first_offset, acquired[0].delivery_count),
            (0, 1),
            "owner {owner}"
        );
        server.shutdown();
    }
}

/// As `a_client_gone_during_a_long_poll_frees_its_connection`, but the client pipelines one
/// request more than `requests_in_flight_max` behind its long poll before it goes away: the
/// reader, waiting for a free slot and so not receiving, must still notice the close, or the
/// long poll would hold the connection's place under `connections_max` for its whole
/// `max_wait_ms`.
#[test]
fn a_client_gone_with_a_request_queued_behind_a_long_poll_frees_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        requests_in_flight_max: 1,
        ..config(dir.path())
    };
    let (server, mut admin) = server_of_two_connections_with(config, "quiet");
    let addr = server.local_addr();
    // The long poll takes the only slot; the second request waits behind it. The close comes
    // after both on the byte stream, so the server reads both before it could see the close.
    let mut gone = TcpStream::connect(addr).unwrap();
    let mut bytes = request_frame(ApiKey::Fetch, 1, &longest_long_poll_body("quiet"));
    bytes.extend(request_frame(ApiKey::ApiVersions, 2, &api_versions_body()));
    gone.write_all(&bytes).unwrap();
    drop(gone);
    await_a_free_connection(
        addr,
        "a client gone with a request queued behind a long poll still holds its connection",
    );
    admin.api_versions("limits-test", "1").unwrap();
    drop(admin);
    server.shutdown();
}

/// With zero-copy sends on, a shutdown while a client that never reads holds a large fetch
/// answer half-sent must still end: the shard cannot wait for the kernel to release memory
/// that only a reading peer (or the orphaned socket's timeout) ever releases.
#[test]
fn shutdown_ends_while_a_client_that_never_reads_holds_a_zero_copy_answer() {
    shutdown_with_a_client_that_never_reads(1);
}

/// The same with plain sends (the default): the pending send is cancelled.
#[test]
fn shutdown_ends_while_a_client_that_never_reads_holds_a_plain_answer() {
    shutdown_with_a_client_that_never_reads(usize::MAX);
}

fn shutdown_with_a_client_that_never_reads(send_zero_copy_min_bytes: usize) {
    use std::os::fd::FromRawFd;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        shards: Some(1),
        send_zero_copy_min_bytes,
        ..config(dir.path())
    })
    .unwrap();
    let addr = server.local_addr();
    let mut admin = Client::connect(addr).unwrap();
    admin
        .create_topic(&create_topic::Request {
            name: "big",
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: Some(64 << 20),
        })
        .unwrap();
    // 12 batches of 1 MB: far more than the socket buffers of both ends hold.
    let value = vec![7u8; 1 << 20];
    for _ in 0..12 {
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(&value), &[]).unwrap();
        admin
            .produce("big", 0, Acks::Leader, builder.finish())
            .unwrap();
    }
    drop(admin);

    // A client with a small receive buffer that asks for all of it and never reads.
    // SAFETY: plain syscalls on a socket this test creates and then hands to TcpStream.
    let lazy = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let small: libc::c_int = 64 << 10;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let std::net::SocketAddr::V4(v4) = addr else {
            panic!("IPv4 listener expected")
        };
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    };
    let partitions = [FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: 32 << 20,
    }];
    let topics = [FetchTopic {
        topic: "big",
        partitions: &partitions,
    }];
    let mut fbb = FlatBufferBuilder::new();
    let fetch = FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 32 << 20,
        topics: &topics,
    }
    .encode(&mut fbb)
    .to_vec();
    (&lazy)
        .write_all(&request_frame(ApiKey::Fetch, 1, &fetch))
        .unwrap();
    // Wait (peeking, so nothing is consumed) until record bytes arrive: the answer's head is
    // out and its batches are being sent with SEND_ZC.
    let mut peeked = vec![0u8; 64 << 10];
    loop {
        let n = lazy.peek(&mut peeked).unwrap();
        assert!(n > 0, "the server closed the connection");
        if n >= 8 << 10 {
            break;
        }
        std::thread::yield_now();
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        server.shutdown();
        let _ = done_tx.send(());
    });
    let ended = done_rx.recv_timeout(Duration::from_secs(20)).is_ok();
    assert!(
        ended,
        "shutdown still waits 20 s later, with a client that never reads connected"
    );
    drop(lazy);
}
