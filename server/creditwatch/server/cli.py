"""The `creditwatch` command line (operator commands; client commands come with the SDK)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import click

# Before anything imports grpc: the server starts (and stops) an embedded
# PostgreSQL with pg_ctl, a forked child, while gRPC runs; gRPC's fork
# handlers have crashed such a child before it could exec (seen in the tests,
# which set the same). Nothing needs gRPC in a forked child; a caller may
# still choose otherwise in the environment.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from creditwatch.server import logs
from creditwatch.server.config import Settings, override_policy
from creditwatch.server.domain.tenants import (
    SCOPE_TENANT_READ,
    SCOPES,
    ApiKeyInfo,
    Revocation,
    check_scopes,
    is_read_only,
    parse_key_reference,
)


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _tenant_id(text: str) -> uuid.UUID:
    """A `--tenant` value, or exit with a clear message."""
    try:
        return uuid.UUID(text)
    except ValueError:
        _fail(f"--tenant {text!r} is not a UUID")


@click.group()
@click.version_option(package_name="creditwatch")
def main() -> None:
    """creditwatch: watch companies' credit risk over gRPC."""


@main.command()
@click.option("--port", type=int, help="gRPC port (0 = any free port). Env: CREDITWATCH_PORT.")
@click.option("--host", help="Bind address. Env: CREDITWATCH_HOST.")
@click.option("--port-file", type=click.Path(path_type=Path), help="Write the bound port here.")
def serve(port: int | None, host: str | None, port_file: Path | None) -> None:
    """Start the gRPC server (embedded PostgreSQL when DATABASE_URL is unset)."""
    from creditwatch.server import app

    settings = _settings(port=port, host=host, port_file=port_file)
    logs.configure(settings.log_level, settings.log_format)
    from creditwatch.server.store.database import DataDirUnusable
    from creditwatch.server.store.migrate import MigrationLocked

    # Until the server's own handlers are in place, SIGTERM ends the process
    # through SystemExit, so that an embedded PostgreSQL started meanwhile is
    # stopped at exit rather than left running.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        asyncio.run(app.serve(settings))
    except (app.PortUnavailable, DataDirUnusable, MigrationLocked) as error:
        raise click.ClickException(str(error)) from None


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@main.command()
@click.option("--address", help="host:port. Default: 127.0.0.1 and CREDITWATCH_PORT (else 50051).")
@click.option("--timeout", default=3.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--ca-file",
    envvar="CREDITWATCH_HEALTH_CA_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Use TLS, trusting this CA (the server's TLS: needed). Env: CREDITWATCH_HEALTH_CA_FILE.",
)
@click.option(
    "--server-name",
    envvar="CREDITWATCH_HEALTH_SERVER_NAME",
    help="Name to check the server's certificate for, when it is not issued to the "
    "address's host. Env: CREDITWATCH_HEALTH_SERVER_NAME.",
)
@click.option(
    "--cert-file",
    envvar="CREDITWATCH_HEALTH_CERT_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Client certificate, for a server that requires one (mutual TLS). "
    "Env: CREDITWATCH_HEALTH_CERT_FILE.",
)
@click.option(
    "--key-file",
    envvar="CREDITWATCH_HEALTH_KEY_FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The client certificate's key. Env: CREDITWATCH_HEALTH_KEY_FILE.",
)
def health(
    address: str | None,
    timeout: float,
    ca_file: Path | None,
    server_name: str | None,
    cert_file: Path | None,
    key_file: Path | None,
) -> None:
    """Exit 0 if the server at ADDRESS reports SERVING (grpc.health.v1); for probes
    (the container image's HEALTHCHECK). A server with TLS is checked over TLS:
    give the CA that signed its certificate (and, for mutual TLS, a client
    certificate and key)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    address = address or f"127.0.0.1:{os.environ.get('CREDITWATCH_PORT') or 50051}"
    if ca_file is None and os.environ.get("CREDITWATCH_TLS_CERT_FILE"):
        _fail(
            "the server uses TLS (CREDITWATCH_TLS_CERT_FILE): give the CA that signed its "
            "certificate with --ca-file or CREDITWATCH_HEALTH_CA_FILE"
        )
    if (cert_file is None) != (key_file is None):
        _fail("give both --cert-file and --key-file, or neither")
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    try:
        if ca_file is None:
            channel = grpc.insecure_channel(address)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=ca_file.read_bytes(),
                private_key=key_file.read_bytes() if key_file else None,
                certificate_chain=cert_file.read_bytes() if cert_file else None,
            )
            channel = grpc.secure_channel(address, credentials, options=options)
        with channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError as error:
        _fail(f"{address}: {error.code().name}")
        return
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    click.echo(status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        sys.exit(1)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from creditwatch.server.store import database, migrate

    settings = _settings()
    logs.configure(settings.log_level, "text")
    url = database.resolve_url(settings.database_url, settings.data_dir)
    try:
        migrate.upgrade(url, revision, migrate.lock_patience(settings))
    except migrate.MigrationLocked as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"database at {revision}")


async def _schema(url: str, settings: Settings) -> None:
    """The schema at this release's head: migrated as a server would, or,
    with CREDITWATCH_MIGRATE_ON_START=false, checked (a usage error if not)."""
    from creditwatch.server.store import migrate

    try:
        await migrate.prepare(url, settings.migrate_on_start, migrate.lock_patience(settings))
    except (migrate.SchemaBehind, migrate.MigrationLocked) as error:
        raise click.ClickException(str(error)) from None


def _server_database(settings: Settings) -> str:
    """The database a server of this folder uses: DATABASE_URL, or the embedded
    PostgreSQL in the data folder, which a server started here made. One that
    does not exist yet is refused rather than created: run from another
    folder, an admin command would make a database of its own, and its keys
    would be unknown to the server."""
    from creditwatch.server.store import database

    pgdata = settings.data_dir.expanduser().resolve() / "pgdata"
    if not settings.database_url and not pgdata.exists():
        raise click.ClickException(
            f"no creditwatch database in {pgdata.parent}: run this in the folder the "
            "server runs in (its embedded PostgreSQL is in .creditwatch there), start "
            "the server here first, or set CREDITWATCH_DATA_DIR or DATABASE_URL"
        )
    try:
        return database.resolve_url(settings.database_url, settings.data_dir)
    except database.DataDirUnusable as error:
        raise click.ClickException(str(error)) from None


@main.group()
def admin() -> None:
    """Tenant and API-key administration (talks to the database directly)."""


async def _with_tenants(action: Any) -> Any:
    from creditwatch.server.store import database
    from creditwatch.server.store.tenants import TenantStore

    settings = _settings()
    url = await asyncio.to_thread(_server_database, settings)
    await _schema(url, settings)
    engine = database.create_engine(url, 2)
    try:
        return await action(TenantStore(database.session_factory(engine)))
    finally:
        await engine.dispose()


@admin.command("create-tenant")
@click.argument("display_name")
@click.option("--with-key/--no-key", default=True, help="Also create a first API key.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create_tenant(display_name: str, with_key: bool, as_json: bool) -> None:
    """Create a tenant (and by default its first API key, printed once)."""

    async def action(store: Any) -> dict[str, str]:
        tenant = await store.create_tenant(display_name)
        out = {"tenant_id": str(tenant.id), "display_name": tenant.display_name}
        if with_key:
            out["api_key"] = (await store.create_api_key(tenant.id, "first key")).token
        return out

    logs.configure("WARNING", "text")
    out = asyncio.run(_with_tenants(action))
    if as_json:
        click.echo(json.dumps(out))
        return
    click.echo(f"tenant  {out['tenant_id']}  {out['display_name']}")
    if "api_key" in out:
        click.echo(f"api key {out['api_key']}")
        click.echo("Store the key now: it is not shown again.", err=True)


@admin.command("create-api-key")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id (UUID).")
@click.option("--name", "display_name", default="", help="A note to recognise the key by.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(SCOPES),
    help=(
        "A grant (repeatable): tenant:read (read-only), tenant:write, "
        "companies:write, models:activate. Without tenant:read or tenant:write "
        "the key may read and write its tenant's data."
    ),
)
@click.option(
    "--read-only",
    is_flag=True,
    help="Only reading the tenant's data (same as --scope tenant:read): writes are refused.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def create_api_key(
    tenant_id: str, display_name: str, scopes: tuple[str, ...], read_only: bool, as_json: bool
) -> None:
    """Create an API key for a tenant; the key is printed once.

    A read-only key (--read-only) may call every read (watch lists, alerts and
    their durable consumers, scores, limits, policy, portfolio); every write is
    refused with PERMISSION_DENIED."""
    from creditwatch.server.domain.errors import NotFound

    tenant = _tenant_id(tenant_id)
    wanted = (*scopes, SCOPE_TENANT_READ) if read_only else scopes
    if read_only and not is_read_only(wanted):
        _fail("--read-only and --scope tenant:write contradict each other")
    try:
        grants = check_scopes(wanted)
    except ValueError as error:
        _fail(str(error))

    async def action(store: Any) -> str:
        key = await store.create_api_key(tenant, display_name, grants)
        return str(key.token)

    logs.configure("WARNING", "text")
    try:
        token = asyncio.run(_with_tenants(action))
    except NotFound:
        _fail(f"no tenant {tenant_id}")
        return
    if as_json:
        click.echo(
            json.dumps(
                {
                    "tenant_id": tenant_id,
                    "api_key": token,
                    "grants": list(grants),
                    "read_only": is_read_only(grants),
                }
            )
        )
    else:
        click.echo(f"api key {token}")
        if is_read_only(grants):
            click.echo("The key is read-only: writes are refused (PERMISSION_DENIED).", err=True)
        click.echo("Store the key now: it is not shown again.", err=True)


@admin.group("keys")
def keys() -> None:
    """List and revoke API keys (a key is named by its id: cw_<tenant id>_<key id>_...)."""


def _key_json(key: ApiKeyInfo) -> dict[str, Any]:
    return {
        "tenant_id": str(key.tenant_id),
        "key_id": key.key_id,
        "prefix": key.prefix,
        "name": key.display_name,
        "grants": list(key.scopes),
        "read_only": key.read_only,
        "create_time": key.create_time.isoformat(),
        "revoke_time": key.revoke_time.isoformat() if key.revoke_time else None,
    }


def _grants_cell(key: ApiKeyInfo) -> str:
    """A key's grants for `keys list`; a read-only key says so in words."""
    text = ",".join(key.scopes) or "-"
    return f"{text} (read-only)" if key.read_only else text


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


