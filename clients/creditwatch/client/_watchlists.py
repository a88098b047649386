"""The typed client of WatchListService."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TypeAlias

import grpc
from google.protobuf import field_mask_pb2

from creditwatch.client._batches import MAX_BATCH, chunk_request_id, send_in_chunks
from creditwatch.client._retry import CallContext
from creditwatch.v1 import common_pb2, watchlists_pb2, watchlists_pb2_grpc

RiskClassLike: TypeAlias = common_pb2.RiskClass.ValueType | str
"""A risk class: `common_pb2.RISK_CLASS_C` or its letter, `"C"`."""


def _risk_class(value: RiskClassLike) -> common_pb2.RiskClass.ValueType:
    if isinstance(value, str):
        return common_pb2.RiskClass.Value(f"RISK_CLASS_{value.upper()}")
    return value


class WatchListsClient:
    """Watch lists and their entries (`WatchListService`); get it as `client.watch_lists`.

    Methods return the generated protobuf messages (`creditwatch.v1.watchlists_pb2`),
    whose fields the proto comments document. Every method takes `rpc_timeout`, the
    seconds one RPC may take including its retries (None: the client's
    `default_timeout`); bulk and listing methods apply it to each chunk or page.
    """

    def __init__(self, channel: grpc.aio.Channel, context: CallContext) -> None:
        self._stub = watchlists_pb2_grpc.WatchListServiceStub(channel)
        self._call = context

    async def create(
        self,
        display_name: str,
        *,
        description: str = "",
        pd_threshold: float = 0.0,
        alert_rules: watchlists_pb2.AlertRules | None = None,
        labels: Mapping[str, str] | None = None,
        request_id: str | None = None,
        rpc_timeout: float | None = None,
    ) -> watchlists_pb2.WatchList:
        """Create a watch list and return it with its server-assigned `name`.

        `request_id` is the idempotency key; when None the SDK makes a UUID, so
        a retry after a lost response returns the same watch list instead of
        creating a second one. Pass your own to stay safe across process restarts.
        """
        request = watchlists_pb2.CreateWatchListRequest(
            watch_list=watchlists_pb2.WatchList(
                display_name=display_name,
                description=description,
                pd_threshold=pd_threshold,
                alert_rules=alert_rules,
                labels=dict(labels or {}),
            ),
            request_id=request_id or str(uuid.uuid4()),
        )
        response = await self._call.unary(
            self._stub.CreateWatchList, request, retryable=True, rpc_timeout=rpc_timeout
        )
        return response.watch_list

    async def get(self, name: str, *, rpc_timeout: float | None = None) -> watchlists_pb2.WatchList:
        """The watch list `name` ("watchLists/{id}"); NotFoundError if the tenant has none."""
        request = watchlists_pb2.GetWatchListRequest(name=name)
        response = await self._call.unary(
            self._stub.GetWatchList, request, retryable=True, rpc_timeout=rpc_timeout
        )
        return response.watch_list

    async def list(
        self, *, page_size: int = 0, rpc_timeout: float | None = None
    ) -> AsyncIterator[watchlists_pb2.WatchList]:
        """Every watch list of the tenant, oldest first, fetched page by page.

        `page_size` is the watch lists per RPC (1..1,000; 0: the server's default).
        """
        request = watchlists_pb2.ListWatchListsRequest(page_size=page_size)
        async for page in self._call.pages(
            self._stub.ListWatchLists, request, rpc_timeout=rpc_timeout
        ):
            for watch_list in page.watch_lists:
                yield watch_list

    async def update(
        self,
        name: str,
        *,
        display_name: str | None = None,
        description: str | None = None,
        pd_threshold: float | None = None,
        alert_rules: watchlists_pb2.AlertRules | None = None,
        labels: Mapping[str, str] | None = None,
        rpc_timeout: float | None = None,
    ) -> watchlists_pb2.WatchList:
        """Change the fields given (not None) and return the watch list afterwards.

        The update mask names exactly the arguments given, so `description=""`
        clears the description and `labels={}` removes every label, while
        leaving an argument out keeps its value.
        """
        watch_list = watchlists_pb2.WatchList(name=name)
        paths: builtins.list[str] = []
        if display_name is not None:
            watch_list.display_name = display_name
            paths.append("display_name")
        if description is not None:
            watch_list.description = description
            paths.append("description")
        if pd_threshold is not None:
            watch_list.pd_threshold = pd_threshold
            paths.append("pd_threshold")
        if alert_rules is not None:
            watch_list.alert_rules.CopyFrom(alert_rules)
            paths.append("alert_rules")
        if labels is not None:
            watch_list.labels.update(labels)
            paths.append("labels")
        if not paths:
            raise ValueError("update() needs at least one field to change")
        request = watchlists_pb2.UpdateWatchListRequest(
            watch_list=watch_list, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        response = await self._call.unary(
            self._stub.UpdateWatchList, request, retryable=True, rpc_timeout=rpc_timeout
        )
        return response.watch_list

    async def delete(self, name: str, *, rpc_timeout: float | None = None) -> int:
        """Delete the watch list `name` with its entries; returns how many entries went with it.

        NotFoundError if the tenant has no such watch list. A delete is retried
        on UNAVAILABLE like a read; if an attempt's response was lost (the
        connection failed after the request may have reached the server) and
        the retry finds the watch list gone, that attempt deleted it: the call
        succeeds and returns 0, since the count went with the lost response.
        """
        request = watchlists_pb2.DeleteWatchListRequest(name=name)
        response = await self._call.unary(
            self._stub.DeleteWatchList,
            request,
            retryable=True,
            rpc_timeout=rpc_timeout,
            if_gone=watchlists_pb2.DeleteWatchListResponse(deleted_entry_count=0),
        )
        return response.deleted_entry_count

    async def add_entries(
        self,
        parent: str,
        entries: Iterable[watchlists_pb2.WatchListEntry],
        *,
        request_id: str | None = None,
        chunk_size: int = MAX_BATCH,
        rpc_timeout: float | None = None,
    ) -> watchlists_pb2.AddEntriesResponse:
        """Add or update (upsert by company) any number of entries on the watch list `parent`.

        Entries are read lazily and sent in chunks of `chunk_size` (at most
        10,000, the server's limit); the result sums `added_count` and
        `updated_count` over the chunks, and `entry_count` is the list's size
        after the last one. No entries send no AddEntries call (the list's
        size is read instead). Build entries with `creditwatch.client.entry`.

        Each chunk is atomic, the whole call is not: if a chunk fails, the chunks
        before it stay applied (the exception's notes say which). Re-sending the
        corrected batch is harmless, since adding is an upsert, but under a new
        `request_id` (or none): the server refuses an id reused for different
        entries. A company may appear once per chunk; across chunks the later
        entry wins.

        Errors name entries by their position in `entries`, not in the chunk:
        `field_violations` has `entries[10017].company.register_number` for the
        10,018th entry you passed.

        `request_id` is the idempotency key (a UUID is made when None); it makes
        a retried chunk report the counts of its first attempt.
        """
        key = request_id or str(uuid.uuid4())

        async def send(
            index: int, chunk: builtins.list[watchlists_pb2.WatchListEntry]
        ) -> watchlists_pb2.AddEntriesResponse:
            request = watchlists_pb2.AddEntriesRequest(
                parent=parent, entries=chunk, request_id=chunk_request_id(key, index)
            )
            return await self._call.unary(
                self._stub.AddEntries, request, retryable=True, rpc_timeout=rpc_timeout
            )

        total = watchlists_pb2.AddEntriesResponse(entry_count=-1)
        async for response in send_in_chunks(entries, chunk_size, "entries", send):
            total.added_count += response.added_count
            total.updated_count += response.updated_count
            total.entry_count = response.entry_count
        if total.entry_count < 0:  # nothing to send; the server refuses empty calls
            total.entry_count = (await self.get(parent, rpc_timeout=rpc_timeout)).entry_count
        return total

    async def remove_entries(
        self,
        parent: str,
        companies: Iterable[common_pb2.CompanyRef],
        *,
        chunk_size: int = MAX_BATCH,
        rpc_timeout: float | None = None,
    ) -> watchlists_pb2.RemoveEntriesResponse:
        """Remove the entries of `companies` from the watch list `parent`.

        Sent in chunks like `add_entries` (each atomic, counts summed, errors
        naming `companies[i]` by the position in `companies`). Companies not on
        the list count in `not_found_count`. Build references with
        `creditwatch.client.company`.

        A chunk is retried on UNAVAILABLE only while its request never left the
        client: a repeat after a lost response would count the entries the
        first attempt removed as not found. If the connection fails once the
        request may have reached the server, UnavailableError is raised (its
        notes say so) and the chunk may or may not have been applied.
        """

        async def send(
            _: int, chunk: builtins.list[common_pb2.CompanyRef]
        ) -> watchlists_pb2.RemoveEntriesResponse:
            request = watchlists_pb2.RemoveEntriesRequest(parent=parent, companies=chunk)
            return await self._call.unary(
                self._stub.RemoveEntries,
                request,
                retryable=True,
                rpc_timeout=rpc_timeout,
                idempotent=False,
            )

        total = watchlists_pb2.RemoveEntriesResponse()
        async for response in send_in_chunks(companies, chunk_size, "companies", send):
            total.removed_count += response.removed_count
            total.not_found_count += response.not_found_count
        return total

    async def get_entry(
        self, name: str, *, rpc_timeout: float | None = None
    ) -> watchlists_pb2.WatchListEntry:
        """One entry with its company's latest score.

        `name` is "watchLists/{id}/entries/{country}-{register_number}"; build it
        with `creditwatch.client.entry_name`.
        """
        request = watchlists_pb2.GetEntryRequest(name=name)
        response = await self._call.unary(
            self._stub.GetEntry, request, retryable=True, rpc_timeout=rpc_timeout
        )
        return response.entry

    async def list_entries(
        self,
        parent: str,
        *,
        risk_classes: Iterable[RiskClassLike] = (),
        label: str = "",
        page_size: int = 0,
        rpc_timeout: float | None = None,
    ) -> AsyncIterator[watchlists_pb2.WatchListEntry]:
        """Every entry of the watch list `parent` in register-number order, page by page.

        Args:
            risk_classes: only entries whose latest risk class is one of these
                (`"C"`, `"D"` or the enum values); empty means all, unscored included.
            label: only entries carrying this label, as "key" or "key=value".
            page_size: entries per RPC (1..10,000; 0: the server's default of 1,000).
        """
        request = watchlists_pb2.ListEntriesRequest(
            parent=parent,
            page_size=page_size,
            risk_classes=[_risk_class(r) for r in risk_classes],
            label=label,
        )
        async for page in self._call.pages(
            self._stub.ListEntries, request, rpc_timeout=rpc_timeout
        ):
            for entry in page.entries:
                yield entry
