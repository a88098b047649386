"""`CreditwatchClient`: one channel, the API key, TLS, deadlines and retries, set up once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeAlias

import grpc

from creditwatch.client._alerts import AlertsClient
from creditwatch.client._retry import CallContext, RetryPolicy
from creditwatch.client._services import CreditLimitsClient, PortfolioClient, ScoringClient
from creditwatch.client._watchlists import WatchListsClient

PemSource: TypeAlias = bytes | str | os.PathLike[str]
"""PEM data as bytes (or as text starting with "-----BEGIN"), or the path of a PEM file."""

# A 10,000-entry page with scores and reasons can outgrow gRPC's default 4 MiB.
_MESSAGE_BYTES = 64 * 1024 * 1024


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode()
    return Path(source).read_bytes()


def channel_credentials(
    tls: bool | None,
    root_certificates: PemSource | None,
    certificate_chain: PemSource | None,
    private_key: PemSource | None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials for the arguments of `CreditwatchClient`, or None for plaintext."""
    given = any(s is not None for s in (root_certificates, certificate_chain, private_key))
    if tls is False and given:
        raise ValueError("certificates were given but tls=False")
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("mutual TLS needs both certificate_chain and private_key")
    if not (tls or given):
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_pem(root_certificates),
        private_key=_pem(private_key),
        certificate_chain=_pem(certificate_chain),
    )


class CreditwatchClient:
    """An async client of a creditwatch server, with one attribute per service.

        async with CreditwatchClient("creditwatch.bank.example:443", api_key, tls=True) as client:
            watch_list = await client.watch_lists.create("Key accounts")
            await client.watch_lists.add_entries(
                watch_list.name, [entry("NO", "923609016", exposure=("NOK", 250_000))]
            )

    Create one per process and share it: it holds one gRPC channel, which
    multiplexes concurrent calls. Use it inside `async with`, or call `close()`.

    Args:
        target: "host:port" of the server.
        api_key: the tenant's API key (`cw_...`), sent as `authorization: Bearer <key>`.
        tls: use TLS. None (the default) means TLS exactly when a certificate
            argument is given; `tls=True` alone trusts the usual public roots.
        root_certificates: CA certificates that sign the server's certificate.
        certificate_chain: the client certificate, for mutual TLS.
        private_key: the client certificate's key, for mutual TLS.
        default_timeout: seconds a call may take, retries included (None: no
            deadline). Each method's `timeout` argument overrides it.
        retry: when to retry UNAVAILABLE; see `RetryPolicy`.
        channel_options: extra gRPC channel arguments, e.g.
            `[("grpc.ssl_target_name_override", "creditwatch.internal")]`.
        interceptors: gRPC client interceptors (tracing, metrics); they see
            every attempt, retries included.

    Certificate arguments take PEM bytes, PEM text, or a file path.
    """

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        tls: bool | None = None,
        root_certificates: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        private_key: PemSource | None = None,
        default_timeout: float | None = 30.0,
        retry: RetryPolicy | None = None,
        channel_options: Sequence[tuple[str, Any]] = (),
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        if not api_key.strip():
            raise ValueError("api_key is empty")
        retry = retry or RetryPolicy()
        options: dict[str, Any] = {
            "grpc.max_receive_message_length": _MESSAGE_BYTES,
            "grpc.max_send_message_length": _MESSAGE_BYTES,
            # gRPC's own reconnect back-off grows to 2 minutes by default, which
            # would outlast every retry after a long outage.
            "grpc.max_reconnect_backoff_ms": max(1000, int(retry.max_backoff * 1000)),
        }
        options.update(channel_options)
        credentials = channel_credentials(tls, root_certificates, certificate_chain, private_key)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(
                target, options=list(options.items()), interceptors=interceptors
            )
        else:
            self._channel = grpc.aio.secure_channel(
                target, credentials, options=list(options.items()), interceptors=interceptors
            )
        context = CallContext(
            metadata=(("authorization", f"Bearer {api_key.strip()}"),),
            default_timeout=default_timeout,
            retry=retry,
        )
        self.target = target
        self.watch_lists = WatchListsClient(self._channel, context)
        """Watch lists and their entries."""
        self.alerts = AlertsClient(self._channel, context)
        """The alert stream, durable consumers and alert history."""
        self.scoring = ScoringClient(self._channel, context)
        """Company scores."""
        self.limits = CreditLimitsClient(self._channel, context)
        """Credit-limit decisions and standing limits."""
        self.portfolio = PortfolioClient(self._channel, context)
        """The portfolio view of a watch list."""

    @property
    def channel(self) -> grpc.aio.Channel:
        """The underlying channel, for stubs the SDK does not wrap yet (pass the
        `authorization` metadata yourself)."""
        return self._channel

    async def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> CreditwatchClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
