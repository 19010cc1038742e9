"""kafka-python and confluent-kafka producers against ringlog: acks=all, every compression
codec, and the idempotent producer; what they write is read back by a real consumer."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from conftest import create_topic

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def read_all(server, topic, partitions=3, expected=None, timeout_ms=5000):
    """Every record of `topic` from the start: {partition: [(offset, value)]}."""
    consumer = KafkaConsumer(
        bootstrap_servers=server.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        consumer_timeout_ms=timeout_ms,
    )
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(partitions)])
        consumer.seek_to_beginning()
        out = {p: [] for p in range(partitions)}
        count = 0
        for message in consumer:
            out[message.partition].append((message.offset, message.value))
            count += 1
            if expected is not None and count >= expected:
                break
        return out
    finally:
        consumer.close()


def test_kafka_python_producer_with_acks_all(server, topic):
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, acks="all")
    sent = [producer.send(topic, value=f"v{i}".encode(), partition=i % 3) for i in range(300)]
    metadata = [future.get(timeout=30) for future in sent]
    producer.close()
    for partition in range(3):
        offsets = [m.offset for m in metadata if m.partition == partition]
        assert offsets == list(range(100)), "offsets are dense and in send order"
    records = read_all(server, topic, expected=300)
    for partition in range(3):
        values = [value for _, value in records[partition]]
        assert values == [f"v{i}".encode() for i in range(partition, 300, 3)]


@pytest.mark.parametrize("codec", CODECS)
def test_confluent_producer_compression(server, codec):
    topic = create_topic(server, prefix=f"rdk-{codec}")
    producer = Producer({
        "bootstrap.servers": server.bootstrap,
        "compression.type": codec,
        "acks": "all",
        "linger.ms": 20,
    })
    failures = []
    for i in range(3000):
        producer.produce(
            topic, key=f"k{i % 11}".encode(), value=f"{codec}-{i}".encode() * 4,
            on_delivery=lambda error, _: failures.append(error) if error else None,
        )
    assert producer.flush(60) == 0
    assert failures == []
    records = read_all(server, topic, expected=3000)
    values = sorted(value for partition in records.values() for _, value in partition)
    assert values == sorted(f"{codec}-{i}".encode() * 4 for i in range(3000))


@pytest.mark.parametrize("codec", CODECS)
def test_kafka_python_producer_compression(server, codec):
    topic = create_topic(server, prefix=f"kp-{codec}")
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, compression_type=codec, linger_ms=20)
    futures = [producer.send(topic, value=f"{codec}:{i}".encode(), partition=0) for i in range(1000)]
    assert [f.get(timeout=30).offset for f in futures] == list(range(1000))
    producer.close()
    records = read_all(server, topic, expected=1000)
    assert [value for _, value in records[0]] == [f"{codec}:{i}".encode() for i in range(1000)]


def test_idempotent_producer(server, topic):
    producer = Producer({
        "bootstrap.servers": server.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "retries": 10,
        "max.in.flight.requests.per.connection": 5,
        "linger.ms": 5,
    })
    failures = []
    delivered = []

    def on_delivery(error, message):
        if error:
            failures.append(error)
        else:
            delivered.append((message.partition(), message.offset(), message.value()))

    for i in range(10_000):
        producer.produce(topic, value=str(i).encode(), partition=i % 3, on_delivery=on_delivery)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0
    assert failures == []
    assert len(delivered) == 10_000
    records = read_all(server, topic, expected=10_000)
    for partition in range(3):
        # Exactly once and in order: no duplicate, no gap, offsets dense from 0.
        assert [offset for offset, _ in records[partition]] == list(range(len(records[partition])))
        values = [int(value) for _, value in records[partition]]
        assert values == list(range(partition, 10_000, 3))


def test_transactional_producer_fails_fast(server, topic):
    """ringlog has no transactions: init_transactions() must fail at once with a fatal error
    (as against a Kafka cluster that refuses the transactional id), not retry the transaction
    coordinator lookup until the call times out."""
    producer = Producer({"bootstrap.servers": server.bootstrap, "transactional.id": f"{topic}-tx"})
    started = time.monotonic()
    with pytest.raises(KafkaException) as refused:
        producer.init_transactions(20)
    error = refused.value.args[0]
    assert error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, error
    assert error.fatal()
    assert time.monotonic() - started < 10
