#!/usr/bin/env bash
# Kafka client compatibility suite: real Kafka clients (kcat from Debian, kafka-python and
# confluent-kafka from PyPI) against a ringlog server's Kafka listener, and across protocols
# with the ringlog CLI. The tests are tests/kafka_clients/*.py (pytest).
#
# Installs what is missing: kcat with apt-get (as root, or with passwordless sudo) and the
# Python packages (pinned in tests/kafka_clients/requirements.txt) in a venv under the cargo
# target directory. Exits 0 with a SKIPPED message only when apt or PyPI cannot be reached (or
# kcat cannot be installed for want of root); any other failure fails the run.
#
# Usage: scripts/kafka-compat.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
WORK_DIR="$TARGET_DIR/kafka-compat"
VENV="$WORK_DIR/venv"
REQUIREMENTS="tests/kafka_clients/requirements.txt"
# What apt and pip print when the network, not the request, is the problem.
NETWORK_ERRORS='Temporary failure resolving|Could not resolve|Failed to fetch|Unable to connect|Network is unreachable|Could not connect|Connection timed out|Temporary failure in name resolution|Name or service not known|NewConnectionError|Failed to establish a new connection|ConnectTimeoutError|ProxyError|No route to host'

mkdir -p "$WORK_DIR"

skip() {
    echo "kafka-compat: SKIPPED: $*" >&2
    exit 0
}

fail() {
    echo "kafka-compat: FAILED: $*" >&2
    exit 1
}

# Whether the package index pip uses answers at all (pip does not always say why it failed).
pypi_reachable() {
    "$VENV/bin/python" - <<'PROBE'
import os, subprocess, sys, urllib.error, urllib.request
configured = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                            capture_output=True, text=True).stdout.strip()
url = os.environ.get("PIP_INDEX_URL") or configured or "https://pypi.org/simple/"
try:
    urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=20)
except urllib.error.HTTPError:
    pass  # It answered.
except Exception as error:
    print(f"{url}: {error}", file=sys.stderr)
    sys.exit(1)
PROBE
}

# Runs a command as root (directly, or with passwordless sudo); 126 when neither is possible.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        return 126
    fi
}

# Installs Debian packages; skips the suite when the repositories cannot be reached.
apt_install() {
    local log="$WORK_DIR/apt.log"
    command -v apt-get >/dev/null 2>&1 || skip "$* missing and there is no apt-get to install it"
    local status=0
    { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1 || status=$?
    [ "$status" -eq 0 ] && return 0
    [ "$status" -eq 126 ] && skip "$* missing and no root (or passwordless sudo) to install it"
    grep -qiE "$NETWORK_ERRORS" "$log" && skip "apt repositories unreachable; cannot install $*"
    cat "$log" >&2
    fail "apt-get install $* failed"
}

command -v kcat >/dev/null 2>&1 || apt_install kcat
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv

# The venv is rebuilt when the pinned requirements change.
stamp="$VENV/requirements.txt"
if ! cmp -s "$REQUIREMENTS" "$stamp"; then
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >"$WORK_DIR/venv.log" 2>&1; then
        apt_install python3-venv
        python3 -m venv "$VENV" || fail "cannot create a Python venv"
    fi
    pip_log="$WORK_DIR/pip.log"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -r "$REQUIREMENTS" >"$pip_log" 2>&1; then
        if grep -qiE "$NETWORK_ERRORS" "$pip_log" || ! pypi_reachable; then
            rm -rf "$VENV"
            skip "PyPI unreachable; cannot install the Kafka clients"
        fi
        cat "$pip_log" >&2
        fail "pip install failed"
    fi
    cp "$REQUIREMENTS" "$stamp"
fi

cargo build --bin ringlog
export KAFKA_COMPAT_RINGLOG="$TARGET_DIR/debug/ringlog"
export KAFKA_COMPAT_LOG="$WORK_DIR/server.log"
: >"$KAFKA_COMPAT_LOG"
echo "kafka-compat: $(kcat -V 2>&1 | grep -o 'librdkafka [0-9.]*' | head -1) (kcat)," \
    "$("$VENV/bin/python" -c "from importlib.metadata import version as v; import confluent_kafka as c; print(\"kafka-python\", v(\"kafka-python\"), \"/ confluent-kafka\", v(\"confluent-kafka\"), \"librdkafka\", c.libversion()[0])")"
if ! "$VENV/bin/python" -m pytest -p no:cacheprovider -W ignore::DeprecationWarning -q tests/kafka_clients "$@"; then
    echo "--- last lines of the server log ($KAFKA_COMPAT_LOG) ---" >&2
    tail -n 50 "$KAFKA_COMPAT_LOG" >&2
    fail "Kafka client tests failed"
fi
