"""Records cross between the protocols unchanged: kcat writes, `ringlog consume` reads; `ringlog
produce` writes, kafka-python reads; compressing Kafka producers write, `ringlog consume` reads;
`ringlog produce --compression` writes, confluent-kafka and kafka-python read."""

import json
import subprocess

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import create_topic

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def test_kcat_to_ringlog_consume(server, topic):
    values = [f"from-kcat-{i}" for i in range(50)]
    subprocess.run(
        ["kcat", "-b", server.bootstrap, "-P", "-t", topic, "-p", "1"],
        input="\n".join(values) + "\n", text=True, check=True, timeout=60,
    )
    out = server.ringlog("consume", topic, "--partition", "1", "--from", "earliest", "--count", "50")
    assert out.decode().splitlines() == values


def test_ringlog_produce_to_kafka_python(server, topic):
    values = [f"from-ringlog-{i}" for i in range(50)]
    server.ringlog("produce", topic, "--partition", "2", input=("\n".join(values) + "\n").encode())
    consumer = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None, consumer_timeout_ms=5000)
    try:
        consumer.assign([TopicPartition(topic, 2)])
        consumer.seek_to_beginning()
        got = []
        for message in consumer:
            got.append((message.offset, message.value.decode()))
            if len(got) == len(values):
                break
    finally:
        consumer.close()
    assert got == list(enumerate(values))


@pytest.mark.parametrize("codec", CODECS)
def test_compressing_producers_to_ringlog_consume(server, codec):
    """confluent-kafka (librdkafka) and kafka-python compress batches with every codec; the
    native client decompresses them: `ringlog consume` prints every record, key and header."""
    topic = create_topic(server, partitions=2, prefix=f"zip-{codec}")
    count = 500
    values = [f"{codec}-{i}-" + "x" * (i % 64) for i in range(count)]
    rdkafka = Producer({
        "bootstrap.servers": server.bootstrap,
        "compression.type": codec,
        "linger.ms": 50,
    })
    for i, value in enumerate(values):
        rdkafka.produce(topic, partition=0, key=f"k{i}".encode(), value=value.encode(),
                        headers=[("n", str(i).encode())])
    assert rdkafka.flush(60) == 0
    python = KafkaProducer(bootstrap_servers=server.bootstrap, compression_type=codec, linger_ms=50)
    for i, value in enumerate(values):
        python.send(topic, partition=1, key=f"k{i}".encode(), value=value.encode(),
                    headers=[("n", str(i).encode())])
    python.flush(60)
    python.close()

    out = server.ringlog("consume", topic, "--from", "earliest", "--count", str(2 * count),
                         "--format", "json")
    lines = [json.loads(line) for line in out.decode().splitlines()]
    for partition in (0, 1):
        got = [line for line in lines if line["partition"] == partition]
        assert [line["offset"] for line in got] == list(range(count)), partition
        assert [line["value"] for line in got] == values, partition
        assert [line["key"] for line in got] == [f"k{i}" for i in range(count)], partition
        assert [line["headers"] for line in got] == [[{"key": "n", "value": str(i)}] for i in range(count)]


@pytest.mark.parametrize("codec", CODECS)
def test_ringlog_produce_compressed_to_kafka_consumers(server, codec):
    """`ringlog produce --compression C` writes batches in the formats Kafka's Java producer
    writes; confluent-kafka (librdkafka) and kafka-python (which checks the xerial header's
    versions) read every record, key and value."""
    topic = create_topic(server, partitions=1, prefix=f"native-zip-{codec}")
    count = 2000
    lines = [f"k{i % 13}:{codec} line {i} " + "y" * (i % 50) for i in range(count)]
    server.ringlog("produce", topic, "--key-separator", ":", "--compression", codec,
                   input=("\n".join(lines) + "\n").encode())
    expected = [(i, line.split(":", 1)[0], line.split(":", 1)[1]) for i, line in enumerate(lines)]

    rdkafka = Consumer({
        "bootstrap.servers": server.bootstrap,
        "group.id": f"native-zip-{codec}",
        "enable.auto.commit": False,
    })
    try:
        rdkafka.assign([RdTopicPartition(topic, 0, OFFSET_BEGINNING)])
        got = []
        while len(got) < count:
            message = rdkafka.poll(10)
            assert message is not None, f"confluent-kafka got {len(got)} of {count}"
            assert message.error() is None, message.error()
            got.append((message.offset(), message.key().decode(), message.value().decode()))
    finally:
        rdkafka.close()
    assert got == expected

    python = KafkaConsumer(bootstrap_servers=server.bootstrap, group_id=None, consumer_timeout_ms=10000)
    try:
        python.assign([TopicPartition(topic, 0)])
        python.seek_to_beginning()
        got = []
        for message in python:
            got.append((message.offset, message.key.decode(), message.value.decode()))
            if len(got) == count:
                break
    finally:
        python.close()
    assert got == expected
