"""A bare grpc.aio echo server: the baseline every RPC benchmark compares with.

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


async def main(port_file: Path) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)  # bytes in, same bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("bench.Echo", {"Echo": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await asyncio.to_thread(port_file.write_text, str(port))
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
