"""kcat (librdkafka) against ringlog: metadata, produce and consume, from an offset and from a
timestamp, every compression codec."""

import subprocess

import pytest
from confluent_kafka import Producer

KCAT_TIMEOUT_S = 60


def kcat(server, *args, input=None):
    result = subprocess.run(
        ["kcat", "-b", server.bootstrap, *args],
        input=input, capture_output=True, text=True, timeout=KCAT_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def consume(server, topic, *args):
    """Every record of partition 0 from the given start, as 'offset:value' lines."""
    return kcat(server, "-C", "-t", topic, "-p", "0", "-e", "-q", "-f", "%o:%s\\n", *args).splitlines()


def test_metadata_lists_one_broker_and_the_topic(server, topic):
    out = kcat(server, "-L", "-t", topic)
    assert f"broker 0 at {server.bootstrap}" in out
    assert f'topic "{topic}" with 3 partitions' in out
    for partition in range(3):
        assert f"partition {partition}, leader 0, replicas: 0, isrs: 0" in out


def test_produce_and_consume_round_trip(server, topic):
    kcat(server, "-P", "-t", topic, "-p", "0", input="alpha\nbeta\ngamma\n")
    assert consume(server, topic, "-o", "beginning") == ["0:alpha", "1:beta", "2:gamma"]
    # Keys, and the default partitioner spreading records over partitions.
    lines = "".join(f"key{i}:value{i}\n" for i in range(300))
    kcat(server, "-P", "-t", topic, "-K", ":", input=lines)
    out = kcat(server, "-C", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%p %k %s\\n")
    records = [line.split(" ") for line in out.splitlines() if " key" in line]
    assert sorted(r[2] for r in records) == sorted(f"value{i}" for i in range(300))
    partitions_of_key = {}
    for partition, key, _ in records:
        partitions_of_key.setdefault(key, set()).add(partition)
    assert all(len(p) == 1 for p in partitions_of_key.values()), "a key stays on one partition"
    assert len({r[0] for r in records}) == 3, "keys spread over every partition"


def test_consume_from_an_offset(server, topic):
    kcat(server, "-P", "-t", topic, "-p", "0", input="".join(f"m{i}\n" for i in range(10)))
    assert consume(server, topic, "-o", "7") == ["7:m7", "8:m8", "9:m9"]
    # Negative offsets count back from the end, resolved with ListOffsets.
    assert consume(server, topic, "-o", "-2") == ["8:m8", "9:m9"]


def test_consume_from_a_timestamp(server, topic):
    base_ms = 1_700_000_000_000
    producer = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 0})
    for i in range(6):
        producer.produce(topic, value=f"at{i}".encode(), partition=0, timestamp=base_ms + i * 1000)
        # One batch per record: timestamp lookups are exact to the batch.
        producer.flush(30)
    assert consume(server, topic, "-o", f"s@{base_ms + 3000}") == ["3:at3", "4:at4", "5:at5"]
    assert consume(server, topic, "-o", f"s@{base_ms + 2500}") == ["3:at3", "4:at4", "5:at5"]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_compressed_round_trip(server, topic, codec):
    values = [f"{codec}-{i}-" + "x" * (i % 50) for i in range(2000)]
    kcat(server, "-P", "-t", topic, "-p", "0", "-z", codec, input="\n".join(values) + "\n")
    got = consume(server, topic, "-o", "beginning")
    assert got == [f"{i}:{value}" for i, value in enumerate(values)]
