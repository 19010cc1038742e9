#!/usr/bin/env bash
# Long fuzzing runs with cargo-fuzz (libFuzzer + AddressSanitizer) on the stable toolchain
# (RUSTC_BOOTSTRAP=1 lets it use the nightly-only sanitizer flags). Every `cargo test` runs the
# same targets briefly through proptest (tests/fuzz_bounded.rs); this is the long run.
#
# Usage: scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
#   --seconds N  time per target (default 60)
#   --jobs J     parallel fuzzing processes per target (default 1)
#   TARGET       frame, request_body, record_batch, recovery (default: all four)
# Installs cargo-fuzz when missing. Corpora live in fuzz/corpus/<target> (seeded with valid
# frames, batches and logs), crashes in fuzz/artifacts/<target>. Prints, per target, the
# number of inputs run; exits non-zero if a target found a crash, a hang or a leak.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

seconds=60
jobs=1
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) seconds="$2"; shift 2 ;;
        --jobs) jobs="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) targets+=("$1"); shift ;;
    esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(frame request_body record_batch recovery)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1

# Seed the corpora with valid inputs (idempotent: same file names every time).
RINGLOG_FUZZ_SEEDS_DIR="$PWD/fuzz/corpus" cargo test -q -p ringlog --test fuzz_bounded write_seeds -- --ignored --exact >/dev/null

status=0
total=0
for target in "${targets[@]}"; do
    log="$(mktemp)"
    # -timeout: an input taking over 10 s is a hang; -rss_limit_mb bounds memory.
    if ! (cd fuzz && cargo fuzz run "$target" --jobs "$jobs" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            >"$log" 2>&1); then
        status=1
        tail -n 40 "$log"
    fi
    # With --jobs, libFuzzer writes one log per job (fuzz/fuzz-N.log).
    runs="$(shopt -s nullglob; cat "$log" fuzz/fuzz-*.log | { grep -o 'Done [0-9]* runs' || true; } |
        awk '{s += $2} END {print s + 0}')"
    rm -f "$log" fuzz/fuzz-*.log
    total=$((total + runs))
    echo "fuzz target=$target seconds=$seconds runs=$runs"
done
echo "fuzz targets=${#targets[@]} runs=$total failures=$status"
exit "$status"
