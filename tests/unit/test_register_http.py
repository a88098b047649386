"""A register answer that cannot be decoded (a truncated gzip body) is
retried like a lost connection, not taken for a fault of the feed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from creditwatch.server.registers.base import HttpPolicy, RegisterHttp

pytestmark = pytest.mark.asyncio


async def test_an_undecodable_answer_is_retried() -> None:
    http = RegisterHttp("http://register.invalid", HttpPolicy(initial_backoff=0.01))
    calls = 0

    async def get(path: str, params: Any = None) -> httpx.Response:
        nonlocal calls
        calls += 1
        request = httpx.Request("GET", f"http://register.invalid{path}")
        if calls == 1:
            raise httpx.DecodingError("Error -3 while decompressing data", request=request)
        return httpx.Response(200, json={"ok": True}, request=request)

    http._client.get = get  # type: ignore[method-assign]
    try:
        status, body = await http.get("/enheter/923609016")
    finally:
        await http.close()
    assert (status, body, calls, http.retries) == (200, {"ok": True}, 2, 1)
