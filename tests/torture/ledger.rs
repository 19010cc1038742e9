//! What the torture's clients were told (acknowledgements, records served) and the check of
//! the final log against it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::server::StoredPartition;

/// A record somewhere in the log: its partition, offset and id (stream << 32 | sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Entry {
    pub partition: u32,
    pub offset: i64,
    pub id: u64,
}

/// The value of record `sequence` of `stream`: `"<stream>:<sequence>:"` padded to 100 bytes.
pub fn value(stream: u32, sequence: u32) -> Vec<u8> {
    let mut value = format!("{stream}:{sequence}:").into_bytes();
    value.resize(100, b'.');
    value
}

/// The id of a value made by [`value`].
pub fn parse_id(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let mut fields = text.split(':');
    let stream: u32 = fields.next()?.parse().ok()?;
    let sequence: u32 = fields.next()?.parse().ok()?;
    Some((u64::from(stream) << 32) | u64::from(sequence))
}

/// Everything the clients observed.
#[derive(Default)]
pub struct Ledger {
    acked: Mutex<Vec<Entry>>,
    consumed: Mutex<Vec<Entry>>,
    corrupt: Mutex<Vec<String>>,
    failures: Mutex<Vec<String>>,
    /// Acknowledged commits or share acks that did not survive.
    lost_promises: Mutex<Vec<String>>,
    resent_batches: AtomicU64,
    /// Records of the cycle producers acknowledged once the kill was under way: mostly by
    /// the restarted server, after the producer connected again and resent them.
    acked_after_kill: AtomicU64,
    commits: AtomicU64,
    share_acks: AtomicU64,
}

/// The outcome of the final check.
#[derive(Debug, Default)]
pub struct Verdict {
    pub acked: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub corrupt: u64,
    pub order_violations: u64,
    pub failures: u64,
    pub stored: u64,
    pub consumed: u64,
    pub resent_batches: u64,
    pub acked_after_kill: u64,
    pub commits: u64,
    pub share_acks: u64,
    pub examples: Vec<String>,
}

impl Verdict {
    /// Nothing lost, duplicated, corrupt, out of order or refused.
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.corrupt == 0
            && self.order_violations == 0
            && self.failures == 0
    }

    fn example(&mut self, problem: String) {
        if self.examples.len() < 100 {
            self.examples.push(problem);
        }
    }
}

impl Ledger {
    pub fn record_acked(&self, entries: &[Entry]) {
        self.acked.lock().unwrap().extend_from_slice(entries);
    }

    pub fn record_consumed(&self, entries: &[Entry]) {
        self.consumed.lock().unwrap().extend_from_slice(entries);
    }

    pub fn record_corrupt(&self, problem: String) {
        self.corrupt.lock().unwrap().push(problem);
    }

    /// An answer no correct server gives (a refused idempotent retry, for example).
    pub fn record_failure(&self, problem: String) {
        self.failures.lock().unwrap().push(problem);
    }

    /// An acknowledged commit or share acknowledgement that did not survive.
    pub fn record_lost(&self, problem: String) {
        self.lost_promises.lock().unwrap().push(problem);
    }

    pub fn record_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_share_ack(&self) {
        self.share_acks.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_acked_after_kill(&self, records: u64) {
        self.acked_after_kill.fetch_add(records, Ordering::Relaxed);
    }

    pub fn record_resent(&self) {
        self.resent_batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Checks the final content of every partition against what was acknowledged and served.
    pub fn verify(&self, stored: &[StoredPartition]) -> Verdict {
        let mut verdict = Verdict {
            resent_batches: self.resent_batches.load(Ordering::Relaxed),
            acked_after_kill: self.acked_after_kill.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            share_acks: self.share_acks.load(Ordering::Relaxed),
            ..Verdict::default()
        };
        for problem in self.lost_promises.lock().unwrap().iter() {
            verdict.lost += 1;
            verdict.example(format!("lost: {problem}"));
        }
        for problem in self.corrupt.lock().unwrap().iter() {
            verdict.corrupt += 1;
            verdict.example(format!("corrupt while running: {problem}"));
        }
        for problem in self.failures.lock().unwrap().iter() {
            verdict.failures += 1;
            verdict.example(format!("failure: {problem}"));
        }
        let mut at_offset: HashMap<(u32, i64), u64> = HashMap::new();
        let mut copies: HashMap<u64, u32> = HashMap::new();
        for (partition, content) in stored.iter().enumerate() {
            let partition = partition as u32;
            for problem in &content.corrupt {
                verdict.corrupt += 1;
                verdict.example(format!("corrupt in the final read: {problem}"));
            }
            // Per stream, the sequence of its last record in this partition.
            let mut last: HashMap<u32, u32> = HashMap::new();
            for (offset, value) in &content.records {
                verdict.stored += 1;
                let Some(id) = parse_id(value) else {
                    verdict.corrupt += 1;
                    verdict.example(format!(
                        "partition {partition} offset {offset}: unknown value"
                    ));
                    continue;
                };
                at_offset.insert((partition, *offset), id);
                *copies.entry(id).or_default() += 1;
                let (stream, sequence) = ((id >> 32) as u32, id as u32);
                if let Some(previous) = last.insert(stream, sequence) {
                    if sequence <= previous {
                        verdict.order_violations += 1;
                        verdict.example(format!(
                            "partition {partition} offset {offset}: stream {stream} record {sequence} after {previous}"
                        ));
                    }
                }
            }
        }
        for (id, count) in &copies {
            if *count > 1 {
                verdict.duplicated += u64::from(count - 1);
                verdict.example(format!(
                    "record {}:{} stored {count} times",
                    id >> 32,
                    *id as u32
                ));
            }
        }
        let acked: HashSet<Entry> = self.acked.lock().unwrap().iter().copied().collect();
        verdict.acked = acked.len() as u64;
        let consumed = self.consumed.lock().unwrap();
        verdict.consumed = consumed.len() as u64;
        let promised: HashSet<Entry> = acked.iter().chain(consumed.iter()).copied().collect();
        for entry in promised {
            if at_offset.get(&(entry.partition, entry.offset)) != Some(&entry.id) {
                verdict.lost += 1;
                let how = if acked.contains(&entry) {
                    "acknowledged"
                } else {
                    "served"
                };
                verdict.example(format!(
                    "{how} record {}:{} missing at partition {} offset {}",
                    entry.id >> 32,
                    entry.id as u32,
                    entry.partition,
                    entry.offset
                ));
            }
        }
        verdict
    }
}
