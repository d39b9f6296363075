"""An idempotent Python confluent-kafka (librdkafka) producer (enable.idempotence=true,
acks=all) writing COUNT records round-robin to PARTITIONS partitions of TOPIC, each value
"PARTITION:SEQ" with SEQ counting that partition's records from 0, while the test kills a
partition leader and restarts it, then SIGSTOPs a follower and resumes it.

Usage: confluent_idempotent.py BOOTSTRAP TOPIC PARTITIONS COUNT STARTED_FILE
A quarter of the records are sent and acknowledged first; then STARTED_FILE is created (the
test kills the leader when it appears) and the rest are sent, paced so that produce
requests are in flight around the faults. Prints {partition: [acknowledged seqs]}, the
longest time without any acknowledgement after STARTED_FILE (max_gap_s) and when it
ended, as one JSON line, then OK. Run by tests/tests/kafka.rs, which reads every record back.
"""
import json
import sys
import time

from confluent_kafka import Producer

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]
PARTITIONS, COUNT, STARTED = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

acked = {p: [] for p in range(PARTITIONS)}
errors = []
ack_times = []


def delivered(err, msg):
    if err:
        errors.append(str(err))
    else:
        partition, seq = msg.value().decode().split(":")
        acked[int(partition)].append(int(seq))
        ack_times.append(time.monotonic())


p = Producer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 200,
        "retry.backoff.ms": 100,
        "delivery.timeout.ms": 120000,
        "topic.metadata.refresh.interval.ms": 1000,
    }
)
next_seq = [0] * PARTITIONS


def send(i):
    partition = i % PARTITIONS
    value = f"{partition}:{next_seq[partition]}".encode()
    next_seq[partition] += 1
    while True:
        try:
            p.produce(TOPIC, value=value, partition=partition, on_delivery=delivered)
            return
        except BufferError:
            p.poll(0.05)


first = COUNT // 4
for i in range(first):
    send(i)
if p.flush(120) != 0:
    print(f"FAILED: the first {first} records were not delivered: {errors[:5]}", flush=True)
    sys.exit(1)
open(STARTED, "w").close()
started = time.monotonic()
for i in range(first, COUNT):
    send(i)
    if i % 50 == 0:
        p.poll(0)
        time.sleep(0.01)
left = p.flush(180)
after = [started] + [t for t in ack_times if t >= started]
gaps = [(b - a, b - started) for a, b in zip(after, after[1:])]
max_gap, gap_end = max(gaps) if gaps else (0.0, 0.0)
print(
    json.dumps(
        {
            "acked": acked,
            "errors": errors[:20],
            "undelivered": left,
            "max_gap_s": max_gap,
            "max_gap_ended_s": gap_end,
        }
    ),
    flush=True,
)
print("OK", flush=True)
