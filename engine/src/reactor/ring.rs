//! The ring and the loop that drives it: submit, wait, dispatch completions, run tasks.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, squeue, IoUring};

use super::executor::Executor;
use super::op::OpTable;

/// Ring sizing, from the server configuration.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Submission queue entries (the completion queue gets twice as many).
    pub entries: u32,
    /// Upper bound on operations in flight at once on this shard.
    pub ops_in_flight_max: usize,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 1024,
            ops_in_flight_max: 16 * 1024,
        }
    }
}

/// Which optional setup flags the kernel accepted for this ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFeatures {
    /// IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN took effect.
    pub defer_taskrun: bool,
}

/// Everything a shard thread owns; reached through a thread-local so ops need no handle.
pub(crate) struct Reactor {
    ring: RefCell<IoUring>,
    pub(crate) ops: RefCell<OpTable>,
    pub(crate) executor: Executor,
    pub(crate) features: RingFeatures,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Reactor>>> = const { RefCell::new(None) };
}

/// Runs `f` with the reactor of this thread. Panics when called outside [`block_on`]: every op
/// must be created on a shard thread, and doing otherwise is a programming error.
pub(crate) fn with_reactor<R>(f: impl FnOnce(&Reactor) -> R) -> R {
    CURRENT.with(|current| {
        let current = current.borrow();
        let reactor = current
            .as_ref()
            .expect("ring operation used outside reactor::block_on");
        f(reactor)
    })
}

/// The setup flags in effect on this thread's ring.
pub fn features() -> RingFeatures {
    with_reactor(|reactor| reactor.features)
}

fn build_ring(config: &RingConfig) -> io::Result<(IoUring, RingFeatures)> {
    let cq_entries = config.entries.saturating_mul(2);
    let preferred = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .setup_cqsize(cq_entries)
        .build(config.entries);
    match preferred {
        Ok(ring) => Ok((
            ring,
            RingFeatures {
                defer_taskrun: true,
            },
        )),
        Err(error) => {
            tracing::info!(%error, "io_uring SINGLE_ISSUER|DEFER_TASKRUN unavailable; using a plain ring");
            let ring = IoUring::builder()
                .setup_cqsize(cq_entries)
                .build(config.entries)?;
            Ok((
                ring,
                RingFeatures {
                    defer_taskrun: false,
                },
            ))
        }
    }
}

impl Reactor {
    /// Queues one submission entry, flushing the queue to the kernel first when it is full.
    pub(crate) fn push(&self, entry: &squeue::Entry) {
        self.push_all(std::slice::from_ref(entry));
    }

    /// Queues entries that must reach the kernel in one submission (a linked chain).
    pub(crate) fn push_all(&self, entries: &[squeue::Entry]) {
        let mut ring = self.ring.borrow_mut();
        assert!(entries.len() <= ring.params().sq_entries() as usize);
        loop {
            let free = {
                let sq = ring.submission();
                sq.capacity() - sq.len()
            };
            if free >= entries.len() {
                break;
            }
            // The queue is full: hand what is there to the kernel. EBUSY means the completion
            // queue is backed up; the loop in `block_on` drains it, so retry after that.
            if let Err(error) = ring.submit() {
                assert!(
                    error.raw_os_error() == Some(libc::EBUSY)
                        || error.raw_os_error() == Some(libc::EAGAIN)
                        || error.raw_os_error() == Some(libc::EINTR),
                    "io_uring submit failed: {error}"
                );
                drop(ring);
                self.reap();
                ring = self.ring.borrow_mut();
            }
        }
        // SAFETY: every entry points at memory owned by an op slot (see op.rs), which keeps it
        // alive until the completion is reaped, even if the future that created it is dropped.
        unsafe {
            ring.submission()
                .push_multiple(entries)
                .expect("space was checked above");
        }
    }

    /// Entries queued and not yet handed to the kernel.
    pub(crate) fn queued_entries(&self) -> usize {
        self.ring.borrow_mut().submission().len()
    }

    /// Hands every queued entry to the kernel now, so that each has resolved its descriptor
    /// before the caller goes on (and possibly closes it). Called when an op is abandoned:
    /// its owner may close the descriptor right after, and an entry still queued would then
    /// run on whatever file or socket gets that number next, in any thread of the process.
    pub(crate) fn flush(&self) {
        // Bounded: each round the kernel takes entries, or the completion queue is drained.
        for _ in 0..1024 {
            let queued = self.ring.borrow_mut().submission().len();
            if queued == 0 {
                return;
            }
            let result = self.ring.borrow().submit();
            if let Err(error) = result {
                assert!(
                    matches!(
                        error.raw_os_error(),
                        Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
                    ),
                    "io_uring submit failed: {error}"
                );
                self.reap();
            }
        }
        panic!("the kernel does not take queued io_uring entries");
    }

