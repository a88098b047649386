"""Wiring: settings → database → stores → servicers → a grpc.aio server."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from creditwatch.server import metrics
from creditwatch.server.alerts.hub import AlertHub
from creditwatch.server.api import errors
from creditwatch.server.api.alerts import AlertServicer
from creditwatch.server.api.alerts import add_to_server as add_alert_service
from creditwatch.server.api.auth import Authenticator
from creditwatch.server.api.companies import CompanyDataServicer
from creditwatch.server.api.limits import CreditLimitServicer
from creditwatch.server.api.portfolio import PortfolioServicer
from creditwatch.server.api.quotas import Quota, TenantQuotas
from creditwatch.server.api.scoring import ScoringServicer
from creditwatch.server.api.scoring import add_to_server as add_scoring_service
from creditwatch.server.api.stream_processes import ChunkProcesses, default_workers
from creditwatch.server.api.watchlists import WatchListServicer
from creditwatch.server.config import Settings, override_policy
from creditwatch.server.domain.cursors import LEGACY_DAYS, CursorKeys
from creditwatch.server.intake import Intake
from creditwatch.server.jobs.scheduler import Jobs
from creditwatch.server.scoring.registry import ModelRegistry, manifest_paths
from creditwatch.server.store import alerts as alert_store
from creditwatch.server.store import database, migrate, policies, secrets
from creditwatch.server.store.activations import ActivationStore
from creditwatch.server.store.score_cache import ScoreCache
from creditwatch.server.store.tenants import TenantStore
from creditwatch.server.store.tenants_revocations import RevocationListener
from creditwatch.server.store.watchlists import WatchListStore
from creditwatch.v1 import (
    alerts_pb2,
    companies_pb2,
    companies_pb2_grpc,
    limits_pb2,
    limits_pb2_grpc,
    portfolio_pb2,
    portfolio_pb2_grpc,
    scoring_pb2,
    watchlists_pb2,
    watchlists_pb2_grpc,
)

log = logging.getLogger("creditwatch.server")


def _service_name(module: Any, service: str) -> str:
    return str(module.DESCRIPTOR.services_by_name[service].full_name)


def _read(path: Any) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


@dataclass
class Running:
    """A started server and what must be closed with it."""

    server: grpc.aio.Server
    engine: AsyncEngine
    health: health.aio.HealthServicer
    port: int
    services: tuple[str, ...]
    executor: ThreadPoolExecutor
    background: asyncio.Task[None]
    score_cache: ScoreCache
    hub: AlertHub
    jobs: Jobs | None
    processes: ChunkProcesses | None
    key_revocations: RevocationListener

    async def stop(self, grace: float) -> None:
        """Stop accepting calls, let in-flight ones finish within `grace`, close the pool.
        Alert streams end at once with UNAVAILABLE (clients resume elsewhere)."""
        try:
            await self.health.enter_graceful_shutdown()
            if self.jobs is not None:
                await self.jobs.stop()
            await self.hub.stop()
            await self.server.stop(grace)
            self.background.cancel()
            await self.score_cache.stop()
            await self.key_revocations.stop()
            await self.engine.dispose()
            self.executor.shutdown(wait=False)
        finally:
            if self.processes is not None:
                self.processes.close()


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None and settings.tls_key_file is None:
        if settings.tls_client_ca_file is not None:
            # Asked for client certificates but no TLS: serving plaintext
            # without client authentication would be silent about it.
            raise ValueError(
                "CREDITWATCH_TLS_CLIENT_CA_FILE needs TLS: set CREDITWATCH_TLS_CERT_FILE "
                "and CREDITWATCH_TLS_KEY_FILE too"
            )
        return None
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        raise ValueError("TLS needs both CREDITWATCH_TLS_CERT_FILE and CREDITWATCH_TLS_KEY_FILE")
    client_ca = _read(settings.tls_client_ca_file) if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(settings.tls_key_file), _read(settings.tls_cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


class PortUnavailable(OSError):
    """The server's address cannot be bound."""


def tenant_quotas(settings: Settings) -> TenantQuotas:
    """The per-tenant caps `settings` ask for, by the kind of call the RPC
    wrappers count (`api.errors`); each streaming kind has one RPC today."""
    return TenantQuotas(
        unary=Quota(
            "unary calls in flight",
            Settings.env_name("max_unary_calls_per_tenant"),
            settings.max_unary_calls_per_tenant,
        ),
        server_streams=Quota(
            "open SubscribeAlerts streams",
            Settings.env_name("max_alert_streams_per_tenant"),
            settings.max_alert_streams_per_tenant,
        ),
        bidi_streams=Quota(
            "open StreamScores streams",
            Settings.env_name("max_score_streams_per_tenant"),
            settings.max_score_streams_per_tenant,
        ),
    )


