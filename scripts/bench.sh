#!/usr/bin/env bash
# The standard ringlog benchmark suite (bench issue): every scenario with the settings the
# performance targets are stated for, each measured against this machine's own limits in the
# same run. Writes one JSON report and one SVG plot per run into $RESULTS_DIR and ends with one
# summary table.
#
# Usage: scripts/bench.sh [extra ringlog-bench options for every scenario run, e.g. --server H:P]
# Environment:
#   RESULTS_DIR          where reports and plots go (default: bench-results)
#   BENCH_DIR            where the embedded server and the disk reference put their (temporary)
#                        data (default: a temporary directory under the current directory)
#   BENCH_DURATION_S     length of each timed run in seconds (default: 10)
#   BENCH_CONSUME_S      length of the hot consume run, which re-reads a topic that fits the
#                        server's memory cache (default: 5)
#   BENCH_COLD_BYTES     bytes the cold consume run fills and reads once from disk (default: 1GiB)
#   BENCH_KAFKA_BYTES    record bytes the kafka run produces and reads back through each front
#                        door, native and Kafka (default: 256MiB; needs kcat, else skipped)
#   CARGO_TARGET_DIR     honoured as by cargo
# Exit status: 0 if every run succeeded, 1 otherwise (the summary is printed either way). The
# kafka run is optional: without kcat on PATH it is skipped and does not fail the suite.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

RESULTS_DIR="${RESULTS_DIR:-bench-results}"
DURATION_S="${BENCH_DURATION_S:-10}"
CONSUME_S="${BENCH_CONSUME_S:-5}"
COLD_BYTES="${BENCH_COLD_BYTES:-1GiB}"
KAFKA_BYTES="${BENCH_KAFKA_BYTES:-256MiB}"
EXTRA_ARGS=("$@")
DIR_ARGS=()
if [[ -n "${BENCH_DIR:-}" ]]; then
    DIR_ARGS=(--dir "$BENCH_DIR")
fi

cargo build --release -p ringlog-bench
BIN="${CARGO_TARGET_DIR:-target}/release/ringlog-bench"
mkdir -p "$RESULTS_DIR"

echo "ringlog-bench suite: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, kernel $(uname -r), results in $RESULTS_DIR"

failed=()
unavailable=()
# Runs skipped because an optional tool is missing (not a failure of the suite).
skipped=()
# Message ringlog-bench prints (exit status 2) for a scenario this build cannot run yet.
UNAVAILABLE_PATTERN="not available in this build"

# run NAME SCENARIO [OPTIONS...]: one run, its report in $RESULTS_DIR/NAME.json and NAME.svg.
# Failures are collected in $failed, scenarios this build cannot run in $unavailable (and
# $last_unavailable is set to 1 for the caller).
last_unavailable=0
run() {
    last_unavailable=0
    local name=$1
    shift
    local json="$RESULTS_DIR/$name.json" svg="$RESULTS_DIR/$name.svg"
    local errors="$RESULTS_DIR/$name.stderr"
    # A stale report from an earlier suite must not show up in this summary.
    rm -f "$json" "$svg" "$errors"
    echo
    echo "== $name: ringlog-bench $*"
    local status=0
    "$BIN" "$@" --json "$json" --plot "$svg" 2> >(tee "$errors" >&2) || status=$?
    wait # for tee, so that $errors is complete
    if [[ $status -eq 2 ]] && grep -q "$UNAVAILABLE_PATTERN" "$errors"; then
        echo "!! $name skipped: $(tail -n 1 "$errors")" >&2
        unavailable+=("$name")
        last_unavailable=1
        rm -f "$errors"
        return 0
    fi
    rm -f "$errors"
    if [[ $status -ne 0 ]]; then
        echo "!! $name failed (exit status $status)" >&2
        failed+=("$name")
    fi
    return 0
}

# The references alone first, so the summary shows the machine even if a scenario fails.
run 00-disk disk "${DIR_ARGS[@]}"
run 01-net net

run 10-produce-1k produce --record-size 1KiB --batch-bytes 1MiB --acks durable \
    --duration-s "$DURATION_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
run 11-produce-100b produce --record-size 100 --partitions 4 --linger-ms 5 --produce-with producer --acks durable \
    --duration-s "$DURATION_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
run 20-consume-hot consume --record-size 1KiB --duration-s "$CONSUME_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
run 21-consume-cold consume --record-size 1KiB --total-bytes "$COLD_BYTES" --cold "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
run 30-e2e-100mb e2e --record-size 1KiB --rate-mb-per-s 100 --produce-with producer \
    --duration-s "$DURATION_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
run 40-fanout-10 fanout --record-size 1KiB --groups 10 --duration-s "$DURATION_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
share_index=0
for consumers in 1 4 16; do
    run "5$share_index-share-$consumers" share --partitions 1 --consumers "$consumers" \
        --work-us 1000 --duration-s "$DURATION_S" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
    if [[ $last_unavailable -eq 1 ]]; then
        # The other share runs would say the same.
        break
    fi
    share_index=$((share_index + 1))
done

# 10,000 partitions: the embedded server's resident memory per partition, idle and after one
# 100-byte record to each (target <= 64 KiB), and the time of that first write to each. It
# reads the memory of the server it embeds, so it cannot load --server.
if [[ " ${EXTRA_ARGS[*]} " == *" --server "* || " ${EXTRA_ARGS[*]} " == *" --server="* ]]; then
    rm -f "$RESULTS_DIR/60-partitions-10k.json" "$RESULTS_DIR/60-partitions-10k.svg"
    skipped+=("60-partitions-10k (it needs the embedded server, not --server)")
else
    run 60-partitions-10k partitions --partitions 10000 --record-size 100 --acks durable \
        "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
fi

# The Kafka front door beside the native protocol, the same records both ways (kcat drives
# librdkafka). It starts its own server with a Kafka listener, so it cannot load --server.
if [[ " ${EXTRA_ARGS[*]} " == *" --server "* || " ${EXTRA_ARGS[*]} " == *" --server="* ]]; then
    rm -f "$RESULTS_DIR/80-kafka.json" "$RESULTS_DIR/80-kafka.svg"
    skipped+=("80-kafka (it needs the embedded server, not --server)")
else
    run 80-kafka kafka --record-size 100 --partitions 4 --linger-ms 5 --acks durable \
        --total-bytes "$KAFKA_BYTES" "${DIR_ARGS[@]}" "${EXTRA_ARGS[@]}"
    if [[ $last_unavailable -eq 1 ]]; then
        # kcat is not installed: optional, so not counted as unavailable.
        unset 'unavailable[-1]'
        skipped+=("80-kafka (kcat not installed: apt-get install kcat)")
    fi
fi

echo
"$BIN" summary "$RESULTS_DIR" || true

if [[ ${#skipped[@]} -gt 0 ]]; then
    echo
    echo "skipped: ${skipped[*]}" >&2
fi

if [[ ${#unavailable[@]} -gt 0 ]]; then
    echo
    echo "not available in this build (no report): ${unavailable[*]}" >&2
fi
if [[ ${#failed[@]} -gt 0 ]]; then
    echo
    echo "failed runs: ${failed[*]}" >&2
fi
if [[ ${#failed[@]} -gt 0 || ${#unavailable[@]} -gt 0 ]]; then
    exit 1
fi
