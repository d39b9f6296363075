"""ElectLeaders through confluent-kafka's AdminClient: each partition's leader moved to its
preferred replica (the first replica Metadata lists), while an idempotent producer writes.

Usage: confluent_elect.py BROKERS TOPIC PHASE
  PHASE "settle": every partition of TOPIC (3 partitions) elected preferred: each answer is
  success or ELECTION_NOT_NEEDED, then every leader is its first replica and a second
  election is not needed; an unclean election is not needed either (the partition has a
  leader), and a partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION.
  PHASE "restore": partition 0's leader is not its preferred replica (the test killed it
  and restarted it). An idempotent acks=all producer writes 3,000 records while partition 0
  is elected preferred (retried while the preferred replica catches up:
  PREFERRED_LEADER_NOT_AVAILABLE); then every record is acknowledged, partition 0 is led
  by its first replica, and a read from the start finds each record once, in order.
Exits non-zero with the failed check named. Run by tests/tests/kafka_admin.rs.
"""
import sys
import threading
import time

from confluent_kafka import (Consumer, ElectionType, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import AdminClient

BOOTSTRAP, TOPIC, PHASE = sys.argv[1], sys.argv[2], sys.argv[3]
PARTITIONS = 3
RECORDS = 3000


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


admin = AdminClient({"bootstrap.servers": BOOTSTRAP})


def name_of(error):
    """The Kafka error name of an election result (None: success)."""
    if error is None:
        return None
    if isinstance(error, KafkaException):
        error = error.args[0]
    if isinstance(error, KafkaError):
        return error.name()
    return str(error)


def elect(kind, partitions):
    # (No operation_timeout: confluent-kafka 2.16.1 fails on it with a SystemError.)
    future = admin.elect_leaders(kind, [TopicPartition(TOPIC, p) for p in partitions])
    try:
        results = future.result(timeout=60)
    except KafkaException as e:
        check(False, f"the election request failed: {e}")
    return {tp.partition: name_of(err) for tp, err in results.items()}


def leaders():
    topic = admin.list_topics(TOPIC, timeout=30).topics[TOPIC]
    check(topic.error is None, f"metadata: {topic.error}")
    return {p: (m.leader, list(m.replicas)) for p, m in topic.partitions.items()}


def at_preferred(p):
    leader, replicas = leaders()[p]
    return leader == replicas[0]


if PHASE == "settle":
    first = elect(ElectionType.PREFERRED, range(PARTITIONS))
    for p, err in first.items():
        check(err in (None, "ELECTION_NOT_NEEDED"), f"partition {p}: {err}")
    for p, (leader, replicas) in leaders().items():
        check(len(replicas) == 3, f"partition {p} lists {replicas}")
        check(leader == replicas[0], f"partition {p} led by {leader}, replicas {replicas}")
    again = elect(ElectionType.PREFERRED, range(PARTITIONS))
    check(all(e == "ELECTION_NOT_NEEDED" for e in again.values()), f"a second election: {again}")
    unclean = elect(ElectionType.UNCLEAN, [0])
    check(unclean[0] == "ELECTION_NOT_NEEDED", f"unclean with a leader: {unclean}")
    unknown = elect(ElectionType.PREFERRED, [7])
    check(unknown[7].startswith("UNKNOWN_TOPIC_OR_PART"), f"partition 7: {unknown}")
    print("OK", flush=True)
    sys.exit(0)

check(PHASE == "restore", f"unknown phase {PHASE}")
check(not at_preferred(0), f"partition 0 is at its preferred replica already: {leaders()[0]}")
delivered = []
failed = []


def on_delivery(err, msg):
    if err is not None:
        failed.append(err)
    else:
        delivered.append((msg.partition(), msg.offset(), msg.value().decode()))


def produce():
    producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True,
                         "acks": "all", "linger.ms": 5})
    for n in range(RECORDS):
        producer.produce(TOPIC, f"r{n}".encode(), partition=n % PARTITIONS,
                         on_delivery=on_delivery)
        producer.poll(0)
        time.sleep(0.001)
    producer.flush(120)


writer = threading.Thread(target=produce)
writer.start()
time.sleep(0.3)
deadline = time.time() + 60
attempts = []
while True:
    result = elect(ElectionType.PREFERRED, [0])[0]
    attempts.append(result)
    if result is None:
        break
    check(result == "PREFERRED_LEADER_NOT_AVAILABLE", f"partition 0's election: {result}")
    check(time.time() < deadline, f"partition 0 never elected its preferred replica: {attempts}")
    time.sleep(0.5)
check(at_preferred(0), f"partition 0 after its election: {leaders()[0]}")
writer.join()
check(not failed, f"{len(failed)} records failed: {failed[:3]}")
check(len(delivered) == RECORDS, f"{len(delivered)} of {RECORDS} acknowledged")

consumer = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "elect-check",
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})
consumer.assign([TopicPartition(TOPIC, p, -2) for p in range(PARTITIONS)])
read = {p: [] for p in range(PARTITIONS)}
wanted = RECORDS + 100 * PARTITIONS  # the test wrote 100 per partition first
got = 0
quiet_until = time.time() + 60
while got < wanted and time.time() < quiet_until:
    m = consumer.poll(1)
    if m is None:
        continue
    check(m.error() is None, f"reading: {m.error()}")
    read[m.partition()].append((m.offset(), m.value().decode()))
    got += 1
consumer.close()
check(got == wanted, f"read {got} of {wanted}")
for p, records in read.items():
    offsets = [o for o, _ in records]
    check(offsets == list(range(len(records))), f"partition {p}: offsets not 0..n in order")
    ours = [int(v[1:]) for _, v in records if v.startswith("r")]
    check(len(ours) == len(set(ours)), f"partition {p}: a record read twice")
    check(ours == sorted(ours), f"partition {p}: records out of order")
    check(len(ours) == RECORDS // PARTITIONS, f"partition {p}: {len(ours)} records")
print(f"OK elected after {len(attempts)} attempt(s): {attempts}", flush=True)
