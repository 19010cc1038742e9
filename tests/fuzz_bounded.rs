//! A bounded run of ringlog's fuzz targets on every `cargo test`: proptest feeds each target
//! random bytes and mutations of valid frames, batches and logs. The targets themselves are
//! `fuzz/src/checks.rs`, shared with the cargo-fuzz binaries for long runs (see the README's
//! Reliability section). `RINGLOG_FUZZ_CASES` scales the number of cases (default 1000 per
//! decoder target, a tenth of that for recovery, which opens a log per case).
//! `RINGLOG_FUZZ_SEEDS_DIR=DIR` makes `write_seeds` store the valid inputs as cargo-fuzz
//! corpus files under `DIR/<target>/` (scripts/fuzz.sh does this).

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use proptest::prelude::*;

fn cases(divisor: u32) -> u32 {
    let base = std::env::var("RINGLOG_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000u32);
    (base / divisor).max(1)
}

/// A seed changed by overwrites, a cut and an insertion, as a fuzzer mutates.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = checks::seeds();
    let count = seeds.len();
    (
        0..count,
        prop::collection::vec((any::<u16>(), any::<u8>()), 0..8),
        prop::option::of(any::<u16>()),
        prop::option::of((any::<u16>(), prop::collection::vec(any::<u8>(), 1..16))),
    )
        .prop_map(move |(seed, overwrites, cut, insert)| {
            let mut bytes = seeds[seed].clone();
            if bytes.is_empty() {
                return bytes;
            }
            for (at, value) in overwrites {
                let at = usize::from(at) % bytes.len();
                bytes[at] = value;
            }
            if let Some((at, extra)) = insert {
                let at = usize::from(at) % (bytes.len() + 1);
                bytes.splice(at..at, extra);
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            bytes
        })
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(),
        mutated(),
        mutated(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1)))]

    #[test]
    fn frame_decoder(data in inputs()) {
        checks::frame(&data);
    }

    #[test]
    fn request_bodies(data in inputs()) {
        // Frames carry a 12-byte header before the body; feed both the whole input and the
        // part after a header.
        checks::request_body(&data);
        checks::request_body(data.get(12..).unwrap_or_default());
    }

    #[test]
    fn record_batch_decoder(data in inputs()) {
        checks::record_batch(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(10)))]

    #[test]
    fn recovery_scanner(
        raw in any::<bool>(),
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            mutated(),
        ],
    ) {
        let mut input = vec![u8::from(!raw)];
        input.extend_from_slice(&data);
        checks::recovery(&input);
    }
}

#[test]
fn write_seeds() {
    let Ok(dir) = std::env::var("RINGLOG_FUZZ_SEEDS_DIR") else {
        return;
    };
    let seeds = checks::seeds();
    for target in ["frame", "request_body", "record_batch", "recovery"] {
        let target_dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&target_dir).unwrap();
        for (n, seed) in seeds.iter().enumerate() {
            let bytes = match target {
                // Recovery inputs: a mode byte (1: the valid log, patched), then patches.
                "recovery" => [&[1u8][..], seed.get(..20).unwrap_or(seed)].concat(),
                "request_body" => seed.get(12..).unwrap_or_default().to_vec(),
                _ => seed.clone(),
            };
            std::fs::write(target_dir.join(format!("seed-{n}")), bytes).unwrap();
        }
    }
}
