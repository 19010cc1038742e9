//! A shard's budget of disk operations per second, shared by the flushers and syncers of all
//! its partition logs.
//!
//! Writes and fdatasyncs are taken from a token bucket. While tokens are left, an operation
//! starts at once, so a light load pays nothing; once they run out, a flusher or syncer waits
//! for the next token, and the bytes appended meanwhile go out in that one larger write (and
//! the durable appends meanwhile share that one sync). The number of operations thus stays
//! bounded however small the appends, and their size grows with the load instead.
//!
//! Why a bound at all: disks whose cost is per operation, not per byte. Cloud volumes are sold
//! in IOPS; and on virtual machines each operation also costs the host CPU time, which the
//! VM's CPU quota is charged for. On the development VM, more than about 2,500 writes and
//! syncs per second (16 KiB writes at 100 MB/s, a loop with no ringlog in it) made the host
//! stop both vCPUs for 15-20 ms every 100 ms; see the README's Performance section.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Largest burst, in seconds of the rate: operations that may start back to back after an
/// idle spell.
const BURST_SECONDS: f64 = 0.01;

/// Share of the budget that goes to fdatasyncs; the rest is for writes. Readers wait for
/// writes (they make bytes visible), only durable producers wait for syncs, and one sync
/// covers many writes: so writes get most of the turns.
const SYNC_SHARE: f64 = 0.2;

/// A shard's budget: one bucket for writes, one for syncs.
#[derive(Debug)]
pub struct IoBudget {
    writes: Bucket,
    syncs: Bucket,
}

impl IoBudget {
    /// A budget of `ops_per_s` writes plus syncs per second; 0 means unlimited.
    pub fn new(ops_per_s: u32) -> IoBudget {
        let total = f64::from(ops_per_s);
        let syncs = (total * SYNC_SHARE).ceil();
        IoBudget {
            writes: Bucket::new(total - syncs),
            syncs: Bucket::new(syncs),
        }
    }

    /// No limit.
    pub fn unlimited() -> IoBudget {
        IoBudget::new(0)
    }

    /// Takes a write's turn, or says when to ask again (see `Bucket::take`).
    pub fn take_write(&self) -> Result<(), Instant> {
        self.writes.take()
    }

    /// Takes a sync's turn, or says when to ask again (see `Bucket::take`).
    pub fn take_sync(&self) -> Result<(), Instant> {
        self.syncs.take()
    }
}

/// A token bucket of disk operations.
#[derive(Debug)]
struct Bucket {
    /// Tokens added per second; `None`: unlimited.
    ops_per_s: Option<f64>,
    /// Most tokens held.
    burst_ops: f64,
    tokens: Cell<f64>,
    refilled_at: Cell<Instant>,
}

impl Bucket {
    /// `ops_per_s` operations per second; 0 means unlimited.
    fn new(ops_per_s: f64) -> Bucket {
        let rate = (ops_per_s > 0.0).then_some(ops_per_s);
        // At least one whole token, so that a slow rate still lets an operation through.
        let burst_ops = rate.map_or(0.0, |rate| (rate * BURST_SECONDS).max(1.0));
        Bucket {
            ops_per_s: rate,
            burst_ops,
            tokens: Cell::new(burst_ops),
            refilled_at: Cell::new(Instant::now()),
        }
    }

    /// Takes one operation's token, or says when the next one will be there (then nothing is
    /// taken: the caller waits and asks again, gathering what arrived meanwhile).
    fn take(&self) -> Result<(), Instant> {
        let Some(rate) = self.ops_per_s else {
            return Ok(());
        };
        let now = Instant::now();
        let elapsed_s = now
            .saturating_duration_since(self.refilled_at.get())
            .as_secs_f64();
        let tokens = (self.tokens.get() + elapsed_s * rate).min(self.burst_ops);
        self.refilled_at.set(now);
        if tokens >= 1.0 {
            self.tokens.set(tokens - 1.0);
            return Ok(());
        }
        self.tokens.set(tokens);
        assert!((0.0..1.0).contains(&tokens), "tokens never go negative");
        // The microsecond absorbs rounding, so that asking again at that time succeeds.
        Err(now + Duration::from_secs_f64((1.0 - tokens) / rate) + Duration::from_micros(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_never_waits() {
        let budget = IoBudget::unlimited();
        for _ in 0..100_000 {
            assert!(budget.take_write().is_ok());
            assert!(budget.take_sync().is_ok());
        }
    }

    #[test]
    fn a_burst_then_one_token_per_interval() {
        // 1,000 per second: a burst of 10, then the 11th must wait about a millisecond.
        let budget = Bucket::new(1_000.0);
        let taken = (0..10).filter(|_| budget.take().is_ok()).count();
        assert_eq!(taken, 10, "the burst is 10 ms worth");
        let asked = Instant::now();
        let ready_at = budget.take().expect_err("the bucket is empty");
        let wait = ready_at.saturating_duration_since(asked);
        // One token's time, plus the microsecond of rounding margin.
        assert!(
            wait <= Duration::from_micros(1_001),
            "next token within 1 ms, not {wait:?}"
        );
        while Instant::now() < ready_at {
            std::hint::spin_loop();
        }
        assert!(budget.take().is_ok(), "a token is there when promised");
    }

    #[test]
    fn a_slow_rate_still_holds_one_token() {
        let budget = Bucket::new(10.0);
        assert!(budget.take().is_ok());
        let ready_at = budget.take().expect_err("one token burst");
        assert!(ready_at > Instant::now() + Duration::from_millis(50));
    }

    #[test]
    fn syncs_get_a_fifth() {
        let budget = IoBudget::new(1_000);
        let writes = (0..100).filter(|_| budget.take_write().is_ok()).count();
        let syncs = (0..100).filter(|_| budget.take_sync().is_ok()).count();
        assert_eq!(
            (writes, syncs),
            (8, 2),
            "10 ms of 800 writes/s and 200 syncs/s"
        );
    }
}
