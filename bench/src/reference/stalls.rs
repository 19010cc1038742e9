//! The stall reference: how long this machine keeps its own CPUs from running, with no log
//! server around.
//!
//! One thread per allowed CPU, pinned there, reads the monotonic clock in a tight loop for
//! [`STALL_TIME`] and records every gap of at least [`STALL_MIN`] between two reads: time in
//! which that CPU ran nothing of ours although we wanted it. A gap in which the kernel switched
//! the thread out (its involuntary context switches grew) was another thread of this machine
//! running: counted apart, since a server thread that sleeps until woken may preempt such a
//! thread sooner than a spinning one does. The other gaps are interrupts and, in a virtual
//! machine, the host not running the vCPU at all: microseconds on bare metal, milliseconds on
//! a busy host. Nothing inside the machine can shorten those.
//!
//! A record whose way through the server needs a CPU at an instant when that CPU is stalled
//! waits for the rest of the stall, whatever the server does. For an instant drawn uniformly
//! from the measurement, that wait exceeds `x` with probability `sum(max(0, stall - x)) /
//! duration`; its quantiles are the floor under end-to-end latency percentiles (the `e2e`
//! scenario's). The report gives those of the worst CPU, from the stalls without a switch: a
//! record needs the CPU of its partition's shard, so the floor is real, and it is low (a
//! record's way crosses several CPUs and wake-ups, each of which can stall).

use std::time::{Duration, Instant};

use super::ReferenceError;
use crate::cpu;

/// How long each CPU is watched.
pub const STALL_TIME: Duration = Duration::from_millis(2000);
/// Shortest gap between two clock reads counted as a stall. A clock read takes tens of
/// nanoseconds and a timer interrupt a few microseconds, so 100 us is neither.
pub const STALL_MIN: Duration = Duration::from_micros(100);
/// Stalls recorded per CPU at most (memory sized before the measurement starts); 100 us each
/// would fill 10 s.
const STALLS_PER_CPU_MAX: usize = 100_000;

/// The stalls of one CPU.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuStalls {
    /// The CPU's id.
    pub cpu: usize,
    /// How long it was watched.
    pub watched: Duration,
    /// The length of each stall without a context switch (interrupts, the host), in the
    /// order seen (at most `STALLS_PER_CPU_MAX`).
    pub stalls: Vec<Duration>,
    /// Total length of the gaps in which another thread of this machine ran.
    pub preempted: Duration,
    /// Stalls seen after `stalls` was full (not in the figures, which are then low).
    pub dropped: u64,
}

impl CpuStalls {
    /// Share of the watched time spent in stalls.
    pub fn stalled_share(&self) -> f64 {
        let stalled: Duration = self.stalls.iter().sum();
        ratio(stalled, self.watched)
    }

    /// The longest stall.
    pub fn longest(&self) -> Duration {
        self.stalls.iter().copied().max().unwrap_or_default()
    }

    /// The wait, at `quantile` (0 to 1), of a record that needs this CPU at a uniformly
    /// random instant: the rest of the stall the instant falls in, zero outside stalls.
    pub fn delay_at_quantile(&self, quantile: f64) -> Duration {
        assert!((0.0..=1.0).contains(&quantile), "quantile {quantile}");
        let watched_s = self.watched.as_secs_f64();
        if watched_s <= 0.0 {
            return Duration::ZERO;
        }
        // P(delay > x) = sum(max(0, stall - x)) / watched: find the smallest x at which it
        // is at most `tail`. Between two consecutive stall lengths (longest first) the sum is
        // linear in x over the `k` stalls longer than x.
        let tail_s = (1.0 - quantile) * watched_s;
        let mut longest_first: Vec<f64> = self.stalls.iter().map(Duration::as_secs_f64).collect();
        longest_first.sort_unstable_by(|a, b| b.total_cmp(a));
        let mut sum_s = 0.0;
        for (index, &stall_s) in longest_first.iter().enumerate() {
            sum_s += stall_s;
            let k = (index + 1) as f64;
            let next_s = longest_first.get(index + 1).copied().unwrap_or(0.0);
            // At x = next_s the k longest stalls exceed x by sum_s - k * next_s.
            if sum_s - k * next_s >= tail_s {
                let x_s = (sum_s - tail_s) / k;
                return Duration::from_secs_f64(x_s.clamp(next_s, stall_s));
            }
        }
        Duration::ZERO
    }
}

/// The stalls of every CPU this process may run on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StallReference {
    /// One entry per CPU, by id.
    pub cpus: Vec<CpuStalls>,
    /// Remarks for the report (per-CPU shares and longest stalls).
    pub notes: Vec<String>,
}

impl StallReference {
    /// The worst CPU's delay at `quantile` (see [`CpuStalls::delay_at_quantile`]).
    pub fn delay_at_quantile(&self, quantile: f64) -> Duration {
        self.cpus
            .iter()
            .map(|cpu| cpu.delay_at_quantile(quantile))
            .max()
            .unwrap_or_default()
    }
}

