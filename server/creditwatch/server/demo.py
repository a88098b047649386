"""`creditwatch demo`: a realistic Nordic data set and a stream of changes.

Creates two tenants (a bank and a credit insurer) and a data feed with API keys
directly in the database, then goes through the API like any integrator:
companies with valid register numbers of NO, SE, FI and DK, master data and a
financial statement each, watch lists with exposures, and then, every few
seconds, register and bureau events (payment remarks, collection cases,
bankruptcy petitions and openings, board changes) that raise alerts. Run it
beside `make run` and tail the alerts with the printed key.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.type import date_pb2, money_pb2

from creditwatch.server.domain.identifiers import IdentifierError, company_id
from creditwatch.server.domain.tenants import SCOPE_COMPANIES_WRITE
from creditwatch.server.store import database
from creditwatch.server.store.tenants import TenantStore
from creditwatch.v1 import (
    common_pb2,
    companies_pb2,
    companies_pb2_grpc,
    watchlists_pb2,
    watchlists_pb2_grpc,
)

_FIRST = ("Fjord", "Nord", "Vest", "Sol", "Berg", "Havn", "Skog", "Elv", "Is", "Lys", "Ask",
          "Stor", "Kyst", "Tind", "Vik", "Holm", "Lund", "Dal", "Øy", "Sjø")  # fmt: skip
_SECOND = ("bygg", "transport", "handel", "data", "mekaniske", "fisk", "energi", "eiendom",
           "logistikk", "verksted", "maskin", "trelast", "bakeri", "frakt", "consult")  # fmt: skip
_FORMS = {"NO": ("AS", "NOK"), "SE": ("AB", "SEK"), "FI": ("OY", "EUR"), "DK": ("APS", "DKK")}
_INDUSTRY = ("41.200", "49.410", "46.900", "62.010", "10.200", "35.110", "68.209", "25.620")
_SCALE = {"NOK": 1.0, "SEK": 1.0, "EUR": 0.09, "DKK": 0.65}


def _number(country: str, rng: random.Random) -> str:
    """A random register number that passes the country's check-digit rule."""
    while True:
        if country == "NO":
            raw = str(rng.choice((8, 9))) + "".join(str(rng.randint(0, 9)) for _ in range(8))
        elif country == "SE":
            digits = "55" + "".join(str(rng.randint(0, 9)) for _ in range(8))
            raw = f"{digits[:6]}-{digits[6:]}"
        elif country == "FI":
            digits = "".join(str(rng.randint(0, 9)) for _ in range(7))
            raw = f"{digits}-{rng.randint(0, 9)}"
        else:
            raw = str(rng.randint(1, 9)) + "".join(str(rng.randint(0, 9)) for _ in range(7))
        try:
            return company_id(country, raw).register_number
        except IdentifierError:
            continue


def _statement(currency: str, rng: random.Random) -> companies_pb2.FinancialStatement:
    """A plausible statement; about one in six is in trouble."""
    size = rng.uniform(2e6, 2e8) * _SCALE[currency]
    troubled = rng.random() < 0.17
    equity_ratio = rng.uniform(-0.15, 0.12) if troubled else rng.uniform(0.2, 0.6)
    margin = rng.uniform(-0.12, 0.0) if troubled else rng.uniform(0.02, 0.12)
    assets = size
    equity = assets * equity_ratio
    liabilities = assets - equity
    sales = assets * rng.uniform(0.8, 2.2)
    net = sales * margin
    cash_ratio = 0.02 if troubled else 0.12
    items = dict(
        total_assets=assets, fixed_assets=assets * 0.4, current_assets=assets * 0.6,
        inventory=assets * 0.15, receivables=assets * 0.25, cash=assets * cash_ratio,
        short_term_securities=assets * 0.01, equity=equity, share_capital=assets * 0.05,
        retained_earnings=equity - assets * 0.05, total_liabilities=liabilities,
        long_term_liabilities=liabilities * 0.4, short_term_liabilities=liabilities * 0.6,
        sales=sales, sales_previous_year=sales * rng.uniform(0.85, 1.15), total_sales=sales * 1.01,
        cost_of_products_sold=sales * 0.75, operating_expenses=sales * (1 - margin) * 0.95,
        total_costs=sales * (1 - margin), gross_profit=net * 1.3, gross_profit_last_3_years=net * 3,
        profit_on_sales=net * 1.4, operating_profit=net * 1.35, ebit=net * 1.3,
        depreciation=assets * 0.04, financial_expenses=liabilities * 0.04,
        interest=liabilities * 0.035, extraordinary_items=0.0, net_profit=net,
    )  # fmt: skip
    return companies_pb2.FinancialStatement(
        period_start=date_pb2.Date(year=2025, month=1, day=1),
        period_end=date_pb2.Date(year=2025, month=12, day=31),
        currency_code=currency,
        **{k: round(v, 2) for k, v in items.items()},
    )


@dataclass(frozen=True)
class DemoKeys:
    """The tenants and keys the demo created."""

    bank_key: str
    insurer_key: str
    feed_key: str