@keys.command("list")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id (UUID).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_list(tenant_id: str, as_json: bool) -> None:
    """A tenant's API keys, revoked ones included (never their secrets)."""
    from creditwatch.server.domain.errors import NotFound

    tenant = _tenant_id(tenant_id)

    async def action(store: Any) -> list[ApiKeyInfo]:
        return list(await store.list_api_keys(tenant))

    logs.configure("WARNING", "text")
    try:
        found: list[ApiKeyInfo] = asyncio.run(_with_tenants(action))
    except NotFound:
        _fail(f"no tenant {tenant_id}")
    if as_json:
        click.echo(json.dumps([_key_json(k) for k in found]))
        return
    if not found:
        click.echo(f"tenant {tenant} has no API keys", err=True)
        return
    rows = [
        (
            k.key_id,
            k.display_name or "-",
            _grants_cell(k),
            _when(k.create_time),
            _when(k.revoke_time),
        )
        for k in found
    ]
    header = ("KEY ID", "NAME", "GRANTS", "CREATED (UTC)", "REVOKED (UTC)")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


@keys.command("revoke")
@click.argument("key")
@click.option("--tenant", "tenant_id", help="Tenant id (UUID), if two tenants share the key id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def keys_revoke(key: str, tenant_id: str | None, as_json: bool) -> None:
    """Revoke KEY (a key id, or a key's cw_<tenant id>_<key id> prefix).

    Every replica refuses the key within about a second, and alert streams
    opened with it end within seconds (UNAUTHENTICATED). Revoking a revoked
    key keeps its revoke time and tells the replicas again."""
    from creditwatch.server.domain.errors import InvalidArgument, NotFound

    try:
        named_tenant, key_id = parse_key_reference(key)
    except ValueError as error:
        _fail(str(error))
    tenant = named_tenant
    if tenant_id is not None:
        tenant = _tenant_id(tenant_id)
        if named_tenant is not None and named_tenant != tenant:
            _fail(f"key {key_id} is named with tenant {named_tenant}, not {tenant}")

    async def action(store: Any) -> Revocation:
        return await store.revoke_api_key(key_id, tenant)  # type: ignore[no-any-return]

    logs.configure("WARNING", "text")
    try:
        outcome: Revocation = asyncio.run(_with_tenants(action))
    except NotFound:
        _fail(f"no API key {key_id}" + (f" of tenant {tenant}" if tenant else ""))
    except InvalidArgument:
        _fail(f"several tenants have a key {key_id}: add --tenant")
    revoked = outcome.key
    if as_json:
        click.echo(json.dumps({**_key_json(revoked), "already_revoked": outcome.already_revoked}))
        return
    when = _when(revoked.revoke_time)  # set: revoked now or before
    if outcome.already_revoked:
        click.echo(
            f"api key {revoked.key_id} of tenant {revoked.tenant_id} was already revoked at {when}"
        )
    else:
        click.echo(f"revoked api key {revoked.key_id} of tenant {revoked.tenant_id} at {when}")


@main.group()
def registers() -> None:
    """Official register feeds (Norway's Enhetsregisteret)."""


@registers.command("sync")
@click.option("--once", is_flag=True, help="One pass over the feeds, then exit.")
@click.option("--base-url", help="Register API base URL. Env: CREDITWATCH_BRREG_BASE_URL.")
@click.option("--every-company", is_flag=True, default=None, help="Not only watched companies.")
@click.option("--json", "as_json", is_flag=True, help="Print the totals as JSON.")
def registers_sync(
    once: bool, base_url: str | None, every_company: bool | None, as_json: bool
) -> None:
    """Apply register changes through the intake path (alerts included), now.

    Runs beside the servers (its own database connection); replicas' scheduled
    runs and this command never apply a feed at the same time (advisory lock).
    """
    settings = _settings(
        brreg_enabled=True, brreg_base_url=base_url, registers_every_company=every_company
    )
    logs.configure("WARNING" if as_json else settings.log_level, "text")

    def progress(feed: str, result: Any) -> None:
        if not as_json:
            click.echo(
                f"{feed}: {result.pages} pages, {result.updates:,} updates, "
                f"{result.events_recorded:,} events, {result.alerts_raised:,} alerts"
                + (
                    f", {result.events_skipped:,} events skipped (see the log)"
                    if result.events_skipped
                    else ""
                )
                + f" (cursor {result.cursors.get(feed)})"
            )

    try:
        results = asyncio.run(_sync_registers(settings, once, progress))
    except Exception as error:
        _fail(f"register sync failed: {error}")
        return
    totals = {
        "pages": sum(r.pages for r in results),
        "updates": sum(r.updates for r in results),
        "events": sum(r.events_recorded for r in results),
        "master_updates": sum(r.master_updates for r in results),
        "alerts": sum(r.alerts_raised for r in results),
        "events_skipped": sum(r.events_skipped for r in results),
        "updates_skipped": sum(r.updates_skipped for r in results),
        "companies_read": sum(r.companies_read for r in results),
        "feeds_failed": {feed: problem for r in results for feed, problem in r.failed.items()},
    }
    if as_json:
        click.echo(json.dumps(totals))
    else:
        click.echo(
            f"done: {totals['updates']:,} updates, {totals['events']:,} events, "
            f"{totals['alerts']:,} alerts, {totals['events_skipped']:,} events skipped, "
            f"{totals['updates_skipped']:,} updates skipped, "
            f"{totals['companies_read']:,} newly watched companies read"
        )
    if totals["feeds_failed"]:
        failed = "; ".join(f"{feed}: {problem}" for feed, problem in totals["feeds_failed"].items())
        _fail(f"register feeds stopped (the next run goes on from where they got to): {failed}")


async def _sync_registers(settings: Settings, once: bool, progress: Any) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    from creditwatch.server.intake import Intake
    from creditwatch.server.jobs.leader import Leadership
    from creditwatch.server.jobs.scheduler import sync_registers
    from creditwatch.server.scoring.registry import ModelRegistry
    from creditwatch.server.store import database, policies
    from creditwatch.server.store.activations import ActivationStore

    policy = override_policy(settings.override_policy_file)
    url = await asyncio.to_thread(_server_database, settings)
    await _schema(url, settings)
    engine = database.create_engine(url, 4)
    sessions = database.session_factory(engine)
    results: list[Any] = []
    try:
        with ThreadPoolExecutor(1) as executor:
            # Its scores would be redone by the servers' next re-score, and
            # alert twice: it scores with the servers' policy or not at all.
            current = await policies.current(sessions)
            if current is not None and not current.matches(policy):
                raise RuntimeError(
                    f"this command's override policy ({policy.version}) is not the "
                    f"servers' current one ({current.version}, since "
                    f"{current.since:%Y-%m-%d %H:%M} UTC): give it the servers' "
                    "CREDITWATCH_OVERRIDE_POLICY_FILE"
                )
            registry = ModelRegistry.load(
                executor, policy, settings.model_dir, settings.model_version
            )
            await registry.sync(ActivationStore(sessions))
            intake = Intake(sessions, registry)
            while True:
                async with Leadership(url).lead("registers") as leader:
                    if not leader:
                        raise RuntimeError("another process is applying the register feeds")
                    results += await sync_registers(settings, sessions, intake, progress)
                if once:
                    return results
                await asyncio.sleep(settings.registers_interval_seconds)
    finally:
        await engine.dispose()


@main.command()
@click.option("--address", default="localhost:50051", show_default=True, help="Server host:port.")
@click.option("--companies", type=click.IntRange(10, 100_000), default=2_000, show_default=True)
@click.option("--changes", type=click.IntRange(0), default=60, show_default=True)
@click.option("--interval", type=click.FloatRange(0), default=5.0, show_default=True)
@click.option("--seed", type=int, default=2026, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print keys and totals as JSON.")
def demo(
    address: str, companies: int, changes: int, interval: float, seed: int, as_json: bool
) -> None:
    """Load realistic Nordic demo data through the API, then stream changes.

    Creates two tenants and a data feed (keys printed), companies of NO/SE/FI/DK
    with valid register numbers and statements, two watch lists, and then
    `--changes` rounds of events every `--interval` seconds.
    """
    from creditwatch.server import demo as demo_data

    settings = _settings()
    logs.configure("WARNING", "text")
    say = (lambda text: None) if as_json else click.echo

    async def go() -> dict[str, Any]:
        url = await asyncio.to_thread(_server_database, settings)
        await _schema(url, settings)
        keys = await demo_data.create_keys(url)
        say("tenants created; API keys (shown once):")
        say(f"  bank     {keys.bank_key}")
        say(f"  insurer  {keys.insurer_key}")
        say(f"  feed     {keys.feed_key}  (companies:write)")
        say("follow the alerts in another terminal:")
        say(f"  CREDITWATCH_API_KEY={keys.bank_key} creditwatch alerts tail")
        result = await demo_data.load(address, keys, companies, changes, interval, seed, say)
        return {
            "bank_key": keys.bank_key,
            "insurer_key": keys.insurer_key,
            "feed_key": keys.feed_key,
            **result,
        }

    try:
        out = asyncio.run(go())
    except Exception as error:
        _fail(f"demo failed: {error}")
        return
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(f"done: {out['alerts_raised']} alerts raised")


def _add_client_commands() -> None:
    from creditwatch.client.cli import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_client_commands()

if __name__ == "__main__":
    main()
