"""Produce latency through the Kafka protocol at a steady rate, measured by the Python
confluent-kafka client (librdkafka): the time from handing each record to the client to its
delivery report (the broker's acknowledgement).

Usage: kafka_latency.py BOOTSTRAP TOPIC SIZE ACKS RATE SECONDS [KEY=VALUE ...]
(KEY=VALUE: more librdkafka settings, e.g. security.protocol=SASL_SSL.)
Prints one JSON line: {"sent", "delivered", "errors", "rate", "p50_ms", "p99_ms", "p999_ms"}.
Run by bench/src/bin/kafka-bench.rs.
"""
import json
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, size, acks, rate, seconds = sys.argv[1:7]
size, rate, seconds = int(size), int(rate), float(seconds)
# linger.ms=0: send as soon as possible, as Kafka 3.9's producer does by default.
settings = {"bootstrap.servers": bootstrap, "acks": acks, "linger.ms": 0}
settings.update(kv.split("=", 1) for kv in sys.argv[7:])
p = Producer(settings)
value = b"x" * size
latencies = []
errors = []


def delivered(err, msg, sent):
    if err:
        errors.append(str(err))
    else:
        latencies.append(time.perf_counter() - sent)


start = time.perf_counter()
sent = 0
while True:
    now = time.perf_counter()
    if now - start >= seconds:
        break
    due = int((now - start) * rate)
    while sent < due:
        t = time.perf_counter()
        p.produce(topic, value, on_delivery=lambda err, msg, t=t: delivered(err, msg, t))
        sent += 1
    p.poll(0)
    time.sleep(0.0005)
p.flush(30)
elapsed = time.perf_counter() - start
latencies.sort()


def pct(q):
    return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2) if latencies else None


print(
    json.dumps(
        {
            "sent": sent,
            "delivered": len(latencies),
            "errors": errors[:3],
            "rate": round(sent / elapsed),
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "p999_ms": pct(0.999),
        }
    ),
    flush=True,
)
