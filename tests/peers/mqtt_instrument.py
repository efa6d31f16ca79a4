"""An instrument that publishes numbered QoS 1 messages and retries each until PUBACK.

usage: mqtt_instrument.py HOST PORT CLIENT_ID TOPIC COUNT ACKED_FILE

Publishes {"n": i} for i in 1..=COUNT on TOPIC, waiting for each PUBACK (paho-mqtt,
MQTT 3.1.1). A lost connection (the gateway killed) means: reconnect with backoff and
publish the same message again. Every acknowledged i is appended to ACKED_FILE and
flushed at once, so the file is exactly what the gateway said it had accepted.
Prints "ready" after the first PUBACK; exits 0 after the last.
"""

import sys
import time

import paho.mqtt.client as mqtt

host, port, client_id, topic, count, acked_path = sys.argv[1:7]
port, count = int(port), int(count)


def connect():
    delay = 0.05
    while True:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        try:
            c.connect(host, port, keepalive=10)
            c.loop_start()
            deadline = time.monotonic() + 3
            while not c.is_connected() and time.monotonic() < deadline:
                time.sleep(0.01)
            if c.is_connected():
                return c
        except OSError:
            pass
        c.loop_stop()
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


with open(acked_path, "a", buffering=1) as acked:
    client = connect()
    first = True
    i = 1
    while i <= count:
        info = client.publish(topic, '{"n": %d}' % i, qos=1)
        try:
            info.wait_for_publish(timeout=5)
        except (RuntimeError, ValueError):
            pass
        if info.is_published():
            acked.write("%d\n" % i)
            if first:
                print("ready", flush=True)
                first = False
            i += 1
            continue
        # Not acknowledged: a new connection, the same message again.
        client.loop_stop()
        try:
            client.disconnect()
        except Exception:
            pass
        client = connect()
    client.disconnect()
    client.loop_stop()
