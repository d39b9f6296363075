"""confluent-kafka against a broker whose ACLs are on (deny by default), over SASL SCRAM.

Usage: confluent_acls.py BOOTSTRAP
  admin (a super user) creates ACLs for alice and describes them back (ANY and MATCH
  filters); alice produces to a topic she may write (100 records delivered), is refused
  TOPIC_AUTHORIZATION_FAILED on one she may only describe and on one she may not see,
  reads her 100 records in a group she may use and is refused GROUP_AUTHORIZATION_FAILED
  in another, cannot create ACLs herself; admin deletes her write ACL and her produce is
  refused. Prints OK; exits non-zero naming the failed check. Run by
  tests/tests/security.rs.
"""
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

BOOTSTRAP = sys.argv[1]


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)


def conf(user, password, **more):
    c = {
        "bootstrap.servers": BOOTSTRAP,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
    }
    c.update(more)
    return c


ADMIN = conf("admin", "admin-pw")
ALICE = conf("alice", "alice-pw")
admin = AdminClient(ADMIN)


def acl(restype, name, pattern, op):
    return AclBinding(restype, name, pattern, "User:alice", "*", op, AclPermissionType.ALLOW)


wanted = [
    acl(ResourceType.TOPIC, "allowed", ResourcePatternType.LITERAL, AclOperation.WRITE),
    acl(ResourceType.TOPIC, "allow", ResourcePatternType.PREFIXED, AclOperation.READ),
    acl(ResourceType.TOPIC, "readonly", ResourcePatternType.LITERAL, AclOperation.DESCRIBE),
    acl(ResourceType.GROUP, "g", ResourcePatternType.LITERAL, AclOperation.READ),
]
for b, f in admin.create_acls(wanted).items():
    f.result(timeout=20)

everything = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)
described = admin.describe_acls(everything).result(timeout=20)
check(sorted(map(str, described)) == sorted(map(str, wanted)), f"ACLs described back: {described}")
matching = AclBindingFilter(
    ResourceType.TOPIC, "allowed", ResourcePatternType.MATCH, None, None, AclOperation.ANY, AclPermissionType.ANY
)
m = admin.describe_acls(matching).result(timeout=20)
check(len(m) == 2, f"MATCH finds the literal and the prefixed binding: {m}")


def produce(topic, n):
    errors = []
    p = Producer(dict(ALICE, **{"acks": "all", "message.timeout.ms": 10000}))
    for i in range(n):
        p.produce(topic, value=f"a{i}".encode(), on_delivery=lambda err, msg: err and errors.append(err))
    p.flush(20)
    return errors


check(produce("allowed", 100) == [], "alice writes where she may")
for topic in ["readonly", "denied"]:
    errors = produce(topic, 3)
    check(
        len(errors) == 3 and all(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors),
        f"alice's produce to {topic} refused TOPIC_AUTHORIZATION_FAILED: {errors}",
    )


def consume(group, want):
    c = Consumer(dict(ALICE, **{"group.id": group, "auto.offset.reset": "earliest"}))
    c.subscribe(["allowed"])
    got, errors = [], []
    deadline = time.time() + 20
    while time.time() < deadline and len(got) < want and not errors:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            errors.append(msg.error())
        else:
            got.append(msg.value())
    c.close()
    return got, errors


got, errors = consume("g", 100)
check(len(got) == 100 and not errors, f"alice reads her 100 in group g: {len(got)}, {errors}")
got, errors = consume("h", 1)
check(
    errors and errors[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED,
    f"group h refused GROUP_AUTHORIZATION_FAILED: {errors}, {len(got)} read",
)

alice_admin = AdminClient(ALICE)  # kept: a dropped client fails its futures
try:
    for f in alice_admin.create_acls([acl(ResourceType.TOPIC, "*", ResourcePatternType.LITERAL, AclOperation.ALL)]).values():
        f.result(timeout=20)
    check(False, "alice may not create ACLs")
except KafkaException as e:
    check(e.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED, f"alice's CreateAcls: {e}")

write_filter = AclBindingFilter(
    ResourceType.TOPIC, "allowed", ResourcePatternType.LITERAL, "User:alice", None, AclOperation.WRITE, AclPermissionType.ALLOW
)
deleted = list(admin.delete_acls([write_filter]).values())[0].result(timeout=20)
check(len(deleted) == 1, f"one ACL deleted: {deleted}")
errors = produce("allowed", 2)
check(
    len(errors) == 2 and all(e.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED for e in errors),
    f"alice's write refused once its ACL is deleted: {errors}",
)
print("OK", flush=True)
