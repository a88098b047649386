"""Services whose issue has not landed yet: registered, visible through
reflection, and answering UNIMPLEMENTED with a clear message — never a fake answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc


class NotYetImplemented:
    """A servicer whose every method answers UNIMPLEMENTED."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __getattr__(
        self, method: str
    ) -> Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[None]]:
        service = self._service

        async def handler(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{service}.{method} is not implemented by this server version yet",
            )

        return handler