/// Watches every allowed CPU for `duration` at once.
pub fn measure(duration: Duration) -> Result<StallReference, ReferenceError> {
    let cpus = cpu::allowed_cpus()
        .map_err(|source| ReferenceError::io("reading this process's CPUs", source))?;
    let watched = std::thread::scope(|scope| {
        let watchers: Vec<_> = cpus
            .iter()
            .map(|&cpu| scope.spawn(move || watch(cpu, duration)))
            .collect();
        watchers
            .into_iter()
            .map(|watcher| {
                watcher
                    .join()
                    .map_err(|_| ReferenceError::Thread("a stall watcher panicked".into()))?
            })
            .collect::<Result<Vec<_>, ReferenceError>>()
    })?;
    let notes = watched
        .iter()
        .map(|cpu| {
            let dropped = if cpu.dropped > 0 {
                format!(", {} more not counted", cpu.dropped)
            } else {
                String::new()
            };
            format!(
                "cpu {}: stalled {:.2} % of {:.1} s in {} stalls of {} us or more without a context switch \
                 (longest {:.2} ms{dropped}); other threads ran {:.2} % of it",
                cpu.cpu,
                100.0 * cpu.stalled_share(),
                cpu.watched.as_secs_f64(),
                cpu.stalls.len(),
                STALL_MIN.as_micros(),
                cpu.longest().as_secs_f64() * 1e3,
                100.0 * ratio(cpu.preempted, cpu.watched),
            )
        })
        .collect();
    Ok(StallReference {
        cpus: watched,
        notes,
    })
}

/// Spins on `cpu` for `duration`, recording the gaps between clock reads.
fn watch(cpu: usize, duration: Duration) -> Result<CpuStalls, ReferenceError> {
    cpu::pin_current_thread(cpu).map_err(|source| {
        ReferenceError::io(format!("pinning a stall watcher to cpu {cpu}"), source)
    })?;
    let mut stalls = Vec::with_capacity(STALLS_PER_CPU_MAX);
    let mut preempted = Duration::ZERO;
    let mut dropped = 0u64;
    let mut switches = involuntary_switches()?;
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        let gap = now - last;
        if gap >= STALL_MIN {
            // A switch shorter than STALL_MIN since the last stall is taken for this one's:
            // that errs towards fewer stalls, a lower floor.
            let switches_now = involuntary_switches()?;
            if switches_now != switches {
                preempted += gap;
            } else if stalls.len() < STALLS_PER_CPU_MAX {
                stalls.push(gap);
            } else {
                dropped += 1;
            }
            switches = switches_now;
        }
        last = now;
        if now - start >= duration {
            break;
        }
    }
    Ok(CpuStalls {
        cpu,
        watched: last - start,
        stalls,
        preempted,
        dropped,
    })
}

/// How often the kernel has switched the calling thread out while it could run.
fn involuntary_switches() -> Result<i64, ReferenceError> {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage; RUSAGE_THREAD asks for this thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    if rc != 0 {
        return Err(ReferenceError::io(
            "reading a stall watcher's context switches",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(usage.ru_nivcsw)
}

fn ratio(part: Duration, whole: Duration) -> f64 {
    if whole.is_zero() {
        0.0
    } else {
        part.as_secs_f64() / whole.as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(value: f64) -> Duration {
        Duration::from_secs_f64(value / 1e3)
    }

    fn cpu(stalls_ms: &[f64], watched_ms: f64) -> CpuStalls {
        CpuStalls {
            cpu: 0,
            watched: ms(watched_ms),
            stalls: stalls_ms.iter().copied().map(ms).collect(),
            preempted: Duration::ZERO,
            dropped: 0,
        }
    }

    fn close(a: Duration, b: Duration) -> bool {
        a.abs_diff(b) < Duration::from_nanos(10)
    }

    #[test]
    fn delays_follow_the_time_left_in_stalls() {
        // One 10 ms stall in 1 s: 1 % of instants wait, uniformly 0 to 10 ms.
        let one = cpu(&[10.0], 1000.0);
        assert_eq!(one.delay_at_quantile(0.99), Duration::ZERO);
        assert!(close(one.delay_at_quantile(0.995), ms(5.0)));
        assert!(close(one.delay_at_quantile(0.999), ms(9.0)));
        assert!(close(one.delay_at_quantile(1.0), ms(10.0)));
        // Stalls of 8 and 2 ms in 1 s: 0.6 % of instants wait more than 2 ms (6 ms of the
        // 8 ms stall), 0.2 % more than 6 ms.
        let two = cpu(&[2.0, 8.0], 1000.0);
        assert!(close(two.delay_at_quantile(0.994), ms(2.0)));
        assert!(close(two.delay_at_quantile(0.998), ms(6.0)));
        assert!(close(two.delay_at_quantile(0.9999), ms(7.9)));
        // Below 2 ms both stalls count: 0.8 % wait more than 1 ms (7 + 1 ms of them), and
        // at the stalled share (1 %) itself nobody waits.
        assert!(close(two.delay_at_quantile(0.992), ms(1.0)));
        assert_eq!(two.delay_at_quantile(0.99), Duration::ZERO);
        assert_eq!(two.longest(), ms(8.0));
        assert!((two.stalled_share() - 0.01).abs() < 1e-9);
        assert_eq!(cpu(&[], 1000.0).delay_at_quantile(0.9999), Duration::ZERO);
    }

    #[test]
    fn the_worst_cpu_sets_the_floor() {
        let reference = StallReference {
            cpus: vec![cpu(&[1.0], 1000.0), cpu(&[6.0], 1000.0)],
            notes: Vec::new(),
        };
        assert!(close(reference.delay_at_quantile(0.9999), ms(5.9)));
    }

    #[test]
    fn a_short_watch_measures_every_cpu() {
        let reference = measure(Duration::from_millis(20)).unwrap();
        assert_eq!(reference.cpus.len(), cpu::allowed_cpu_count());
        for cpu in &reference.cpus {
            assert!(cpu.watched >= Duration::from_millis(20), "{cpu:?}");
            assert!(cpu.stalls.iter().all(|&stall| stall >= STALL_MIN));
        }
        assert_eq!(reference.notes.len(), reference.cpus.len());
    }
}
