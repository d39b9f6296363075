"""MQTT 5 with the paho-mqtt client against three Meridian brokers: properties, subscription
identifiers, no-local, retain handling, topic aliases, QoS 2 exactly once, shared
subscriptions split across brokers, a persistent session's queued messages, a will's
delay, and MQTT over WebSocket. Every count is exact. Usage:
mqtt_paho.py TCP_ADDRS WS_ADDRS (comma-separated HOST:PORT, one per broker)."""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TCP = [a.rsplit(":", 1) for a in sys.argv[1].split(",")]
WS = [a.rsplit(":", 1) for a in sys.argv[2].split(",")]


def check(cond, what):
    if not cond:
        print("FAILED:", what, flush=True)
        sys.exit(1)


class Peer:
    """A connected MQTT 5 client collecting what it receives."""

    def __init__(self, i, client_id=None, clean=True, expiry=None, ws=False, will=None, proto=mqtt.MQTTv5,
                 manual_ack=False):
        self.messages = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.flags = None
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id or f"paho-{uuid.uuid4().hex[:8]}",
            protocol=proto,
            transport="websockets" if ws else "tcp",
            manual_ack=manual_ack,
        )
        if will:
            topic, payload, delay = will
            props = Properties(PacketTypes.WILLMESSAGE)
            props.WillDelayInterval = delay
            self.client.will_set(topic, payload, qos=1, properties=props)
        self.client.on_message = self.on_message
        self.client.on_connect = self.on_connect
        host, port = (WS if ws else TCP)[i]
        if proto == mqtt.MQTTv5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            self.client.connect(host, int(port), keepalive=30, clean_start=clean, properties=props)
        else:
            self.client.connect(host, int(port), keepalive=30)
        self.client.loop_start()
        check(self.connected.wait(10), f"connect to {host}:{port}")

    def on_connect(self, client, userdata, flags, reason_code, properties):
        self.flags = flags
        self.connected.set()

    def on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(msg)

    def subscribe(self, topic, qos=1, **opts):
        props = None
        if "sub_id" in opts:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = opts.pop("sub_id")
        done = threading.Event()
        self.client.on_subscribe = lambda *a: done.set()
        self.client.subscribe(topic, options=SubscribeOptions(qos=qos, **opts), properties=props)
        check(done.wait(10), f"SUBACK for {topic}")

    def wait_for(self, n, seconds=20):
        deadline = time.time() + seconds
        while time.time() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.05)
        with self.lock:
            return list(self.messages)

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            info.wait_for_publish(10)
            check(info.is_published(), f"publish to {topic} acknowledged")

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()

    def drop(self):
        """Ends the connection without a DISCONNECT, as a device losing power does."""
        self.client.loop_stop()
        self.client.socket().close()


