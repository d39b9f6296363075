"""A Kafka 4 consumer (KIP-848, group.protocol=consumer) against the Kafka listener.

Usage: confluent_kip848.py BOOTSTRAP TOPIC COUNT
Two consumers of one group (the broker's coordinator assigns, KIP-848) read COUNT messages
between them, each once, committing as they go; a third of the same group, started after
they closed, finds nothing left (the group resumes at its commits). Prints
{"a": n, "b": n, "after": n, ..., "described": {...}} and OK (described: the group
as AdminClient.describe_consumer_groups sees it while one member holds every partition). Run by tests/tests/kafka.rs.
"""
import json
import sys
import threading
import time

from confluent_kafka import Consumer, KafkaException
from confluent_kafka.admin import AdminClient

BOOTSTRAP, TOPIC, COUNT = sys.argv[1], sys.argv[2], int(sys.argv[3])


def consumer():
    return Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "kip848",
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )


seen = {"a": [], "b": []}
lock = threading.Lock()


def total():
    with lock:
        return len(seen["a"]) + len(seen["b"])


def run(name):
    c = consumer()
    c.subscribe([TOPIC])
    deadline = time.time() + 40
    while time.time() < deadline and total() < COUNT:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        with lock:
            seen[name].append(m.value().decode())
        c.commit(message=m, asynchronous=False)
    c.close()


threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
for t in threads:
    t.start()
for t in threads:
    t.join()
values = seen["a"] + seen["b"]
if sorted(set(values)) != sorted(values) or len(values) != COUNT:
    print(f"FAILED: {len(values)} read, {len(set(values))} distinct of {COUNT}", flush=True)
    sys.exit(1)

after = consumer()
after.subscribe([TOPIC])
late = []
deadline = time.time() + 8
while time.time() < deadline:
    m = after.poll(0.2)
    if m is not None and not m.error():
        late.append(m.value())
after.close()
# DeleteGroups: the group's offsets go, and a consumer of it reads everything again; an
# unknown group is GROUP_ID_NOT_FOUND.
admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
for group, fut in admin.delete_consumer_groups(["kip848"], request_timeout=15).items():
    fut.result()
unknown = None
try:
    admin.delete_consumer_groups(["never-was"], request_timeout=15)["never-was"].result()
except KafkaException as e:
    unknown = e.args[0].name()
again = consumer()
again.subscribe([TOPIC])
reread = 0
deadline = time.time() + 30
while time.time() < deadline and reread < COUNT:
    m = again.poll(0.2)
    if m is not None and not m.error():
        reread += 1
# ConsumerGroupDescribe while its one member holds every partition.
desc = admin.describe_consumer_groups(["kip848"], request_timeout=15)["kip848"].result()
described = {
    "state": str(desc.state),
    "type": str(getattr(desc, "type", None)),
    "members": len(desc.members),
    "assigned": sum(len(m.assignment.topic_partitions) for m in desc.members),
}
again.close()
print(
    json.dumps(
        {
            "a": len(seen["a"]),
            "b": len(seen["b"]),
            "after": len(late),
            "reread_after_delete": reread,
            "unknown_delete": unknown,
            "described": described,
        }
    ),
    flush=True,
)
print("OK", flush=True)
