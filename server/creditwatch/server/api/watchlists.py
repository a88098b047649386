"""WatchListService: converts requests, calls the store, converts results."""

from __future__ import annotations

import uuid
from typing import Any

import grpc

from creditwatch.server.api import converters as cv
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.errors import unary
from creditwatch.server.domain.errors import FieldViolation, InvalidArgument
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.paging import encode_token, page_request, tenant_fingerprints
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.domain.tenants import Caller
from creditwatch.server.domain.watchlists import (
    MAX_ENTRIES_PER_CALL,
    NUL,
    NUL_REFUSED,
    UPDATABLE_FIELDS,
    validate_spec,
)
from creditwatch.server.store.watchlists import WatchListStore
from creditwatch.v1 import watchlists_pb2 as pb
from creditwatch.v1 import watchlists_pb2_grpc

MAX_REQUEST_ID = 128


def _request_id(value: str) -> str:
    if len(value) > MAX_REQUEST_ID:
        raise InvalidArgument.single("request_id", f"longer than {MAX_REQUEST_ID} characters")
    if NUL in value:
        raise InvalidArgument.single("request_id", NUL_REFUSED)
    return value


def _batch_size(count: int, field: str) -> None:
    if count == 0:
        raise InvalidArgument.single(field, "at least one is required")
    if count > MAX_ENTRIES_PER_CALL:
        raise InvalidArgument.single(
            field, f"{count} given; at most {MAX_ENTRIES_PER_CALL:,} per call"
        )


