"""A Kafka topic and consumer group across two regions, with confluent-kafka.

Usage:
  confluent_regions.py create BROKERS TOPIC        CreateTopics (2 partitions), no regions named
  confluent_regions.py produce BROKERS TOPIC N     N records "v0".."v{N-1}", idempotent, acks=all
  confluent_regions.py consume BROKERS TOPIC GROUP MAX OUT
      reads at most MAX records as GROUP (from the beginning when it has no commit), until
      10 s pass with nothing new; commits what it read; writes the values to OUT, one a line.
Prints OK. Exits non-zero with the failed check named. Run by tests/tests/region_clients.rs.
"""
import sys

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

cmd, BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


if cmd == "create":
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    f = admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=-1)])[TOPIC]
    try:
        f.result(timeout=30)
    except KafkaException as e:
        check(False, f"create {TOPIC}: {e}")
elif cmd == "produce":
    n = int(sys.argv[4])
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all"})
    failed = []
    for i in range(n):
        p.produce(TOPIC, key=f"k{i % 13}", value=f"v{i}",
                  on_delivery=lambda err, m: err and failed.append(err))
        p.poll(0)
    check(p.flush(60) == 0, "every record delivered within 60 s")
    check(not failed, f"deliveries failed: {failed[:3]}")
elif cmd == "consume":
    group, most, out = sys.argv[4], int(sys.argv[5]), sys.argv[6]
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": group,
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.subscribe([TOPIC])
    got = []
    idle = 0
    while len(got) < most and idle < 10:
        m = c.poll(1)
        if m is None:
            idle += 1 if got else 0.25
            continue
        check(m.error() is None, f"consume: {m.error()}")
        idle = 0
        got.append(m.value().decode())
    if got:
        c.commit(asynchronous=False)
    c.close()
    with open(out, "w") as f:
        f.write("".join(v + "\n" for v in got))
else:
    check(False, f"unknown command {cmd}")
print("OK", flush=True)
