"""Client commands of the `creditwatch` command line, over the SDK.

Every command takes `--address` (env CREDITWATCH_ADDRESS, default
localhost:50051) and `--api-key` (env CREDITWATCH_API_KEY), prints tables for
people and `--json` for scripts, and reports refusals and unreachable servers
as one clear line on stderr with exit status 1, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import functools
import io
import ipaddress
import json
import os
import re
import signal
import smtplib
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import click
import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from creditwatch.client._alerts import alert_filter
from creditwatch.client._client import CreditwatchClient
from creditwatch.client._errors import CreditwatchError, UnavailableError
from creditwatch.client._messages import (
    CARRIED_COLUMNS,
    CSV_COLUMNS,
    decimal_amount,
    entries_from_csv,
)
from creditwatch.client._retry import RetryPolicy
from creditwatch.client._statements import RESULT_COLUMNS, result_row, score_items_from_csv
from creditwatch.v1 import alerts_pb2, common_pb2, limits_pb2, watchlists_pb2

T = TypeVar("T")
CLASS_LETTER = {0: "-", 1: "A", 2: "B", 3: "C", 4: "D"}


class Connection:
    """What every client command needs to reach the server."""

    def __init__(
        self,
        address: str,
        api_key: str | None,
        tls: bool,
        ca_file: Path | None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> None:
        self.address = address
        self.api_key = api_key
        self.tls = tls
        self.ca_file = ca_file
        self.cert_file = cert_file
        self.key_file = key_file

    def client(self) -> CreditwatchClient:
        key = self.api_key
        if not key or not key.strip():
            raise click.UsageError("an API key is needed: --api-key or CREDITWATCH_API_KEY")
        if not key.isascii() or not key.isprintable() or key != key.strip():
            raise click.UsageError(
                "the API key has spaces, line breaks or other characters no key has: "
                "check --api-key or CREDITWATCH_API_KEY"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise click.UsageError("mutual TLS needs both --cert-file and --key-file")
        tls = bool(self.tls or self.ca_file or self.cert_file)
        if not tls and not _loopback(self.address):
            click.echo(
                f"warning: the API key goes to {self.address} in cleartext; "
                "use --tls (or CREDITWATCH_TLS=1) unless the network is trusted",
                err=True,
            )
        return CreditwatchClient(
            self.address,
            key,
            tls=True if tls else None,
            root_certificates=self.ca_file,
            certificate_chain=self.cert_file,
            private_key=self.key_file,
            default_timeout=30.0,
            retry=RetryPolicy(max_attempts=3, initial_backoff=0.2, max_backoff=1.0),
        )


def _loopback(address: str) -> bool:
    """Whether "host:port" (or a unix: socket) names this machine."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connection_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--address, --api-key, TLS and mutual-TLS files, passed on as `connection`."""
    pem = click.Path(exists=True, dir_okay=False, path_type=Path)

    @click.option(
        "--address",
        envvar="CREDITWATCH_ADDRESS",
        default="localhost:50051",
        show_default=True,
        help="Server host:port. Env: CREDITWATCH_ADDRESS.",
    )
    @click.option("--api-key", envvar="CREDITWATCH_API_KEY", help="Env: CREDITWATCH_API_KEY.")
    @click.option(
        "--tls",
        is_flag=True,
        envvar="CREDITWATCH_TLS",
        help="Use TLS (public roots unless --ca-file). Env: CREDITWATCH_TLS=1.",
    )
    @click.option(
        "--ca-file",
        type=pem,
        envvar="CREDITWATCH_CA_FILE",
        help="PEM CA bundle that signed the server's certificate (implies --tls). "
        "Env: CREDITWATCH_CA_FILE.",
    )
    @click.option(
        "--cert-file",
        type=pem,
        envvar="CREDITWATCH_CERT_FILE",
        help="PEM client certificate, for a server that requires mutual TLS (implies --tls). "
        "Env: CREDITWATCH_CERT_FILE.",
    )
    @click.option(
        "--key-file",
        type=pem,
        envvar="CREDITWATCH_KEY_FILE",
        help="PEM key of --cert-file. Env: CREDITWATCH_KEY_FILE.",
    )
    @functools.wraps(command)
    def wrapper(
        address: str,
        api_key: str | None,
        tls: bool,
        ca_file: Path | None,
        cert_file: Path | None,
        key_file: Path | None,
        **kwargs: Any,
    ) -> Any:
        connection = Connection(address, api_key, tls, ca_file, cert_file, key_file)
        return command(connection=connection, **kwargs)

    return wrapper


