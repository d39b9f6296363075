"""The Python confluent-kafka client (librdkafka) against a Meridian broker's Kafka listener:
produce (also idempotent), a consumer group (also as the admin client describes it), offsets
by time, errors, and topic administration.

Usage: confluent_test.py BOOTSTRAP TOPIC  (TOPIC exists with 4 partitions and is empty)
Exits non-zero with the failed check named. Run by tests/tests/kafka.rs.
"""
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]
N = 2000


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def produce(values, **extra):
    errors = []
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, **extra})
    for i, v in values:
        p.produce(
            TOPIC,
            key=f"k{i % 10}",
            value=v,
            headers=[("idx", str(i).encode())],
            timestamp=1_700_000_000_000 + i,
            on_delivery=lambda err, msg: errors.append(err) if err else None,
        )
        p.poll(0)
    check(p.flush(30) == 0, "every message delivered within 30 s")
    return errors


def consumer(group, **extra):
    return Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **extra,
        }
    )


# Produce: keys, headers, producer timestamps; acks=all (the default).
errors = produce([(i, f"v{i}".encode()) for i in range(N)])
check(not errors, f"no delivery error: {errors[:3]}")

# A group of two members splits the partitions and reads everything once.
seen = {}
lock = threading.Lock()
stop = threading.Event()


def member(name):
    c = consumer("py-group")
    c.subscribe([TOPIC])
    while not stop.is_set():
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        with lock:
            seen.setdefault(name, []).append(m)
        c.commit(message=m, asynchronous=False)
    c.close()


threads = [threading.Thread(target=member, args=(n,)) for n in ("a", "b")]
for t in threads:
    t.start()
deadline = time.time() + 60
while time.time() < deadline:
    with lock:
        if sum(len(v) for v in seen.values()) >= N:
            break
    time.sleep(0.2)
stop.set()
for t in threads:
    t.join()
got = [m for ms in seen.values() for m in ms]
check(len(got) == N, f"the group read {len(got)} of {N}")
check(len({m.value() for m in got}) == N, "no message twice")
parts = {name: {m.partition() for m in ms} for name, ms in seen.items()}
check(len(parts) == 2 and not (parts["a"] & parts["b"]), f"the members split the partitions: {parts}")
first = got[0]
check(first.key().startswith(b"k"), "keys kept")
check(dict(first.headers())["idx"] == first.value()[1:], "headers kept")
check(first.timestamp()[1] == 1_700_000_000_000 + int(first.value()[1:]), "timestamps kept")
# Order per partition follows the producer's order per key.
for ms in seen.values():
    by_part = {}
    for m in ms:
        by_part.setdefault(m.partition(), []).append(int(m.value()[1:]))
    for p, vs in by_part.items():
        check(vs == sorted(vs), f"partition {p} in order")

# A new member of the same group resumes after the committed offsets: only new messages.
errors = produce([(i, f"v{i}".encode()) for i in range(N, N + 100)])
check(not errors, "second batch delivered")
c = consumer("py-group", **{"client.id": "late-member"})
c.subscribe([TOPIC])
late = []
deadline = time.time() + 30
while len(late) < 100 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error():
        late.append(int(m.value()[1:]))
check(sorted(late) == list(range(N, N + 100)), f"resumed from the commits: {sorted(late)[:5]}...")

# The admin client sees the group: listed, and described with its one member.
admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
listed = admin.list_consumer_groups(request_timeout=10).result()
check(any(g.group_id == "py-group" for g in listed.valid), f"py-group listed: {listed.valid}")
described = admin.describe_consumer_groups(["py-group"], request_timeout=10)["py-group"].result()
check(str(described.state).endswith("STABLE"), f"py-group stable: {described.state}")
check(
    len(described.members) == 1 and described.members[0].client_id == "late-member",
    f"py-group has its one member: {described.members}",
)
check(
    len(described.members[0].assignment.topic_partitions) == 4,
    f"the member holds the 4 partitions: {described.members[0].assignment.topic_partitions}",
)
c.close()

