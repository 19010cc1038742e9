//! kcat, the command line Kafka client built on librdkafka, as the `kafka` scenario drives it:
//! found on `PATH`, given its arguments, run as child processes whose stderr goes to a file
//! (its last lines explain a failure), and watched until they exit or run out of time.
//!
//! kcat is not a Rust dependency on purpose: the `rdkafka` crate compiles librdkafka from C
//! sources, too heavy for every build of the bench. kcat is one `apt-get install kcat` away.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use super::ScenarioError;
use crate::options::Acks;

/// Names kcat is installed under (`kafkacat` on older distributions).
pub const KCAT_NAMES: [&str; 2] = ["kcat", "kafkacat"];
/// How often a running kcat is checked for its exit: the resolution of its timing.
pub const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(1);
/// librdkafka's own default `message.max.bytes` (a batch limit kcat's batches must fit in).
const LIBRDKAFKA_MESSAGE_MAX_BYTES_DEFAULT: u32 = 1_000_000;
/// Most records librdkafka batches at once (its upper bound for `batch.num.messages`), so that
/// `batch.size` decides, as `--batch-bytes` does for the native producer.
const LIBRDKAFKA_BATCH_RECORDS_MAX: u32 = 1_000_000;
/// Lines of kcat's stderr quoted when it fails.
const STDERR_TAIL_LINES: usize = 3;

/// The message for a machine without kcat: `scripts/bench.sh` recognises its "not available
/// in this build" (exit status 2) and skips the run.
pub fn unavailable_message() -> String {
    "kafka is not available in this build: it drives kcat (librdkafka's command line client), \
     which is not on PATH; install it (apt-get install kcat) and run again"
        .to_string()
}

/// The first kcat executable in the directories of `path_var` (a `PATH` value).
pub fn find_kcat(path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var?;
    KCAT_NAMES.iter().find_map(|name| {
        std::env::split_paths(path_var)
            .map(|dir| dir.join(name))
            .find(|candidate| is_executable(candidate))
    })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
}

/// librdkafka's value of `acks` for the bench's acknowledgement.
pub fn librdkafka_acks(acks: Acks) -> &'static str {
    match acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::Durable => "all",
    }
}

/// How kcat produces: librdkafka's producer with the native producer's batch size, linger
/// and acknowledgement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProduceSettings {
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// librdkafka `linger.ms`.
    pub linger_ms: u64,
    /// librdkafka `batch.size`.
    pub batch_bytes: u32,
}

/// Arguments shared by every kcat run: the bootstrap server, and no user configuration file
/// (`~/.config/kcat.conf` could point kcat at another cluster or add TLS).
fn common_args(bootstrap: SocketAddr) -> Vec<String> {
    vec![
        "-b".into(),
        bootstrap.to_string(),
        "-F".into(),
        "/dev/null".into(),
    ]
}

/// `kcat -L`: the metadata of `topic` (checks kcat can talk to the listener; its time is
/// kcat's start-up cost).
pub fn metadata_args(bootstrap: SocketAddr, topic: &str) -> Vec<String> {
    let mut args = vec!["-L".to_string()];
    args.extend(common_args(bootstrap));
    args.extend(["-t".into(), topic.into()]);
    args
}

/// `kcat -P -l FILE`: one record per line of `input` to `topic` (librdkafka's partitioner
/// spreads them over the partitions), at most `count` of them when given.
pub fn produce_args(
    bootstrap: SocketAddr,
    topic: &str,
    input: &Path,
    count: Option<u64>,
    settings: ProduceSettings,
) -> Vec<String> {
    let mut args = vec!["-P".to_string()];
    args.extend(common_args(bootstrap));
    args.extend(["-t".into(), topic.into()]);
    let message_max_bytes = settings
        .batch_bytes
        .max(LIBRDKAFKA_MESSAGE_MAX_BYTES_DEFAULT);
    for setting in [
        format!("acks={}", librdkafka_acks(settings.acks)),
        format!("linger.ms={}", settings.linger_ms),
        format!("batch.size={}", settings.batch_bytes),
        format!("batch.num.messages={LIBRDKAFKA_BATCH_RECORDS_MAX}"),
        format!("message.max.bytes={message_max_bytes}"),
    ] {
        args.extend(["-X".into(), setting]);
    }
    if let Some(count) = count {
        args.extend(["-c".into(), count.to_string()]);
    }
    args.push("-l".into());
    args.push(input.display().to_string());
    args
}

