"""What the transaction scripts read back: a partition set from the start, as a consumer at
one isolation level sees it. Imported by confluent_transactions.py and confluent_txn_kill.py.
"""
import time

from confluent_kafka import Consumer, TopicPartition


def read_all(bootstrap, topic, partitions, isolation, expect, timeout=30):
    """Reads `topic` from the start until `expect` records arrived and then 2 s pass with
    nothing new (or `timeout`); the values read. Errors a leader change causes are retried by
    librdkafka and skipped here (a record they hid would be missing from the count)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{isolation}-{time.monotonic_ns()}",
            "isolation.level": isolation,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    values, deadline, quiet_since = [], time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        m = c.poll(0.2)
        if m is None:
            if len(values) >= expect:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > 2:
                    break
            continue
        if m.error():
            continue
        values.append(m.value().decode())
        quiet_since = None
    c.close()
    return values
