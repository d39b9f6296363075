"""Kafka transactions with the Python confluent-kafka client (librdkafka), unchanged.

Usage: confluent_transactions.py BOOTSTRAP TOPIC OUT PARTITIONS
(TOPIC and OUT exist with PARTITIONS partitions each and are empty.)

1. A transactional producer commits, aborts and commits a transaction of 30 records each
   (10 per partition of TOPIC); then it opens a fourth, writes 30 records and flushes them,
   and leaves it open.
2. While it is open, a read_committed consumer sees exactly the 60 committed records (held
   at the last stable offset) and a read_uncommitted one all 120; each partition's end
   offset counts the markers (30 records + 1 marker per transaction per partition).
3. The open transaction commits: the read_committed consumer then sees its 30 too.
4. Consume-transform-produce: group "ctp" reads TOPIC read_committed, writes each record
   upper-cased to OUT and sends its offsets in the transaction; committed once, then a
   second round is aborted. The group's committed offsets are those of the first round;
   OUT holds the first round's records only, as read_committed sees it.

Prints one JSON line of what was counted, then OK. Exits non-zero naming a failed check.
Run by tests/tests/transactions.rs.
"""
import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

import txn_readers

BOOTSTRAP, TOPIC, OUT, PARTITIONS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
PER_TXN = 10 * PARTITIONS


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def producer(tid):
    p = Producer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "transactional.id": tid,
            "linger.ms": 5,
            "transaction.timeout.ms": 60000,
        }
    )
    p.init_transactions(30)
    return p


def send_transaction(p, tag, end):
    p.begin_transaction()
    for i in range(PER_TXN):
        p.produce(TOPIC, value=f"{tag}-{i}".encode(), partition=i % PARTITIONS)
    p.flush(30)
    if end == "commit":
        p.commit_transaction(30)
    elif end == "abort":
        p.abort_transaction(30)


def read_all(topic, isolation, expect, timeout=20):
    return txn_readers.read_all(BOOTSTRAP, topic, PARTITIONS, isolation, expect, timeout)


def ends(topic, isolation="read_uncommitted"):
    """Each partition's end: the high watermark, or read_committed the last stable offset."""
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "ends", "isolation.level": isolation})
    out = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)]
    c.close()
    return out


report = {}
p = producer("meridian-txn-1")
send_transaction(p, "c1", "commit")
send_transaction(p, "a", "abort")
send_transaction(p, "c2", "commit")
send_transaction(p, "open", None)

committed = read_all(TOPIC, "read_committed", 2 * PER_TXN)
report["committed_while_open"] = len(committed)
check(sorted(committed) == sorted([f"c1-{i}" for i in range(PER_TXN)] + [f"c2-{i}" for i in range(PER_TXN)]),
      f"read_committed saw {len(committed)} records while a transaction was open: {sorted(committed)[:5]}...")
everything = read_all(TOPIC, "read_uncommitted", 4 * PER_TXN)
report["uncommitted_while_open"] = len(everything)
check(len(everything) == 4 * PER_TXN and len(set(everything)) == 4 * PER_TXN,
      f"read_uncommitted saw {len(everything)} records, not {4 * PER_TXN}")
report["ends_while_open"] = ends(TOPIC)
# 10 records per partition per transaction, and a marker each for the three ended ones.
check(report["ends_while_open"] == [4 * 10 + 3] * PARTITIONS,
      f"end offsets {report['ends_while_open']} do not count the markers")
# A read_committed consumer's end is the last stable offset: where the open one began.
report["stable_while_open"] = ends(TOPIC, "read_committed")
check(report["stable_while_open"] == [3 * 10 + 3] * PARTITIONS,
      f"last stable offsets {report['stable_while_open']} while a transaction is open")

p.commit_transaction(30)
committed = read_all(TOPIC, "read_committed", 3 * PER_TXN)
report["committed_after"] = len(committed)
check(len(committed) == 3 * PER_TXN and not any(v.startswith("a-") for v in committed),
      f"after the commit read_committed saw {len(committed)} records")
report["ends_after"] = ends(TOPIC)
check(ends(TOPIC, "read_committed") == report["ends_after"] == [4 * 10 + 4] * PARTITIONS,
      f"after the commit the ends are {report['ends_after']}")

# Consume-transform-produce, exactly once.
t = producer("meridian-txn-ctp")
consumer = Consumer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": "ctp",
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
)
consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])


def transform_round(end, want):
    t.begin_transaction()
    got = 0
    deadline = time.monotonic() + 20
    while got < want and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is None:
            continue
        check(m.error() is None, f"ctp consumer error {m.error()}")
        t.produce(OUT, value=m.value().decode().upper().encode(), partition=m.partition())
        got += 1
    check(got == want, f"the transform round read {got} of {want}")
    t.send_offsets_to_transaction(consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
    if end == "commit":
        t.commit_transaction(30)
    else:
        t.abort_transaction(30)
    return got


transform_round("commit", 2 * PER_TXN)
first_positions = {tp.partition: tp.offset for tp in consumer.position(consumer.assignment())}
transform_round("abort", PER_TXN)
committed_offsets = {
    tp.partition: tp.offset for tp in consumer.committed([TopicPartition(TOPIC, p) for p in range(PARTITIONS)], timeout=10)
}
consumer.close()
report["ctp_committed"] = committed_offsets
check(committed_offsets == first_positions,
      f"after an aborted round the group's offsets are {committed_offsets}, not the first round's {first_positions}")
out = read_all(OUT, "read_committed", 2 * PER_TXN)
report["out_committed"] = len(out)
check(len(out) == 2 * PER_TXN and len(set(out)) == len(out), f"OUT holds {len(out)} committed records")
out_all = read_all(OUT, "read_uncommitted", 3 * PER_TXN)
report["out_uncommitted"] = len(out_all)
check(len(out_all) == 3 * PER_TXN, f"OUT holds {len(out_all)} records in all")

# A fenced (older) producer of the same transactional id is refused.
zombie = p
newer = producer("meridian-txn-1")
zombie.begin_transaction()
zombie.produce(TOPIC, value=b"zombie", partition=0)
try:
    zombie.commit_transaction(15)
    fenced = False
except KafkaException as e:
    fenced = e.args[0].fatal() or "fenced" in str(e).lower()
report["zombie_fenced"] = fenced
check(fenced, "the older producer's commit went through")

print(json.dumps(report), flush=True)
print("OK", flush=True)
