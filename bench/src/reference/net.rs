//! The net reference: raw loopback TCP through io_uring, with no log server around.
//!
//! A sender thread and a receiver thread (pinned to different cores when the process may use
//! two or more) share one loopback connection. The sender keeps one 1 MiB send in flight (the
//! order a stream needs), walking through a [`SOURCE_SPAN_BYTES`] buffer it never changes; the
//! receiver keeps one 1 MiB receive in flight. Each run stops after a byte count or a time
//! limit, whichever comes first. SEND and SEND_ZC are both tried by default and the faster is
//! reported.
//!
//! Why a span larger than the CPU caches: a log server sends data that is in memory but not in
//! the cache (a hot consume reads hundreds of MB), and the send copy reads it from DRAM. Sending
//! one 1 MiB buffer over and over reads it from the cache instead; on the 2-core development VM
//! (32 MiB L3) that copy took a quarter of the sender's time instead of half, and the reference
//! measured a limit no server of uncached data can reach.

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use io_uring::{cqueue, opcode, types};

use super::aligned_buf::AlignedBuf;
use super::ring::{Ring, RingSetup};
use super::ReferenceError;
use crate::cpu;
use crate::throughput::ThroughputTimeline;
use crate::units::mb_per_s;

/// Bytes per send and per receive (1 MiB).
pub const CHUNK_BYTES: usize = 1 << 20;
/// Bytes the sender's sends walk through before starting over: larger than the last-level
/// cache of common CPUs, so sent bytes come from memory, as a server's do.
pub const SOURCE_SPAN_BYTES: usize = 256 << 20;
/// Time limit for all runs of one net reference together (split between the send modes).
pub const TIME_MAX: Duration = Duration::from_secs(2);

/// Which io_uring send operation the sender uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SendMode {
    /// Try SEND and SEND_ZC, report the faster.
    Auto,
    /// IORING_OP_SEND (copies into the socket buffer).
    Send,
    /// IORING_OP_SEND_ZC (zero copy; the buffer is released by a later notification).
    Zc,
}

impl SendMode {
    /// Name for the report.
    pub fn name(self) -> &'static str {
        match self {
            SendMode::Auto => "auto",
            SendMode::Send => "SEND",
            SendMode::Zc => "SEND_ZC",
        }
    }
}

/// What to measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// Bytes each run sends (at most).
    pub bytes: u64,
    /// Send operation(s) to measure.
    pub mode: SendMode,
    /// Time limit for all runs together.
    pub time_max: Duration,
}

impl NetConfig {
    /// The standard time limit for runs of `bytes` in `mode`.
    pub fn new(bytes: u64, mode: SendMode) -> Self {
        Self {
            bytes,
            mode,
            time_max: TIME_MAX,
        }
    }
}

/// One run with one send operation.
#[derive(Clone, Debug)]
pub struct NetRun {
    /// [`SendMode::Send`] or [`SendMode::Zc`].
    pub mode: SendMode,
    /// Bytes the receiver got.
    pub bytes: u64,
    /// Seconds from the common start to the receiver seeing the end of the stream.
    pub seconds: f64,
    /// Bytes received per 100 ms.
    pub timeline: ThroughputTimeline,
}

impl NetRun {
    /// MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.seconds)
    }
}

/// The net reference's results.
#[derive(Clone, Debug)]
pub struct NetReference {
    /// Every completed run.
    pub runs: Vec<NetRun>,
    /// `(sender cpu, receiver cpu)` when the threads were pinned.
    pub pinned: Option<(usize, usize)>,
    /// How the senders' rings were set up.
    pub ring_setup: Option<RingSetup>,
    /// Anything the reader should know (an unsupported mode), one line each.
    pub notes: Vec<String>,
}

impl NetReference {
    /// The fastest run.
    pub fn best(&self) -> Option<&NetRun> {
        self.runs
            .iter()
            .max_by(|first, second| first.mb_per_s().total_cmp(&second.mb_per_s()))
    }

    /// MB/s of the fastest run.
    pub fn best_mb_per_s(&self) -> Option<f64> {
        self.best().map(NetRun::mb_per_s)
    }
}

