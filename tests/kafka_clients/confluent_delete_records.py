"""DeleteRecords through confluent-kafka's AdminClient: a partition's earliest offset moves,
a consumer from the beginning starts there, a partition left alone keeps everything, an
offset past the end is refused OFFSET_OUT_OF_RANGE.

Usage: confluent_delete_records.py BROKERS TOPIC PHASE
  PHASE "delete": TOPIC (2 partitions, 100 records each, written by the test) loses
  partition 0's records below offset 60.
  PHASE "check": the same state holds (run again after the partition's leader changed).
Exits non-zero with the failed check named. Run by tests/tests/kafka_admin.rs.
"""
import sys

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

BOOTSTRAP, TOPIC, PHASE = sys.argv[1], sys.argv[2], sys.argv[3]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def consumer():
    return Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "dr-check",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def watermarks(p):
    c = consumer()
    try:
        return c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)
    finally:
        c.close()


def read_from_beginning(p, expect):
    c = consumer()
    c.assign([TopicPartition(TOPIC, p, -2)])  # OFFSET_BEGINNING
    got = []
    while len(got) < expect:
        m = c.poll(30)
        check(m is not None, f"partition {p}: only {len(got)} of {expect} read")
        check(m.error() is None, f"partition {p}: {m.error()}")
        got.append((m.offset(), m.value().decode()))
    c.close()
    return got


if PHASE == "delete":
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    futures = admin.delete_records([TopicPartition(TOPIC, 0, 60)])
    deleted = list(futures.values())[0].result(timeout=30)
    check(deleted.low_watermark == 60, f"low watermark after the delete: {deleted.low_watermark}")
    # Past the end: refused, nothing moved.
    try:
        list(admin.delete_records([TopicPartition(TOPIC, 1, 1000)]).values())[0].result(timeout=30)
        check(False, "an offset past the end was accepted")
    except KafkaException as e:
        check("OFFSET_OUT_OF_RANGE" in e.args[0].name(), f"past the end refused: {e}")

check(watermarks(0) == (60, 100), f"partition 0 watermarks: {watermarks(0)}")
check(watermarks(1) == (0, 100), f"partition 1 watermarks: {watermarks(1)}")
got = read_from_beginning(0, 40)
check(got[0] == (60, "p0-60"), f"partition 0 starts at its new start: {got[0]}")
check([o for o, _ in got] == list(range(60, 100)), "partition 0 reads 60..100 in order")
got = read_from_beginning(1, 100)
check(got[0] == (0, "p1-0"), f"partition 1 keeps everything: {got[0]}")
print("OK", flush=True)
