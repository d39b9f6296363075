"""Topic configs through confluent-kafka's AdminClient, against a region managed by a
control plane: CreateTopics configs applied (DescribeConfigs shows them as dynamic topic
configs) or refused with the config named, max.message.bytes enforced on produce, and
changed with IncrementalAlterConfigs.

Usage: confluent_topic_configs.py BROKERS   (the region's Kafka addresses, comma-separated)
Makes topic "limited" (max.message.bytes=2000, retention.ms=3600000). Exits non-zero with
the failed check named. Run by tests/tests/kafka.rs.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

BOOTSTRAP = sys.argv[1]
admin = AdminClient({"bootstrap.servers": BOOTSTRAP})


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def create(name, config):
    f = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1, config=config)])[name]
    try:
        f.result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0]


def describe(name):
    r = ConfigResource("topic", name)
    return admin.describe_configs([r])[r].result(timeout=30)


# Refused, naming the config: a value it cannot take, a config not enforced here.
for config, named in [({"max.message.bytes": "lots"}, "max.message.bytes"),
                      ({"cleanup.policy": "compacted"}, "cleanup.policy")]:
    err = create("refused", config)
    check(err is not None and err.code() == KafkaError.INVALID_CONFIG, f"{config} refused INVALID_CONFIG: {err}")
    check(named in err.str(), f"the refusal names {named}: {err.str()}")

err = create("limited", {"max.message.bytes": "2000", "retention.ms": "3600000"})
check(err is None, f"limited created: {err}")
configs = describe("limited")
m = configs["max.message.bytes"]
check(m.value == "2000", f"max.message.bytes described: {m.value}")
check(m.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"max.message.bytes is a dynamic topic config: {m.source}")
r = configs["retention.ms"]
check(r.value == "3600000", f"retention.ms described: {r.value}")
check(r.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value, f"retention.ms is a dynamic topic config: {r.source}")


def produce(size):
    """Delivers one record of `size` bytes; its error, or None."""
    outcome = []
    p = Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "message.timeout.ms": 20000,
                  "enable.idempotence": True, "message.max.bytes": 100000})
    deadline = time.time() + 30
    while True:
        outcome.clear()
        p.produce("limited", value=b"x" * size, on_delivery=lambda e, m: outcome.append(e))
        p.flush(30)
        e = outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)
        # A brand-new topic's leader may not be known yet: retried as a client would.
        if e is None or e.code() == KafkaError.MSG_SIZE_TOO_LARGE or time.time() > deadline:
            return e
        time.sleep(0.5)


e = produce(1500)
check(e is None, f"1500 bytes under max.message.bytes=2000 delivered: {e}")
e = produce(5000)
check(e is not None and e.code() == KafkaError.MSG_SIZE_TOO_LARGE, f"5000 bytes refused MSG_SIZE_TOO_LARGE: {e}")

# Raised: 5000 bytes then fit.
res = ConfigResource("topic", "limited", incremental_configs=[
    ConfigEntry("max.message.bytes", "10000", incremental_operation=AlterConfigOpType.SET)])
admin.incremental_alter_configs([res])[res].result(timeout=30)
deadline = time.time() + 20
while describe("limited")["max.message.bytes"].value != "10000":
    check(time.time() < deadline, "max.message.bytes raised to 10000")
    time.sleep(0.3)
e = None
deadline = time.time() + 20
while True:
    e = produce(5000)
    if e is None or time.time() > deadline:
        break
    time.sleep(0.5)
check(e is None, f"5000 bytes under max.message.bytes=10000 delivered: {e}")
# And lowered again for the test's other protocols.
res = ConfigResource("topic", "limited", incremental_configs=[
    ConfigEntry("max.message.bytes", "2000", incremental_operation=AlterConfigOpType.SET)])
admin.incremental_alter_configs([res])[res].result(timeout=30)

# compression.type=zstd: an uncompressed producer's records are stored recompressed (the
# Rust test checks the fetched batch's codec) and read back unchanged.
err = create("squeezed", {"compression.type": "zstd"})
check(err is None, f"squeezed created: {err}")
c = describe("squeezed")["compression.type"]
check(c.value == "zstd" and c.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value,
      f"compression.type zstd, a dynamic topic config: {c.value} {c.source}")
p = Producer({"bootstrap.servers": BOOTSTRAP, "compression.type": "none", "linger.ms": 50})
sent = [f"value {i} " + "z" * 200 for i in range(20)]
errors = []
for v in sent:
    p.produce("squeezed", key=v[:8], value=v, on_delivery=lambda err, m: err and errors.append(err))
check(p.flush(30) == 0 and not errors, f"squeezed produced: {errors[:2]}")
consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "squeezed-reader",
                     "auto.offset.reset": "earliest", "enable.auto.commit": False})
consumer.subscribe(["squeezed"])
got = []
deadline = time.time() + 30
while len(got) < len(sent) and time.time() < deadline:
    m = consumer.poll(1)
    if m is not None and m.error() is None:
        got.append(m.value().decode())
consumer.close()
check(got[:len(sent)] == sent, f"squeezed read back unchanged: {len(got)} of {len(sent)}")
print("OK", flush=True)