def main():
    # Properties travel: user properties in order, content type, response topic,
    # correlation data; a subscription identifier comes back.
    sub = Peer(0)
    sub.subscribe("sensors/props/#", qos=1, sub_id=7)
    pub = Peer(1)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("a", "1"), ("a", "2"), ("b", "x")]
    props.ContentType = "text/plain"
    props.ResponseTopic = "sensors/replies"
    props.CorrelationData = b"\x00\x01"
    props.MessageExpiryInterval = 120
    pub.publish("sensors/props/t", b"hello", qos=1, props=props)
    got = sub.wait_for(1)
    check(len(got) == 1, f"one message with properties, got {len(got)}")
    p = got[0].properties
    check(p.UserProperty == [("a", "1"), ("a", "2"), ("b", "x")], f"user properties {p.UserProperty}")
    check(p.ContentType == "text/plain" and p.ResponseTopic == "sensors/replies", "content type, response topic")
    check(p.CorrelationData == b"\x00\x01", "correlation data")
    check(p.SubscriptionIdentifier == [7], f"subscription id {p.SubscriptionIdentifier}")
    check(0 < p.MessageExpiryInterval <= 120, f"expiry left {p.MessageExpiryInterval}")
    sub.close()

    # No-local: a client does not get its own messages back; another client's it does.
    me = Peer(0)
    me.subscribe("sensors/nolocal", qos=1, noLocal=True)
    me.publish("sensors/nolocal", b"mine")
    pub.publish("sensors/nolocal", b"theirs")
    got = me.wait_for(2, seconds=3)
    check([m.payload for m in got] == [b"theirs"], f"no-local: {[m.payload for m in got]}")
    me.close()

    # Retain handling and retain-as-published.
    pub.publish("sensors/ret/a", b"r1", retain=True)
    time.sleep(0.5)
    never = Peer(2)
    never.subscribe("sensors/ret/#", qos=1, retainHandling=2)
    always = Peer(1)
    always.subscribe("sensors/ret/#", qos=1, retainAsPublished=True)
    got = always.wait_for(1)
    check(len(got) == 1 and got[0].retain and got[0].payload == b"r1", "retained on subscribe")
    pub.publish("sensors/ret/a", b"r2", retain=True)
    got = always.wait_for(2)
    check(len(got) == 2 and got[1].retain, "retain as published keeps the flag live")
    got = never.wait_for(1)
    check([m.payload for m in got] == [b"r2"] and not got[0].retain, f"retain handling 2: {[(m.payload, m.retain) for m in got]}")
    never.close()
    always.close()

    # Topic aliases: set once, then used with an empty topic.
    sub = Peer(0)
    sub.subscribe("sensors/alias/long/name", qos=1)
    raw = Peer(1)
    first = Properties(PacketTypes.PUBLISH)
    first.TopicAlias = 3
    raw.publish("sensors/alias/long/name", b"0", props=first)
    for i in range(1, 5):
        again = Properties(PacketTypes.PUBLISH)
        again.TopicAlias = 3
        raw.publish("", str(i).encode(), props=again)
    got = sub.wait_for(5)
    check([m.topic for m in got] == ["sensors/alias/long/name"] * 5, f"aliases: {[m.topic for m in got]}")
    check([m.payload for m in got] == [b"0", b"1", b"2", b"3", b"4"], "aliases keep order")
    sub.close()
    raw.close()

    # QoS 2, exactly once and in order.
    sub = Peer(2)
    sub.subscribe("sensors/q2/#", qos=2)
    for i in range(200):
        pub.publish(f"sensors/q2/t{i % 4}", str(i).encode(), qos=2)
    got = sub.wait_for(200)
    time.sleep(1)
    got = sub.wait_for(201, seconds=0)
    check(len(got) == 200, f"QoS 2: {len(got)} of 200")
    for t in range(4):
        seq = [int(m.payload) for m in got if m.topic == f"sensors/q2/t{t}"]
        check(seq == list(range(t, 200, 4)), f"QoS 2 order of t{t}")
    check(all(m.qos == 2 for m in got), "delivered at QoS 2")
    sub.close()

    # A shared subscription: two members on two brokers split the messages, each once.
    a = Peer(0)
    b = Peer(2)
    a.subscribe("$share/g1/sensors/shared/#", qos=1)
    b.subscribe("$share/g1/sensors/shared/#", qos=1)
    time.sleep(4)  # the share's consumer group settles on its two members
    for i in range(300):
        pub.publish(f"sensors/shared/k{i % 30}", str(i).encode())
    deadline = time.time() + 20
    while time.time() < deadline and len(a.messages) + len(b.messages) < 300:
        time.sleep(0.1)
    time.sleep(1)
    both = sorted(int(m.payload) for m in a.messages + b.messages)
    check(both == list(range(300)), f"shared: {len(both)} messages, {len(set(both))} distinct")
    check(a.messages and b.messages, f"both members got some: {len(a.messages)}, {len(b.messages)}")
    a.close()
    b.close()

    # A persistent session keeps its subscription and queues QoS 1 messages while away.
    cid = f"persist-{uuid.uuid4().hex[:6]}"
    s = Peer(1, client_id=cid, clean=False, expiry=300)
    s.subscribe("sensors/queued", qos=1)
    s.close()
    for i in range(50):
        pub.publish("sensors/queued", str(i).encode())
    s = Peer(1, client_id=cid, clean=False, expiry=300)
    check(s.flags.session_present, "the session is resumed")
    got = s.wait_for(50)
    time.sleep(0.5)
    got = s.wait_for(51, seconds=0)
    check([int(m.payload) for m in got] == list(range(50)), f"queued: {[int(m.payload) for m in got][:10]}... ({len(got)})")
    s.close()
    fresh = Peer(1, client_id=cid, clean=True)
    check(not fresh.flags.session_present, "a clean start drops the session")
    fresh.close()

    # A will's delay: not sent when the session comes back within it; sent after it when
    # it does not.
    watch = Peer(0)
    watch.subscribe("sensors/wills/#", qos=1)
    back = Peer(2, client_id="will-back", expiry=60, will=("sensors/wills/back", b"gone", 2))
    back.drop()
    time.sleep(0.5)
    back = Peer(2, client_id="will-back", clean=False, expiry=60)
    gone = Peer(2, client_id="will-gone", expiry=60, will=("sensors/wills/gone", b"gone", 2))
    dropped = time.time()
    gone.drop()
    got = watch.wait_for(1, seconds=10)
    check([m.topic for m in got] == ["sensors/wills/gone"], f"wills: {[m.topic for m in got]}")
    check(time.time() - dropped >= 1.9, "the will waited its delay")
    time.sleep(2.5)
    check(len(watch.wait_for(2, seconds=0)) == 1, "the resumed session's will never went")
    back.close()
    watch.close()

    # MQTT over WebSocket, both ways, and MQTT 3.1.1 over it too.
    ws_sub = Peer(1, ws=True)
    ws_sub.subscribe("sensors/ws/#", qos=1)
    ws_pub = Peer(2, ws=True, proto=mqtt.MQTTv311)
    for i in range(20):
        ws_pub.publish(f"sensors/ws/{i % 2}", str(i).encode())
    got = ws_sub.wait_for(20)
    check(sorted(int(m.payload) for m in got) == list(range(20)), f"WebSocket: {len(got)}")
    ws_sub.close()
    ws_pub.close()
    pub.close()
    print("OK")


