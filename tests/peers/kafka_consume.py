#!/usr/bin/env python3
"""Reads Kafka topics back with confluent-kafka (its own, newer librdkafka: an independent
client) and prints one JSON line per message, in offset order per partition:
{"topic", "partition", "offset", "headers": {...}, "value": <the JSON value>}.

    kafka_consume.py BOOTSTRAP TOPIC[,TOPIC...] COUNT [key=value ...]

Partitions are assigned directly from the beginning (no consumer group join, which takes
Tansu ~20 s). Stops after COUNT messages, or after 15 s without a new one. Extra
key=value arguments are librdkafka settings (security.protocol, sasl.*, ssl.*).
"""

import json
import sys
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main():
    bootstrap, topics, want = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
    conf = {
        "bootstrap.servers": bootstrap,
        "group.id": "skygate-verify",
        "enable.auto.commit": False,
    }
    for kv in sys.argv[4:]:
        k, v = kv.split("=", 1)
        conf[k] = v
    c = Consumer(conf)
    meta = c.list_topics(timeout=20)
    parts = []
    for t in topics:
        if t not in meta.topics or meta.topics[t].error is not None:
            sys.exit(f"topic {t} not found: {meta.topics.get(t)}")
        parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in meta.topics[t].partitions]
    c.assign(parts)
    got, last = 0, time.time()
    while got < want and time.time() - last < 15:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            print(json.dumps({"error": str(m.error())}), file=sys.stderr)
            continue
        last = time.time()
        got += 1
        headers = {k: (v.decode() if v is not None else None) for k, v in (m.headers() or [])}
        print(json.dumps({
            "topic": m.topic(),
            "partition": m.partition(),
            "offset": m.offset(),
            "headers": headers,
            "value": json.loads(m.value()),
        }), flush=True)
    c.close()


if __name__ == "__main__":
    main()
