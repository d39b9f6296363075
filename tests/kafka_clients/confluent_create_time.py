"""Replay by the producer's timestamp (CreateTime) with confluent-kafka.

Usage: confluent_create_time.py BOOTSTRAP TOPIC
Writes 20 records to partition 0 of TOPIC with explicit timestamps in 2017 (record i at
TS0 + i s, except record 3, stamped TS0 + 4.7 s: after record 4), asks offsets_for_times for
TS0 + 10.5 s and for TS0 + 4.5 s, and tries a record stamped two hours ahead (Kafka's
message.timestamp.after.max.ms, one hour by default, refuses it). Prints one JSON line:
{"at_10_5": offset, "at_4_5": offset, "future_error": "..."}. Run by tests/tests/kafka.rs.
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]
TS0 = 1_500_000_000_000

producer = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 0})
errors = []


def report(err, msg):
    if err is not None:
        errors.append(err)


for i in range(20):
    ts = TS0 + i * 1000
    if i == 3:
        ts = TS0 + 4_700
    producer.produce(TOPIC, value=f"v{i}", partition=0, timestamp=ts, on_delivery=report)
    producer.flush(10)
if errors:
    print(f"FAILED: a record with a past timestamp was refused: {errors}", flush=True)
    sys.exit(1)

future = []
producer.produce(
    TOPIC,
    value="future",
    partition=0,
    timestamp=int(time.time() * 1000) + 2 * 3600 * 1000,
    on_delivery=lambda err, msg: future.append(err),
)
producer.flush(10)

consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "create-time"})
# One query per call: a ListOffsets request names a partition once.
found = [
    consumer.offsets_for_times([TopicPartition(TOPIC, 0, ts)], timeout=10)[0]
    for ts in (TS0 + 10_500, TS0 + 4_500)
]
consumer.close()
print(
    json.dumps(
        {
            "at_10_5": found[0].offset,
            "at_4_5": found[1].offset,
            "future_error": str(future[0].name()) if future and future[0] else None,
        }
    ),
    flush=True,
)
print("OK", flush=True)