def run(connection: Connection, action: Callable[[CreditwatchClient], Awaitable[T]]) -> T:
    """Run `action` with a client; refusals become one line on stderr and exit 1."""

    async def go() -> T:
        async with connection.client() as client:
            return await action(client)

    try:
        return asyncio.run(go())
    except UnavailableError as error:
        click.echo(
            f"error: cannot reach the creditwatch server at {connection.address} ({error.message})",
            err=True,
        )
        _notes(error)
    except CreditwatchError as error:
        click.echo(f"error: {error}", err=True)
        _notes(error)
    except (OSError, smtplib.SMTPException) as error:
        click.echo(f"error: {type(error).__name__}: {error}", err=True)
    sys.exit(1)


def _notes(error: Exception) -> None:
    """What the SDK or a command added to an error (what was applied before it)."""
    for note in getattr(error, "__notes__", ()):
        click.echo(f"  {note}", err=True)


def emit_json(value: Message | dict[str, Any] | list[Any]) -> None:
    """One JSON document on stdout."""
    if isinstance(value, Message):
        value = json_format.MessageToDict(value)
    click.echo(json.dumps(value, ensure_ascii=False))


def table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    """A plain aligned table on stdout."""
    cells = [tuple(str(c) for c in header)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            click.echo("  ".join("-" * w for w in widths))


def watch_list_name(value: str) -> str:
    """Accept "watchLists/{id}" or a bare id."""
    return value if value.startswith("watchLists/") else f"watchLists/{value}"


def company_arg(value: str) -> tuple[str, str]:
    """ "NO-923609016", "NO:923609016" or "NO 923609016" → (country, number).

    The first separator in the text splits, whichever it is: a Finnish
    business id carries its own '-' ("FI:1234567-8" is FI and 1234567-8).
    """
    at = [i for i in (value.find(s) for s in ("-", ":", " ")) if i >= 0]
    if not at:
        raise click.BadParameter("write the company as COUNTRY-NUMBER, e.g. NO-923609016")
    split = min(at)
    return value[:split].upper(), value[split + 1 :]


if TYPE_CHECKING:  # click is generic only in its recent versions' types
    _DecimalParamType = click.ParamType[Decimal, Any]
else:
    _DecimalParamType = click.ParamType


class AmountType(_DecimalParamType):
    """An amount in major currency units (`250000`, `1999.50`), as `money` takes it:
    a finite number with at most 9 decimals that fits a `google.type.Money`."""

    name = "amount"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> Decimal:
        if isinstance(value, Decimal):
            return value
        try:
            return decimal_amount(str(value).strip(), what="")
        except ValueError as error:
            self.fail(str(error), param, ctx)


AMOUNT = AmountType()


def amount_text(money: Any) -> str:
    value = Decimal(money.units) + Decimal(money.nanos) / Decimal(10**9)
    return f"{value:,.2f} {money.currency_code}".strip()


@click.group()
def watchlist() -> None:
    """Watch lists: create, list, show, import a CSV, export."""


@watchlist.command("create")
@click.argument("display_name")
@click.option("--pd-threshold", type=float, default=0.0, help="PD above which alerts fire.")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def watchlist_create(
    connection: Connection, display_name: str, pd_threshold: float, as_json: bool
) -> None:
    """Create a watch list."""
    created = run(
        connection, lambda c: c.watch_lists.create(display_name, pd_threshold=pd_threshold)
    )
    if as_json:
        emit_json(created)
    else:
        click.echo(f"{created.name}  {created.display_name}")


@watchlist.command("list")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def watchlist_list(connection: Connection, as_json: bool) -> None:
    """The tenant's watch lists."""

    async def action(client: CreditwatchClient) -> list[watchlists_pb2.WatchList]:
        return [w async for w in client.watch_lists.list()]

    found = run(connection, action)
    if as_json:
        emit_json([json_format.MessageToDict(w) for w in found])
        return
    table(
        ("name", "display name", "entries", "pd threshold"),
        [(w.name, w.display_name, f"{w.entry_count:,}", w.pd_threshold or "-") for w in found],
    )


@watchlist.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def watchlist_show(connection: Connection, name: str, as_json: bool) -> None:
    """One watch list."""
    found = run(connection, lambda c: c.watch_lists.get(watch_list_name(name)))
    if as_json:
        emit_json(found)
        return
    click.echo(f"{found.name}\n  display name  {found.display_name}")
    click.echo(f"  entries       {found.entry_count:,}")
    click.echo(f"  pd threshold  {found.pd_threshold or '-'}")


def _csv_line(field: str, part: list[tuple[int, Any]]) -> str:
    """A violation's field as the CSV line it is about ("entries[2].exposure"
    of a chunk whose third entry is line 7: "line 7: exposure"); any other
    field as it is."""
    match = re.fullmatch(r"entries\[(\d+)\]\.?(.*)", field)
    if match is None or int(match[1]) >= len(part):
        return field
    line = f"line {part[int(match[1])][0]}"
    return f"{line}: {match[2]}" if match[2] else line


@watchlist.command("import")
@click.argument("name")
@click.argument("csv_file", type=click.File("r", encoding="utf-8-sig"))
@click.option("--chunk", type=click.IntRange(1, 10_000), default=10_000, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def watchlist_import(
    connection: Connection, name: str, csv_file: TextIO, chunk: int, as_json: bool
) -> None:
    """Add or update the entries of a CSV file (columns: country, register_number,
    exposure_amount, exposure_currency, external_reference, credit_limit_amount,
    credit_limit_currency, labels as a JSON object; `watchlist export` writes
    them), in chunks, with a progress bar. An entry on the list keeps its credit
    limit, and its labels, when the file has no credit_limit_amount (labels)
    column; an empty cell of a column the file has clears it."""
    text = csv_file.read()
    header = {column.strip() for column in next(csv.reader(io.StringIO(text)), [])}
    try:
        rows = list(entries_from_csv(io.StringIO(text, newline="")))
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    parent = watch_list_name(name)
    carried = [column for column in CARRIED_COLUMNS if column not in header]

    async def action(client: CreditwatchClient) -> dict[str, int]:
        totals = {"added": 0, "updated": 0, "entry_count": 0, "kept": 0}
        if not rows:  # nothing to send: the list's size as it is
            totals["entry_count"] = (await client.watch_lists.get(parent)).entry_count
            return totals
        if carried:
            totals["kept"] = await _carry_over(client, parent, rows, carried)
        with click.progressbar(
            length=len(rows), label="importing", file=sys.stderr, show_pos=True
        ) as bar:
            for start in range(0, len(rows), chunk):
                part = rows[start : start + chunk]
                try:
                    result = await client.watch_lists.add_entries(parent, [e for _, e in part])
                except CreditwatchError as error:
                    # entries[i] of this chunk is CSV line part[i][0]: "line 7:
                    # company.register_number"; other violations keep their
                    # field. Descriptions that name another entry of the
                    # chunk ("duplicate of entries[3]") name its line too.
                    error.field_violations = {
                        _csv_line(field, part): _csv_lines_in(description, part)
                        for field, description in error.field_violations.items()
                    }
                    _import_failure_note(error, rows, start, part)
                    raise
                totals["added"] += result.added_count
                totals["updated"] += result.updated_count
                totals["entry_count"] = result.entry_count
                bar.update(len(part))
        return totals

    totals = run(connection, action)
    if totals["kept"]:
        columns = " and ".join("credit limits" if c.startswith("credit") else c for c in carried)
        click.echo(
            f"kept the {columns} of {totals['kept']:,} entries already on the list "
            f"(the file has no {', '.join(carried)} column)",
            err=True,
        )
    if as_json:
        emit_json({k: v for k, v in totals.items() if k != "kept"})
    else:
        click.echo(
            f"{totals['added']:,} added, {totals['updated']:,} updated; "
            f"{totals['entry_count']:,} entries on {parent}"
        )


def _csv_key(country: str, register_number: str) -> tuple[str, str]:
    """A company as the same key whatever form its number is written in
    (spaces, dashes: the server stores the canonical form)."""
    return country.upper(), re.sub(r"[^0-9A-Za-z]", "", register_number).upper()


async def _carry_over(
    client: CreditwatchClient,
    parent: str,
    rows: list[tuple[int, watchlists_pb2.WatchListEntry]],
    carried: list[str],
) -> int:
    """Copy the credit limit and labels (those of `carried`) of the list's
    entries into the file's entries of the same companies: AddEntries replaces
    an entry whole. Returns how many entries had something to keep."""
    wanted = {_csv_key(e.company.country, e.company.register_number): e for _, e in rows}
    total = (await client.watch_lists.get(parent)).entry_count
    kept = 0
    with click.progressbar(
        length=total, label="reading credit limits and labels", file=sys.stderr
    ) as bar:
        async for item in client.watch_lists.list_entries(parent):
            bar.update(1)
            target = wanted.get(_csv_key(item.company.country, item.company.register_number))
            if target is None:
                continue
            keeps = False
            if "credit_limit_amount" in carried and item.HasField("credit_limit"):
                target.credit_limit.CopyFrom(item.credit_limit)
                keeps = True
            if "labels" in carried and item.labels:
                target.labels.update(item.labels)
                keeps = True
            kept += keeps
    return kept


def _csv_lines_in(text: str, part: list[tuple[int, Any]]) -> str:
    """`text` with each "entries[i]" of the chunk `part` as its CSV line."""

    def line(match: re.Match[str]) -> str:
        index = int(match[1])
        return f"line {part[index][0]}" if index < len(part) else match[0]

    return re.sub(r"entries\[(\d+)\]", line, text)


# A chunk that failed with one of these may have been applied before the
# answer was lost (a deadline, the connection, the server's own fault); any
# other status is a refusal, which wrote nothing.
_MAYBE_APPLIED = frozenset(
    {
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)


def _import_failure_note(
    error: CreditwatchError,
    rows: list[tuple[int, watchlists_pb2.WatchListEntry]],
    start: int,
    part: list[tuple[int, watchlists_pb2.WatchListEntry]],
) -> None:
    """Say which CSV lines a failed import left imported (each chunk is a call of its own)."""
    before = (
        f"CSV lines {rows[0][0]} to {rows[start - 1][0]} ({start:,} "
        f"{'entry' if start == 1 else 'entries'}) were imported before this; "
        if start
        else ""
    )
    if error.code not in _MAYBE_APPLIED:
        if start:
            error.add_note(f"{before}line {part[0][0]} on were not")
        return
    error.add_note(
        f"{before}lines {part[0][0]} to {part[-1][0]} may or may not have been imported "
        "(the answer was lost); importing the file again is safe"
    )


@watchlist.command("export")
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    default="-",
    help="default: stdout; a file is replaced only once the export is complete",
)
@connection_options
def watchlist_export(connection: Connection, name: str, output: Path) -> None:
    """Write the entries as CSV (the import format plus the latest score), with progress."""
    parent = watch_list_name(name)

    async def action(client: CreditwatchClient) -> int:
        total = (await client.watch_lists.get(parent)).entry_count
        with _csv_output(output) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            # The score's columns where exports before credit limits and
            # labels had them (scripts read them by position).
            writer.writerow(
                (*CSV_COLUMNS[:5], "risk_class", "probability_of_default", *CSV_COLUMNS[5:])
            )
            count = 0
            with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
                async for item in client.watch_lists.list_entries(parent):
                    score = item.latest_score if item.HasField("latest_score") else None
                    exposure, limit = item.exposure, item.credit_limit
                    writer.writerow(
                        (
                            item.company.country,
                            item.company.register_number,
                            _amount(exposure) if item.HasField("exposure") else "",
                            exposure.currency_code if item.HasField("exposure") else "",
                            item.external_reference,
                            CLASS_LETTER[score.risk_class] if score else "",
                            f"{score.probability_of_default:.6f}" if score else "",
                            _amount(limit) if item.HasField("credit_limit") else "",
                            limit.currency_code if item.HasField("credit_limit") else "",
                            json.dumps(dict(item.labels), ensure_ascii=False)
                            if item.labels
                            else "",
                        )
                    )
                    count += 1
                    bar.update(1)
        return count

    count = run(connection, action)
    click.echo(f"{count:,} entries exported", err=True)


def _amount(value: Any) -> Decimal:
    """A google.type.Money's amount in major units."""
    return Decimal(value.units) + Decimal(value.nanos) / Decimal(10**9)


@contextlib.contextmanager
def _csv_output(path: Path) -> Iterator[TextIO]:
    """Standard output for "-"; else a temporary file beside `path` that
    replaces it when the block ends without an error and is deleted
    otherwise, so a failed export never leaves a truncated file that looks
    complete (nor loses the one it would replace). It gets the mode the
    file had (a new one, what the umask allows). Something that is not a
    plain file (a pipe, /dev/stdout, a symbolic link) is written as it is."""
    if str(path) == "-":
        yield sys.stdout
        return
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with path.open("w", encoding="utf-8", newline="") as direct:
            yield direct
        return
    if path.exists():
        mode = path.stat().st_mode & 0o777
    else:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    # Closed by the `with` below; not deleted on close, as it is renamed.
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115
        "w",
        encoding="utf-8",
        newline="",
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".part",
        delete=False,
    )
    try:
        with handle:
            yield cast(TextIO, handle)
        os.chmod(handle.name, mode)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@click.command("wash")
@click.argument("csv_path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--output", "-o", type=click.File("w", encoding="utf-8"), default="-", help="default: stdout"
)
@connection_options
def wash(connection: Connection, csv_path: Path, output: TextIO) -> None:
    """Score a portfolio file ("portfolio washing") over one StreamScores stream,
    with a progress bar: each row a known company (country, register_number)
    or a financial statement (period_start, period_end, currency and line-item
    columns named as FinancialStatement's fields). Writes one CSV row per input
    row, in order: id, status (OK or the item's error code), risk classes, PD,
    reason codes, model version, error. The file is checked whole before any
    row is sent; a row the server refuses is an error row, not a failure. If
    the stream itself fails (exit code 1), the output holds the rows answered
    until then."""
    try:
        with csv_path.open(encoding="utf-8-sig", newline="") as handle:
            total = sum(1 for _ in score_items_from_csv(handle))
    except ValueError as error:
        raise click.UsageError(f"{csv_path}: {error}") from None

    async def action(client: CreditwatchClient) -> tuple[int, int]:
        writer = csv.writer(output, lineterminator="\n")  # text mode: "\r\n" on Windows
        writer.writerow(RESULT_COLUMNS)
        scored = refused = 0
        with (
            csv_path.open(encoding="utf-8-sig", newline="") as handle,
            click.progressbar(length=total, label="scoring", file=sys.stderr, show_pos=True) as bar,
        ):
            items = (item for _, item in score_items_from_csv(handle))
            shown = 0
            async for result in client.scoring.score_many(items):
                writer.writerow(result_row(result))
                if result.HasField("score"):
                    scored += 1
                else:
                    refused += 1
                if scored + refused - shown == 100:  # a million rows, not a million redraws
                    bar.update(100)
                    shown += 100
            bar.update(scored + refused - shown)
        return scored, refused

    scored, refused = run(connection, action)
    click.echo(f"{scored:,} scored, {refused:,} refused (see the status column)", err=True)


@click.command("score")
@click.argument("company")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def score(connection: Connection, company: str, as_json: bool) -> None:
    """A company's current score, e.g. `creditwatch score NO-923609016`."""
    country, number = company_arg(company)
    found = run(connection, lambda c: c.scoring.score_company(country, number))
    if as_json:
        emit_json(found)
        return
    click.echo(
        f"{country}-{number}  class {CLASS_LETTER[found.risk_class]}  "
        f"PD {found.probability_of_default * 100:.2f} %  model {found.model_version}"
    )
    for reason in found.reasons:
        click.echo(f"  {reason.code}: {reason.description}")


@click.group()
def limit() -> None:
    """Credit limits."""


@limit.command("decide")
@click.argument("company")
@click.option("--amount", type=AMOUNT, required=True, help="Requested amount.")
@click.option("--currency", required=True, help="ISO 4217 code, e.g. NOK.")
@click.option("--days", type=click.IntRange(1, 365), required=True, help="Payment terms.")
@click.option("--exposure", type=AMOUNT, help="Current exposure, same currency.")
@click.option("--json", "as_json", is_flag=True)
@connection_options
def limit_decide(
    connection: Connection,
    company: str,
    amount: Decimal,
    currency: str,
    days: int,
    exposure: Decimal | None,
    as_json: bool,
) -> None:
    """Decide a credit limit on a buyer under the tenant's credit policy."""
    country, number = company_arg(company)
    currency = currency.upper()
    decision = run(
        connection,
        lambda c: c.limits.decide(
            country,
            number,
            (currency, amount),
            days,
            current_exposure=(currency, exposure) if exposure is not None else None,
            # A retry after a lost answer gets the first decision, not a second one.
            request_id=str(uuid.uuid4()),
        ),
    )
    if as_json:
        emit_json(decision)
        return
    outcome = limits_pb2.CreditLimitOutcome.Name(decision.outcome).removeprefix(
        "CREDIT_LIMIT_OUTCOME_"
    )
    click.echo(
        f"{outcome}: {amount_text(decision.approved_amount)}, "
        f"{decision.max_payment_terms_days} days (policy v{decision.policy_version})"
    )
    for reason in decision.reasons:
        click.echo(f"  {reason.code}: {reason.description}")


@click.group()
def alerts() -> None:
    """Alerts."""


@alerts.command("tail")
@click.option("--watchlist", "watch_lists", multiple=True, help="Only these watch lists.")
@click.option(
    "--from",
    "start",
    help="now, oldest or a cursor. Default: where --consumer acknowledged, else now. "
    "With --consumer it overrides the stored position for this run; acknowledgements "
    "only move it forward, so --from oldest replays without moving it back.",
)
@click.option(
    "--consumer",
    help="Durable consumer: resume where it acknowledged, and acknowledge. Its position "
    "moves past alerts this run's filters leave out: give one consumer the same filters "
    "every run.",
)
@click.option("--min-severity", type=click.Choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"]))
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many alerts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON alert per line.")
@connection_options
def alerts_tail(
    connection: Connection,
    watch_lists: tuple[str, ...],
    start: str | None,
    consumer: str | None,
    min_severity: str | None,
    count: int | None,
    as_json: bool,
) -> None:
    """Follow alerts live; reconnects and resumes by itself (Ctrl-C to stop).

    With --consumer, an alert is acknowledged once it was printed: a reader
    that goes away (a closed pipe) does not acknowledge the alert it missed.
    """
    wanted = alert_filter(
        watch_lists=[watch_list_name(w) for w in watch_lists], minimum_severity=min_severity
    )
    # The server lets an explicit start override a consumer's stored position
    # for one stream, and stores positions only forward: --from is honoured
    # with --consumer as without.
    begin: dict[str, Any] = {}
    if start in ("now", "oldest"):
        begin = {"start": start}
    elif start is not None:
        begin = {"after_cursor": start}
    reader_gone = False

    async def action(client: CreditwatchClient) -> int:
        nonlocal reader_gone
        seen = 0
        async with client.alerts.subscribe(
            filter=wanted, consumer=consumer, auto_acknowledge=bool(consumer), **begin
        ) as stream:
            try:
                async for alert in stream:
                    try:
                        print_alert(alert, as_json)
                    except BrokenPipeError:
                        # Not printed, so not handled: the stream's close leaves it
                        # to the consumer's next run.
                        reader_gone = True
                        break
                    seen += 1
                    if count is not None and seen >= count:
                        if consumer:
                            await stream.acknowledge(alert.cursor)  # printed: handled
                        break
            except CreditwatchError as error:
                # Not when the cursor itself was refused (expired, or not
                # one): resuming from it would be refused the same way.
                refused = (
                    "CURSOR_EXPIRED" in error.precondition_types
                    or "after_cursor" in error.field_violations
                )
                if stream.cursor and not consumer and not refused:
                    # A consumer resumes by itself; anyone else needs the cursor.
                    click.echo(
                        f"resume after what was printed with: --from {stream.cursor}", err=True
                    )
                raise
        return seen

    with contextlib.suppress(KeyboardInterrupt):
        run(connection, action)
    if reader_gone:
        # Python flushes stdout once more at exit; into the closed pipe that
        # would print "Exception ignored ... BrokenPipeError".
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def print_alert(alert: alerts_pb2.Alert, as_json: bool) -> None:
    """One alert as a line on stdout (JSON or for people), flushed."""
    if as_json:
        emit_json(alert)
    else:
        severity = common_pb2.Severity.Name(alert.severity).removeprefix("SEVERITY_")
        kind = common_pb2.AlertType.Name(alert.type).removeprefix("ALERT_TYPE_")
        when = alert.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        click.echo(
            f"{when}  {severity:<8} {kind:<28} "
            f"{alert.company.country}-{alert.company.register_number}  "
            f"{alert.company_legal_name or '-'}  {alert.summary}"
        )
    sys.stdout.flush()


@alerts.command("mail")
@click.option("--watchlist", "watch_lists", multiple=True, required=True, help="Repeatable.")
@click.option("--to", "recipients", multiple=True, required=True, help="Recipient; repeatable.")
@click.option(
    "--bridge",
    default="",
    help="This bridge's name (1-16 of a-z, 0-9, '-'): a second bridge on a watch list, "
    "mailing others or in another mode, needs one, or both would resume from one position.",
)
@click.option(
    "--digest", type=click.Choice(["instant", "daily"]), default="instant", show_default=True
)
@click.option(
    "--digest-seconds", type=click.FloatRange(1), help="Digest period (overrides --digest)."
)
@click.option(
    "--count", type=click.IntRange(min=1), help="Stop after this many alerts per watch list."
)
@click.option(
    "--smtp-host", envvar="CREDITWATCH_SMTP_HOST", required=True, help="Env: CREDITWATCH_SMTP_HOST."
)
@click.option(
    "--smtp-port", envvar="CREDITWATCH_SMTP_PORT", type=int, default=587, show_default=True
)
@click.option(
    "--smtp-starttls/--no-smtp-starttls",
    envvar="CREDITWATCH_SMTP_STARTTLS",
    default=True,
    show_default=True,
)
@click.option("--smtp-username", envvar="CREDITWATCH_SMTP_USERNAME")
@click.option("--smtp-password", envvar="CREDITWATCH_SMTP_PASSWORD")
@click.option(
    "--smtp-from",
    envvar="CREDITWATCH_SMTP_FROM",
    default="creditwatch@localhost",
    show_default=True,
)
@connection_options
def alerts_mail(
    connection: Connection,
    watch_lists: tuple[str, ...],
    recipients: tuple[str, ...],
    bridge: str,
    digest: str,
    digest_seconds: float | None,
    count: int | None,
    smtp_host: str,
    smtp_port: int,
    smtp_starttls: bool,
    smtp_username: str | None,
    smtp_password: str | None,
    smtp_from: str,
) -> None:
    """E-mail alerts: one durable consumer per watch list, instant or a digest,
    resuming where it acknowledged (only mailed alerts are acknowledged)."""
    from creditwatch.client.mail import BRIDGE_NAME, SmtpSettings, mail_watch_list

    if bridge and not BRIDGE_NAME.fullmatch(bridge):
        raise click.BadParameter(
            "1-16 of a-z, 0-9 and '-', not starting with '-'", param_hint="--bridge"
        )
    names = [watch_list_name(w) for w in watch_lists]
    if len(set(names)) < len(names):
        raise click.BadParameter("a watch list given twice", param_hint="--watchlist")
    smtp = SmtpSettings(
        smtp_host, smtp_port, smtp_starttls, smtp_username, smtp_password, smtp_from
    )
    period = digest_seconds or (86_400.0 if digest == "daily" else None)

    async def action(client: CreditwatchClient) -> list[int] | None:
        bridges = [
            asyncio.create_task(
                mail_watch_list(
                    client,
                    name,
                    smtp,
                    list(recipients),
                    digest_seconds=period,
                    count=count,
                    bridge=bridge,
                )
            )
            for name in names
        ]
        # SIGTERM (systemd, docker stop) stops the bridges as Ctrl-C does: a
        # mail being sent is finished and acknowledged first. By default the
        # signal ended the process mid-send, and the mail went out again.
        terminated = asyncio.Event()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows; not main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminated.set)
        all_of_them: asyncio.Future[list[int]] = asyncio.gather(*bridges)
        stopping: asyncio.Future[Any] = asyncio.ensure_future(terminated.wait())
        try:
            await asyncio.wait([all_of_them, stopping], return_when=asyncio.FIRST_COMPLETED)
            if all_of_them.done():
                return list(all_of_them.result())
            return None  # terminated: the bridges stop below
        finally:
            stopping.cancel()
            # One bridge failed (or the command stops): the others stop too,
            # and are waited for before the client closes, so a bridge in the
            # middle of a mail finishes it and acknowledges it (see
            # mail._delivered) rather than lose the acknowledgement to a
            # closed channel and mail it again next run.
            for task in bridges:
                task.cancel()
            await asyncio.gather(*bridges, return_exceptions=True)
            if all_of_them.done() and not all_of_them.cancelled():
                all_of_them.exception()  # seen (raised above, or moot after a stop)

    with contextlib.suppress(KeyboardInterrupt):
        sent = run(connection, action)
        if sent is None:
            click.echo("stopped (SIGTERM); every mail sent was acknowledged", err=True)
        else:
            click.echo(f"{sum(sent)} e-mails sent", err=True)


@click.group()
def portfolio() -> None:
    """The portfolio view of a watch list."""


@portfolio.command("summary")
@click.argument("name")
@click.option("--currency", required=True, help="Reporting currency, e.g. NOK.")
@click.option("--lgd", type=click.FloatRange(0, 1), help="Loss given default (default 0.45).")
@click.option("--top", type=click.IntRange(1, 100), default=10, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@connection_options
def portfolio_summary(
    connection: Connection, name: str, currency: str, lgd: float | None, top: int, as_json: bool
) -> None:
    """Exposure and expected loss by risk class, with a distribution chart."""
    summary = run(
        connection,
        lambda c: c.portfolio.summary(
            watch_list_name(name),
            currency.upper(),
            loss_given_default=lgd,
            top_contributor_count=top,
        ),
    )
    if as_json:
        emit_json(summary)
        return
    click.echo(
        f"{summary.watch_list}: {summary.entry_count:,} entries "
        f"({summary.scored_entry_count:,} scored, {summary.excluded_entry_count:,} in other "
        f"currencies), exposure {amount_text(summary.total_exposure)}, expected loss "
        f"{amount_text(summary.expected_loss)}"
    )
    if summary.HasField("exposure_weighted_pd"):
        click.echo(f"exposure-weighted PD {summary.exposure_weighted_pd * 100:.2f} %")
    click.echo()
    table(
        ("class", "entries", "exposure", "share", "", "expected loss"),
        [
            (
                CLASS_LETTER[row.risk_class] if row.risk_class else "unscored",
                f"{row.entry_count:,}",
                amount_text(row.exposure),
                f"{row.exposure_share * 100:5.1f} %",
                "█" * round(row.exposure_share * 40),
                amount_text(row.expected_loss),
            )
            for row in summary.classes
        ],
    )
    if summary.top_contributors:
        click.echo("\ntop contributors to expected loss")
        table(
            ("company", "name", "class", "exposure", "expected loss", "share"),
            [
                (
                    f"{e.company.country}-{e.company.register_number}",
                    e.company_legal_name or "-",
                    CLASS_LETTER[e.risk_class],
                    amount_text(e.exposure),
                    amount_text(e.expected_loss),
                    f"{e.expected_loss_share * 100:.1f} %",
                )
                for e in summary.top_contributors
            ],
        )


COMMANDS = (watchlist, score, wash, limit, alerts, portfolio)
"""The client commands the `creditwatch` command line adds to its own."""