/// Measures loopback TCP through io_uring as `config` asks.
pub fn measure(config: &NetConfig) -> Result<NetReference, ReferenceError> {
    let cpus =
        cpu::allowed_cpus().map_err(|error| ReferenceError::io("sched_getaffinity", error))?;
    let pinned = match cpus.as_slice() {
        [sender, receiver, ..] => Some((*sender, *receiver)),
        _ => None,
    };
    let mut notes = Vec::new();
    let mut modes = match config.mode {
        SendMode::Auto => vec![SendMode::Send, SendMode::Zc],
        single => vec![single],
    };
    if modes.contains(&SendMode::Zc) && !send_zc_supported() {
        modes.retain(|mode| *mode != SendMode::Zc);
        notes.push("SEND_ZC is not supported by this kernel: not measured".into());
    }
    if modes.is_empty() {
        return Err(ReferenceError::io(
            "net reference",
            io::Error::new(io::ErrorKind::Unsupported, "no usable send operation"),
        ));
    }
    let time_max_per_run = config.time_max / modes.len() as u32;
    let mut runs = Vec::with_capacity(modes.len());
    let mut ring_setup = None;
    for mode in modes {
        let (run, setup) = run_once(mode, config.bytes, time_max_per_run, pinned)?;
        runs.push(run);
        ring_setup = Some(setup);
    }
    Ok(NetReference {
        runs,
        pinned,
        ring_setup,
        notes,
    })
}

/// Whether the kernel has IORING_OP_SEND_ZC.
fn send_zc_supported() -> bool {
    Ring::new(2, Vec::new()).is_ok_and(|ring| ring.supports(opcode::SendZc::CODE))
}

/// What each thread reports once its ring is built: ready, or why not.
type Ready = Result<(), ReferenceError>;

/// One connection, one sender and one receiver thread, `bytes` or `time_max`.
fn run_once(
    mode: SendMode,
    bytes: u64,
    time_max: Duration,
    pinned: Option<(usize, usize)>,
) -> Result<(NetRun, RingSetup), ReferenceError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|error| ReferenceError::io("bind 127.0.0.1:0", error))?;
    let address = listener
        .local_addr()
        .map_err(|error| ReferenceError::io("local address", error))?;
    // Connect completes against the listen backlog, so one thread can set up both ends.
    let sending = TcpStream::connect(address)
        .map_err(|error| ReferenceError::io(format!("connect {address}"), error))?;
    let (receiving, _) = listener
        .accept()
        .map_err(|error| ReferenceError::io(format!("accept on {address}"), error))?;

    let (ready_sender, ready) = mpsc::channel::<Ready>();
    let (start_sender, start_for_sender) = mpsc::channel::<Instant>();
    let (start_receiver, start_for_receiver) = mpsc::channel::<Instant>();
    let ready_for_receiver = ready_sender.clone();
    let sender = spawn("ringlog-ref-send", move || {
        send_side(
            sending,
            mode,
            bytes,
            time_max,
            pinned.map(|(cpu, _)| cpu),
            ready_sender,
            start_for_sender,
        )
    })?;
    let receiver = spawn("ringlog-ref-recv", move || {
        receive_side(
            receiving,
            time_max,
            pinned.map(|(_, cpu)| cpu),
            ready_for_receiver,
            start_for_receiver,
        )
    })?;
    // Both rings built (or one failed): start together, or let both threads go home.
    let mut all_ready = true;
    let mut ready_error = None;
    for _ in 0..2 {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                all_ready = false;
                ready_error.get_or_insert(error);
            }
            Err(_) => all_ready = false,
        }
    }
    if all_ready {
        let start = Instant::now();
        // A thread that already exited makes these fail; its join below reports why.
        let _ = start_sender.send(start);
        let _ = start_receiver.send(start);
    }
    drop((start_sender, start_receiver));
    let sent = join(sender, "sender");
    let received = join(receiver, "receiver");
    if let Some(error) = ready_error {
        return Err(error);
    }
    let setup = sent?;
    let (bytes_received, seconds, timeline) = received?;
    Ok((
        NetRun {
            mode,
            bytes: bytes_received,
            seconds,
            timeline,
        },
        setup,
    ))
}

