"""A Kafka transaction survives kill -9 of its coordinator and of a partition leader.

Usage: confluent_txn_kill.py BOOTSTRAP TOPIC PARTITIONS TRANSACTIONAL_ID N DIR
(TOPIC exists with PARTITIONS partitions and is empty.)

Transaction 1: N records per partition, flushed (prepared); DIR/prepared1 is created and
the test kills brokers, restarts them, then creates DIR/go1. A read_committed reader must
see none of the records; then the transaction commits. Transaction 2: the same, with
DIR/prepared2 and DIR/go2, and it aborts. At the end a read_committed reader sees exactly
transaction 1's records, each once, and a read_uncommitted one both transactions'.

Prints one JSON line of what was counted, then OK; exits non-zero naming a failed check.
Run by tests/tests/transactions.rs.
"""
import json
import os
import sys
import time

from confluent_kafka import Producer

import txn_readers

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]
PARTITIONS, TID, N, DIR = int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def wait_for(name, timeout=120):
    path = os.path.join(DIR, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        check(time.monotonic() < deadline, f"the test never created {name}")
        time.sleep(0.05)


def touch(name):
    with open(os.path.join(DIR, name), "w"):
        pass


def read_all(isolation, expect, timeout=30):
    return txn_readers.read_all(BOOTSTRAP, TOPIC, PARTITIONS, isolation, expect, timeout)


p = Producer(
    {
        "bootstrap.servers": BOOTSTRAP,
        "transactional.id": TID,
        "linger.ms": 5,
        "transaction.timeout.ms": 120000,
        "topic.metadata.refresh.interval.ms": 1000,
    }
)
p.init_transactions(60)
report = {}
for round_, end in ((1, "commit"), (2, "abort")):
    p.begin_transaction()
    for i in range(N * PARTITIONS):
        p.produce(TOPIC, value=f"t{round_}-{i}".encode(), partition=i % PARTITIONS)
    check(p.flush(60) == 0, f"transaction {round_}'s records were not all written")
    touch(f"prepared{round_}")
    wait_for(f"go{round_}")
    seen = read_all("read_committed", 0 if round_ == 1 else N * PARTITIONS, timeout=10)
    report[f"committed_visible_before_end{round_}"] = len(seen)
    check(not any(v.startswith(f"t{round_}-") for v in seen),
          f"transaction {round_} was visible before it ended")
    started = time.monotonic()
    if end == "commit":
        p.commit_transaction(120)
    else:
        p.abort_transaction(120)
    report[f"end{round_}_s"] = round(time.monotonic() - started, 2)

committed = read_all("read_committed", N * PARTITIONS)
everything = read_all("read_uncommitted", 2 * N * PARTITIONS)
report["committed"] = len(committed)
report["committed_distinct"] = len(set(committed))
report["uncommitted"] = len(everything)
report["uncommitted_distinct"] = len(set(everything))
check(sorted(committed) == sorted(f"t1-{i}" for i in range(N * PARTITIONS)),
      f"read_committed saw {len(committed)} records ({len(set(committed))} distinct), not transaction 1's {N * PARTITIONS}")
check(len(everything) == 2 * N * PARTITIONS and len(set(everything)) == len(everything),
      f"read_uncommitted saw {len(everything)} records ({len(set(everything))} distinct)")
print(json.dumps(report), flush=True)
print("OK", flush=True)
