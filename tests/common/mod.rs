//! Helpers for tests that drive the real `ringlog` binary: a `ringlog serve` child process on
//! an ephemeral loopback port with a temporary data directory, and client command runs against
//! it. Every wait is bounded by a watchdog that kills the process, so a hang fails the test
//! instead of stalling the suite.

#![allow(dead_code)] // Each test file uses its own subset.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

/// Wall-clock time in milliseconds since the Unix epoch, as record timestamps are.
pub fn now_ms() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is past 1970");
    i64::try_from(elapsed.as_millis()).expect("milliseconds fit an i64")
}

/// Linux capabilities the tests that set up their own facility need (bit numbers of
/// `CapEff` in /proc/self/status, as in linux/capability.h).
pub const CAP_LINUX_IMMUTABLE: u32 = 9;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process holds capability `bit` in its effective set. CI runs as root with
/// these, so a test that needs one runs there, and fails there when its facility does not
/// work; only a process without the capability skips (see [`skip`]).
pub fn has_capability(bit: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|effective| effective & (1 << bit) != 0)
}

/// Says that `test` did not run, and why, on the process's stderr itself: libtest captures
/// what `eprintln!` prints and shows it only for failing tests, so a skip said that way is
/// invisible in a passing run. The caller then returns.
pub fn skip(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// The binary under test.
pub const RINGLOG: &str = env!("CARGO_BIN_EXE_ringlog");
/// Longest a client command or a server shutdown may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `ringlog serve`, killed when dropped. The data directory lives as long as this
/// value, across restarts.
pub struct TestServer {
    child: Option<Child>,
    /// Kept open: the server may write to stdout after its first line.
    stdout: Option<BufReader<ChildStdout>>,
    addr: String,
    shards: usize,
    data_dir: TempDir,
}

impl TestServer {
    /// Starts a server with `shards` shards in a fresh temporary data directory.
    pub fn start(shards: usize) -> Self {
        let data_dir = tempfile::tempdir().expect("temporary data directory");
        let mut server = Self {
            child: None,
            stdout: None,
            addr: String::new(),
            shards,
            data_dir,
        };
        server.spawn();
        server
    }

    /// `HOST:PORT` the server listens on (changes on restart).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Stops the server with SIGTERM and checks that it exits with status 0.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        assert!(signal(child.id(), "TERM"), "kill -TERM failed");
        let status = wait_bounded(&mut child, "ringlog serve");
        assert!(status.success(), "server exited with {status}");
        self.stdout = None;
    }

    /// Stops the server and starts it again on the same data directory (on a new port).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Stops the server (SIGTERM) and starts it again on the same data directory and the same
    /// address, as an operator's restart looks to connected clients.
    pub fn restart_in_place(&mut self) {
        self.stop();
        self.spawn_at(&self.addr.clone());
    }

    /// Starts the server that [`Self::stop`] stopped again on the same data directory and
    /// address, as after an outage.
    pub fn start_again_in_place(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        self.spawn_at(&self.addr.clone());
    }

    /// Kills the server (SIGKILL: no flush, no goodbye) and starts it again on the same data
    /// directory and address.
    pub fn kill_and_restart_in_place(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill ringlog serve");
            child.wait().expect("reap ringlog serve");
            self.stdout = None;
        }
        // The killed process's listeners outlive it for a few milliseconds (the kernel closes
        // its io_uring instances after it is reaped): the new server waits for the address.
        self.spawn_at(&self.addr.clone());
    }

    /// Runs `ringlog ARGS --server ADDR` with empty stdin.
    pub fn ringlog(&self, args: &[&str]) -> Output {
        self.ringlog_with_input(args, b"")
    }

    /// Runs `ringlog ARGS --server ADDR` with `input` on stdin.
    pub fn ringlog_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &self.addr]);
        run_ringlog(&all, input)
    }

    /// Like [`Self::ringlog`], failing the test unless the command succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with_input(args, b"")
    }

    /// Like [`Self::ringlog_with_input`], failing the test unless the command succeeds;
    /// returns stdout.
    pub fn ok_with_input(&self, args: &[&str], input: &[u8]) -> String {
        let output = self.ringlog_with_input(args, input);
        assert!(
            output.status.success(),
            "ringlog {args:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Starts `ringlog serve` on the data directory and learns its address from the first
    /// line it prints: `ringlog serving on ADDR with N shards, data in DIR`.
    fn spawn(&mut self) {
        self.spawn_at("127.0.0.1:0");
    }

    /// [`Self::spawn`] listening on `listen`.
    fn spawn_at(&mut self, listen: &str) {
        let shards = self.shards.to_string();
        let mut child = Command::new(RINGLOG)
            .args(["serve", "--listen", listen, "--shards", &shards])
            .arg("--data-dir")
            .arg(self.data_dir.path())
            .env_remove("RINGLOG_CONFIG")
            .env("RINGLOG_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ringlog serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        let read = stdout
            .read_line(&mut line)
            .expect("read the server's first line");
        if read == 0 {
            let status = child.wait().expect("wait for the failed server");
            panic!("ringlog serve exited ({status}) before printing its address");
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.get(..3),
            Some(&["ringlog", "serving", "on"][..]),
            "unexpected first line {line:?}"
        );
        assert_eq!(words.get(5), Some(&shards.as_str()), "{line:?}");
        self.addr = words[3].to_owned();
        self.child = Some(child);
        self.stdout = Some(stdout);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already gone is fine.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `ringlog ARGS` (no `--server` added) with `input` on stdin, bounded by
/// [`COMMAND_TIMEOUT`].
pub fn run_ringlog(args: &[&str], input: &[u8]) -> Output {
    run_ringlog_in(Command::new(RINGLOG).args(args), input)
}

/// Runs `command` (a `ringlog` command with the caller's environment or directory) with
/// `input` on stdin, bounded by [`COMMAND_TIMEOUT`]; `RINGLOG_SERVER` and `RINGLOG_LOG` are
/// removed from its environment.
pub fn run_ringlog_in(command: &mut Command, input: &[u8]) -> Output {
    let args: Vec<_> = command.get_args().map(|arg| arg.to_owned()).collect();
    let mut child = command
        .env_remove("RINGLOG_SERVER")
        .env_remove("RINGLOG_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringlog");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    // A command that exits early closes its stdin: a failed write is its business.
    let writer = thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut bytes = Vec::new();
        stdout.read_to_end(&mut bytes).map(|_| bytes)
    });
    let mut err_bytes = Vec::new();
    stderr.read_to_end(&mut err_bytes).expect("read stderr");
    let status = wait_bounded(&mut child, &format!("ringlog {args:?}"));
    writer.join().expect("stdin writer");
    let out_bytes = out_reader
        .join()
        .expect("stdout reader")
        .expect("read stdout");
    Output {
        status,
        stdout: out_bytes,
        stderr: err_bytes,
    }
}

/// Spawns `ringlog ARGS` with stdout piped to the caller (stdin null, stderr piped), for
/// tests that read part of the output.
pub fn spawn_ringlog(args: &[&str]) -> (Child, ChildStdout) {
    let mut child = Command::new(RINGLOG)
        .args(args)
        .env_remove("RINGLOG_SERVER")
        .env_remove("RINGLOG_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringlog");
    let stdout = child.stdout.take().expect("piped stdout");
    (child, stdout)
}

/// Waits for `child`, killing it and failing the test after [`COMMAND_TIMEOUT`].
pub fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let pid = child.id();
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        let timed_out = finished.recv_timeout(COMMAND_TIMEOUT) == Err(RecvTimeoutError::Timeout);
        if timed_out {
            // Best effort: the test fails below either way.
            signal(pid, "KILL");
        }
        timed_out
    });
    let status = child.wait().expect("wait for child");
    drop(done);
    let timed_out = watchdog.join().expect("watchdog");
    assert!(
        !timed_out,
        "{what} did not finish within {COMMAND_TIMEOUT:?}"
    );
    status
}