    /// Moves every available completion to its op slot and wakes the waiting tasks.
    fn reap(&self) -> usize {
        let mut batch: [Option<cqueue::Entry>; 64] = [const { None }; 64];
        let mut total = 0;
        loop {
            let mut count = 0;
            {
                let mut ring = self.ring.borrow_mut();
                let mut cq = ring.completion();
                for slot in batch.iter_mut() {
                    match cq.next() {
                        Some(cqe) => {
                            *slot = Some(cqe);
                            count += 1;
                        }
                        None => break,
                    }
                }
            }
            if count == 0 {
                return total;
            }
            let mut ops = self.ops.borrow_mut();
            for cqe in batch.iter_mut().take(count).filter_map(Option::take) {
                ops.complete(cqe.user_data(), cqe.result(), cqe.flags());
            }
            total += count;
        }
    }

    fn submit_and_wait(&self, wait: bool) {
        let ring = self.ring.borrow();
        let result = if wait {
            ring.submit_and_wait(1)
        } else {
            ring.submit()
        };
        if let Err(error) = result {
            let code = error.raw_os_error();
            assert!(
                matches!(
                    code,
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::ETIME)
                ),
                "io_uring enter failed: {error}"
            );
        }
    }
}

/// Builds a ring for this thread, runs `future` and every task it spawns until `future`
/// completes, then drops the remaining tasks and the ring.
///
/// Blocks the calling thread: call it once per shard thread (or in a test).
pub fn block_on<F: Future + 'static>(config: RingConfig, future: F) -> io::Result<F::Output> {
    let (ring, features) = build_ring(&config)?;
    let reactor = Rc::new(Reactor {
        ring: RefCell::new(ring),
        ops: RefCell::new(OpTable::new(config.ops_in_flight_max)),
        executor: Executor::new(),
        features,
    });
    CURRENT.with(|current| {
        let previous = current.borrow_mut().replace(Rc::clone(&reactor));
        assert!(previous.is_none(), "block_on is not reentrant");
    });
    // From here on the reactor is taken down by `installed`'s drop, on return and when a
    // task's panic unwinds through here alike.
    let installed = Installed(Rc::clone(&reactor));
    let output = Rc::new(RefCell::new(None));
    let slot = Rc::clone(&output);
    let root = reactor.executor.spawn_root(async move {
        let value = future.await;
        *slot.borrow_mut() = Some(value);
    });
    loop {
        reactor.executor.run_ready();
        if reactor.executor.is_finished(root) {
            break;
        }
        let idle = !reactor.executor.has_ready();
        reactor.submit_and_wait(idle);
        reactor.reap();
    }
    drop(installed);
    let value = output.borrow_mut().take();
    Ok(value.expect("the root task finished"))
}

/// The reactor installed as this thread's current one by [`block_on`].
struct Installed(Rc<Reactor>);

impl Drop for Installed {
    /// Drops the tasks while the reactor is still current (their ops cancel through it),
    /// lets the kernel finish or cancel what they left in flight, so no memory it may still
    /// touch is freed under it, and only then uninstalls the reactor. Otherwise a panic in a
    /// task would leave it installed until the thread's locals are destroyed, where dropping
    /// the tasks' ops could no longer reach it and the process would abort.
    fn drop(&mut self) {
        self.0.executor.shutdown();
        drain_in_flight(&self.0);
        CURRENT.with(|current| current.borrow_mut().take());
    }
}

/// How long a shutdown waits for SEND_ZC notifications once nothing else is in flight: a
/// peer that never reads (nor closes) holds its unacknowledged bytes, and so the notification,
/// for as long as TCP keeps retrying.
const NOTIFICATIONS_WAIT_MAX: Duration = Duration::from_secs(2);
/// Each wait for completions in the drain also ends after this, so the time is checked.
const DRAIN_TICK: Duration = Duration::from_millis(50);

fn drain_in_flight(reactor: &Reactor) {
    let cancel = io_uring::opcode::AsyncCancel2::new(io_uring::types::CancelBuilder::any())
        .build()
        .user_data(super::op::USER_DATA_IGNORED);
    reactor.push(&cancel);
    let started = Instant::now();
    // Bounded: each round either reaps completions or waits for one (or the tick); a few
    // thousand rounds covers every op the table can hold.
    for _ in 0..100_000 {
        {
            let ops = reactor.ops.borrow();
            if ops.in_flight() == 0 {
                return;
            }
            if started.elapsed() >= NOTIFICATIONS_WAIT_MAX && ops.only_notifications_pending() {
                // Their buffers are freed with the table: safe, see `only_notifications_pending`
                // (what the kernel may still retransmit from those pages is then undefined).
                tracing::warn!(
                    sends = ops.in_flight(),
                    "ring shut down with zero-copy sends a peer never acknowledged"
                );
                return;
            }
        }
        let tick = io_uring::types::Timespec::from(DRAIN_TICK);
        let timeout = io_uring::opcode::Timeout::new(&tick)
            .build()
            .user_data(super::op::USER_DATA_IGNORED);
        reactor.push(&timeout);
        // The kernel copied the timespec when `push` or this submission handed it over.
        reactor.submit_and_wait(true);
        reactor.reap();
    }
    tracing::warn!(
        ops = reactor.ops.borrow().in_flight(),
        "ring shut down with operations still in flight; their buffers are leaked"
    );
    // The kernel may still write into their buffers after the ring closes: leaked, never freed.
    reactor.ops.borrow_mut().leak_in_flight();
}
