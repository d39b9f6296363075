"""Transactions against a Meridian Kafka listener, with the Python confluent-kafka client.

Usage: kafka_txn.py BOOTSTRAP TOPIC WIDE_TOPIC RECORDS RECORDS_PER_TXN ROUNDS

- throughput: RECORDS records of 100 B into TOPIC (3 partitions, round-robin), acks=all,
  once with an idempotent producer (no transactions) and once with a transactional one
  committing every RECORDS_PER_TXN records; records/s from the first produce to the last
  acknowledgement (the last commit). Per record, the time from produce() to its delivery
  report (p50, p99) — for the transactional run, to its transaction's commit.
- commit cost: transactions writing one record to each of 1, 10 and 100 partitions of
  WIDE_TOPIC (100 partitions), ROUNDS each; the time commit_transaction() takes (p50, p99;
  the markers are written into every partition before it returns).

Prints one JSON line. Run by target/release/txn-bench.
"""
import json
import sys
import time

from confluent_kafka import Producer

BOOTSTRAP, TOPIC, WIDE = sys.argv[1], sys.argv[2], sys.argv[3]
RECORDS, PER_TXN, ROUNDS = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
VALUE = b"x" * 100


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] * 1000 if values else 0.0


def plain():
    p = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    lat = []
    start = time.monotonic()
    for i in range(RECORDS):
        t = time.monotonic()
        while True:
            try:
                p.produce(TOPIC, value=VALUE, partition=i % 3,
                          on_delivery=lambda err, msg, t=t: err is None and lat.append(time.monotonic() - t))
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
    p.flush(120)
    took = time.monotonic() - start
    return {"records_s": RECORDS / took, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "acked": len(lat)}


def transactional():
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": "bench-txn", "linger.ms": 5})
    p.init_transactions(60)
    lat, commits = [], []
    start = time.monotonic()
    i = 0
    while i < RECORDS:
        p.begin_transaction()
        times = []
        for _ in range(min(PER_TXN, RECORDS - i)):
            times.append(time.monotonic())
            while True:
                try:
                    p.produce(TOPIC, value=VALUE, partition=i % 3)
                    break
                except BufferError:
                    p.poll(0.01)
            i += 1
        c = time.monotonic()
        p.commit_transaction(60)
        done = time.monotonic()
        commits.append(done - c)
        lat.extend(done - t for t in times)
    took = time.monotonic() - start
    return {"records_s": RECORDS / took, "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "commit_p50_ms": pct(commits, 0.5), "commit_p99_ms": pct(commits, 0.99)}


def commit_cost():
    p = Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": "bench-wide", "linger.ms": 0})
    p.init_transactions(60)
    out = {}
    for width in (1, 10, 100):
        times = []
        for _ in range(ROUNDS):
            p.begin_transaction()
            for part in range(width):
                p.produce(WIDE, value=VALUE, partition=part)
            p.flush(60)
            t = time.monotonic()
            p.commit_transaction(60)
            times.append(time.monotonic() - t)
        out[str(width)] = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99)}
    return out


result = {"plain": plain(), "transactional": transactional(), "commit": commit_cost()}
print(json.dumps(result), flush=True)
