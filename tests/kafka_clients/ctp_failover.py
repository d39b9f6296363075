"""A consume-transform-produce loop that moves from one region to another, with unchanged
confluent-kafka clients. Driven by tests/tests/transactions.rs; each step a subcommand:

  prefill BOOTSTRAP N        an aborted transaction of 60 records in `in` (so its offsets
                             differ from the other region's, which never receives them), then
                             N input records `i-<n>` from an idempotent producer
  run BOOTSTRAP IDLE_S PAUSE_S
                             the loop: read `in` (read_committed, from the group's
                             committed offsets), write `out-i-<n>` to `out` and the read
                             offsets in one transaction per poll; prints `open <total>` once
                             a transaction's records are written (then waits PAUSE_S before
                             committing) and `committed <total>` after each commit; ends
                             after IDLE_S seconds without input
  state X Y                  one JSON line: records of `out` in each region (read_committed)
                             and the sum of the group's committed offsets of `in` in Y
  verify BOOTSTRAP N         `out` holds `out-i-<n>` exactly once for every n < N
"""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

from txn_readers import read_all

PARTITIONS = 3
GROUP = "ctp"


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def prefill(bootstrap, n):
    t = Producer({"bootstrap.servers": bootstrap, "transactional.id": "prefill"})
    t.init_transactions(30)
    t.begin_transaction()
    for i in range(60):
        t.produce("in", value=f"aborted-{i}".encode(), partition=i % PARTITIONS)
    t.flush(30)
    t.abort_transaction(30)
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    failed = []
    for i in range(n):
        p.produce(
            "in",
            key=str(i).encode(),
            value=f"i-{i}".encode(),
            on_delivery=lambda err, m: err and failed.append(err),
        )
        p.poll(0)
    check(p.flush(60) == 0, "every input acknowledged")
    check(not failed, f"inputs failed: {failed[:3]}")
    print("OK prefilled", flush=True)


def run(bootstrap, idle_s, pause_s):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition("in", p) for p in range(PARTITIONS)])
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": GROUP,
            "transaction.timeout.ms": 6000,
        }
    )
    producer.init_transactions(30)
    total, last_input = 0, time.monotonic()
    while time.monotonic() - last_input < idle_s:
        msgs = [m for m in consumer.consume(25, 0.5) if not m.error()]
        if not msgs:
            continue
        last_input = time.monotonic()
        producer.begin_transaction()
        for m in msgs:
            producer.produce("out", key=m.key(), value=b"out-" + m.value())
        producer.flush(30)
        print(f"open {total + len(msgs)}", flush=True)
        time.sleep(pause_s)
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30
        )
        producer.commit_transaction(30)
        total += len(msgs)
        print(f"committed {total}", flush=True)
    consumer.close()
    print(f"OK idle after {total}", flush=True)


def committed_sum(bootstrap):
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False}
    )
    parts = c.committed([TopicPartition("in", p) for p in range(PARTITIONS)], timeout=10)
    c.close()
    return sum(max(tp.offset, 0) for tp in parts)


def state(x, y):
    out_x = read_all(x, "out", PARTITIONS, "read_committed", 0, timeout=10)
    out_y = read_all(y, "out", PARTITIONS, "read_committed", 0, timeout=10)
    print(
        json.dumps({"x_out": len(out_x), "y_out": len(out_y), "y_committed": committed_sum(y)}),
        flush=True,
    )
    print("OK", flush=True)


def verify(bootstrap, n):
    values = read_all(bootstrap, "out", PARTITIONS, "read_committed", n, timeout=60)
    seen = {}
    for v in values:
        seen[v] = seen.get(v, 0) + 1
    twice = sorted(v for v, c in seen.items() if c > 1)
    missing = [i for i in range(n) if f"out-i-{i}" not in seen]
    print(
        json.dumps({"records": len(values), "duplicates": len(twice), "missing": len(missing)}),
        flush=True,
    )
    check(not twice, f"{len(twice)} outputs written twice, e.g. {twice[:5]}")
    check(not missing, f"{len(missing)} inputs without output, e.g. {missing[:5]}")
    check(len(values) == n, f"{len(values)} records in out, {n} expected")
    print("OK exactly once", flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "prefill":
        prefill(args[0], int(args[1]))
    elif cmd == "run":
        run(args[0], float(args[1]), float(args[2]))
    elif cmd == "state":
        state(args[0], args[1])
    elif cmd == "verify":
        verify(args[0], int(args[1]))
    else:
        sys.exit(f"unknown step {cmd}")