# An idempotent producer (acks=all, sequence numbers checked by the partition leader).
errors = produce([(i, f"i{i}".encode()) for i in range(500)], **{"enable.idempotence": True})
check(not errors, f"idempotent delivery: {errors[:3]}")
c = consumer("py-idem")
c.subscribe([TOPIC])
idem = []
deadline = time.time() + 30
while len(idem) < 500 and time.time() < deadline:
    m = c.poll(0.5)
    if m is not None and not m.error() and m.value().startswith(b"i"):
        idem.append(int(m.value()[1:]))
c.close()
check(sorted(idem) == list(range(500)), f"every idempotent message once: {len(idem)}")

# Offsets by timestamp.
c = consumer("py-times")
found = c.offsets_for_times([TopicPartition(TOPIC, p, 1_700_000_000_000 + N) for p in range(4)], 10)
check(all(tp.error is None for tp in found), f"offsets_for_times answered: {found}")
check(sum(1 for tp in found if tp.offset >= 0) >= 1, "some partition has messages after the time")
c.close()

# An oversized message is refused by the broker.
errors = produce([(0, b"x" * 2_000_000)], **{"message.max.bytes": 10_000_000})
check(errors and errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, f"oversized refused: {errors}")

# An unknown topic is reported.
p = Producer({"bootstrap.servers": BOOTSTRAP, "message.timeout.ms": 5000})
errs = []
p.produce("no-such-topic", b"x", on_delivery=lambda err, msg: errs.append(err))
p.flush(10)
check(errs and errs[0] is not None, f"unknown topic reported: {errs}")

# The cluster: this one broker, as DescribeCluster tells it.
cluster = admin.describe_cluster(request_timeout=10).result()
check(len(cluster.nodes) == 1 and cluster.cluster_id.startswith("meridian-"), f"cluster: {cluster}")

# Admin: create, see, configs, add partitions, refuse a second create, delete.
for topic, fut in admin.create_topics([NewTopic("py-admin", num_partitions=3)]).items():
    fut.result(15)
meta = admin.list_topics(timeout=10)
check("py-admin" in meta.topics and len(meta.topics["py-admin"].partitions) == 3, "created topic listed with 3 partitions")
resource = ConfigResource(ResourceType.TOPIC, "py-admin")
configs = admin.describe_configs([resource])[resource].result(15)
check(int(configs["retention.ms"].value) == 7 * 24 * 3600 * 1000, f"retention.ms: {configs.get('retention.ms')}")
check(configs["cleanup.policy"].value == "delete", "cleanup.policy")
# Without a control plane retention is the journal's: a per-topic change is refused, named.
change = ConfigResource(
    ResourceType.TOPIC,
    "py-admin",
    incremental_configs=[ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)],
)
try:
    admin.incremental_alter_configs([change])[change].result(15)
    check(False, "a per-topic retention is refused without a control plane")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.POLICY_VIOLATION and "retention" in str(e), f"POLICY_VIOLATION: {e}")
admin.create_partitions([NewPartitions("py-admin", 5)])["py-admin"].result(15)
meta = admin.list_topics(timeout=10)
check(len(meta.topics["py-admin"].partitions) == 5, "grown to 5 partitions")
try:
    admin.create_partitions([NewPartitions("py-admin", 2)])["py-admin"].result(15)
    check(False, "fewer partitions refused")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.INVALID_PARTITIONS, f"INVALID_PARTITIONS: {e}")
p = Producer({"bootstrap.servers": BOOTSTRAP})
p.produce("py-admin", b"to the new partition", partition=4)
check(p.flush(15) == 0, "a new partition takes messages")
try:
    admin.create_topics([NewTopic("py-admin", num_partitions=3)])["py-admin"].result(15)
    check(False, "a second create is refused")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS, f"TOPIC_ALREADY_EXISTS: {e}")
for topic, fut in admin.delete_topics(["py-admin"]).items():
    fut.result(15)
meta = admin.list_topics(timeout=10)
check("py-admin" not in meta.topics, "deleted topic gone")

print("OK", flush=True)
