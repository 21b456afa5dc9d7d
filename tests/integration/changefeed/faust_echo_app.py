"""A minimal Faust app: exactly-once, a RocksDB table, raw bytes in and out.

Run as a script by test_changefeed_clients.py to prove aiokafka (inside Faust) works
with the pinned broker; configured through ECHO_* variables.
"""

import json
import os

import faust

app = faust.App(
    os.environ["ECHO_APP_ID"],
    broker=f"kafka://{os.environ['ECHO_BOOTSTRAP']}",
    store="rocksdb://",
    processing_guarantee="exactly_once",
    topic_partitions=int(os.environ["ECHO_PARTITIONS"]),
    datadir=os.environ["ECHO_DATADIR"],
    broker_commit_every=10,
    broker_commit_interval=0.2,
)
source_topic = app.topic(
    os.environ["ECHO_SOURCE"], key_serializer="raw", value_serializer="raw", internal=False
)
sink_topic = app.topic(
    os.environ["ECHO_SINK"], key_serializer="raw", value_serializer="raw", internal=False
)
echo_counts = app.Table("echo_counts", default=int, partitions=int(os.environ["ECHO_PARTITIONS"]))


@app.agent(source_topic)
async def echo(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        key = event.key
        echo_counts[key] += 1
        body = json.loads(event.value)
        body["seen"] = echo_counts[key]
        await sink_topic.send(key=key, value=json.dumps(body).encode())


if __name__ == "__main__":
    app.main()
