//! Crash torture: the real `ringlog serve` binary as a child process, killed with SIGKILL at
//! random moments while producers and a consumer run, restarted, and checked.
//!
//! Run by `scripts/torture.sh` (see there and the README's Reliability section); ignored in a
//! plain `cargo test`. Settings come from the environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `TORTURE_CYCLES` | 5 | kill/restart cycles |
//! | `TORTURE_SEED` | time | seed of the kill moments (printed, to rerun a failure) |
//! | `TORTURE_RUN_MS_MIN` / `_MAX` | 300 / 1500 | how long the server runs before the kill |
//! | `TORTURE_SHARDS` | 2 | `--shards` of the server |
//! | `TORTURE_SUMMARY` | none | file to write the summary line to |
//!
//! Each cycle starts the server (the time from spawn to its "ringlog serving" line is the
//! recovery time; after the first, on the address of the server just killed), starts two
//! native `Producer`s (idempotent, durable acks) whose last chunk of records rides through the
//! kill (they connect again and resend what was in flight), lets them run with a resender (an idempotent producer that keeps its producer id across restarts and
//! resends the very same batch bytes after a crash, so the server must recognise batches it
//! wrote before the crash), a consumer that follows every partition, a committer of
//! consumer-group offsets and a share-group consumer that accepts what it gets, then kills
//! the server. After the last cycle the server is started once more and every partition is read
//! from the start. Checked:
//!
//! - lost: an acknowledged record (or one a consumer was served) missing from its offset, a
//!   committed group offset that is not the last acknowledged commit, or a share-group record
//!   delivered again after its ACCEPT was acknowledged;
//! - duplicated: a record present more than once;
//! - corrupt: a batch that fails its CRC or does not decode, or offsets that are not dense;
//! - order: each producer's records in a partition in the order it sent them.
//!
//! The summary line is `cycles=N acked=X lost=0 duplicated=0 corrupt=0 recovery_ms_max=Y`.

mod groups;
mod ledger;
mod server;
mod workers;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ledger::{Ledger, Verdict};
use server::ServerProcess;
use workers::{Rng, Shared};

/// The topic the torture writes.
const TOPIC: &str = "torture";
/// Its partitions.
const PARTITIONS: u32 = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "long: run by scripts/torture.sh"]
fn crash_torture() {
    let cycles = env_u64("TORTURE_CYCLES", 5);
    let seed = env_u64(
        "TORTURE_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    let run_ms_min = env_u64("TORTURE_RUN_MS_MIN", 300);
    let run_ms_max = env_u64("TORTURE_RUN_MS_MAX", 1500).max(run_ms_min + 1);
    let shards = env_u64("TORTURE_SHARDS", 2);
    println!(
        "torture: cycles={cycles} seed={seed} shards={shards} run_ms={run_ms_min}..{run_ms_max}"
    );
    let root = tempfile::Builder::new()
        .prefix("ringlog-torture-")
        .tempdir()
        .unwrap();
    let data_dir = root.path().join("data");
    let server_log = root.path().join("server.log");
    let mut rng = Rng::new(seed);
    let ledger = Arc::new(Ledger::default());
    let shared = Arc::new(Shared::new(TOPIC, PARTITIONS));
    let mut recovery_ms_max = 0u64;

    let mut server = ServerProcess::start(&data_dir, &server_log, shards);
    server.create_topic(TOPIC, PARTITIONS);
    let resender = workers::spawn_resender(Arc::clone(&shared), Arc::clone(&ledger), seed);
    let consumer = workers::spawn_consumer(Arc::clone(&shared), Arc::clone(&ledger));
    let committer = groups::spawn_committer(Arc::clone(&shared), Arc::clone(&ledger));
    let share_consumer = groups::spawn_share_consumer(Arc::clone(&shared), Arc::clone(&ledger));
    for cycle in 0..cycles {
        shared.publish(Some(server.addr()));
        let producers: Vec<_> = (0..2)
            .map(|thread| {
                workers::spawn_producer(
                    Arc::clone(&shared),
                    Arc::clone(&ledger),
                    cycle as u32 * 2 + thread,
                )
            })
            .collect();
        let run_ms = run_ms_min + rng.below(run_ms_max - run_ms_min);
        // The kill moment is the point of the test: a timed wait, not synchronisation.
        thread::sleep(Duration::from_millis(run_ms));
        shared.publish(None);
        let addr = server.addr().to_string();
        server.kill();
        server = ServerProcess::start_at(&data_dir, &server_log, shards, &addr);
        // Their chunk on its way at the kill is delivered to the new server.
        for producer in producers {
            producer.join().unwrap();
        }
        recovery_ms_max = recovery_ms_max.max(server.startup_ms());
        println!(
            "cycle {}: killed after {run_ms} ms, restarted in {} ms, acked so far {}",
            cycle + 1,
            server.startup_ms(),
            ledger.acked_count()
        );
    }
    // Let the resender and consumer finish against the last server, then read everything.
    shared.publish(Some(server.addr()));
    shared.stop.store(true, Ordering::SeqCst);
    resender.join().unwrap();
    consumer.join().unwrap();
    committer.join().unwrap();
    share_consumer.join().unwrap();
    let stored = server.read_all(TOPIC, PARTITIONS);
    let verdict: Verdict = ledger.verify(&stored);
    server.shutdown();
    let summary = format!(
        "cycles={cycles} acked={} lost={} duplicated={} corrupt={} recovery_ms_max={recovery_ms_max}",
        verdict.acked, verdict.lost, verdict.duplicated, verdict.corrupt
    );
    println!(
        "torture details: stored_records={} consumed_records={} resent_batches={} acked_after_kill={} commits={} share_acks={} order_violations={} seed={seed}",
        verdict.stored,
        verdict.consumed,
        verdict.resent_batches,
        verdict.acked_after_kill,
        verdict.commits,
        verdict.share_acks,
        verdict.order_violations
    );
    for problem in verdict.examples.iter().take(10) {
        println!("problem: {problem}");
    }
    println!("{summary}");
    if let Ok(path) = std::env::var("TORTURE_SUMMARY") {
        std::fs::write(path, format!("{summary}\n")).unwrap();
    }
    if !verdict.is_clean() || verdict.acked == 0 {
        let kept = root.keep();
        panic!("{summary}; data and server log kept in {}", kept.display());
    }
}