fn spawn<T: Send + 'static>(
    name: &str,
    body: impl FnOnce() -> Result<T, ReferenceError> + Send + 'static,
) -> Result<thread::JoinHandle<Result<T, ReferenceError>>, ReferenceError> {
    thread::Builder::new()
        .name(name.into())
        .spawn(body)
        .map_err(|error| ReferenceError::io(format!("spawn {name} thread"), error))
}

fn join<T>(
    handle: thread::JoinHandle<Result<T, ReferenceError>>,
    what: &str,
) -> Result<T, ReferenceError> {
    handle
        .join()
        .map_err(|_| ReferenceError::Thread(format!("net reference {what} thread panicked")))?
}

/// Pins the thread (if asked), builds its ring, reports ready and waits for the start.
fn prepare(
    pin: Option<usize>,
    buffer: AlignedBuf,
    ready: &mpsc::Sender<Ready>,
    start: &mpsc::Receiver<Instant>,
) -> Result<Option<(Ring, Instant)>, ReferenceError> {
    let built = pin
        .map_or(Ok(()), cpu::pin_current_thread)
        .map_err(|error| ReferenceError::io("pin thread", error))
        .and_then(|()| {
            Ring::new(8, vec![buffer]).map_err(|error| ReferenceError::io("io_uring setup", error))
        });
    match built {
        Ok(ring) => {
            let _ = ready.send(Ok(()));
            // No start means the other side failed: nothing to measure, not an error here.
            Ok(start.recv().ok().map(|instant| (ring, instant)))
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            Ok(None)
        }
    }
}

/// The sender: one send in flight until `bytes` are sent or `time_max` passed, then shuts
/// down its side of the connection so the receiver sees the end.
fn send_side(
    stream: TcpStream,
    mode: SendMode,
    bytes: u64,
    time_max: Duration,
    pin: Option<usize>,
    ready: mpsc::Sender<Ready>,
    start: mpsc::Receiver<Instant>,
) -> Result<RingSetup, ReferenceError> {
    let source = AlignedBuf::new(SOURCE_SPAN_BYTES);
    let Some((mut ring, started)) = prepare(pin, source, &ready, &start)? else {
        return Ok(RingSetup::Plain);
    };
    let setup = ring.setup();
    let fd = types::Fd(stream.as_raw_fd());
    let mut completions = Vec::with_capacity(4);
    let mut sent_bytes = 0u64;
    // Where in the source span the next send starts.
    let mut chunk_offset = 0usize;
    let mut send_in_flight = false;
    let mut failure = None;
    loop {
        let more = sent_bytes < bytes && started.elapsed() < time_max && failure.is_none();
        if more && !send_in_flight {
            let Some((pointer, buffer_bytes)) = ring.buffer_raw(0) else {
                break;
            };
            let remaining = usize::try_from(bytes - sent_bytes).unwrap_or(usize::MAX);
            let len_bytes = (buffer_bytes - chunk_offset)
                .min(CHUNK_BYTES)
                .min(remaining);
            // SAFETY: `chunk_offset < buffer_bytes`, so the pointer stays inside buffer 0.
            let pointer = unsafe { pointer.add(chunk_offset) }.cast_const();
            // The chunk is at most CHUNK_BYTES, which fits in u32.
            let len_bytes = u32::try_from(len_bytes).unwrap_or(u32::MAX);
            let entry = match mode {
                SendMode::Zc => opcode::SendZc::new(fd, pointer, len_bytes)
                    .flags(libc::MSG_WAITALL)
                    .build(),
                SendMode::Send | SendMode::Auto => opcode::Send::new(fd, pointer, len_bytes)
                    .flags(libc::MSG_WAITALL)
                    .build(),
            };
            // SAFETY: the send reads `len_bytes` from inside ring buffer 0, which the ring owns
            // until the operation (and, for SEND_ZC, its notification) completes.
            unsafe { ring.push(&entry) }
                .map_err(|error| ReferenceError::io("io_uring push", error))?;
            send_in_flight = true;
        }
        if ring.in_flight() == 0 {
            break;
        }
        ring.submit_and_wait(1)
            .map_err(|error| ReferenceError::io("io_uring submit", error))?;
        ring.reap(&mut completions);
        for completion in &completions {
            if cqueue::notif(completion.flags()) {
                // SEND_ZC: the kernel is done with the buffer; nothing to do, it never changes.
                continue;
            }
            send_in_flight = false;
            match usize::try_from(completion.result()) {
                Ok(sent) => {
                    sent_bytes += sent as u64;
                    chunk_offset = (chunk_offset + sent) % SOURCE_SPAN_BYTES;
                }
                Err(_) => {
                    failure.get_or_insert(ReferenceError::io(
                        format!("{} on loopback", mode.name()),
                        io::Error::from_raw_os_error(-completion.result()),
                    ));
                }
            }
        }
    }
    // Tell the receiver that the stream ends here (also on failure, so it does not wait).
    let _ = stream.shutdown(Shutdown::Write);
    match failure {
        Some(error) => Err(error),
        None => Ok(setup),
    }
}

