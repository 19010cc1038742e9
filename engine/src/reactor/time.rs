//! Timers through the ring (IORING_OP_TIMEOUT), so a sleeping task costs no thread.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::op::Op;

/// Completes after `duration` (durations past ~292 billion years wait that long).
pub async fn sleep(duration: Duration) {
    // The kernel's seconds are signed: a larger count reads as negative and the timeout is
    // refused with -EINVAL, which would end the sleep at once.
    let seconds = duration.as_secs().min(i64::MAX as u64);
    let timespec = Box::new(
        types::Timespec::new()
            .sec(seconds)
            .nsec(duration.subsec_nanos()),
    );
    let entry = opcode::Timeout::new(&*timespec as *const types::Timespec).build();
    // -ETIME is the normal outcome, -ECANCELED a cancel at shutdown: both end the sleep.
    let (_completion, _timespec) = Op::submit(entry, timespec).await;
}

/// Completes at `deadline` (at once if it has passed).
pub async fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        sleep(deadline - now).await;
    }
}

/// Returned by [`timeout`] when the deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// Runs `future` until it completes or `duration` passes, whichever is first.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut timer = pin!(sleep(duration));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{block_on, spawn, RingConfig};

    /// A duration past what the kernel's signed seconds hold (`Duration::MAX` as "forever")
    /// sleeps as long as the kernel can, instead of being refused (-EINVAL) and ending at once.
    #[test]
    fn a_sleep_longer_than_the_kernel_holds_does_not_end_at_once() {
        block_on(RingConfig::default(), async {
            for forever in [Duration::MAX, Duration::from_secs(1 << 63)] {
                assert_eq!(
                    timeout(Duration::from_millis(5), sleep(forever)).await,
                    Err(Elapsed),
                    "sleep({forever:?}) ended before a 5 ms timeout"
                );
            }
        })
        .unwrap();
    }

    #[test]
    fn sleep_waits_and_timeout_fires() {
        block_on(RingConfig::default(), async {
            let start = Instant::now();
            sleep(Duration::from_millis(20)).await;
            assert!(start.elapsed() >= Duration::from_millis(20));
            let never = std::future::pending::<()>();
            assert_eq!(timeout(Duration::from_millis(5), never).await, Err(Elapsed));
            let quick = spawn(async { 7 });
            assert_eq!(timeout(Duration::from_secs(5), quick).await, Ok(7));
        })
        .unwrap();
    }
}
