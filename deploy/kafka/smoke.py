#!/usr/bin/env python3
"""End-to-end smoke check of the local Kafka broker with kafka-python 3.x.

Usage: python deploy/kafka/smoke.py [BOOTSTRAP]   (default 127.0.0.1:$RETENTION_KAFKA_PORT or 19092)

Creates a throw-away topic with 12 partitions, produces one record per
partition with acks='all' + idempotence, consumes them back in a consumer
group (committing offsets), then deletes the topic. Exits 0 on success.
Needs the kafka-python package (>= 3.0) in the interpreter that runs it.
"""
import os
import sys
import time
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

PARTITIONS = 12


def main():
    default = "127.0.0.1:%s" % os.environ.get("RETENTION_KAFKA_PORT", "19092")
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else default
    topic = "smoke-%s" % uuid.uuid4().hex[:12]
    group = "smoke-group-%s" % uuid.uuid4().hex[:12]
    t0 = time.monotonic()

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="smoke-admin")
    try:
        # kafka-python 3.x: a dict {name: {num_partitions, replication_factor,
        # configs}} (a list of NewTopic is deprecated); returns a plain dict.
        created = admin.create_topics(
            {topic: {"num_partitions": PARTITIONS, "replication_factor": 1}},
            timeout_ms=30000, wait_for_metadata=True)
        errors = [(t["name"], t["error_code"]) for t in created["topics"] if t["error_code"]]
        assert not errors, "create_topics errors: %r" % errors
        assert topic in admin.list_topics(), "topic not listed"
        (described,) = admin.describe_topics([topic])
        assert len(described["partitions"]) == PARTITIONS, described
        print("created %s with %d partitions" % (topic, PARTITIONS))

        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all",
                                 enable_idempotence=True, linger_ms=5)
        futures = [producer.send(topic, key=b"k%d" % p, value=b"v%d" % p, partition=p)
                   for p in range(PARTITIONS)]
        producer.flush(30)
        offsets = [f.get(timeout=30) for f in futures]
        producer.close()
        assert sorted(m.partition for m in offsets) == list(range(PARTITIONS))
        print("produced %d records (acks=all, idempotent)" % PARTITIONS)

        consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        seen = {}
        deadline = time.monotonic() + 60
        while len(seen) < PARTITIONS and time.monotonic() < deadline:
            for _tp, records in consumer.poll(timeout_ms=1000).items():
                for r in records:
                    seen[r.partition] = r.value
        assert len(seen) == PARTITIONS, "consumed only %d/%d" % (len(seen), PARTITIONS)
        assert all(seen[p] == b"v%d" % p for p in range(PARTITIONS)), seen
        consumer.commit()
        committed = consumer.committed(TopicPartition(topic, 0))
        consumer.close()
        assert committed == 1, "committed offset of partition 0 is %r" % (committed,)
        print("consumed %d records in group %s, offsets committed" % (len(seen), group))
    finally:
        try:
            admin.delete_topics([topic], timeout_ms=30000)
        except Exception as exc:  # best effort cleanup
            print("warning: could not delete %s: %s" % (topic, exc))
        admin.close()
    print("kafka smoke check OK against %s in %.1fs" % (bootstrap, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
