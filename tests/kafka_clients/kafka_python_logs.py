"""Partition logs with kafka-python (a second Kafka client, for APIs librdkafka does not
call), against a region managed by a control plane (run by tests/tests/kafka_admin.rs):

- topic "sized" made with retention.bytes=20000 keeps at most 20,000 bytes of records: its
  start moves past its oldest ones, while topic "whole" beside it keeps everything;
- DescribeLogDirs lists the broker's data directory, its disk's size, and each partition
  held with the bytes of its records;
- OffsetForLeaderEpoch answers the partition's end for an epoch up to the leader's, none
  for a newer one, and refuses a current epoch newer than the leader's.

Usage: kafka_python_logs.py BROKERS. Prints OK; exits non-zero with the failed check named.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.protocol.admin import DescribeLogDirsRequest_v0, DescribeLogDirsResponse_v0
from kafka.protocol.offset_for_leader_epoch import OffsetForLeaderEpochRequest

BOOTSTRAP = sys.argv[1]


# kafka-python knows DescribeLogDirs version 0 only, which Kafka 4 no longer serves (nor
# does Meridian); version 1 is the same on the wire.
class DescribeLogDirsResponse_v1(DescribeLogDirsResponse_v0):
    API_VERSION = 1


class DescribeLogDirsRequest_v1(DescribeLogDirsRequest_v0):
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
admin.create_topics([
    NewTopic("sized", 1, 1, topic_configs={"retention.bytes": "20000"}),
    NewTopic("whole", 1, 1),
])
producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, linger_ms=0, acks="all")
for i in range(100):
    # One record batch each: flushed one at a time.
    producer.send("sized", b"s" * 1000)
    producer.send("whole", b"w" * 1000)
    producer.flush(30)
producer.close()


def call(request):
    client = admin._client
    future = client.send(client.least_loaded_node(), request)
    client.poll(future=future, timeout_ms=10000)
    check(future.succeeded(), f"{type(request).__name__} answered: {future.exception}")
    return future.value


def sizes():
    response = call(DescribeLogDirsRequest_v1(topics=None))
    out = {}
    check(len(response.log_dirs) == 1, f"one data directory: {response.log_dirs}")
    error, log_dir, topics = response.log_dirs[0][:3]
    check(error == 0 and log_dir, f"the data directory named, no error: {response.log_dirs[0][:2]}")
    for name, partitions in topics:
        for partition, size, lag, future in partitions:
            out[(name, partition)] = size
    return out


consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP)
sized, whole = TopicPartition("sized", 0), TopicPartition("whole", 0)
deadline = time.time() + 30
while True:
    s = sizes()
    start = consumer.beginning_offsets([sized])[sized]
    if s.get(("sized", 0), 1 << 40) <= 20000 and start > 0:
        break
    check(time.time() < deadline, f"sized within its retention.bytes in 30 s: {s}, start {start}")
    time.sleep(0.5)
check(s.get(("whole", 0), 0) >= 100 * 1000, f"whole keeps all its bytes: {s}")
check(s[("sized", 0)] > 10000, f"sized keeps its newest records: {s}")
check(consumer.beginning_offsets([whole])[whole] == 0, "whole starts at 0")
check(consumer.end_offsets([sized])[sized] == 100, "sized ends at 100")

# (current leader epoch, epoch asked for) → (error, epoch answered, end)
for current, epoch, want in [(-1, 0, (0, 0, 100)), (-1, 1 << 30, (0, -1, -1)),
                             (1 << 30, 0, (76, -1, -1))]:
    response = call(OffsetForLeaderEpochRequest[2]([("whole", [(0, current, epoch)])]))
    topic, partitions = response.topics[0]
    error, partition, leader_epoch, end = partitions[0]
    check((error, leader_epoch, end) == want, f"current {current}, epoch {epoch}: {partitions[0]}, wanted {want}")
print("OK", flush=True)
