"""Alert subscribers in a process of their own, for bench_alerts.py.

At 1,000 streams, one Python client process reading every stream costs as
much CPU as the server writing them, and its own queueing shows up as
latency. bench_alerts.py therefore spreads the subscribers over several of
these processes. Each opens its streams, prints "ready" once every stream has
had its first heartbeat, and records when each alert arrives (time.perf_counter,
CLOCK_MONOTONIC: the same clock in every process of the machine). Commands on
stdin, one per line: "count" prints how many arrivals it has recorded; "stop"
prints them as one JSON line, {"arrivals": [[register_number, seconds], ...]}
(one entry per stream and alert), and ends.

Run by bench_alerts.py: python bench/subscribers.py ADDRESS KEY STREAMS CHANNELS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from creditwatch.v1 import alerts_pb2, alerts_pb2_grpc


async def _read(
    call: grpc.aio.UnaryStreamCall[
        alerts_pb2.SubscribeAlertsRequest, alerts_pb2.SubscribeAlertsResponse
    ],
    ready: asyncio.Event,
    arrivals: list[tuple[str, float]],
) -> None:
    try:
        async for message in call:
            if message.HasField("alert"):
                arrivals.append((message.alert.company.register_number, time.perf_counter()))
            else:
                ready.set()
    except (grpc.aio.AioRpcError, asyncio.CancelledError):
        pass


async def main(address: str, key: str, streams: int, channels: int) -> None:
    metadata = (("authorization", f"Bearer {key}"),)
    opened = [grpc.aio.insecure_channel(address) for _ in range(channels)]
    arrivals: list[tuple[str, float]] = []
    calls = []
    readers = []
    waits = []
    for i in range(streams):
        call = alerts_pb2_grpc.AlertServiceStub(opened[i % channels]).SubscribeAlerts(
            alerts_pb2.SubscribeAlertsRequest(heartbeat_interval_seconds=300), metadata=metadata
        )
        ready = asyncio.Event()
        calls.append(call)
        waits.append(ready.wait())
        readers.append(asyncio.create_task(_read(call, ready, arrivals)))
    await asyncio.wait_for(asyncio.gather(*waits), 120)
    print("ready", flush=True)
    while (await asyncio.to_thread(sys.stdin.readline)).strip() == "count":
        print(len(arrivals), flush=True)
    for call in calls:
        call.cancel()
    await asyncio.gather(*readers)
    for channel in opened:
        await channel.close()
    print(json.dumps({"arrivals": arrivals}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
