"""Produces BYTES bytes (1,000-byte records) to TOPIC as client.id CLIENT, as fast as the
broker lets it, and prints what it measured.

Usage: confluent_quota.py BROKERS TOPIC CLIENT BYTES
Prints "RATE <bytes a second> THROTTLES <throttle events> SECONDS <elapsed>" and OK; exits
non-zero if a record is not delivered. Run by tests/tests/kafka_admin.rs.
"""
import sys
import time

from confluent_kafka import Producer

BOOTSTRAP, TOPIC, CLIENT, TOTAL = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
throttles = []
p = Producer({"bootstrap.servers": BOOTSTRAP, "client.id": CLIENT, "linger.ms": 5,
              "throttle_cb": lambda e: throttles.append(e.throttle_time)})
failed = []
value = b"x" * 1000
n = TOTAL // len(value)
start = time.monotonic()
for i in range(n):
    while True:
        try:
            p.produce(TOPIC, value=value, on_delivery=lambda err, m: err and failed.append(err))
            break
        except BufferError:
            p.poll(0.05)
    p.poll(0)
left = p.flush(120)
elapsed = time.monotonic() - start
if left or failed:
    print(f"FAILED: {left} undelivered, errors {failed[:3]}", flush=True)
    sys.exit(1)
p.poll(0)
print(f"RATE {n * len(value) / elapsed:.0f} THROTTLES {len(throttles)} SECONDS {elapsed:.2f}", flush=True)
print("OK", flush=True)
