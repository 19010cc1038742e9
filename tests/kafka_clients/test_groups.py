"""Consumer groups with real clients: two members split a topic's partitions, a member leaving
hands its partitions over, and a group resumes from its committed offsets after the server
restarts (confluent-kafka and kafka-python)."""

import contextlib
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer
from kafka import KafkaConsumer

from conftest import create_topic, wait_until

PARTITIONS = 4


def fill(server, topic, count):
    producer = Producer({"bootstrap.servers": server.bootstrap, "linger.ms": 5})
    for i in range(count):
        producer.produce(topic, value=str(i).encode(), partition=i % PARTITIONS)
    assert producer.flush(30) == 0


def rdkafka_member(server, group, topic, **settings):
    consumer = Consumer({
        "bootstrap.servers": server.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        **settings,
    })
    consumer.subscribe([topic])
    return consumer


def assigned(consumer):
    return sorted(tp.partition for tp in consumer.assignment())


def poll_into(consumer, seen):
    """Takes what has arrived (waiting at most 50 ms) into `seen`."""
    for message in consumer.consume(num_messages=1000, timeout=0.05):
        if message.error() is None:
            seen.append((message.partition(), message.offset(), int(message.value())))


def test_two_members_split_partitions_and_rebalance_on_leave(server):
    topic = create_topic(server, PARTITIONS, prefix="split")
    fill(server, topic, 400)
    first = rdkafka_member(server, "split-group", topic)
    second = rdkafka_member(server, "split-group", topic)
    try:
        split_and_leave(first, second)
    finally:
        for consumer in (first, second):
            with contextlib.suppress(RuntimeError):  # Already closed.
                consumer.close()


def split_and_leave(first, second):
    seen_first, seen_second = [], []

    def both_assigned():
        poll_into(first, seen_first)
        poll_into(second, seen_second)
        return first.assignment() and second.assignment() and \
            len(assigned(first)) + len(assigned(second)) == PARTITIONS

    wait_until(both_assigned, what="both members assigned")
    assert set(assigned(first)).isdisjoint(assigned(second))
    assert sorted(assigned(first) + assigned(second)) == list(range(PARTITIONS))

    def everything_read():
        poll_into(first, seen_first)
        poll_into(second, seen_second)
        return len({record for record in seen_first + seen_second}) >= 400

    wait_until(everything_read, what="all 400 records")
    # Records read before the members settled may have been read twice (nothing was
    # committed); every record was read.
    values = sorted({value for _, _, value in seen_first + seen_second})
    assert values == list(range(400))

    # The second member leaves: the first is given every partition.
    second.close()

    def first_has_all():
        poll_into(first, seen_first)
        return assigned(first) == list(range(PARTITIONS))

    wait_until(first_has_all, what="the remaining member to take every partition")


def test_cooperative_sticky_never_gives_a_partition_to_two_members(server):
    """With cooperative-sticky (KIP-429) members keep their partitions through a rebalance and
    give up those moving away after it; Kafka hands a moved partition to its new owner only in
    the next rebalance, once the old owner has revoked it and rejoined. So no partition is ever
    read by two members at once, however long the old owner takes to poll."""
    topic = create_topic(server, PARTITIONS, prefix="coop")
    fill(server, topic, 100)
    cooperative = {"partition.assignment.strategy": "cooperative-sticky"}
    first = rdkafka_member(server, "coop-group", topic, **cooperative)
    second = None
    try:
        wait_until(lambda: poll_into(first, []) or assigned(first) == list(range(PARTITIONS)),
                   what="the first member to take every partition")
        second = rdkafka_member(server, "coop-group", topic, **cooperative)
        # Only the newcomer polls: the first member rejoins from librdkafka's thread, but gives
        # partitions up only when its application polls.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            poll_into(second, [])
            assert set(assigned(first)).isdisjoint(assigned(second)), \
                f"first {assigned(first)}, second {assigned(second)}"

        def split():
            poll_into(first, [])
            poll_into(second, [])
            return assigned(first) and assigned(second) and \
                sorted(assigned(first) + assigned(second)) == list(range(PARTITIONS))

        wait_until(split, what="both members assigned")
        assert set(assigned(first)).isdisjoint(assigned(second))
    finally:
        for consumer in (first, second):
            if consumer is not None:
                consumer.close()


