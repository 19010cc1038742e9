#!/usr/bin/env bash
# Crash torture: starts `ringlog serve` as a child process, runs idempotent producers (durable
# acks), a resender that keeps its producer id across crashes and a consumer, kills the server
# with SIGKILL at a random moment, restarts it, and repeats; then reads every partition and
# checks that every acknowledged (or served) record is there exactly once, in order, and that
# nothing corrupt was served. The driver is the ignored test `crash_torture` in
# tests/torture/ (its module docs list what it checks).
#
# Usage: scripts/torture.sh [--cycles N] [--seed S] [--debug] [--power-loss-cycles M]
#   --cycles N             kill/restart cycles (default 50)
#   --seed S               seed of the kill moments (default: time; printed to rerun a failure)
#   --debug                use the debug build (CI: it is built already; recovery times are
#                          then those of an unoptimised binary)
#   --power-loss-cycles M  also run M cycles of the engine's simulated power-loss test first
#                          (default 0: skip)
# Environment: TORTURE_SHARDS (default 2), TORTURE_RUN_MS_MIN/MAX (default 300/1500),
# CARGO_TARGET_DIR as for cargo.
# Output: progress, then as the last line
#   cycles=N acked=X lost=0 duplicated=0 corrupt=0 recovery_ms_max=Y
# Exit status: 0 when nothing was lost, duplicated or corrupt, 1 otherwise.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cycles=50
seed=""
profile=(--release)
power_loss_cycles=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cycles) cycles="$2"; shift 2 ;;
        --seed) seed="$2"; shift 2 ;;
        --debug) profile=(); shift ;;
        --power-loss-cycles) power_loss_cycles="$2"; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

if [[ "$power_loss_cycles" -gt 0 ]]; then
    RINGLOG_POWER_LOSS_CYCLES="$power_loss_cycles" \
        cargo test "${profile[@]}" -p ringlog-engine --lib power_loss -- --nocapture 2>&1 |
        grep -E "power loss:|test result|panicked"
fi

summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
export TORTURE_CYCLES="$cycles" TORTURE_SUMMARY="$summary"
if [[ -n "$seed" ]]; then
    export TORTURE_SEED="$seed"
fi
status=0
cargo test "${profile[@]}" -p ringlog --test torture -- --ignored --nocapture || status=1
if [[ -s "$summary" ]]; then
    # The summary is the last line of the output, whatever cargo printed after the test.
    tail -n 1 "$summary"
else
    echo "cycles=$cycles acked=0 lost=? duplicated=? corrupt=? recovery_ms_max=? (the torture did not finish)"
    status=1
fi
exit "$status"
