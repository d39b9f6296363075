"""confluent-kafka over SASL_SSL against a broker whose Kafka listener asks for SCRAM.

Usage: confluent_scram.py BOOTSTRAP CA_PEM TOPIC
  As alice (SCRAM-SHA-512, password alice-secret, set with `meridian user set`):
  describes alice's credentials, adds bob (SCRAM-SHA-256) with AlterUserScramCredentials;
  bob produces 500 records idempotently (acks=all) and reads exactly those back; bob over
  PLAIN lists topics; alice with a wrong password is refused; bob's credential deleted,
  bob is refused. Prints OK. Exits non-zero naming the failed check. Run by
  tests/tests/kafka_security.rs.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import (
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

BOOTSTRAP, CA, TOPIC = sys.argv[1], sys.argv[2], sys.argv[3]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def conf(user, password, mechanism="SCRAM-SHA-512", **more):
    c = {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": CA,
    }
    c.update(more)
    return c


def refused(c, what):
    """Whether a client with configuration c is refused with an authentication error (a
    credential just changed reaches every broker a moment later: new clients are tried
    for up to 20 s)."""
    deadline = time.time() + 20
    seen = []
    while time.time() < deadline:
        errors = []
        client = AdminClient(dict(c, error_cb=lambda e: errors.append(e)))
        try:
            client.list_topics(timeout=3)
        except KafkaException:
            pass
        client.poll(0.5)
        seen = [e.str() for e in errors]
        if any("uthenticat" in e for e in seen):
            return
    check(False, f"{what}: an authentication error, got {seen}")


alice = AdminClient(conf("alice", "alice-secret"))
described = alice.describe_user_scram_credentials(["alice"])["alice"].result(timeout=20)
mechanisms = sorted((i.mechanism, i.iterations) for i in described.scram_credential_infos)
check(
    mechanisms == [(ScramMechanism.SCRAM_SHA_256, 8192), (ScramMechanism.SCRAM_SHA_512, 8192)],
    f"alice's credentials described: {mechanisms}",
)
try:
    alice.describe_user_scram_credentials(["nobody"])["nobody"].result(timeout=20)
    check(False, "describing an unknown user fails")
except KafkaException as e:
    check("RESOURCE_NOT_FOUND" in str(e) or "not exist" in str(e), f"unknown user: {e}")

bob_info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096)
alice.alter_user_scram_credentials(
    [UserScramCredentialUpsertion("bob", bob_info, b"bob-pw")]
)["bob"].result(timeout=20)
# Out of bounds: refused, naming why.
try:
    alice.alter_user_scram_credentials(
        [UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 100), b"pw")]
    )["carol"].result(timeout=20)
    check(False, "100 iterations refused")
except KafkaException as e:
    check("iterations" in str(e), f"100 iterations: {e}")

bob = conf("bob", "bob-pw", "SCRAM-SHA-256")
p = Producer(dict(bob, **{"enable.idempotence": True, "acks": "all"}))
failed = []
for i in range(500):
    p.produce(TOPIC, value=f"m{i}".encode(), key=f"k{i % 7}".encode(),
              on_delivery=lambda err, msg: err and failed.append(err))
check(p.flush(30) == 0, "every record delivered")
check(not failed, f"delivery errors: {failed[:3]}")

c = Consumer(dict(bob, **{"group.id": "scram-readers", "auto.offset.reset": "earliest"}))
c.subscribe([TOPIC])
seen = []
deadline = time.time() + 30
while len(seen) < 500 and time.time() < deadline:
    m = c.poll(0.5)
    if m is None or m.error():
        continue
    seen.append(m.value().decode())
c.close()
check(sorted(seen) == sorted(f"m{i}" for i in range(500)), f"read {len(seen)} records, {len(set(seen))} distinct")

# PLAIN against the same credential.
md = AdminClient(conf("bob", "bob-pw", "PLAIN")).list_topics(timeout=20)
check(TOPIC in md.topics, "bob over PLAIN lists the topic")

refused(conf("alice", "wrong"), "alice with a wrong password")
refused(conf("mallory", "x"), "a user that does not exist")
refused(conf("bob", "wrong", "PLAIN"), "bob over PLAIN with a wrong password")

alice.alter_user_scram_credentials(
    [UserScramCredentialDeletion("bob", ScramMechanism.SCRAM_SHA_256)]
)["bob"].result(timeout=20)
refused(bob, "bob after his credential was deleted")
print("OK", flush=True)