/// `kcat -C -e`: every record of `topic` from the beginning, exiting at the end of every
/// partition, with librdkafka's default consumer settings; prints each record's value length
/// on a line of its own (counted and checked by the bench) rather than the value.
pub fn consume_args(bootstrap: SocketAddr, topic: &str) -> Vec<String> {
    let mut args = vec!["-C".to_string()];
    args.extend(common_args(bootstrap));
    args.extend([
        "-t".into(),
        topic.into(),
        "-o".into(),
        "beginning".into(),
        "-e".into(),
        "-f".into(),
        "%S\\n".into(),
    ]);
    args
}

/// A record value of `size_bytes` printable bytes (no newline: kcat splits its input at them).
pub fn printable_record_value(size_bytes: u32) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..size_bytes as usize)
        .map(|index| ALPHABET[(index * 7 + index / ALPHABET.len()) % ALPHABET.len()])
        .collect()
}

/// Writes `records` lines of one `size_bytes` printable value each to `path` (kcat's input).
pub fn write_input_file(path: &Path, size_bytes: u32, records: u64) -> Result<(), ScenarioError> {
    let io_error = |source| ScenarioError::Io {
        context: format!("write kcat's input {}", path.display()),
        source,
    };
    let mut line = printable_record_value(size_bytes);
    line.push(b'\n');
    let file = File::create(path).map_err(io_error)?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    for _ in 0..records {
        writer.write_all(&line).map_err(io_error)?;
    }
    writer
        .into_inner()
        .map_err(|error| io_error(error.into_error()))?
        .sync_all()
        .map_err(io_error)
}

/// What `kcat -C -f '%S\n'` printed: one value length per line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LengthCounts {
    /// Lines, that is records.
    pub records: u64,
    /// Lines that are not the expected length (or not a number at all).
    pub wrong_length: u64,
}

/// Counts the records in kcat's `%S\n` output as it arrives, in chunks of any size, and checks
/// each length; nothing is allocated per record.
#[derive(Clone, Copy, Debug)]
pub struct LengthCounter {
    expected_len: u64,
    /// The number read so far on the current line.
    current: u64,
    /// The current line has something other than digits, or no digit yet.
    current_bad: bool,
    counts: LengthCounts,
}

impl LengthCounter {
    /// A counter expecting every value to be `expected_len` bytes long.
    pub fn new(expected_len: u32) -> Self {
        Self {
            expected_len: u64::from(expected_len),
            current: 0,
            current_bad: true,
            counts: LengthCounts::default(),
        }
    }

    /// Reads one chunk of output; returns the records (complete lines) it finished.
    pub fn feed(&mut self, chunk: &[u8]) -> u64 {
        let before = self.counts.records;
        for &byte in chunk {
            match byte {
                b'\n' => {
                    self.counts.records += 1;
                    if self.current_bad || self.current != self.expected_len {
                        self.counts.wrong_length += 1;
                    }
                    self.current = 0;
                    self.current_bad = true;
                }
                b'0'..=b'9' => {
                    self.current = self
                        .current
                        .saturating_mul(10)
                        .saturating_add(u64::from(byte - b'0'));
                    self.current_bad = false;
                }
                _ => {
                    // Not a length: give the line an impossible one (the saturating
                    // arithmetic above keeps it there until the newline).
                    self.current = u64::MAX;
                }
            }
        }
        self.counts.records - before
    }

    /// What was counted so far (a final line without its newline is not counted).
    pub fn counts(&self) -> LengthCounts {
        self.counts
    }
}

