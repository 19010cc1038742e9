//! The server under torture: a `ringlog serve` child process.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ringlog_net::client::{Client, ClientError, ConnectionConfig};
use ringlog_net::message::create_topic;
use ringlog_net::message::fetch::{FetchPartition, FetchTopic, Request as FetchRequest};

/// What a partition holds: `(offset, value)` per record, or the error that stopped the read.
pub struct StoredPartition {
    pub records: Records,
    pub corrupt: Vec<String>,
}

/// A running server.
pub struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    startup_ms: u64,
    /// Kept open so the server never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    /// Spawns the binary of this build (release or debug) on `data_dir` and an ephemeral
    /// port, its stderr appended to `log`, and waits for its serving line.
    pub fn start(data_dir: &Path, log: &Path, shards: u64) -> ServerProcess {
        ServerProcess::start_at(data_dir, log, shards, "127.0.0.1:0")
    }

    /// [`ServerProcess::start`] listening on `listen`: the address of the server killed just
    /// before, as a supervisor restarts it, so that clients connect to it again.
    pub fn start_at(data_dir: &Path, log: &Path, shards: u64, listen: &str) -> ServerProcess {
        let log_path = log;
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .unwrap();
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--shards", &shards.to_string()])
            .env("RINGLOG_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let startup_ms = started.elapsed().as_millis() as u64;
        let addr = line
            .strip_prefix("ringlog serving on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line {line:?}; see {}", log_path.display())
            });
        ServerProcess {
            child,
            addr,
            startup_ms,
            _stdout: stdout,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Milliseconds from spawn to the serving line (recovery included).
    pub fn startup_ms(&self) -> u64 {
        self.startup_ms
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM (a clean stop), then reap.
    pub fn shutdown(mut self) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap();
    }

    pub fn client(&self) -> Client {
        Client::connect_with(
            self.addr,
            ConnectionConfig {
                request_timeout_ms: 30_000,
                ..ConnectionConfig::default()
            },
        )
        .unwrap()
    }

    pub fn create_topic(&self, name: &str, partitions: u32) {
        let request = create_topic::Request {
            name,
            partitions,
            retention_ms: None,
            retention_bytes: None,
            // Small segments: rolls, finished segments and producer snapshots in every run.
            segment_bytes: Some(1 << 20),
        };
        self.client().create_topic(&request).unwrap();
    }

    /// Reads every partition from its start to its high watermark.
    pub fn read_all(&self, topic: &str, partitions: u32) -> Vec<StoredPartition> {
        let mut client = self.client();
        (0..partitions)
            .map(|partition| read_partition(&mut client, topic, partition))
            .collect()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_partition(client: &mut Client, topic: &str, partition: u32) -> StoredPartition {
    let mut stored = StoredPartition {
        records: Vec::new(),
        corrupt: Vec::new(),
    };
    let mut offset = 0i64;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            Instant::now() < deadline,
            "reading partition {partition} takes too long"
        );
        let partitions = [FetchPartition {
            partition,
            offset,
            partition_max_bytes: 1 << 20,
        }];
        let topics = [FetchTopic {
            topic,
            partitions: &partitions,
        }];
        let request = FetchRequest {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: &topics,
        };
        let result = client.fetch(&request).unwrap();
        let fetched = match first_partition(&result) {
            Ok(fetched) => fetched,
            Err(error) => {
                stored
                    .corrupt
                    .push(format!("partition {partition} at {offset}: {error}"));
                return stored;
            }
        };
        let (high_watermark, records) = fetched;
        if records.is_empty() {
            if offset < high_watermark {
                stored.corrupt.push(format!(
                    "partition {partition}: empty read at {offset} below {high_watermark}"
                ));
            }
            return stored;
        }
        for (record_offset, value) in records {
            if record_offset != offset {
                stored.corrupt.push(format!(
                    "partition {partition}: offset {record_offset} where {offset} was expected"
                ));
            }
            offset = record_offset + 1;
            stored.records.push((record_offset, value));
        }
    }
}

/// Records as `(offset, value)`.
type Records = Vec<(i64, Vec<u8>)>;

/// The high watermark and the records of the one partition of a fetch result; a CRC or
/// decoding failure is an error.
fn first_partition(
    result: &ringlog_net::client::FetchResult,
) -> Result<(i64, Records), ClientError> {
    let fetched = result.partitions()?;
    let mut out = Vec::new();
    let mut high_watermark = 0;
    for entry in fetched {
        if !entry.status.code.is_ok() {
            return Err(ClientError::UnexpectedResponse(format!(
                "fetch error {}: {}",
                entry.status.code, entry.status.message
            )));
        }
        high_watermark = entry.high_watermark;
        for item in ringlog_engine::batch::BatchIter::new(entry.batches) {
            let (header, bytes) =
                item.map_err(|error| ClientError::UnexpectedResponse(error.to_string()))?;
            for record in ringlog_engine::batch::records(bytes)
                .map_err(|error| ClientError::UnexpectedResponse(error.to_string()))?
            {
                let record =
                    record.map_err(|error| ClientError::UnexpectedResponse(error.to_string()))?;
                out.push((
                    record.offset(header.base_offset),
                    record.value.unwrap_or_default().to_vec(),
                ));
            }
        }
    }
    Ok((high_watermark, out))
}
