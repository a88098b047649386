"""A real HTTP server on loopback that serves the Enhetsregisteret recordings.

It pages the recorded updates the way the register does and can be told to
fail: `fail(path_prefix, status, times, retry_after)` makes the next `times`
requests under a path answer `status` (500, or 429 with `Retry-After`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.identifiers import norwegian_numbers

RECORDINGS = Path(__file__).resolve().parent / "fixtures" / "brreg"
BASE = "https://data.brreg.no/enhetsregisteret/api"


def placeholders(start: int) -> dict[str, str]:
    """Valid organisation numbers (from `start` on) for the recordings'
    placeholders: W1, W2, W3 (to watch) and U1 (not)."""
    return dict(zip(("W1", "W2", "W3", "U1"), norwegian_numbers(4, start=start), strict=True))


def _load(name: str, numbers: Mapping[str, str]) -> Any:
    text = (RECORDINGS / name).read_text()
    for key, number in numbers.items():
        text = text.replace(f"%{key}%", number)
    return json.loads(text)


@dataclass
class Register:
    """The recorded state, filled with this test's organisation numbers."""

    numbers: Mapping[str, str]
    dated: bool = False
    """Serve a first run's request (`dato`, `afterTime`) only the updates from
    that time on, as the register does. Off, it gets every update, whatever day
    the tests run (the recordings are of 2026-11-23)."""
    updates: list[dict[str, Any]] = field(default_factory=list)
    roles: list[dict[str, Any]] = field(default_factory=list)
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)
    failures: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.updates = _load("oppdaterte-enheter.json", self.numbers)
        self.roles = _load("oppdaterte-roller.json", self.numbers)
        for path in (RECORDINGS / "enheter").glob("*.json"):
            unit = _load(f"enheter/{path.name}", self.numbers)
            self.units[unit["organisasjonsnummer"]] = unit

    def fail(
        self,
        prefix: str,
        status: int,
        times: int = 1,
        retry_after: int | str | None = None,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next `times` requests under `prefix` with `status` (and
        `body` as it is, and `headers`, if given: a proxy's maintenance page)."""
        self.failures.append(
            {
                "prefix": prefix,
                "status": status,
                "times": times,
                "retry_after": retry_after,
                "body": body,
                "headers": dict(headers or {}),
            }
        )

    def _units_page(self, query: dict[str, list[str]]) -> dict[str, Any]:
        size = int(query.get("size", ["20"])[0])
        start = int(query["oppdateringsid"][0]) if "oppdateringsid" in query else 0
        matching = [u for u in self.updates if u["oppdateringsid"] >= start]
        if self.dated and "dato" in query:
            since = datetime.fromisoformat(query["dato"][0])
            matching = [u for u in matching if datetime.fromisoformat(u["dato"]) >= since]
        page = matching[:size]
        body: dict[str, Any] = {
            "_links": {"self": {"href": f"{BASE}/oppdateringer/enheter?page=0&size={size}"}},
            "page": {
                "size": size,
                "totalElements": len(matching),
                "totalPages": (len(matching) + size - 1) // size,
                "number": 0,
            },
        }
        if page:
            body["_embedded"] = {"oppdaterteEnheter": page}
            body["_links"]["next"] = {"href": f"{BASE}/oppdateringer/enheter?page=1&size={size}"}
        return body

    def _roles_page(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        size = int(query.get("size", ["100"])[0])
        after = int(query["afterId"][0]) if "afterId" in query else 0
        matching = [r for r in self.roles if int(r["id"]) > after]
        if self.dated and "afterTime" in query:
            since = datetime.fromisoformat(query["afterTime"][0])
            matching = [r for r in matching if datetime.fromisoformat(r["time"]) > since]
        return matching[:size]

    def answer(self, raw_path: str) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body, or bytes sent as they are) for a GET."""
        parsed = urlparse(raw_path)
        query = parse_qs(parsed.query)
        with self.lock:
            self.requests.append(raw_path)
            for failure in self.failures:
                if failure["times"] > 0 and parsed.path.startswith(failure["prefix"]):
                    failure["times"] -= 1
                    headers = dict(failure["headers"])
                    if failure["retry_after"] is not None:
                        headers["Retry-After"] = str(failure["retry_after"])
                    body = failure["body"]
                    if body is None:
                        body = {"feilmelding": "midlertidig feil"}
                    return failure["status"], headers, body
        if parsed.path == "/enhetsregisteret/api/oppdateringer/enheter":
            return 200, {"Content-Type": "application/hal+json"}, self._units_page(query)
        if parsed.path == "/enhetsregisteret/api/oppdateringer/roller":
            return 200, {"Content-Type": "application/json"}, self._roles_page(query)
        if parsed.path.startswith("/enhetsregisteret/api/enheter/"):
            number = parsed.path.rsplit("/", 1)[-1]
            if number in self.gone:
                return 410, {}, {"feilmelding": "Enheten er fjernet"}
            if number in self.units:
                return 200, {"Content-Type": "application/json"}, self.units[number]
            return 404, {}, {"feilmelding": "Fant ikke enhet"}
        return 404, {}, {"feilmelding": "ukjent sti"}


@contextmanager
def serve(register: Register, port: int = 0) -> Iterator[str]:
    """Serve `register` on a loopback port (0: a free one); yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = register.answer(self.path)
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
