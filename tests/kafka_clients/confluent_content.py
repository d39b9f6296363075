"""A record's content through a Meridian broker's Kafka listener, with the Python
confluent-kafka client (librdkafka): repeated header keys keep their order, a null header
value and a null value (a tombstone) stay null, an empty value stays empty, the producer's
timestamp is kept.

Usage: confluent_content.py BOOTSTRAP TOPIC  (TOPIC exists and partition 0 is empty)
Produces the records to partition 0, reads them back, checks them, prints them as one JSON
line (bytes as text, null as null) and then OK. Exits non-zero with the failed check named.
Run by tests/tests/kafka.rs, which reads the same records with kcat and the Rust SDK.
"""
import json
import sys
import time

from confluent_kafka import TIMESTAMP_CREATE_TIME, Consumer, Producer, TopicPartition

BOOTSTRAP, TOPIC = sys.argv[1], sys.argv[2]

# (key, value, headers, timestamp): what is produced and must come back.
SENT = [
    (
        b"k1",
        b"v1",
        [("dup", b"1"), ("nul", None), ("dup", b"2"), ("empty", b""), ("dup", b"3")],
        1_600_000_000_001,
    ),
    (b"k1", None, [("dup", b"a"), ("dup", None)], 1_600_000_000_002),
    (b"k2", b"", [], 1_600_000_000_003),
    (None, None, [("only", None)], 1_234),
]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def text(b):
    return None if b is None else b.decode()


def main():
    errors = []
    p = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5})
    for key, value, headers, ts in SENT:
        p.produce(
            TOPIC,
            partition=0,
            key=key,
            value=value,
            headers=headers,
            timestamp=ts,
            on_delivery=lambda err, msg: errors.append(err) if err else None,
        )
    check(p.flush(30) == 0, "every record delivered within 30 s")
    check(not errors, f"no delivery error: {errors}")

    c = Consumer(
        {
            "bootstrap.servers": BOOTSTRAP,
            "group.id": "content-check",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(TOPIC, 0, 0)])
    got = []
    deadline = time.time() + 30
    while len(got) < len(SENT) and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        check(m.error() is None, f"consume error: {m.error()}")
        ts_type, ts = m.timestamp()
        check(ts_type == TIMESTAMP_CREATE_TIME, f"a create time, not {ts_type}")
        got.append((m.key(), m.value(), m.headers() or [], ts))
    c.close()
    check(len(got) == len(SENT), f"{len(SENT)} records read back, not {len(got)}")
    for sent, back in zip(SENT, got):
        check(sent == back, f"read back as produced: sent {sent!r}, got {back!r}")
    print(
        json.dumps(
            [
                {
                    "key": text(k),
                    "value": text(v),
                    "headers": [[n, text(hv)] for n, hv in h],
                    "timestamp": ts,
                }
                for k, v, h, ts in got
            ]
        )
    )
    print("OK", flush=True)


main()