/// One running kcat.
#[derive(Debug)]
pub struct KcatProcess {
    child: Child,
    what: String,
    stderr_path: PathBuf,
    exited_at: Option<Instant>,
}

impl KcatProcess {
    /// Starts `kcat` with `args`; its stderr goes to `stderr_path`, its stdout to a pipe
    /// ([`KcatProcess::take_stdout`]) when `capture_stdout`, else nowhere. `what` names the
    /// run in errors.
    pub fn spawn(
        kcat: &Path,
        args: &[String],
        stderr_path: &Path,
        capture_stdout: bool,
        what: &str,
    ) -> Result<Self, ScenarioError> {
        let stderr = File::create(stderr_path).map_err(|source| ScenarioError::Io {
            context: format!("create {}", stderr_path.display()),
            source,
        })?;
        let stdout = if capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        let child = Command::new(kcat)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| ScenarioError::Io {
                context: format!("start {} for {what}", kcat.display()),
                source,
            })?;
        Ok(Self {
            child,
            what: what.to_string(),
            stderr_path: stderr_path.to_path_buf(),
            exited_at: None,
        })
    }

    /// The pipe of kcat's stdout (once; `None` without `capture_stdout`).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// When it exited; `None` while it runs. A failed exit is an error quoting its stderr.
    fn poll(&mut self) -> Result<Option<Instant>, ScenarioError> {
        if self.exited_at.is_some() {
            return Ok(self.exited_at);
        }
        let status = self.child.try_wait().map_err(|source| ScenarioError::Io {
            context: format!("wait for kcat ({})", self.what),
            source,
        })?;
        let Some(status) = status else {
            return Ok(None);
        };
        let now = Instant::now();
        self.exited_at = Some(now);
        if status.success() {
            Ok(Some(now))
        } else {
            Err(ScenarioError::Failed(format!(
                "kcat ({}) failed ({status}): {}",
                self.what,
                stderr_tail(&self.stderr_path)
            )))
        }
    }

    /// Stops it if it still runs (SIGKILL to this child only) and reaps it.
    fn stop(&mut self) {
        if self.exited_at.is_none() {
            // It may have exited on its own meanwhile; either way it is reaped below.
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited_at = Some(Instant::now());
        }
    }
}

impl Drop for KcatProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until every process in `processes` has exited successfully, calling `tick` between
/// checks (every [`EXIT_POLL_INTERVAL`]); returns when the last one exited. Past `deadline`,
/// or when one fails or `tick` fails, every process still running is killed and the run fails.
pub fn wait_all(
    processes: &mut [KcatProcess],
    deadline: Instant,
    mut tick: impl FnMut(Instant) -> Result<(), ScenarioError>,
) -> Result<Instant, ScenarioError> {
    let outcome = (|| loop {
        let mut last_exit = None;
        let mut running = false;
        for process in processes.iter_mut() {
            match process.poll()? {
                Some(exited_at) => {
                    last_exit =
                        Some(last_exit.map_or(exited_at, |last: Instant| last.max(exited_at)));
                }
                None => running = true,
            }
        }
        if let (false, Some(last_exit)) = (running, last_exit) {
            return Ok(last_exit);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(ScenarioError::Failed(format!(
                "kcat ({}) did not finish in time",
                processes
                    .first()
                    .map_or("no process", |process| process.what.as_str())
            )));
        }
        tick(now)?;
        std::thread::sleep(EXIT_POLL_INTERVAL);
    })();
    if outcome.is_err() {
        processes.iter_mut().for_each(KcatProcess::stop);
    }
    outcome
}

