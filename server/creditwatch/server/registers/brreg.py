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

The first run starts from the updates of the day it first runs (`dato`,
`afterTime`: the only time a date is used); that point is stored, so polls keep
asking from it until the first update comes, and every request after that
continues from the stored id.

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
| no flag (see below) | status ACTIVE |

A unit without flags is ACTIVE, but an update that touched no flag (an
address change, say) writes that only over no status or ACTIVE, so it cannot
undo a bankruptcy another source reported before the register flagged it.
The flags set are told by their events (which set the status); an update
that cleared a flag leaves ACTIVE when none is left.

A moved unit's address is written after its address-changed event is
recorded: the event sets it and alerts once; only if the event was recorded
before (a unit moving back to an address it had, whose event id is that
address's) does the master-data update set it, with its own single alert.

The event ids, in that order (`<nr>` the organisation number; a date the
register has not given is empty): `brreg:<nr>:konkurs:<konkursdato>`,
`brreg:<nr>:tvangsavvikling:<the earliest of the grounds' dates>`,
`brreg:<nr>:avvikling:<underAvviklingDato>`, `brreg:<nr>:slettet`,
`brreg:roller:<update id>`, `brreg:<nr>:adresse:<digest of the new address>`.

Every update of a unit sends the events of its current flags again, and the
intake refuses an id it stored with other content, so an event's content
depends on its id alone: a flag without its date has no time (not the update's),
a deletion is one event however it is seen, and an address change, whose
detail is the unit's address when it is read (it may have moved again since),
is keyed on that address.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from creditwatch.server.domain.events import CompanyEvent, CompanyStatus, EventType
from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.intake import IncomingEvent
from creditwatch.server.registers.base import (
    Facts,
    Feed,
    FeedPage,
    RegisterHttp,
    RegisterRefused,
    RegisterUnavailable,
    UnitUnavailable,
)

log = logging.getLogger(__name__)

# Statuses with which the register refuses a unit itself (not this client).
_REFUSED_UNIT = frozenset({400, 422})

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


def _stamp(moment: datetime) -> str:
    """A time as the register's feeds take it: "2026-03-01T00:00:00.000Z"."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Paths of an update's changes about the risk flags, their dates, the
# compulsory dissolution's grounds and the deletion date (a deletion the
# register reverses removes `slettedato`: the unit is active again).
_FLAG_PATHS = ("/konkurs", "/underAvvikling", "/underTvangsavvikling", "/tvangs", "/slettedato")


def _says_status(update: dict[str, Any] | None) -> bool:
    """Whether an update tells the unit's status: a new unit, an update that
    changed a flag, or one that does not list its changes (then its flags as
    they are now are all there is to go by)."""
    if update is None or update.get("endringstype") == "Ny":
        return True
    changes = update.get("endringer")
    if not changes:
        return True
    return any(str(change.get("path", "")).startswith(_FLAG_PATHS) for change in changes)


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


def _deleted(company: CompanyId) -> IncomingEvent:
    """The unit's deletion: one event however it is seen (a `Sletting` or
    `Fjernet` update, 410 Gone, `slettedato`), so one alert."""
    return _event(
        company,
        f"brreg:{company.register_number}:slettet",
        EventType.DELETED_FROM_REGISTER,
        None,
        "deleted_from_register",
    )


_DISSOLUTION_GROUNDS = (
    "tvangsavvikletPgaManglendeSlettingDato",
    "tvangsopplostPgaManglendeDagligLederDato",
    "tvangsopplostPgaManglendeRevisorDato",
    "tvangsopplostPgaManglendeRegnskapDato",
    "tvangsopplostPgaMangelfulltStyreDato",
)


def unit_events(
    company: CompanyId, unit: dict[str, Any], update: dict[str, Any]
) -> list[IncomingEvent]:
    """Events a unit's current flags and an update's changes stand for."""
    number = company.register_number
    events: list[IncomingEvent] = []
    if unit.get("konkurs"):
        day = unit.get("konkursdato") or ""
        events.append(
            _event(
                company,
                f"brreg:{number}:konkurs:{day}",
                EventType.BANKRUPTCY_OPENED,
                _day(day),
                "bankruptcy_opened",
            )
        )
    if unit.get("underTvangsavviklingEllerTvangsopplosning"):
        # One dissolution however many grounds: a ground added later (its date
        # later too) leaves the earliest, and so the event, as it was.
        grounds = [str(unit[key])[:10] for key in _DISSOLUTION_GROUNDS if unit.get(key)]
        day = min(grounds, default="")
        events.append(
            _event(
                company,
                f"brreg:{number}:tvangsavvikling:{day}",
                EventType.COMPULSORY_DISSOLUTION,
                _day(day),
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
                _day(day),
                "voluntary_liquidation",
            )
        )
    if unit.get("slettedato"):
        events.append(_deleted(company))
    moved = any(
        str(change.get("path", "")).startswith("/forretningsadresse")
        for change in update.get("endringer") or []
    )
    if moved:
        address = _address(unit)
        digest = hashlib.sha256(json.dumps(address, sort_keys=True).encode()).hexdigest()
        events.append(
            _event(
                company,
                f"brreg:{number}:adresse:{digest[:16]}",
                EventType.ADDRESS_CHANGED,
                None,
                "address_changed",
                {"newAddress": address},
            )
        )
    return events


class UnitsFeed(Feed):
    """`oppdateringer/enheter`: units created, changed and deleted."""

    name = "enheter"

    def __init__(self, http: RegisterHttp, page_size: int, origin: datetime) -> None:
        self._http = http
        self._page_size = page_size
        self._origin = origin

    def origin(self) -> datetime:
        return self._origin

    async def fetch(self, after: int | datetime) -> FeedPage:
        params: dict[str, Any] = {"size": self._page_size, "includeChanges": "true"}
        if isinstance(after, datetime):
            params["dato"] = _stamp(after)
        else:
            params["oppdateringsid"] = after + 1
        _, body = await self._http.get(UNITS_PATH, params, shape=dict)
        updates = list((body.get("_embedded") or {}).get("oppdaterteEnheter") or [])
        if not updates:
            return FeedPage([], None)
        return FeedPage(updates, max(int(u["oppdateringsid"]) for u in updates))

    def companies(self, page: FeedPage) -> set[str]:
        return {u["organisasjonsnummer"] for u in page.updates}

    async def translate(self, page: FeedPage, wanted: set[str]) -> Facts:
        facts = Facts()
        units: dict[str, dict[str, Any] | None] = {}
        said_status: dict[CompanyId, bool] = {}
        moved: set[CompanyId] = set()
        for update in page.updates:
            number = update["organisasjonsnummer"]
            if number not in wanted:
                continue
            company = CompanyId("NO", number)
            if update.get("endringstype") in ("Sletting", "Fjernet"):
                facts.events.append(_deleted(company))
                continue
            if number not in units:
                units[number] = await self._unit(number, update, facts)
            unit = units[number]
            if unit is None:
                continue
            events = unit_events(company, unit, update)
            # The unit is read once per page, so its master data is the same
            # for each of its updates; what they say adds up over the page.
            facts.master[company] = master_data(unit)
            said_status[company] = said_status.get(company, False) or _says_status(update)
            if any(e.event.type == EventType.ADDRESS_CHANGED for e in events):
                moved.add(company)
            facts.events.extend(events)
        facts.keep_risk_status = {c for c, said in said_status.items() if not said}
        for company in moved:
            # Set by the event, alerted once (see the module's doc).
            address = facts.master[company].pop("registered_address", None)
            if address is not None:
                facts.master_after[company] = {"registered_address": address}
        return facts

    async def current(self, numbers: Sequence[str]) -> Facts:
        """The units' current state as facts: their flags' events and master
        data (an ACTIVE status only over none or ACTIVE: another source may
        have told a risk the register does not show yet)."""
        facts = Facts()
        for number in numbers:
            unit = await self._unit(number, {}, facts, counted=False)
            if unit is None:
                continue
            company = CompanyId("NO", number)
            facts.master[company] = master_data(unit)
            facts.keep_risk_status.add(company)
            facts.events.extend(unit_events(company, unit, {}))
        return facts

    async def _unit(
        self, number: str, update: dict[str, Any], facts: Facts, *, counted: bool = True
    ) -> dict[str, Any] | None:
        """The unit as it is now; None if it is gone (its deletion added to
        `facts`) or cannot be read for good. A unit the register refuses as
        such (400, 422: a number it takes for malformed) or does not know
        (404) is skipped with a warning, not retried on every run: a feed
        stopped on it would stop for good, and the unit's next update brings
        its state again. Any other refusal (401, 403, 408, ...) says more
        about the register or this client than about the unit, and an answer
        that is not a unit (a maintenance page, a redirect, JSON of another
        shape) is the register not answering: either stops the feed until the
        next run (UnitUnavailable), as a register that keeps failing does,
        so the update is read again then rather than lost (until `sync`
        gives up on the unit)."""
        path = UNIT_PATH.format(number)
        try:
            status, unit = await self._http.get(path, allow=(404, 410), shape=dict)
        except RegisterRefused as error:
            if error.status not in _REFUSED_UNIT:
                raise UnitUnavailable(number, str(error)) from error
            status, unit, problem = 0, None, f"HTTP {error.status}"
        except RegisterUnavailable as error:
            raise UnitUnavailable(number, str(error)) from error
        else:
            problem = "404 Not Found"
        if status == 410:
            facts.events.append(_deleted(CompanyId("NO", number)))
            return None
        if status != 200:
            facts.updates_skipped += counted
            log.warning(
                "register unit could not be read; its update is skipped",
                extra={
                    "register": NAME,
                    "company": f"NO-{number}",
                    "update": update.get("oppdateringsid"),
                    "problem": problem,
                },
            )
            return None
        assert isinstance(unit, dict)  # `shape`
        return unit


class RolesFeed(Feed):
    """`oppdateringer/roller`: board, CEO, auditor and other role changes."""

    name = "roller"

    def __init__(self, http: RegisterHttp, page_size: int, origin: datetime) -> None:
        self._http = http
        self._page_size = page_size
        self._origin = origin

    def origin(self) -> datetime:
        return self._origin

    async def fetch(self, after: int | datetime) -> FeedPage:
        params: dict[str, Any] = {"size": self._page_size}
        if isinstance(after, datetime):
            params["afterTime"] = _stamp(after)
        else:
            params["afterId"] = after
        _, body = await self._http.get(ROLES_PATH, params, shape=list)
        updates = [u for u in body if (u.get("data") or {}).get("organisasjonsnummer")]
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
    """The adapter: units, then roles. A feed's first run reads from 00:00 UTC
    of `first_day` (default: today); later runs continue where it got to."""

    name = NAME
    country = "NO"
    source = SOURCE

    def __init__(
        self, http: RegisterHttp, *, page_size: int = 500, first_day: date | None = None
    ) -> None:
        origin = datetime.combine(first_day or datetime.now(UTC).date(), time(), UTC)
        self._feeds = (UnitsFeed(http, page_size, origin), RolesFeed(http, page_size, origin))

    def feeds(self) -> Sequence[Feed]:
        return self._feeds

    async def current(self, numbers: Sequence[str]) -> Facts:
        return await self._feeds[0].current(numbers)
