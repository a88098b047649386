"""Norway's Enhetsregisteret (Brønnøysundregistrene) as a live event source.

Feeds, as the register publishes them at https://data.brreg.no:

* units: `GET /enhetsregisteret/api/oppdateringer/enheter?oppdateringsid=<last+1>
  &size=<n>&includeChanges=true` → HAL JSON, `_embedded.oppdaterteEnheter[]` with
  `oppdateringsid`, `dato`, `organisasjonsnummer`, `endringstype` (`Ny`,
  `Endring`, `Sletting`, `Fjernet`, `Ukjent`) and `endringer` (JSON Patch);
  no `_embedded` when there is nothing newer;
* roles: `GET /enhetsregisteret/api/oppdateringer/roller?afterId=<last>&size=<n>`
  → a JSON array of CloudEvents (`id`, `time`, `data.organisasjonsnummer`);
* a unit: `GET /enhetsregisteret/api/enheter/<orgnr>`; 410 Gone when removed.

The first run starts from the updates of the day it runs (`dato`, the only
time a date is used); after that every request continues from the stored id.

What a change becomes (event ids are deterministic, so a re-read changes nothing):

| register | creditwatch |
|---|---|
| `konkurs: true` (`konkursdato`) | bankruptcy opened |
| `underTvangsavviklingEllerTvangsopplosning: true` | compulsory dissolution |
| `underAvvikling: true` (`underAvviklingDato`) | voluntary liquidation |
| `endringstype` `Sletting`/`Fjernet`, `slettedato`, 410 Gone | deleted from the register |
| a roles update | responsible person changed |
| a change under `/forretningsadresse` | address changed |
| name, NACE code, legal form, address, registration date | master data (alert: changed fields) |
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent
from creditwatch.server.registers.base import Facts, Feed, FeedPage, RegisterHttp

NAME = "brreg"
SOURCE = "brreg"
UNITS_PATH = "/enhetsregisteret/api/oppdateringer/enheter"
ROLES_PATH = "/enhetsregisteret/api/oppdateringer/roller"
UNIT_PATH = "/enhetsregisteret/api/enheter/{}"


def _day(value: str | None) -> datetime | None:
    """A register date ("2026-03-01") as 00:00 UTC of that day."""
    if not value:
        return None
    return datetime.combine(date.fromisoformat(value[:10]), time(), UTC)


def _moment(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _address(unit: dict[str, Any]) -> dict[str, Any]:
    """The unit's business address as google.type.PostalAddress JSON."""
    raw = unit.get("forretningsadresse") or unit.get("postadresse") or {}
    address: dict[str, Any] = {}
    if raw.get("landkode"):
        address["regionCode"] = raw["landkode"]
    if raw.get("postnummer"):
        address["postalCode"] = raw["postnummer"]
    if raw.get("poststed"):
        address["locality"] = raw["poststed"]
    if raw.get("kommune"):
        address["administrativeArea"] = raw["kommune"]
    lines = [line for line in raw.get("adresse") or [] if line]
    if lines:
        address["addressLines"] = lines
    return address


def master_data(unit: dict[str, Any]) -> dict[str, Any]:
    """Master-data fields (Company field names) of a unit."""
    values: dict[str, Any] = {}
    if unit.get("navn"):
        values["legal_name"] = unit["navn"]
    if (unit.get("naeringskode1") or {}).get("kode"):
        values["industry_code"] = unit["naeringskode1"]["kode"]
    if (unit.get("organisasjonsform") or {}).get("kode"):
        values["legal_form"] = unit["organisasjonsform"]["kode"]
    address = _address(unit)
    if address:
        values["registered_address"] = address
    registered = unit.get("registreringsdatoEnhetsregisteret")
    if registered:
        values["registration_date"] = date.fromisoformat(registered[:10])
    flagged = any(
        unit.get(flag)
        for flag in ("konkurs", "underTvangsavviklingEllerTvangsopplosning", "underAvvikling")
    )
    if not flagged and not unit.get("slettedato"):
        # Risk statuses come with their events; a unit without flags is active.
        values["status"] = int(CompanyStatus.ACTIVE)
    return values


def _event(
    company: CompanyId,
    event_id: str,
    kind: EventType,
    when: datetime | None,
    case: str,
    detail: dict[str, Any] | None = None,
) -> IncomingEvent:
    return IncomingEvent(
        company=company,
        event_id=event_id,
        event=CompanyEvent(kind, when),
        detail=detail or {},
        source=SOURCE,
        index=0,
        detail_case=case,
    )