# Besides the calls of the tenants' caps: health checks, reflection, calls
# refused before they were counted (refused StreamScores streams heard out
# for up to 2 s: at most errors.REFUSALS_HEARD_AT_ONCE of them).
_SPARE_STREAMS = 64


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Channel arguments of the gRPC server."""
    # HTTP/2 streams per connection: one tenant's whole allowance fits on one
    # connection, so a client past a cap hears RESOURCE_EXHAUSTED rather than
    # waiting unseen for a stream, while one connection cannot open
    # thousands of calls at once (gRPC's default is unlimited).
    streams = (
        settings.max_alert_streams_per_tenant
        + settings.max_score_streams_per_tenant
        + settings.max_unary_calls_per_tenant
        + _SPARE_STREAMS
    )
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", streams),
        # Ping a connection with calls open after a minute without traffic and
        # drop it if no answer comes within 20 s: the streams of a client that
        # vanished without closing (a crashed host, a dropped NAT entry) end,
        # and give back their quota slots, in about 80 s instead of the 2 h of
        # gRPC's default. Not limited to two pings between messages, so an
        # alert stream quiet for minutes between heartbeats is checked too.
        # A second server on a port in use fails to start rather than share
        # it: gRPC sets SO_REUSEPORT by default, and the kernel would then
        # spread connections over both (an old server left running, another
        # checkout with its own database: keys valid on one, unknown on the
        # other, at random).
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


def warn_if_cleartext(settings: Settings) -> None:
    """Log a WARNING when the server will take API keys in cleartext from
    other machines: no TLS, and an address other than loopback."""
    if settings.tls_cert_file is not None or _loopback(settings.host):
        return
    log.warning(
        "serving without TLS on a non-loopback address: API keys and credit data "
        "travel in cleartext; set CREDITWATCH_TLS_CERT_FILE and CREDITWATCH_TLS_KEY_FILE, "
        "or bind to 127.0.0.1 behind a proxy that terminates TLS",
        extra={"host": settings.host},
    )


def _loopback(host: str) -> bool:
    """Whether `host` (an IP address or a name) is this machine only; a name
    other than localhost is not resolved and counts as reachable."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