def test_cooperative_member_commits_what_it_gives_up(server):
    """The usual way not to read a partition twice across a rebalance: commit its position in
    the revocation callback. A cooperative member is told what it gives up after the rebalance
    that takes it away, so it commits in the new generation partitions it is no longer
    assigned; Kafka's coordinator takes such a commit (it checks the member and generation),
    and the new owner starts from it."""
    topic = create_topic(server, PARTITIONS, prefix="coop-commit")
    fill(server, topic, 100)
    failures = []

    def commit_revoked(consumer, partitions):
        try:
            consumer.commit(offsets=consumer.position(partitions), asynchronous=False)
        except KafkaException as error:
            failures.append(error.args[0])

    def member():
        consumer = rdkafka_member(server, "coop-commit-group", topic,
                                  **{"partition.assignment.strategy": "cooperative-sticky"})
        consumer.subscribe([topic], on_revoke=commit_revoked)
        return consumer

    first = member()
    second = None
    try:
        seen_first, seen_second = [], []
        wait_until(lambda: poll_into(first, seen_first) or len(seen_first) >= 100,
                   what="the first member to read every record")
        second = member()

        def split():
            poll_into(first, seen_first)
            poll_into(second, seen_second)
            return assigned(first) and assigned(second) and \
                sorted(assigned(first) + assigned(second)) == list(range(PARTITIONS))

        wait_until(split, what="both members assigned")
        # Give the second member time to fetch from wherever it starts.
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            poll_into(second, seen_second)
        assert failures == []
        assert seen_second == [], "the second member read again what the first had committed"
    finally:
        for consumer in (first, second):
            if consumer is not None:
                consumer.close()


def test_resume_from_committed_offsets_after_restart(server):
    topic = create_topic(server, PARTITIONS, prefix="resume")
    fill(server, topic, 200)
    # Group ids are free text in Kafka (Kafka Connect, Spring and Flink name them so).
    group = "app:resume/group v1"
    consumer = rdkafka_member(server, group, topic)
    try:
        seen = []
        wait_until(lambda: poll_into(consumer, seen) or len(seen) >= 200, what="200 records")
        consumer.commit(asynchronous=False)
        committed = {tp.partition: tp.offset for tp in consumer.committed(
            [tp for tp in consumer.assignment()], timeout=10)}
        assert committed == {p: 50 for p in range(PARTITIONS)}
    finally:
        consumer.close()

    server.restart()
    fill(server, topic, 100)  # values 0..99 again, now at offsets 50..74 of each partition

    resumed = rdkafka_member(server, group, topic)
    try:
        again = []
        wait_until(lambda: poll_into(resumed, again) or len(again) >= 100, what="the 100 new records")
        # Nothing before the committed offsets came back.
        assert min(offset for _, offset, _ in again) == 50
        assert len(again) == 100
        assert sorted(value for _, _, value in again) == list(range(100))
    finally:
        resumed.close()


def test_static_member_restarting_keeps_its_partitions(server):
    """A static member (group.instance.id, KIP-345) does not leave the group when it closes;
    started again with the same instance id within its session timeout, it takes its place
    back with its partitions, and the other member is not rebalanced."""
    topic = create_topic(server, PARTITIONS, prefix="static")
    fill(server, topic, 100)
    revoked = []

    def member(instance):
        return rdkafka_member(server, "static-group", topic, **{
            "group.instance.id": instance, "session.timeout.ms": 60000})

    first = member("first")
    second = member("second")
    second.subscribe([topic], on_revoke=lambda _, partitions: revoked.append(
        sorted(tp.partition for tp in partitions)))
    restarted = None
    try:
        def split(one, other):
            poll_into(one, [])
            poll_into(other, [])
            return assigned(one) and assigned(other) and \
                sorted(assigned(one) + assigned(other)) == list(range(PARTITIONS))

        wait_until(lambda: split(first, second), what="both members assigned")
        held_first, held_second = assigned(first), assigned(second)
        revoked.clear()
        first.close()  # A static member's close sends no LeaveGroup.
        restarted = member("first")
        wait_until(lambda: split(restarted, second), timeout_s=20,
                   what="the restarted member to take its partitions back")
        assert assigned(restarted) == held_first
        assert assigned(second) == held_second
        assert revoked == [], "the other member was rebalanced"
    finally:
        for consumer in (second, restarted):
            if consumer is not None:
                consumer.close()