def unit_events(
    company: CompanyId, unit: dict[str, Any], update: dict[str, Any]
) -> list[IncomingEvent]:
    """Events a unit's current flags and an update's changes stand for."""
    number = company.register_number
    seen = _moment(update.get("dato"))
    events: list[IncomingEvent] = []
    if unit.get("konkurs"):
        day = unit.get("konkursdato") or ""
        events.append(
            _event(
                company,
                f"brreg:{number}:konkurs:{day}",
                EventType.BANKRUPTCY_OPENED,
                _day(day) or seen,
                "bankruptcy_opened",
            )
        )
    if unit.get("underTvangsavviklingEllerTvangsopplosning"):
        day = (
            unit.get("tvangsavvikletPgaManglendeSlettingDato")
            or unit.get("tvangsopplostPgaManglendeDagligLederDato")
            or unit.get("tvangsopplostPgaManglendeRevisorDato")
            or unit.get("tvangsopplostPgaManglendeRegnskapDato")
            or unit.get("tvangsopplostPgaMangelfulltStyreDato")
            or ""
        )
        events.append(
            _event(
                company,
                f"brreg:{number}:tvangsavvikling:{day}",
                EventType.COMPULSORY_DISSOLUTION,
                _day(day) or seen,
                "compulsory_dissolution",
            )
        )
    if unit.get("underAvvikling"):
        day = unit.get("underAvviklingDato") or ""
        events.append(
            _event(
                company,
                f"brreg:{number}:avvikling:{day}",
                EventType.VOLUNTARY_LIQUIDATION,
                _day(day) or seen,
                "voluntary_liquidation",
            )
        )
    if unit.get("slettedato"):
        day = unit["slettedato"]
        events.append(
            _event(
                company,
                f"brreg:{number}:slettet:{day}",
                EventType.DELETED_FROM_REGISTER,
                _day(day),
                "deleted_from_register",
            )
        )
    moved = any(
        str(change.get("path", "")).startswith("/forretningsadresse")
        for change in update.get("endringer") or []
    )
    if moved:
        events.append(
            _event(
                company,
                f"brreg:enhet:{update['oppdateringsid']}:adresse",
                EventType.ADDRESS_CHANGED,
                seen,
                "address_changed",
                {"newAddress": _address(unit)},
            )
        )
    return events


class UnitsFeed(Feed):
    """`oppdateringer/enheter`: units created, changed and deleted."""

    name = "enheter"

    def __init__(self, http: RegisterHttp, page_size: int, first_day: date) -> None:
        self._http = http
        self._page_size = page_size
        self._first_day = first_day

    async def fetch(self, after: int | None) -> FeedPage:
        params: dict[str, Any] = {"size": self._page_size, "includeChanges": "true"}
        if after is None:
            params["dato"] = f"{self._first_day.isoformat()}T00:00:00.000Z"
        else:
            params["oppdateringsid"] = after + 1
        _, body = await self._http.get(UNITS_PATH, params)
        updates = list(((body or {}).get("_embedded") or {}).get("oppdaterteEnheter") or [])
        if not updates:
            return FeedPage([], None)
        return FeedPage(updates, max(int(u["oppdateringsid"]) for u in updates))

    def companies(self, page: FeedPage) -> set[str]:
        return {u["organisasjonsnummer"] for u in page.updates}

    async def translate(self, page: FeedPage, wanted: set[str]) -> Facts:
        facts = Facts()
        units: dict[str, dict[str, Any] | None] = {}
        for update in page.updates:
            number = update["organisasjonsnummer"]
            if number not in wanted:
                continue
            company = CompanyId("NO", number)
            kind = update.get("endringstype")
            if kind in ("Sletting", "Fjernet"):
                facts.events.append(
                    _event(
                        company,
                        f"brreg:enhet:{update['oppdateringsid']}:slettet",
                        EventType.DELETED_FROM_REGISTER,
                        _moment(update.get("dato")),
                        "deleted_from_register",
                    )
                )
                continue
            if number not in units:
                status, unit = await self._http.get(UNIT_PATH.format(number), allow=(404, 410))
                units[number] = unit if status == 200 else None
                if status == 410:
                    facts.events.append(
                        _event(
                            company,
                            f"brreg:enhet:{update['oppdateringsid']}:fjernet",
                            EventType.DELETED_FROM_REGISTER,
                            _moment(update.get("dato")),
                            "deleted_from_register",
                        )
                    )
            unit = units[number]
            if unit is None:
                continue
            facts.master[company] = master_data(unit)
            facts.events.extend(unit_events(company, unit, update))
        return facts


class RolesFeed(Feed):
    """`oppdateringer/roller`: board, CEO, auditor and other role changes."""

    name = "roller"

    def __init__(self, http: RegisterHttp, page_size: int, first_day: date) -> None:
        self._http = http
        self._page_size = page_size
        self._first_day = first_day

    async def fetch(self, after: int | None) -> FeedPage:
        params: dict[str, Any] = {"size": self._page_size}
        if after is None:
            params["afterTime"] = f"{self._first_day.isoformat()}T00:00:00.000Z"
        else:
            params["afterId"] = after
        _, body = await self._http.get(ROLES_PATH, params)
        updates = [u for u in body or [] if (u.get("data") or {}).get("organisasjonsnummer")]
        if not body:
            return FeedPage([], None)
        return FeedPage(updates, max(int(u["id"]) for u in body))

    def companies(self, page: FeedPage) -> set[str]:
        return {u["data"]["organisasjonsnummer"] for u in page.updates}

    async def translate(self, page: FeedPage, wanted: set[str]) -> Facts:
        facts = Facts()
        for update in page.updates:
            number = update["data"]["organisasjonsnummer"]
            if number in wanted:
                facts.events.append(
                    _event(
                        CompanyId("NO", number),
                        f"brreg:roller:{update['id']}",
                        EventType.RESPONSIBLE_PERSON_CHANGED,
                        _moment(update.get("time")),
                        "responsible_person_changed",
                    )
                )
        return facts


class Enhetsregisteret:
    """The adapter: units, then roles."""

    name = NAME
    country = "NO"

    def __init__(
        self, http: RegisterHttp, *, page_size: int = 500, first_day: date | None = None
    ) -> None:
        start = first_day or datetime.now(UTC).date()
        self._feeds = (UnitsFeed(http, page_size, start), RolesFeed(http, page_size, start))

    def feeds(self) -> Sequence[Feed]:
        return self._feeds
