"""Fixtures: a ringlog server (the binary in $KAFKA_COMPAT_RINGLOG, 2 shards, native and Kafka listeners
on free loopback ports) and fresh topics created through the Kafka admin API."""

import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

STARTUP_TIMEOUT_S = 60


def server_env():
    """The environment without RINGLOG_* settings, which `ringlog serve` would take as config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGLOG_")}
    env["RUST_LOG"] = "info"
    return env


class RinglogServer:
    """A `ringlog serve` process; restart() keeps its data directory and ports."""

    def __init__(self, binary, data_dir, log_path):
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.native_addr = "127.0.0.1:0"
        self.kafka_addr = "127.0.0.1:0"
        self.process = None

    @property
    def bootstrap(self):
        return self.kafka_addr

    def start(self):
        command = [
            self.binary, "serve",
            "--data-dir", self.data_dir,
            "--listen", self.native_addr,
            "--kafka-listen", self.kafka_addr,
            "--shards", "2",
        ]
        log = open(self.log_path, "a")
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=server_env()
        )
        # The server prints its addresses (with the real ports) once every shard serves.
        found = {}
        reader = threading.Thread(target=self._read_addresses, args=(found,), daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT_S)
        if "kafka" not in found:
            self.process.kill()
            raise RuntimeError(f"ringlog did not start; see {self.log_path}")
        self.native_addr, self.kafka_addr = found["native"], found["kafka"]

    def _read_addresses(self, found):
        for line in self.process.stdout:
            if line.startswith("ringlog serving on "):
                found["native"] = line.split()[3]
            elif line.startswith("Kafka protocol on "):
                found["kafka"] = line.split()[3].strip()
                break
        # Keep draining stdout so the server never blocks on it.
        threading.Thread(target=lambda: [None for _ in self.process.stdout], daemon=True).start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=60)
        self.process = None

    def restart(self):
        self.stop()
        self.start()

    def ringlog(self, *args, input=None, timeout=60):
        """Runs a `ringlog` client command against this server; returns its stdout."""
        result = subprocess.run(
            [self.binary, "--server", self.native_addr, *args],
            input=input, capture_output=True, timeout=timeout, check=True, env=server_env(),
        )
        return result.stdout


@pytest.fixture(scope="session")
def server():
    binary = os.environ.get("KAFKA_COMPAT_RINGLOG")
    if not binary:
        pytest.exit("set KAFKA_COMPAT_RINGLOG to the ringlog binary (scripts/kafka-compat.sh does)", 2)
    with tempfile.TemporaryDirectory(prefix="ringlog-kafka-compat-") as data_dir:
        log_path = os.environ.get("KAFKA_COMPAT_LOG", os.path.join(data_dir, "server.log"))
        instance = RinglogServer(binary, os.path.join(data_dir, "data"), log_path)
        instance.start()
        yield instance
        instance.stop()


def create_topic(server, partitions=3, prefix="t"):
    """Creates a uniquely named topic through the Kafka admin API; returns its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        admin.close()
    return name


@pytest.fixture
def topic(server):
    return create_topic(server)


def wait_until(condition, timeout_s=30, what="condition"):
    """Polls `condition` until it holds (clients report progress only through polling)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