async def start(settings: Settings) -> Running:
    """Connect, migrate, and start serving; returns once the port is bound."""
    # First: a bad policy file stops the start-up before anything is started.
    policy = override_policy(settings.override_policy_file)
    url = await asyncio.to_thread(database.resolve_url, settings.database_url, settings.data_dir)
    if settings.migrate_on_start:
        await migrate.upgrade_async(url, patience=migrate.lock_patience(settings))
        log.info("database schema at head")
    engine = database.create_engine(url, settings.db_pool_size)
    sessions = database.session_factory(engine)
    # A policy never seen before becomes the current one, whose replicas
    # re-score what other policies scored (store.policies).
    current = await policies.record(sessions, policy)
    log.info(
        "override policy",
        extra={
            "file": str(settings.override_policy_file or "built-in"),
            "policy": policy.describe(),
            "tag": policy.tag,
            "current_since": current.since.isoformat() if current.matches(policy) else None,
        },
    )
    if not current.matches(policy):
        log.warning(
            "this replica's override policy is not the current one: it serves, but its "
            "scores will be redone by the replicas on the current policy, and it takes no "
            "re-scoring work (to make an earlier policy current again, give it a new version)",
            extra={
                "current": current.version,
                "current_since": current.since.isoformat(),
                "this_replica": policy.version,
            },
        )
    cursor_keys = await _cursor_keys(sessions)
    auth = Authenticator(TenantStore(sessions))
    key_revocations = RevocationListener(url, auth.revoked)
    key_revocations.start()

    errors.limit_tenants(tenant_quotas(settings))
    server = grpc.aio.server(options=server_options(settings))
    # onnxruntime runs here, off the event loop; one thread per model run keeps
    # a small machine's cores for gRPC and PostgreSQL.
    executor = ThreadPoolExecutor(max_workers=settings.scoring_threads, thread_name_prefix="onnx")
    registry = await asyncio.to_thread(
        ModelRegistry.load, executor, policy, settings.model_dir, settings.model_version
    )
    watchlists_pb2_grpc.add_WatchListServiceServicer_to_server(
        WatchListServicer(auth, WatchListStore(sessions)), server
    )
    activations = ActivationStore(sessions)
    await registry.sync(activations)
    follower = asyncio.create_task(
        registry.follow(activations, settings.model_refresh_seconds), name="model-follower"
    )
    score_cache = ScoreCache(url)
    score_cache.start()
    hub = AlertHub(
        url, poll_interval=settings.alert_poll_seconds, buffer=settings.alert_stream_buffer
    )
    hub.start()
    metrics.watch_subscribers(lambda: hub.subscribers)
    if settings.metrics_port is not None:
        metrics.serve(settings.metrics_port, settings.host)
    intake = Intake(sessions, registry, score_cache, on_alerts=hub.wake)
    jobs = Jobs(
        settings,
        url,
        sessions,
        registry,
        on_alerts=hub.wake,
        intake=intake,
    )
    if settings.jobs_enabled:
        jobs.start()
    workers = settings.stream_processes
    if workers is None:
        workers = default_workers()
    processes = (
        ChunkProcesses(manifest_paths(settings.model_dir), workers, policy) if workers else None
    )
    add_scoring_service(ScoringServicer(auth, registry, intake, activations, processes), server)
    companies_pb2_grpc.add_CompanyDataServiceServicer_to_server(
        CompanyDataServicer(auth, intake), server
    )
    watch_list_store = WatchListStore(sessions)
    add_alert_service(
        AlertServicer(
            auth,
            sessions,
            hub,
            watch_list_store,
            cursor_keys,
            settings.alert_max_lag_seconds,
        ),
        server,
    )
    limits_pb2_grpc.add_CreditLimitServiceServicer_to_server(
        CreditLimitServicer(auth, sessions, intake), server
    )
    portfolio_pb2_grpc.add_PortfolioServiceServicer_to_server(
        PortfolioServicer(auth, sessions, watch_list_store, registry), server
    )
    services = [
        _service_name(portfolio_pb2, "PortfolioService"),
        _service_name(alerts_pb2, "AlertService"),
        _service_name(limits_pb2, "CreditLimitService"),
        _service_name(watchlists_pb2, "WatchListService"),
        _service_name(scoring_pb2, "ScoringService"),
        _service_name(companies_pb2, "CompanyDataService"),
    ]

    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *services,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )

    address = f"{settings.host}:{settings.port}"
    credentials = _credentials(settings)
    warn_if_cleartext(settings)
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError:  # grpc's "Failed to bind"
        port = 0
    if port == 0:
        raise PortUnavailable(
            f"could not bind {address}: the port is in use (another creditwatch server?) "
            "or not available; choose another with CREDITWATCH_PORT or --port"
        )
    tune_garbage_collector()  # before the first call: no request's objects get frozen
    await server.start()
    for name in ("", *services):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if settings.port_file is not None:
        settings.port_file.write_text(str(port))
    log.info(
        "serving",
        extra={"port": port, "tls": credentials is not None, "services": len(services)},
    )
    return Running(
        server,
        engine,
        health_servicer,
        port,
        tuple(services),
        executor,
        follower,
        score_cache,
        hub,
        jobs if settings.jobs_enabled else None,
        processes,
        key_revocations,
    )


def tune_garbage_collector() -> None:
    """Fewer, cheaper cyclic collections for a long-running server.

    With the defaults (a collection every 700 net allocations) the collector
    took a tenth of the event loop while 1,000 alert streams were being
    written to, mostly re-walking objects that live as long as the process.
    Those (modules, the model, the wiring) are frozen out of every later
    collection, and the youngest generation is collected every 50,000
    allocations instead. Reference cycles are still collected, only later;
    the older generations keep their default pace.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(50_000, middle, oldest)


async def _cursor_keys(sessions: async_sessionmaker[AsyncSession]) -> CursorKeys:
    """The keys alert cursors are sealed with, from the deployment's secret
    (made by the first replica ever to start, store.secrets). Cursors of
    earlier releases are read for a while after it was made, if there were
    alerts before it (an upgrade, not a new deployment: see domain.cursors)."""
    secret, made = await secrets.shared_secret(sessions, secrets.ALERT_CURSORS)
    earlier = False
    if datetime.now(UTC) < made + timedelta(days=LEGACY_DAYS):
        async with sessions() as session:
            earlier = await alert_store.any_created_before(session, made)
    return CursorKeys(secret, made if earlier else None)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down", extra={"grace_seconds": settings.grace_period_seconds})
    started = time.perf_counter()
    await running.stop(settings.grace_period_seconds)
    log.info("stopped", extra={"seconds": round(time.perf_counter() - started, 2)})
