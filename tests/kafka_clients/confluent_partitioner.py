"""Where the Python confluent-kafka client (librdkafka) puts keyed records when configured
like Kafka's Java client (`partitioner=murmur2_random`; librdkafka's default,
`consistent_random`, hashes with CRC32 instead).

Usage: confluent_partitioner.py BOOTSTRAP TOPIC KEY...
Produces one record per key without naming a partition, prints {key: partition} as one JSON
line and then OK. Run by tests/tests/kafka.rs, which sends the same keys with the Rust SDK.
"""
import json
import sys

from confluent_kafka import Producer

BOOTSTRAP, TOPIC, KEYS = sys.argv[1], sys.argv[2], sys.argv[3:]

placed = {}
errors = []


def delivered(err, msg):
    if err:
        errors.append(err)
    else:
        placed[msg.key().decode()] = msg.partition()


p = Producer({"bootstrap.servers": BOOTSTRAP, "partitioner": "murmur2_random"})
for key in KEYS:
    p.produce(TOPIC, key=key.encode(), value=b"v", on_delivery=delivered)
if p.flush(30) != 0 or errors or len(placed) != len(KEYS):
    print(f"FAILED: delivery: {errors}, {len(placed)} of {len(KEYS)} placed", flush=True)
    sys.exit(1)
print(json.dumps(placed))
print("OK", flush=True)