/// The last few non-empty lines of a stderr file, on one line.
fn stderr_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return "no message on stderr".to_string();
    }
    lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kcat_is_found_on_the_given_path_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let empty = tempfile::tempdir().unwrap();
        let path_var = std::env::join_paths([empty.path(), dir.path()]).unwrap();
        assert_eq!(find_kcat(Some(&path_var)), None);
        assert_eq!(find_kcat(None), None);
        let kcat = dir.path().join("kafkacat");
        std::fs::write(&kcat, "#!/bin/sh\n").unwrap();
        assert_eq!(find_kcat(Some(&path_var)), None, "not executable");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&kcat, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_kcat(Some(&path_var)), Some(kcat));
        assert!(unavailable_message().contains("not available in this build"));
        assert!(unavailable_message().contains("apt-get install kcat"));
    }

    #[test]
    fn produce_arguments_carry_the_native_producer_settings() {
        let bootstrap: SocketAddr = "127.0.0.1:9092".parse().unwrap();
        let settings = ProduceSettings {
            acks: Acks::Durable,
            linger_ms: 5,
            batch_bytes: 4 << 20,
        };
        let args = produce_args(bootstrap, "t", Path::new("/in"), Some(7), settings).join(" ");
        assert_eq!(
            args,
            "-P -b 127.0.0.1:9092 -F /dev/null -t t -X acks=all -X linger.ms=5 \
             -X batch.size=4194304 -X batch.num.messages=1000000 -X message.max.bytes=4194304 \
             -c 7 -l /in"
        );
        let small = ProduceSettings {
            acks: Acks::None,
            batch_bytes: 65_536,
            ..settings
        };
        let args = produce_args(bootstrap, "t", Path::new("/in"), None, small).join(" ");
        assert!(args.contains("acks=0"), "{args}");
        assert!(args.contains("message.max.bytes=1000000"), "{args}");
        assert!(args.ends_with("-l /in"), "{args}");
        assert_eq!(librdkafka_acks(Acks::Leader), "1");
        let consume = consume_args(bootstrap, "t").join(" ");
        assert!(consume.contains("-o beginning -e -f %S\\n"), "{consume}");
    }

    #[test]
    fn input_lines_are_printable_records_of_the_size() {
        let value = printable_record_value(1000);
        assert_eq!(value.len(), 1000);
        assert!(value.iter().all(u8::is_ascii_alphanumeric));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in");
        write_input_file(&path, 10, 3).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().all(|line| line.len() == 10));
    }

    #[test]
    fn consumed_lengths_are_counted_across_chunks_and_checked() {
        let mut counter = LengthCounter::new(100);
        assert_eq!(counter.feed(b"100\n10"), 1);
        assert_eq!(counter.feed(b"0\n99\n"), 2);
        assert_eq!(counter.feed(b"1x0\n\n100"), 2);
        assert_eq!(
            counter.counts(),
            LengthCounts {
                records: 5,
                wrong_length: 3,
            },
            "99, 1x0 and the empty line are wrong; the unfinished line is not counted"
        );
    }

    #[test]
    fn a_failing_process_fails_the_wait_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("err");
        let args = [
            "-c".to_string(),
            "echo first >&2; echo broken >&2; exit 3".to_string(),
        ];
        let mut processes =
            vec![KcatProcess::spawn(Path::new("/bin/sh"), &args, &stderr, false, "test").unwrap()];
        let deadline = Instant::now() + Duration::from_secs(30);
        let error = wait_all(&mut processes, deadline, |_| Ok(())).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("first | broken"), "{message}");
        assert!(message.starts_with("kcat (test) failed"), "{message}");

        let ok = ["-c".to_string(), "exit 0".to_string()];
        let mut processes =
            vec![KcatProcess::spawn(Path::new("/bin/sh"), &ok, &stderr, false, "ok").unwrap()];
        assert!(wait_all(&mut processes, deadline, |_| Ok(())).is_ok());

        let slow = ["-c".to_string(), "exec sleep 30".to_string()];
        let mut processes =
            vec![KcatProcess::spawn(Path::new("/bin/sh"), &slow, &stderr, false, "slow").unwrap()];
        let started = Instant::now();
        let error = wait_all(&mut processes, Instant::now(), |_| Ok(())).unwrap_err();
        assert!(
            error.to_string().contains("did not finish in time"),
            "{error}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "it was killed");
    }
}
