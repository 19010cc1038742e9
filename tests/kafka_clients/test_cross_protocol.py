"""Records cross between the protocols unchanged: kcat writes, `ringlog consume` reads; `ringlog
produce` writes, kafka-python reads."""

import subprocess

from kafka import KafkaConsumer, TopicPartition


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
