"""Committed offset metadata with confluent-kafka (run by tests/tests/kafka_admin.rs).

Usage:
  confluent_offset_metadata.py BROKERS commit   makes topic "meta" (1 partition), writes
      10 records, commits offset 5 of group "metagroup" with metadata "checkpoint 5";
      metadata over 4,096 bytes is refused with OFFSET_METADATA_TOO_LARGE.
  confluent_offset_metadata.py BROKERS check    the group's commit reads back offset 5
      with its metadata.
Prints OK; exits non-zero with the failed check named.
"""
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOTSTRAP, PHASE = sys.argv[1], sys.argv[2]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "metagroup",
                     "enable.auto.commit": False})
if PHASE == "commit":
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic("meta", num_partitions=1, replication_factor=1)])["meta"].result(30)
    p = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(10):
        p.produce("meta", value=f"m{i}")
    check(p.flush(30) == 0, "produced")
    done = consumer.commit(offsets=[TopicPartition("meta", 0, 5, metadata="checkpoint 5")],
                           asynchronous=False)
    check(done[0].error is None, f"committed: {done[0].error}")
    try:
        done = consumer.commit(offsets=[TopicPartition("meta", 0, 6, metadata="x" * 5000)],
                               asynchronous=False)
        check(done[0].error is not None
              and done[0].error.code() == KafkaError.OFFSET_METADATA_TOO_LARGE,
              f"oversized metadata refused: {done[0].error}")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.OFFSET_METADATA_TOO_LARGE,
              f"oversized metadata refused with OFFSET_METADATA_TOO_LARGE: {e}")
committed = consumer.committed([TopicPartition("meta", 0)], timeout=30)[0]
check(committed.error is None, f"committed read: {committed.error}")
check(committed.offset == 5, f"offset 5 committed: {committed.offset}")
check(committed.metadata == "checkpoint 5", f"metadata kept: {committed.metadata!r}")
consumer.close()
print("OK", flush=True)
