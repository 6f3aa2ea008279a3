"""A real Kafka 4.x broker (KRaft): the fixture the Kafka input (issue 16) builds on.

What the input will rely on, shown with the official librdkafka client: topics with several
partitions, records keyed by source address land on one partition per key in the order
sent, and a consumer group resumes after its last committed offset.
"""

from __future__ import annotations

import itertools
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.engine

PARTITIONS = 4
_names = itertools.count()


@pytest.fixture
def topic(kafka_engine) -> str:
    name = f"zeekndm-test-{next(_names)}"
    admin = AdminClient({"bootstrap.servers": kafka_engine.bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)
    return name


def produce(kafka_engine, topic: str, records: list[tuple[str, str]]) -> None:
    # murmur2: the Java client's partitioner, so any producer puts a key on the same partition.
    # Idempotence: a produce retried under load (a loaded CI machine) is neither duplicated nor
    # reordered, which the per-key order assertions rely on.
    producer = Producer({
        "bootstrap.servers": kafka_engine.bootstrap, "partitioner": "murmur2",
        "enable.idempotence": True,
    })  # fmt: skip
    for key, value in records:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0


def consume(kafka_engine, topic: str, group: str, count: int) -> list:
    """`count` records (partition, key, value) read by `group`, committing what it read."""
    consumer = Consumer({
        "bootstrap.servers": kafka_engine.bootstrap, "group.id": group,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })  # fmt: skip
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if (
                message is None
                or message.error()
                and message.error().code() == KafkaError._PARTITION_EOF
            ):
                continue
            assert message.error() is None, message.error()
            got.append((message.partition(), message.key().decode(), message.value().decode()))
            consumer.commit(message, asynchronous=False)
    finally:
        consumer.close()
    return got


def test_topic_has_the_partitions_it_was_created_with(kafka_engine, topic):
    admin = AdminClient({"bootstrap.servers": kafka_engine.bootstrap})
    metadata = admin.list_topics(topic, timeout=30)
    assert sorted(metadata.topics[topic].partitions) == list(range(PARTITIONS))
    assert list(metadata.brokers) == [1]


def test_keyed_records_round_trip_in_order_per_key(kafka_engine, topic):
    sources = [f"10.0.0.{i}" for i in range(1, 13)]
    records = [(src, f"{src}#{n}") for n in range(5) for src in sources]
    produce(kafka_engine, topic, records)
    got = consume(kafka_engine, topic, "round-trip", len(records))
    assert sorted((k, v) for _, k, v in got) == sorted(records)
    partition_of = {}
    for partition, key, _ in got:
        assert partition_of.setdefault(key, partition) == partition  # one partition per key
    assert len(set(partition_of.values())) > 1  # the keys spread over several partitions
    for src in sources:
        assert [v for _, k, v in got if k == src] == [f"{src}#{n}" for n in range(5)]


def test_consumer_group_resumes_after_its_last_commit(kafka_engine, topic):
    first = [(f"10.0.1.{i}", f"a{i}") for i in range(8)]
    produce(kafka_engine, topic, first)
    assert len(consume(kafka_engine, topic, "resume", len(first))) == len(first)
    later = [(f"10.0.1.{i}", f"b{i}") for i in range(8)]
    produce(kafka_engine, topic, later)
    again = consume(kafka_engine, topic, "resume", len(later))
    assert sorted(v for _, _, v in again) == sorted(v for _, v in later)