def share_handoff():
    """A share's member that acknowledged nothing loses partitions to a member joining,
    then goes away: every message reaches the other member, none skipped because the
    first had been handed it."""
    share = "$share/handoff/sensors/handoff/#"
    a = Peer(0, manual_ack=True)
    a.subscribe(share, qos=1)
    time.sleep(3)  # the share's consumer group settles on its one member
    pub = Peer(1)
    for i in range(60):
        pub.publish(f"sensors/handoff/k{i % 12}", str(i).encode())
    check(len(a.wait_for(60)) == 60, f"the first member got {len(a.messages)} of 60")
    b = Peer(2)
    b.subscribe(share, qos=1)
    # Probes until one reaches b: the group gave b partitions (taken from a).
    probes = 0
    deadline = time.time() + 30
    while not b.wait_for(1, seconds=1):
        check(time.time() < deadline, "the joining member never got a partition")
        pub.publish(f"sensors/handoff/k{probes % 12}", f"probe{probes}".encode())
        probes += 1
    a.drop()
    want = [str(i) for i in range(60)] + [f"probe{i}" for i in range(probes)]
    got = b.wait_for(len(want), seconds=60)
    have = {m.payload.decode() for m in got}
    missing = [w for w in want if w not in have]
    check(not missing, f"never reached the second member: {missing}")
    b.close()
    pub.close()
    print("OK")


if len(sys.argv) > 3 and sys.argv[3] == "share-handoff":
    share_handoff()
else:
    main()