async def create_keys(url: str) -> DemoKeys:
    """Two tenants and a data feed, each with an API key (directly in the
    database, whose schema the caller brought to head)."""
    engine = database.create_engine(url, 2)
    try:
        store = TenantStore(database.session_factory(engine))
        bank = await store.create_tenant("Demo Bank ASA")
        insurer = await store.create_tenant("Demo Credit Insurance")
        feed = await store.create_tenant("Demo bureau feed")
        return DemoKeys(
            (await store.create_api_key(bank.id, "demo")).token,
            (await store.create_api_key(insurer.id, "demo")).token,
            (await store.create_api_key(feed.id, "demo", (SCOPE_COMPANIES_WRITE,))).token,
        )
    finally:
        await engine.dispose()


def _meta(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def _event(company: common_pb2.CompanyRef, rng: random.Random) -> companies_pb2.CompanyEvent:
    event = companies_pb2.CompanyEvent(
        event_id=f"demo-{uuid.uuid4().hex}", company=company, source="demo"
    )
    event.occurred_time.FromDatetime(datetime.now(UTC).replace(microsecond=0))
    roll = rng.random()
    if roll < 0.35:
        event.payment_remark_registered.remark_id = uuid.uuid4().hex[:12]
    elif roll < 0.55:
        event.debt_collection_opened.case_id = uuid.uuid4().hex[:12]
        event.debt_collection_opened.amount.CopyFrom(
            money_pb2.Money(currency_code="NOK", units=rng.randint(5, 500) * 1_000)
        )
    elif roll < 0.75:
        event.responsible_person_changed.role = companies_pb2.RESPONSIBLE_ROLE_CEO
    elif roll < 0.87:
        event.bankruptcy_petition_filed.petitioner_type = companies_pb2.PETITIONER_TYPE_CREDITOR
        event.bankruptcy_petition_filed.court_name = "Oslo tingrett"
    elif roll < 0.95:
        event.bankruptcy_hearing_scheduled.court_name = "Oslo tingrett"
        hearing = datetime.now(UTC).date() + timedelta(days=rng.randint(7, 40))
        event.bankruptcy_hearing_scheduled.hearing_date.CopyFrom(
            date_pb2.Date(year=hearing.year, month=hearing.month, day=hearing.day)
        )
    else:
        event.bankruptcy_opened.court_name = "Oslo tingrett"
    return event


async def load(
    address: str,
    keys: DemoKeys,
    companies: int,
    changes: int,
    interval: float,
    seed: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Companies, statements, watch lists, then `changes` rounds of events."""
    rng = random.Random(seed)
    async with grpc.aio.insecure_channel(address) as channel:
        data = companies_pb2_grpc.CompanyDataServiceStub(channel)
        lists = watchlists_pb2_grpc.WatchListServiceStub(channel)
        refs: list[common_pb2.CompanyRef] = []
        countries = ("NO", "NO", "SE", "FI", "DK")
        for i in range(companies):
            country = countries[i % len(countries)]
            form, currency = _FORMS[country]
            ref = common_pb2.CompanyRef(country=country, register_number=_number(country, rng))
            name = f"{rng.choice(_FIRST)}{rng.choice(_SECOND)} {form}"
            await data.UpsertCompany(
                companies_pb2.UpsertCompanyRequest(
                    company=companies_pb2.Company(
                        company=ref,
                        legal_name=name,
                        industry_code=rng.choice(_INDUSTRY),
                        legal_form=form,
                        status=companies_pb2.COMPANY_STATUS_ACTIVE,
                    )
                ),
                metadata=_meta(keys.feed_key),
            )
            await data.SubmitFinancialStatement(
                companies_pb2.SubmitFinancialStatementRequest(
                    company=ref,
                    financial_statement=_statement(currency, rng),
                    source="demo",
                ),
                metadata=_meta(keys.feed_key),
            )
            refs.append(ref)
            if (i + 1) % 250 == 0 or i + 1 == companies:
                say(f"  {i + 1:,} / {companies:,} companies with a statement")
        names = {}
        for key, title, share in (
            (keys.bank_key, "Corporate customers", 0.6),
            (keys.insurer_key, "Insured buyers", 0.4),
        ):
            created = await lists.CreateWatchList(
                watchlists_pb2.CreateWatchListRequest(
                    watch_list=watchlists_pb2.WatchList(display_name=title, pd_threshold=0.05)
                ),
                metadata=_meta(key),
            )
            chosen = rng.sample(refs, int(len(refs) * share))
            entries = [
                watchlists_pb2.WatchListEntry(
                    company=ref,
                    exposure=money_pb2.Money(
                        currency_code=_FORMS[ref.country][1],
                        units=rng.randint(50, 5_000) * 1_000,
                    ),
                    external_reference=f"CRM-{rng.randint(10_000, 99_999)}",
                )
                for ref in chosen
            ]
            for start in range(0, len(entries), 10_000):
                await lists.AddEntries(
                    watchlists_pb2.AddEntriesRequest(
                        parent=created.watch_list.name, entries=entries[start : start + 10_000]
                    ),
                    metadata=_meta(key),
                )
            names[title] = created.watch_list.name
            say(f"  watch list {created.watch_list.name} ({title}): {len(entries):,} entries")
        raised = 0
        for round_ in range(changes):
            events = [_event(ref, rng) for ref in rng.sample(refs, min(5, len(refs)))]
            response = await data.RecordEvents(
                companies_pb2.RecordEventsRequest(events=events), metadata=_meta(keys.feed_key)
            )
            raised += sum(e.alerts_raised_count for e in response.effects)
            say(f"  change {round_ + 1}/{changes}: {len(events)} events, {raised} alerts so far")
            await asyncio.sleep(interval)
        return {"watch_lists": names, "alerts_raised": raised}
