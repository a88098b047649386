"""A bare grpc.aio server: the baselines the RPC benchmarks compare with.

* `bench.Echo/Echo`: bytes in, the same bytes out (bench_scoring's unary baseline).
* `bench.Fanout/Subscribe` and `Publish`: every open Subscribe stream gets each
  published payload (bench_alerts' fan-out baseline: what delivering one
  message to N streams costs in grpc.aio itself, with nothing of creditwatch's).
  A stream first sends an empty message, so a client knows it is registered.

Run: python bench/echo_server.py PORT_FILE  (binds 127.0.0.1 on a free port,
writes the port to PORT_FILE, serves until killed).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import grpc


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


class _Fanout:
    """Publish hands the payload to every stream's queue; each stream writes it."""

    def __init__(self) -> None:
        self.streams: set[asyncio.Queue[bytes]] = set()

    async def subscribe(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.streams.add(queue)
        try:
            await context.write(b"")
            while True:
                await context.write(await queue.get())
        finally:
            self.streams.discard(queue)

    async def publish(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> bytes:
        for queue in self.streams:
            queue.put_nowait(request)
        return b""


async def main(port_file: Path) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)  # bytes in, same bytes out
    fanout = _Fanout()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),
            grpc.method_handlers_generic_handler(
                "bench.Fanout",
                {
                    "Subscribe": grpc.unary_stream_rpc_method_handler(fanout.subscribe),
                    "Publish": grpc.unary_unary_rpc_method_handler(fanout.publish),
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