/// Sends the signal `name` (such as TERM) to `pid`; true when it was delivered.
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .is_ok_and(|status| status.success())
}

/// A loopback address nothing listens on (bound, then released).
pub fn unused_addr() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").to_string()
}

/// `seq 1 n` as bytes.
pub fn seq(n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 1..=n {
        writeln!(out, "{i}").expect("write to a Vec");
    }
    out
}

/// Creates `name` with `partitions` partitions on the server at `addr`, with 1 MiB segments:
/// tests must not preallocate 1 GiB files.
pub fn create_topic_at(addr: impl ToSocketAddrs, name: &str, partitions: u32) {
    let request = ringlog_net::message::create_topic::Request {
        name,
        partitions,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: Some(1 << 20),
    };
    ringlog_net::client::Client::connect(addr)
        .unwrap()
        .create_topic(&request)
        .unwrap();
}

/// The long polls of other shards' connections that the server's shards hold
/// (`ringlog_shard_remote_waits`, summed over shards), from a scrape of `metrics`.
pub fn remote_waits(metrics: std::net::SocketAddr) -> u64 {
    metric_sum(metrics, "ringlog_shard_remote_waits{", "")
}

/// The sum of the samples of the lines that start with `family` (a metric's name and `{`)
/// and hold `labels`, from a scrape of `metrics`; the family must have samples.
pub fn metric_sum(metrics: std::net::SocketAddr, family: &str, labels: &str) -> u64 {
    let mut stream = std::net::TcpStream::connect(metrics).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: ringlog\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    // The server closes the connection after its answer.
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    let samples: Vec<u64> = body
        .lines()
        .filter(|line| line.starts_with(family))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(!samples.is_empty(), "samples of {family}:\n{body}");
    body.lines()
        .filter(|line| line.starts_with(family) && line.contains(labels))
        .map(|line| line.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
        .sum()
}

/// Scrapes `metrics` until `remote_waits` is `wanted`; fails with `what` after 10 s.
pub fn await_remote_waits(metrics: std::net::SocketAddr, wanted: u64, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while remote_waits(metrics) != wanted {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}