def consumer_protocol_member(server, group, topic):
    """A member using Kafka's consumer group protocol (KIP-848): heartbeats, no rebalances."""
    consumer = Consumer({
        "bootstrap.servers": server.bootstrap,
        "group.id": group,
        "group.protocol": "consumer",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    return consumer


def test_consumer_group_protocol_members_split_hand_over_and_commit(server):
    """group.protocol=consumer (ConsumerGroupHeartbeat): two members split the partitions
    without a partition ever held by both, commit with their member epochs, and the one left
    takes every partition when the other leaves; a classic member cannot join meanwhile."""
    topic = create_topic(server, PARTITIONS, prefix="kip848")
    first = consumer_protocol_member(server, "kip848-group", topic)
    second = consumer_protocol_member(server, "kip848-group", topic)
    classic = None
    try:
        seen_first, seen_second = [], []

        def split():
            poll_into(first, seen_first)
            poll_into(second, seen_second)
            assert set(assigned(first)).isdisjoint(assigned(second)), \
                f"first {assigned(first)}, second {assigned(second)}"
            return len(assigned(first)) == 2 and len(assigned(second)) == 2

        # A partition moves in two heartbeats (5 s apart): its owner revokes, then the new one
        # takes it.
        wait_until(split, timeout_s=60, what="two members with two partitions each")
        fill(server, topic, 400)

        def everything_read():
            split()
            return len(seen_first) + len(seen_second) >= 400

        wait_until(everything_read, what="all 400 records")
        assert sorted(value for _, _, value in seen_first + seen_second) == list(range(400))
        assert {p for p, _, _ in seen_first} == set(assigned(first))
        assert {p for p, _, _ in seen_second} == set(assigned(second))
        for consumer in (first, second):
            consumer.commit(asynchronous=False)
        # A classic member is refused while the group's members use the other protocol.
        classic = rdkafka_member(server, "kip848-group", topic)
        errors = []

        def refused():
            message = classic.poll(0.1)
            if message is not None and message.error() is not None:
                errors.append(message.error())
            return errors

        wait_until(refused, what="the classic member to be refused")
        second.close()
        wait_until(lambda: poll_into(first, seen_first) or assigned(first) == list(range(PARTITIONS)),
                   timeout_s=60, what="the remaining member to take every partition")
    finally:
        for consumer in (first, second, classic):
            if consumer is not None:
                with contextlib.suppress(RuntimeError):  # Already closed.
                    consumer.close()
    # Every record committed: a new member of the group reads none of them again.
    again = consumer_protocol_member(server, "kip848-group", topic)
    try:
        extra = []
        wait_until(lambda: poll_into(again, extra) or len(assigned(again)) == PARTITIONS,
                   what="the new member's assignment")
        deadline = time.monotonic() + 1
        while time.monotonic() < deadline:
            poll_into(again, extra)
        assert extra == []
    finally:
        again.close()


class KafkaPythonMember(threading.Thread):
    """A kafka-python group member polling in its own thread, as applications run them (its
    rebalance completes inside poll only when poll runs while the other members rejoin)."""

    def __init__(self, server, group, topic, **settings):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=server.bootstrap, group_id=group,
            auto_offset_reset="earliest", enable_auto_commit=False,
            **{"session_timeout_ms": 6000, "heartbeat_interval_ms": 300, **settings},
        )
        self.partitions = set()
        # Every assignment the member held, in order (an empty one between two is a
        # rebalance that took everything away).
        self.history = []
        self.stopping = threading.Event()
        self.start()

    def run(self):
        while not self.stopping.is_set():
            self.consumer.poll(timeout_ms=100)
            self.partitions = {tp.partition for tp in self.consumer.assignment()}
            if not self.history or self.history[-1] != self.partitions:
                self.history.append(self.partitions)
        self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)


def test_kafka_python_group_split_and_leave(server):
    topic = create_topic(server, PARTITIONS, prefix="kp-split")
    fill(server, topic, 100)
    first = KafkaPythonMember(server, "kp-group", topic)
    second = KafkaPythonMember(server, "kp-group", topic)
    try:
        wait_until(lambda: first.partitions and second.partitions
                   and len(first.partitions) + len(second.partitions) == PARTITIONS,
                   what="kafka-python members to split the partitions")
        assert first.partitions.isdisjoint(second.partitions)
        assert first.partitions | second.partitions == set(range(PARTITIONS))
        second.stop()
        wait_until(lambda: first.partitions == set(range(PARTITIONS)),
                   what="the remaining kafka-python member to take every partition")
    finally:
        first.stop()
        second.stop()


def test_kafka_python_static_member_restarts_without_a_rebalance(server):
    """kafka-python's static members (group_instance_id) do not leave on close either: the
    one started again with the same id gets its partitions back and the other keeps its own
    throughout."""
    topic = create_topic(server, PARTITIONS, prefix="kp-static")
    fill(server, topic, 100)

    def member(instance):
        return KafkaPythonMember(server, "kp-static-group", topic, group_instance_id=instance,
                                 session_timeout_ms=60000)

    first, second, restarted = member("kp-a"), member("kp-b"), None
    try:
        wait_until(lambda: first.partitions and second.partitions
                   and len(first.partitions) + len(second.partitions) == PARTITIONS,
                   what="kafka-python members to split the partitions")
        held_first, held_second = set(first.partitions), set(second.partitions)
        seen_by_second = len(second.history)
        first.stop()
        restarted = member("kp-a")
        wait_until(lambda: restarted.partitions == held_first, timeout_s=20,
                   what="the restarted member to take its partitions back")
        assert second.history[seen_by_second - 1:] == [held_second], \
            f"the other member was rebalanced: {second.history}"
    finally:
        for consumer in (first, second, restarted):
            if consumer is not None:
                consumer.stop()
