"""The Python confluent-kafka admin client against the Kafka listener of a region managed by a
control plane: topics made, grown, configured and deleted over Kafka are the control plane's
topics (the test checks them with the meridian CLI between the phases).

Usage: confluent_admin.py BROKERS create|delete   (BROKERS: the region's Kafka addresses, comma-separated)
  create: makes "kadmin" (2 partitions, replication factor 3), sets retention.ms to one hour,
          grows it to 4 partitions, writes with an idempotent producer, reads back with a
          group of two members bootstrapped from different brokers.
  delete: sees "grpc-made" (made with the CLI), deletes it and "kadmin".
Exits non-zero with the failed check named. Run by tests/tests/kafka.rs.
"""
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

BOOTSTRAP, PHASE = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": BOOTSTRAP})


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def wait_for(what, pred, limit=20):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    check(False, what)


if PHASE == "create":
    cluster = admin.describe_cluster(request_timeout=10).result()
    check(len(cluster.nodes) == 3, f"three brokers in the region: {cluster.nodes}")
    admin.create_topics([NewTopic("kadmin", num_partitions=2, replication_factor=3)])["kadmin"].result(30)
    meta = wait_for(
        "kadmin listed with 2 partitions",
        lambda: (m := admin.list_topics(timeout=10)).topics.get("kadmin")
        and len(m.topics["kadmin"].partitions) == 2
        and all(p.leader >= 0 for p in m.topics["kadmin"].partitions.values())
        and m,
    )
    part = meta.topics["kadmin"].partitions[0]
    check(len(part.replicas) == 3, f"three replicas: {part.replicas}")
    try:
        admin.create_topics([NewTopic("too-wide", num_partitions=1, replication_factor=5)])["too-wide"].result(30)
        check(False, "replication factor above the live brokers refused")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR, f"INVALID_REPLICATION_FACTOR: {e}")

    resource = ConfigResource(ResourceType.TOPIC, "kadmin")
    configs = admin.describe_configs([resource])[resource].result(15)
    check(int(configs["retention.ms"].value) == 7 * 24 * 3600 * 1000, f"default retention: {configs['retention.ms']}")
    change = ConfigResource(
        ResourceType.TOPIC,
        "kadmin",
        incremental_configs=[ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)],
    )
    admin.incremental_alter_configs([change])[change].result(15)
    configs = admin.describe_configs([resource])[resource].result(15)
    check(configs["retention.ms"].value == "3600000", f"retention.ms now one hour: {configs['retention.ms']}")
    # Compaction on, then back to the default (DELETE of the key).
    for op, want in [(AlterConfigOpType.SET, "compact"), (AlterConfigOpType.DELETE, "delete")]:
        change = ConfigResource(
            ResourceType.TOPIC,
            "kadmin",
            incremental_configs=[ConfigEntry("cleanup.policy", "compact", incremental_operation=op)],
        )
        admin.incremental_alter_configs([change])[change].result(15)
        configs = admin.describe_configs([resource])[resource].result(15)
        check(configs["cleanup.policy"].value == want, f"cleanup.policy now {want}: {configs['cleanup.policy']}")
    bad = ConfigResource(
        ResourceType.TOPIC,
        "kadmin",
        incremental_configs=[ConfigEntry("segment.bytes", "1000", incremental_operation=AlterConfigOpType.SET)],
    )
    try:
        admin.incremental_alter_configs([bad])[bad].result(15)
        check(False, "segment.bytes refused")
    except KafkaException as e:
        check(e.args[0].code() == KafkaError.INVALID_CONFIG, f"INVALID_CONFIG: {e}")

    admin.create_partitions([NewPartitions("kadmin", 4)])["kadmin"].result(30)
    wait_for(
        "kadmin grown to 4 partitions with leaders",
        lambda: (m := admin.list_topics(topic="kadmin", timeout=10)).topics["kadmin"].partitions
        and len(m.topics["kadmin"].partitions) == 4
        and all(p.leader >= 0 for p in m.topics["kadmin"].partitions.values()),
    )

    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True})
    errors = []
    for i in range(200):
        p.produce("kadmin", key=f"k{i}", value=f"m{i}", on_delivery=lambda err, msg: errors.append(err) if err else None)
    check(p.flush(30) == 0 and not errors, f"idempotent produce in a managed region: {errors[:3]}")
    # Two members of one group, each bootstrapped from a different broker: every broker
    # names the same coordinator, so they split the partitions instead of each taking all.
    brokers = BOOTSTRAP.split(",")
    seen = {}
    lock = threading.Lock()
    stop = threading.Event()

    def member(name, bootstrap):
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "kadmin-reader", "auto.offset.reset": "earliest"})
        c.subscribe(["kadmin"])
        while not stop.is_set():
            m = c.poll(0.2)
            if m is not None and not m.error():
                with lock:
                    seen.setdefault(name, []).append(m)
        c.close()

    threads = [threading.Thread(target=member, args=(n, b)) for n, b in (("a", brokers[0]), ("b", brokers[-1]))]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while time.time() < deadline:
        with lock:
            if sum(len(v) for v in seen.values()) >= 200 and len(seen) == 2:
                break
        time.sleep(0.2)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    got = [m.value() for ms in seen.values() for m in ms]
    check(len(got) == 200 and len(set(got)) == 200, f"the group read {len(got)} ({len(set(got))} distinct) of 200")
    parts = {name: {m.partition() for m in ms} for name, ms in seen.items()}
    check(len(parts) == 2 and not (parts["a"] & parts["b"]), f"the members split the partitions: {parts}")
elif PHASE == "delete":
    meta = admin.list_topics(timeout=10)
    check("grpc-made" in meta.topics and len(meta.topics["grpc-made"].partitions) == 2, "the CLI's topic listed")
    for topic, fut in admin.delete_topics(["grpc-made", "kadmin"]).items():
        fut.result(30)
    wait_for(
        "both topics gone",
        lambda: not ({"grpc-made", "kadmin"} & set(admin.list_topics(timeout=10).topics)),
    )
else:
    check(False, f"unknown phase {PHASE}")
print("OK", flush=True)