class WatchListServicer(watchlists_pb2_grpc.WatchListServiceServicer):
    """gRPC face of the watch-list store."""

    def __init__(self, auth: Authenticator, store: WatchListStore) -> None:
        self._auth = auth
        self._store = store

    async def caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        """The calling tenant and its key's grants."""
        return await self._auth.caller(context)

    @unary
    async def CreateWatchList(
        self, request: pb.CreateWatchListRequest, tenant: uuid.UUID
    ) -> pb.CreateWatchListResponse:
        spec = cv.watch_list_spec(request.watch_list)
        problems = validate_spec(spec, "watch_list", UPDATABLE_FIELDS)
        problems += cv.alert_rules_problems(
            request.watch_list.alert_rules, "watch_list.alert_rules"
        )
        if problems:
            raise InvalidArgument(problems)
        created = await self._store.create(tenant, spec, _request_id(request.request_id))
        return pb.CreateWatchListResponse(watch_list=cv.watch_list_message(created))

    @unary
    async def GetWatchList(
        self, request: pb.GetWatchListRequest, tenant: uuid.UUID
    ) -> pb.GetWatchListResponse:
        found = await self._store.get(tenant, cv.watch_list_id(request.name, "name"))
        return pb.GetWatchListResponse(watch_list=cv.watch_list_message(found))

    @unary
    async def ListWatchLists(
        self, request: pb.ListWatchListsRequest, tenant: uuid.UUID
    ) -> pb.ListWatchListsResponse:
        filters, legacy = tenant_fingerprints(tenant, "watchLists")
        page = page_request(
            request.page_size,
            request.page_token,
            filters,
            default_size=100,
            max_size=1000,
            legacy=legacy,
        )
        rows = await self._store.list_page(tenant, page.size + 1, page.time_and_id())
        token = ""
        if len(rows) > page.size:
            rows = rows[: page.size]
            last = rows[-1]
            token = encode_token((last.create_time.isoformat(), last.id), filters)
        return pb.ListWatchListsResponse(
            watch_lists=[cv.watch_list_message(r) for r in rows], next_page_token=token
        )

    @unary
    async def UpdateWatchList(
        self, request: pb.UpdateWatchListRequest, tenant: uuid.UUID
    ) -> pb.UpdateWatchListResponse:
        list_id = cv.watch_list_id(request.watch_list.name, "watch_list.name")
        paths = tuple(request.update_mask.paths)
        if not paths:
            raise InvalidArgument.single("update_mask", "name at least one field to change")
        unknown = [
            FieldViolation(f"update_mask.paths[{i}]", f"{p!r} cannot be updated")
            for i, p in enumerate(paths)
            if p not in UPDATABLE_FIELDS
        ]
        spec = cv.watch_list_spec(request.watch_list)
        problems = unknown + validate_spec(spec, "watch_list", paths)
        if "alert_rules" in paths:
            problems += cv.alert_rules_problems(
                request.watch_list.alert_rules, "watch_list.alert_rules"
            )
        if problems:
            raise InvalidArgument(problems)
        updated = await self._store.update(tenant, list_id, spec, paths)
        return pb.UpdateWatchListResponse(watch_list=cv.watch_list_message(updated))

    @unary
    async def DeleteWatchList(
        self, request: pb.DeleteWatchListRequest, tenant: uuid.UUID
    ) -> pb.DeleteWatchListResponse:
        count = await self._store.delete(tenant, cv.watch_list_id(request.name, "name"))
        return pb.DeleteWatchListResponse(deleted_entry_count=count)

    @unary
    async def AddEntries(
        self, request: pb.AddEntriesRequest, tenant: uuid.UUID
    ) -> pb.AddEntriesResponse:
        list_id = cv.watch_list_id(request.parent, "parent")
        _batch_size(len(request.entries), "entries")
        columns = cv.entry_columns(request.entries, "entries")
        result = await self._store.add_entries(
            tenant, list_id, columns, _request_id(request.request_id)
        )
        return pb.AddEntriesResponse(
            added_count=result.added,
            updated_count=result.updated,
            entry_count=result.entry_count,
        )

    @unary
    async def RemoveEntries(
        self, request: pb.RemoveEntriesRequest, tenant: uuid.UUID
    ) -> pb.RemoveEntriesResponse:
        list_id = cv.watch_list_id(request.parent, "parent")
        _batch_size(len(request.companies), "companies")
        problems: list[FieldViolation] = []
        companies: list[CompanyId] = []
        for i, ref in enumerate(request.companies):
            found = cv.company(ref, f"companies[{i}]", problems)
            if found is not None:
                companies.append(found)
        if problems:
            raise InvalidArgument(problems)
        removed = await self._store.remove_entries(tenant, list_id, companies)
        return pb.RemoveEntriesResponse(
            removed_count=removed, not_found_count=len(set(companies)) - removed
        )

    @unary
    async def GetEntry(self, request: pb.GetEntryRequest, tenant: uuid.UUID) -> pb.GetEntryResponse:
        list_id, company = cv.entry_name(request.name, "name")
        entry = await self._store.get_entry(tenant, list_id, company)
        return pb.GetEntryResponse(entry=cv.entry_message(entry))

    @unary
    async def ListEntries(
        self, request: pb.ListEntriesRequest, tenant: uuid.UUID
    ) -> pb.ListEntriesResponse:
        list_id = cv.watch_list_id(request.parent, "parent")
        classes: list[RiskClass] = []
        for i, number in enumerate(request.risk_classes):
            if number not in RiskClass._value2member_map_:
                raise InvalidArgument.single(f"risk_classes[{i}]", f"unknown risk class {number}")
            classes.append(RiskClass(number))
        label: tuple[str, str | None] | None = None
        if request.label:
            key, sep, wanted = request.label.partition("=")
            if not key:
                raise InvalidArgument.single("label", "must be 'key' or 'key=value'")
            if NUL in request.label:
                raise InvalidArgument.single("label", NUL_REFUSED)
            label = (key, wanted if sep else None)
        filters, legacy = tenant_fingerprints(tenant, str(list_id), sorted(classes), request.label)
        page = page_request(
            request.page_size,
            request.page_token,
            filters,
            default_size=1000,
            max_size=10_000,
            legacy=legacy,
        )
        rows = await self._store.list_entries(
            tenant, list_id, page.size + 1, page.key(str, str), classes, label
        )
        token = ""
        if len(rows) > page.size:
            rows = rows[: page.size]
            last = rows[-1].spec.company
            token = encode_token((last.country, last.register_number), filters)
        return pb.ListEntriesResponse(
            entries=[cv.entry_message(r) for r in rows], next_page_token=token
        )
