//! A single-threaded executor for `'static` local futures.
//!
//! Tasks live in a slab indexed by a 32-bit slot with a 32-bit generation, packed into the
//! waker's data word, so waking allocates nothing. Wakers may only be used on the shard thread
//! that created them; cross-thread wake-ups go through [`super::mail`].

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use super::ring::with_reactor;

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;

/// Tasks polled in one pass before the loop looks at the ring again, so a busy task set cannot
/// starve I/O completions.
const POLLS_PER_PASS_MAX: usize = 1024;

struct Slot {
    generation: u32,
    future: Option<LocalFuture>,
    /// False once the task finished or was cancelled; the slot is then free.
    live: bool,
}

/// Task table plus ready queue.
pub(crate) struct Executor {
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<u32>>,
    ready: RefCell<VecDeque<u64>>,
    shutting_down: Cell<bool>,
}

fn pack(index: u32, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(index)
}

fn unpack(id: u64) -> (u32, u32) {
    (id as u32, (id >> 32) as u32)
}

/// Identifies a task for [`Executor::is_finished`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskId(u64);

impl Executor {
    pub(crate) fn new() -> Executor {
        Executor {
            slots: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            ready: RefCell::new(VecDeque::new()),
            shutting_down: Cell::new(false),
        }
    }

    fn insert(&self, future: LocalFuture) -> TaskId {
        let mut slots = self.slots.borrow_mut();
        let index = match self.free.borrow_mut().pop() {
            Some(index) => index,
            None => {
                let index = u32::try_from(slots.len()).expect("fewer than 2^32 tasks");
                slots.push(Slot {
                    generation: 0,
                    future: None,
                    live: false,
                });
                index
            }
        };
        let slot = &mut slots[index as usize];
        assert!(!slot.live, "free slot in use");
        slot.generation = slot.generation.wrapping_add(1);
        slot.future = Some(future);
        slot.live = true;
        let id = pack(index, slot.generation);
        self.ready.borrow_mut().push_back(id);
        TaskId(id)
    }

    pub(crate) fn spawn_root(&self, future: impl Future<Output = ()> + 'static) -> TaskId {
        self.insert(Box::pin(future))
    }

    pub(crate) fn schedule(&self, id: u64) {
        self.ready.borrow_mut().push_back(id);
    }

    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.borrow().is_empty()
    }

    pub(crate) fn is_finished(&self, task: TaskId) -> bool {
        let (index, generation) = unpack(task.0);
        let slots = self.slots.borrow();
        let slot = &slots[index as usize];
        slot.generation != generation || !slot.live
    }

    /// Polls ready tasks, at most [`POLLS_PER_PASS_MAX`] of them.
    pub(crate) fn run_ready(&self) {
        for _ in 0..POLLS_PER_PASS_MAX {
            let Some(id) = self.ready.borrow_mut().pop_front() else {
                return;
            };
            self.poll_task(id);
        }
    }

    fn poll_task(&self, id: u64) {
        let (index, generation) = unpack(id);
        // Take the future out so the task may spawn or wake others while it runs.
        let future = {
            let mut slots = self.slots.borrow_mut();
            let Some(slot) = slots.get_mut(index as usize) else {
                return;
            };
            if slot.generation != generation || !slot.live {
                return; // A stale wake-up for a finished task.
            }
            slot.future.take()
        };
        // None: the task is being polled further up the stack (woken itself); skip.
        let Some(mut future) = future else { return };
        let waker = task_waker(id);
        let mut context = Context::from_waker(&waker);
        let poll = future.as_mut().poll(&mut context);
        let mut slots = self.slots.borrow_mut();
        let slot = &mut slots[index as usize];
        match poll {
            Poll::Pending => slot.future = Some(future),
            Poll::Ready(()) => {
                slot.live = false;
                self.free.borrow_mut().push(index);
                drop(slots);
                drop(future);
            }
        }
    }

    /// Drops every task (cancelling their in-flight ops) at shutdown.
    pub(crate) fn shutdown(&self) {
        self.shutting_down.set(true);
        // Dropping a future may spawn or wake; take them out first, then drop, bounded rounds.
        for _ in 0..16 {
            let futures: Vec<LocalFuture> = {
                let mut slots = self.slots.borrow_mut();
                slots
                    .iter_mut()
                    .filter(|slot| slot.live)
                    .filter_map(|slot| {
                        slot.live = false;
                        slot.future.take()
                    })
                    .collect()
            };
            if futures.is_empty() {
                break;
            }
            drop(futures);
        }
        self.ready.borrow_mut().clear();
    }
}

fn task_waker(id: u64) -> Waker {
    // SAFETY: the vtable functions below treat the data word as a plain integer task id; none
    // dereferences it, so any value is sound.
    unsafe { Waker::from_raw(raw_waker(id)) }
}

fn raw_waker(id: u64) -> RawWaker {
    RawWaker::new(id as usize as *const (), &VTABLE)
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(
    |data| raw_waker(data as usize as u64),
    |data| wake_id(data as usize as u64),
    |data| wake_id(data as usize as u64),
    |_| {},
);

fn wake_id(id: u64) {
    with_reactor(|reactor| {
        if !reactor.executor.shutting_down.get() {
            reactor.executor.schedule(id);
        }
    });
}

struct JoinState<T> {
    output: Option<T>,
    finished: bool,
    waiter: Option<Waker>,
}

/// Awaits the output of a spawned task. Dropping it detaches the task.
pub struct JoinHandle<T> {
    state: Rc<RefCell<JoinState<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished.
    pub fn is_finished(&self) -> bool {
        self.state.borrow().finished
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut state = self.state.borrow_mut();
        match state.output.take() {
            Some(output) => Poll::Ready(output),
            None => {
                assert!(!state.finished, "JoinHandle polled after completion");
                state.waiter = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// Runs `future` as a task on this shard; it makes progress while the caller awaits other work.
pub fn spawn<T: 'static>(future: impl Future<Output = T> + 'static) -> JoinHandle<T> {
    let state = Rc::new(RefCell::new(JoinState {
        output: None,
        finished: false,
        waiter: None,
    }));
    let task_state = Rc::clone(&state);
    let task = async move {
        let output = future.await;
        let waiter = {
            let mut state = task_state.borrow_mut();
            state.output = Some(output);
            state.finished = true;
            state.waiter.take()
        };
        if let Some(waiter) = waiter {
            waiter.wake();
        }
    };
    with_reactor(|reactor| reactor.executor.insert(Box::pin(task)));
    JoinHandle { state }
}

/// Lets other ready tasks run before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