/// The receiver: one receive in flight until the sender closes its side; bytes, seconds and
/// the timeline measured from the common start.
fn receive_side(
    stream: TcpStream,
    time_max: Duration,
    pin: Option<usize>,
    ready: mpsc::Sender<Ready>,
    start: mpsc::Receiver<Instant>,
) -> Result<(u64, f64, ThroughputTimeline), ReferenceError> {
    let Some((mut ring, started)) = prepare(pin, AlignedBuf::new(CHUNK_BYTES), &ready, &start)?
    else {
        return Ok((0, 0.0, ThroughputTimeline::default()));
    };
    let fd = types::Fd(stream.as_raw_fd());
    let mut completions = Vec::with_capacity(2);
    let mut timeline = ThroughputTimeline::with_expected_duration(time_max);
    let mut received_bytes = 0u64;
    let mut finished = false;
    let mut failure = None;
    while !finished || ring.in_flight() > 0 {
        if !finished && ring.in_flight() == 0 {
            let Some((pointer, buffer_bytes)) = ring.buffer_raw(0) else {
                break;
            };
            let len_bytes = u32::try_from(buffer_bytes).unwrap_or(u32::MAX);
            let entry = opcode::Recv::new(fd, pointer, len_bytes).build();
            // SAFETY: the receive writes at most `len_bytes` into ring buffer 0, which the ring
            // owns until the operation completes.
            unsafe { ring.push(&entry) }
                .map_err(|error| ReferenceError::io("io_uring push", error))?;
        }
        ring.submit_and_wait(1)
            .map_err(|error| ReferenceError::io("io_uring submit", error))?;
        ring.reap(&mut completions);
        for completion in &completions {
            match u64::try_from(completion.result()) {
                Ok(0) => finished = true,
                Ok(received) => {
                    received_bytes += received;
                    timeline.record(started.elapsed(), received);
                }
                Err(_) => {
                    finished = true;
                    failure.get_or_insert(ReferenceError::io(
                        "receive on loopback",
                        io::Error::from_raw_os_error(-completion.result()),
                    ));
                }
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    match failure {
        Some(error) => Err(error),
        None => Ok((received_bytes, seconds, timeline)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_send_moves_every_byte() {
        let config = NetConfig {
            bytes: 64 * CHUNK_BYTES as u64 + 5,
            mode: SendMode::Send,
            time_max: Duration::from_secs(30),
        };
        let reference = measure(&config).unwrap();
        assert_eq!(reference.runs.len(), 1);
        assert_eq!(reference.runs[0].bytes, config.bytes);
        assert!(reference.best_mb_per_s().unwrap() > 0.0);
    }

    #[test]
    fn auto_tries_both_modes_where_supported() {
        let config = NetConfig {
            bytes: 16 * CHUNK_BYTES as u64,
            mode: SendMode::Auto,
            time_max: Duration::from_secs(30),
        };
        let reference = measure(&config).unwrap();
        let expected_runs = if send_zc_supported() { 2 } else { 1 };
        assert_eq!(reference.runs.len(), expected_runs);
        for run in &reference.runs {
            assert_eq!(run.bytes, config.bytes, "{:?}", run.mode);
        }
    }
}
