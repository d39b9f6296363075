"""A compacted topic with confluent-kafka (run by tests/tests/kafka_compaction.rs).

Usage:
  confluent_compaction.py create BROKERS TOPIC
      CreateTopics with cleanup.policy=compact and delete.retention.ms=3600000 (2
      partitions); DescribeConfigs shows both as dynamic topic configs; a record without a
      key is refused with INVALID_RECORD.
  confluent_compaction.py produce BROKERS TOPIC N KEYS
      N updates over KEYS keys (record i: key key_of(i), value "{i}": the second half of the
      updates goes to half of the keys, so the other half's latest values sit in older
      segments), then a tombstone for every tenth key; idempotent, acks=all.
  confluent_compaction.py read BROKERS TOPIC N KEYS
      Reads every partition from its start to its high watermark; checks that each key is
      read exactly once, with its latest value (a tombstone for every tenth key).
Prints OK. Exits non-zero with the failed check named.
"""
import sys
import time

from confluent_kafka import (OFFSET_BEGINNING, Consumer, KafkaError, KafkaException,
                             Producer, TopicPartition)
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewTopic

cmd, BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]


def key_of(i, n, keys):
    return f"k{i % keys}" if i < n // 2 else f"k{i % (keys // 2)}"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


if cmd == "create":
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    config = {"cleanup.policy": "compact", "delete.retention.ms": "3600000"}
    f = admin.create_topics([NewTopic(TOPIC, num_partitions=2, replication_factor=-1,
                                      config=config)])[TOPIC]
    try:
        f.result(timeout=30)
    except KafkaException as e:
        check(False, f"create {TOPIC}: {e}")
    r = ConfigResource("topic", TOPIC)
    described = admin.describe_configs([r])[r].result(timeout=30)
    for key, value in config.items():
        entry = described[key]
        check(entry.value == value, f"{key} described as {entry.value}")
        check(entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
              f"{key} is a dynamic topic config: {entry.source}")
    # A record without a key has nothing to be compacted by: refused, not retried.
    errors = []
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all"})
    p.produce(TOPIC, value="no key", on_delivery=lambda err, m: errors.append(err))
    p.flush(30)
    check(len(errors) == 1 and errors[0] is not None
          and errors[0].code() == KafkaError.INVALID_RECORD,
          f"a keyless record refused with INVALID_RECORD: {errors}")
    check("key" in errors[0].str() or "INVALID_RECORD" in errors[0].name(),
          f"the refusal says why: {errors[0].str()}")
elif cmd == "produce":
    n, keys = int(sys.argv[4]), int(sys.argv[5])
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 20})
    failed = []

    def delivered(err, _m):
        if err:
            failed.append(err)

    def send(key, value):
        while True:
            try:
                p.produce(TOPIC, key=key, value=value, on_delivery=delivered)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)

    for i in range(n):
        send(key_of(i, n, keys), f"{i}")
    for k in range(0, keys, 10):
        send(f"k{k}", None)
    check(p.flush(120) == 0, "every record delivered within 120 s")
    check(not failed, f"deliveries failed: {failed[:3]}")
elif cmd == "read":
    n, keys = int(sys.argv[4]), int(sys.argv[5])
    c = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "compaction-reader",
                  "enable.auto.commit": False})
    parts = c.list_topics(TOPIC, timeout=30).topics[TOPIC].partitions
    ends = {}
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(TOPIC, p), timeout=30)
        ends[p] = high
    c.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in parts])
    seen = {}
    read = 0
    done = {p for p, high in ends.items() if high == 0}
    deadline = time.time() + 120
    while len(done) < len(ends):
        check(time.time() < deadline, f"reached the ends {ends} within 120 s (done {done})")
        m = c.poll(1)
        if m is None:
            continue
        check(m.error() is None, f"consume: {m.error()}")
        read += 1
        key = m.key().decode()
        check(key not in seen, f"key {key} read twice: {seen.get(key)} then offset {m.offset()}")
        seen[key] = (m.partition(), m.offset(), None if m.value() is None else m.value().decode())
        if m.offset() + 1 >= ends[m.partition()]:
            done.add(m.partition())
    c.close()
    latest = {key_of(i, n, keys): str(i) for i in range(n)}
    for k in range(0, keys, 10):
        latest[f"k{k}"] = None
    wrong = [(k, seen.get(k), v) for k, v in latest.items() if seen.get(k, (0, 0, "missing"))[2] != v]
    check(not wrong, f"{len(wrong)} keys read with another value than their latest: {wrong[:5]}")
    check(read == keys, f"read {read} records, one per key ({keys})")
else:
    check(False, f"unknown command {cmd}")
print("OK", flush=True)
