"""Kafka admin clients against ringlog: a topic's retention changed with
IncrementalAlterConfigs (confluent-kafka, as kafka-configs.sh --alter does), seen by
DescribeConfigs and by the ringlog CLI; settings fixed at creation are refused; partitions
added with CreatePartitions take records at once; consumer groups listed, described, their
offsets deleted and the groups deleted (as kafka-consumer-groups.sh does); records deleted
up to an offset (as kafka-delete-records.sh does), which the ringlog CLI then starts from; a
topic's whole set of settings replaced with kafka-python's alter_configs (the older
AlterConfigs request)."""

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from kafka import TopicPartition as PyTopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import GroupSubscribedToTopicError, NoError
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    ResourceType,
)

TIMEOUT_S = 30


def alter(admin, name, setting, value, operation=AlterConfigOpType.SET):
    entry = ConfigEntry(setting, value, incremental_operation=operation)
    resource = ConfigResource(ResourceType.TOPIC, name, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=TIMEOUT_S)


def setting(admin, name, key):
    resource = ConfigResource(ResourceType.TOPIC, name)
    (future,) = admin.describe_configs([resource]).values()
    return future.result(timeout=TIMEOUT_S)[key].value


def test_retention_changes_and_the_cli_sees_it(server, topic):
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    assert setting(admin, topic, "retention.ms") == "-1"
    alter(admin, topic, "retention.ms", "3600000")
    assert setting(admin, topic, "retention.ms") == "3600000"
    described = server.ringlog("topic", "describe", topic).decode()
    assert "retention_ms 3600000" in described.splitlines()[0]

    alter(admin, topic, "retention.ms", None, AlterConfigOpType.DELETE)
    assert setting(admin, topic, "retention.ms") == "-1"

    with pytest.raises(KafkaException) as refused:
        alter(admin, topic, "segment.bytes", "2097152")
    assert refused.value.args[0].name() == "INVALID_CONFIG"


def test_added_partitions_take_records(server, topic):
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    for future in admin.create_partitions([NewPartitions(topic, 5)]).values():
        future.result(timeout=TIMEOUT_S)
    producer = Producer({"bootstrap.servers": server.bootstrap, "acks": "all"})
    producer.produce(topic, b"on-the-new-partition", partition=4)
    assert producer.flush(TIMEOUT_S) == 0
    out = server.ringlog("consume", topic, "--partition", "4", "--from", "earliest", "--count", "1")
    assert out == b"on-the-new-partition\n"

    with pytest.raises(KafkaException) as refused:
        for future in admin.create_partitions([NewPartitions(topic, 2)]).values():
            future.result(timeout=TIMEOUT_S)
    assert refused.value.args[0].name() == "INVALID_PARTITIONS"


def group_ids(admin):
    listing = admin.list_consumer_groups().result(timeout=TIMEOUT_S)
    return {group.group_id for group in listing.valid}


def test_consumer_groups_are_listed_described_and_deleted(server, topic):
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    producer = Producer({"bootstrap.servers": server.bootstrap})
    producer.produce(topic, b"one", partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    group = f"{topic}-readers"
    consumer = Consumer({
        "bootstrap.servers": server.bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    message = None
    while message is None or message.error() is not None:
        message = consumer.poll(TIMEOUT_S)
    consumer.commit(message, asynchronous=False)
    assert group in group_ids(admin)
    (described,) = admin.describe_consumer_groups([group]).values()
    description = described.result(timeout=TIMEOUT_S)
    assert str(description.state).endswith("STABLE")
    assert len(description.members) == 1

    with pytest.raises(KafkaException) as refused:
        for future in admin.delete_consumer_groups([group]).values():
            future.result(timeout=TIMEOUT_S)
    assert refused.value.args[0].name() == "NON_EMPTY_GROUP"
    # kafka-consumer-groups --delete-offsets (confluent-kafka's AdminClient has no such call;
    # kafka-python's does): refused while a member reads the topic, done once none does.
    python_admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        partition_zero = PyTopicPartition(topic, 0)
        deleted = python_admin.delete_group_offsets(group, [partition_zero])
        assert deleted[partition_zero] is GroupSubscribedToTopicError, deleted
        consumer.close()
        deleted = python_admin.delete_group_offsets(group, [partition_zero])
        assert deleted[partition_zero] is NoError, deleted
    finally:
        python_admin.close()
    listed = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0)])])
    (future,) = listed.values()
    assert future.result(timeout=TIMEOUT_S).topic_partitions[0].offset < 0
    for future in admin.delete_consumer_groups([group]).values():
        future.result(timeout=TIMEOUT_S)
    assert group not in group_ids(admin)
    assert group not in server.ringlog("group", "list").decode()


def test_records_are_deleted_up_to_an_offset(server, topic):
    producer = Producer({"bootstrap.servers": server.bootstrap, "acks": "all"})
    for n in range(10):
        producer.produce(topic, str(n).encode(), partition=0)
    assert producer.flush(TIMEOUT_S) == 0
    admin = AdminClient({"bootstrap.servers": server.bootstrap})
    (future,) = admin.delete_records([TopicPartition(topic, 0, 4)]).values()
    assert future.result(timeout=TIMEOUT_S).low_watermark == 4
    out = server.ringlog("consume", topic, "--partition", "0", "--from", "earliest", "--count", "6")
    assert out.decode().split() == [str(n) for n in range(4, 10)]


def test_kafka_python_alter_configs_replaces_the_whole_set(server, topic):
    from kafka.admin import ConfigResource as PyConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=server.bootstrap)
    try:
        resource = PyConfigResource(ConfigResourceType.TOPIC, topic, configs={"retention.bytes": "1048576"})
        admin.alter_configs([resource])
    finally:
        admin.close()
    described = server.ringlog("topic", "describe", topic).decode().splitlines()[0]
    assert "retention_ms unlimited, retention_bytes 1048576" in described, described
