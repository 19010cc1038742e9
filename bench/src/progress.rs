//! A progress bar on stderr for runs longer than a few seconds, when stderr is a terminal.
//!
//! Load threads only add to an atomic counter ([`ProgressCounter::add_bytes`], one relaxed add
//! per batch); a separate thread redraws a few times a second. Nothing is drawn when stderr is
//! not a terminal (scripts, CI) or before [`SHOW_AFTER`] has passed.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use crate::units::{format_bytes, mb_per_s};

/// Runs shorter than this never show a bar.
pub const SHOW_AFTER: Duration = Duration::from_secs(2);
/// Time between redraws.
const REDRAW_INTERVAL: Duration = Duration::from_millis(200);
/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 30;

/// What "done" means for the bar.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ProgressGoal {
    /// The run stops after this long.
    Duration(Duration),
    /// The run stops after this many bytes.
    Bytes(u64),
}

/// A cheap, cloneable handle that load threads add completed bytes to.
#[derive(Clone, Debug, Default)]
pub struct ProgressCounter {
    bytes: Arc<AtomicU64>,
}

impl ProgressCounter {
    /// Counts `bytes` as done. Call per batch, not per record.
    pub fn add_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Bytes counted so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
    }
}

/// The bar: created before the run, started when the measured load starts, finished after.
#[derive(Debug)]
pub struct Progress {
    label: String,
    goal: ProgressGoal,
    counter: ProgressCounter,
    stop: Option<mpsc::Sender<()>>,
    drawer: Option<thread::JoinHandle<()>>,
}

impl Progress {
    /// A bar labelled `label` (not drawn until [`Progress::begin`]).
    pub fn new(label: impl Into<String>, goal: ProgressGoal) -> Self {
        Self {
            label: label.into(),
            goal,
            counter: ProgressCounter::default(),
            stop: None,
            drawer: None,
        }
    }

    /// The handle for load threads.
    pub fn counter(&self) -> ProgressCounter {
        self.counter.clone()
    }

    /// Starts the clock (and the counter from zero), and the redraw thread if stderr is a terminal.
    pub fn begin(&mut self) {
        self.counter.reset();
        if !std::io::stderr().is_terminal() || self.drawer.is_some() {
            return;
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let label = self.label.clone();
        let goal = self.goal;
        let counter = self.counter.clone();
        let spawned = thread::Builder::new()
            .name("ringlog-progress".into())
            .spawn(move || draw_until_stopped(&label, goal, &counter, &stopped));
        // Without a drawer the run simply has no bar.
        if let Ok(drawer) = spawned {
            self.stop = Some(stop);
            self.drawer = Some(drawer);
        }
    }

    /// Stops redrawing and clears the bar.
    pub fn finish(&mut self) {
        // Dropping the sender wakes the drawer at once.
        self.stop.take();
        if let Some(drawer) = self.drawer.take() {
            let _ = drawer.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn draw_until_stopped(
    label: &str,
    goal: ProgressGoal,
    counter: &ProgressCounter,
    stopped: &mpsc::Receiver<()>,
) {
    let start = Instant::now();
    let mut drawn = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(REDRAW_INTERVAL) {
        let elapsed = start.elapsed();
        if elapsed < SHOW_AFTER {
            continue;
        }
        let line = render_line(label, goal, counter.bytes(), elapsed);
        let mut stderr = std::io::stderr().lock();
        // A failed redraw only costs the bar.
        let _ = write!(stderr, "\r\x1b[2K{line}");
        let _ = stderr.flush();
        drawn = true;
    }
    if drawn {
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K");
        let _ = stderr.flush();
    }
}

/// One line of the bar: label, bar, percentage, progress against the goal, bytes and rate.
pub fn render_line(label: &str, goal: ProgressGoal, bytes: u64, elapsed: Duration) -> String {
    let (fraction, against_goal) = match goal {
        ProgressGoal::Duration(total) => (
            elapsed.as_secs_f64() / total.as_secs_f64().max(f64::MIN_POSITIVE),
            format!("{:.1}/{:.0} s", elapsed.as_secs_f64(), total.as_secs_f64()),
        ),
        ProgressGoal::Bytes(total) => (
            bytes as f64 / (total.max(1)) as f64,
            format!("{}/{}", format_bytes(bytes), format_bytes(total)),
        ),
    };
    let fraction = fraction.clamp(0.0, 1.0);
    // Rounded down so the bar is full only when done.
    let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
    format!(
        "{label} [{}{}] {:>3.0}% {against_goal}  {}  {:.0} MB/s",
        "=".repeat(filled),
        " ".repeat(BAR_WIDTH - filled),
        fraction * 100.0,
        format_bytes(bytes),
        mb_per_s(bytes, elapsed.as_secs_f64()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_shows_fraction_of_duration_goal() {
        let line = render_line(
            "produce",
            ProgressGoal::Duration(Duration::from_secs(10)),
            500_000_000,
            Duration::from_secs(5),
        );
        assert!(line.starts_with("produce [==============="), "{line}");
        assert!(line.contains(" 50% 5.0/10 s"), "{line}");
        assert!(line.contains("100 MB/s"), "{line}");
    }

    #[test]
    fn line_clamps_past_the_byte_goal() {
        let line = render_line(
            "consume",
            ProgressGoal::Bytes(100),
            500,
            Duration::from_secs(1),
        );
        assert!(line.contains("100%"), "{line}");
        assert!(line.contains(&"=".repeat(BAR_WIDTH)), "{line}");
    }

    #[test]
    fn counter_counts_from_begin() {
        let mut progress = Progress::new("x", ProgressGoal::Bytes(10));
        let counter = progress.counter();
        counter.add_bytes(7);
        progress.begin();
        counter.add_bytes(3);
        assert_eq!(counter.bytes(), 3);
        progress.finish();
    }
}
