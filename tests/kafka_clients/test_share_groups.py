"""Kafka's share consumers (KIP-932) on ringlog's share groups: confluent-kafka's ShareConsumer
joins with ShareGroupHeartbeat, reads leased records with ShareFetch, acknowledges them
(implicitly at its next poll, or explicitly: accept, release, reject), and reads the same
share group as ringlog's own share consumers."""

import time

from confluent_kafka import AcknowledgeType, Producer, ShareConsumer

from conftest import create_topic, wait_until


def fill(server, topic, count, partitions):
    producer = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=str(i).encode(), partition=i % partitions)
    assert producer.flush(30) == 0


def share_member(server, group, topic, **settings):
    consumer = ShareConsumer({"bootstrap.servers": server.bootstrap, "group.id": group, **settings})
    consumer.subscribe([topic])
    return consumer


def take(consumer, into, timeout=0.2):
    """Polls once (which acknowledges, in implicit mode, what the last poll returned)."""
    into.extend(m for m in consumer.poll(timeout) if m.error() is None)


def values(messages):
    return sorted(int(m.value()) for m in messages)


def test_share_consumers_read_every_record_once(server):
    topic = create_topic(server, 4, prefix="share-split")
    fill(server, topic, 400, 4)
    first = share_member(server, "share-split-group", topic)
    second = share_member(server, "share-split-group", topic)
    seen_first, seen_second = [], []
    try:
        def everything_read():
            take(first, seen_first)
            take(second, seen_second)
            return len(seen_first) + len(seen_second) >= 400

        wait_until(everything_read, what="all 400 records")
        # One more poll each acknowledges what the last one returned.
        take(first, seen_first)
        take(second, seen_second)
    finally:
        first.close()
        second.close()
    assert values(seen_first + seen_second) == list(range(400)), "each record exactly once"
    assert all(m.delivery_count() == 1 for m in seen_first + seen_second)
    # Everything was acknowledged: a new member finds nothing.
    late = share_member(server, "share-split-group", topic)
    try:
        found = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            take(late, found)
        assert found == []
    finally:
        late.close()


def test_released_records_come_back_and_rejected_ones_do_not(server):
    topic = create_topic(server, 1, prefix="share-release")
    fill(server, topic, 5, 1)
    consumer = share_member(server, "share-release-group", topic,
                            **{"share.acknowledgement.mode": "explicit"})
    try:
        first = []
        wait_until(lambda: take(consumer, first) or len(first) >= 5, what="5 records")
        assert values(first) == list(range(5))
        assert [m.delivery_count() for m in first] == [1] * 5
        for message in first:
            consumer.acknowledge(message, AcknowledgeType.RELEASE)
        again = []
        wait_until(lambda: take(consumer, again) or len(again) >= 5, what="the released records")
        assert values(again) == list(range(5))
        assert [m.delivery_count() for m in again] == [2] * 5
        for message in again:
            kind = AcknowledgeType.ACCEPT if int(message.value()) < 2 else AcknowledgeType.REJECT
            consumer.acknowledge(message, kind)
        results = consumer.commit_sync(10)
        assert all(error is None for error in results.values()), results
        rest = []
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            take(consumer, rest)
        assert rest == [], "accepted and rejected records are not delivered again"
    finally:
        consumer.close()


def test_kafka_and_native_share_consumers_share_one_group(server):
    """A Kafka share consumer accepts some records and closes holding the others, which go
    back to the group at once: `ringlog consume --share-group` then reads exactly those."""
    topic = create_topic(server, 2, prefix="share-cross")
    fill(server, topic, 20, 2)
    consumer = share_member(server, "share-cross-group", topic,
                            **{"share.acknowledgement.mode": "explicit"})
    try:
        taken = []
        wait_until(lambda: take(consumer, taken) or len(taken) >= 20, what="20 records")
        for message in taken:
            if int(message.value()) < 8:
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)
        assert all(error is None for error in consumer.commit_sync(10).values())
    finally:
        consumer.close()
    out = server.ringlog("consume", topic, "--share-group", "share-cross-group", "--count", "12")
    assert sorted(int(line) for line in out.decode().split()) == list(range(8, 20))


def test_a_share_consumer_reads_on_across_a_server_restart(server):
    """The server's restart loses the share sessions (kept on connections), not the share
    state: the consumer opens a new session and reads on from what it had acknowledged."""
    topic = create_topic(server, 2, prefix="share-restart")
    fill(server, topic, 10, 2)
    consumer = share_member(server, "share-restart-group", topic,
                            **{"share.acknowledgement.mode": "explicit"})
    try:
        first = []
        wait_until(lambda: take(consumer, first) or len(first) >= 10, what="10 records")
        for message in first:
            consumer.acknowledge(message, AcknowledgeType.ACCEPT)
        assert all(error is None for error in consumer.commit_sync(10).values())
        server.restart()
        producer = Producer({"bootstrap.servers": server.bootstrap})
        for i in range(10, 20):
            producer.produce(topic, value=str(i).encode(), partition=i % 2)
        assert producer.flush(30) == 0
        second = []
        def read_and_accept():
            batch = []
            take(consumer, batch)
            for message in batch:
                consumer.acknowledge(message, AcknowledgeType.ACCEPT)
            second.extend(batch)
            return len(second) >= 10

        wait_until(read_and_accept, timeout_s=60, what="the 10 records produced after the restart")
    finally:
        consumer.close()
    assert values(first) == list(range(10))
    assert values(second) == list(range(10, 20)), "nothing acknowledged came back"
