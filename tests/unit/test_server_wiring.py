"""Start-up wiring a deployment relies on: the cleartext warning, the gRPC
server's options and the per-tenant caps taken from the settings."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from creditwatch.server.app import server_options, tenant_quotas, warn_if_cleartext
from creditwatch.server.config import Settings


def _settings(**values: object) -> Settings:
    return Settings(database_url="postgresql://unused/db", **values)  # type: ignore[arg-type]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "creditwatch.server" and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "[::]", "10.0.4.7", "creditwatch.internal", ""])
def test_serving_without_tls_beyond_loopback_warns_that_keys_travel_in_cleartext(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="creditwatch.server"):
        warn_if_cleartext(_settings(host=host))
    (message,) = _warnings(caplog)
    assert "without TLS" in message and "API keys" in message and "cleartext" in message
    assert "CREDITWATCH_TLS_CERT_FILE" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"])
def test_serving_without_tls_on_loopback_does_not_warn(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="creditwatch.server"):
        warn_if_cleartext(_settings(host=host))
    assert _warnings(caplog) == []


def test_serving_with_tls_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="creditwatch.server"):
        warn_if_cleartext(
            _settings(host="0.0.0.0", tls_cert_file=Path("c.pem"), tls_key_file=Path("k.pem"))
        )
    assert _warnings(caplog) == []


def test_one_tenants_whole_allowance_fits_on_one_connection() -> None:
    settings = _settings(
        max_alert_streams_per_tenant=500,
        max_score_streams_per_tenant=20,
        max_unary_calls_per_tenant=1000,
    )
    options = dict(server_options(settings))
    assert options["grpc.max_concurrent_streams"] >= 500 + 20 + 1000
    assert options["grpc.max_receive_message_length"] == settings.max_message_bytes
    # Dead peers are found in minutes, not gRPC's default two hours.
    assert options["grpc.keepalive_time_ms"] + options["grpc.keepalive_timeout_ms"] <= 120_000


def test_caps_come_from_the_environment_and_name_their_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CREDITWATCH_MAX_ALERT_STREAMS_PER_TENANT", "7")
    monkeypatch.setenv("CREDITWATCH_MAX_SCORE_STREAMS_PER_TENANT", "2")
    monkeypatch.setenv("CREDITWATCH_MAX_UNARY_CALLS_PER_TENANT", "30")
    quotas = tenant_quotas(_settings())
    assert (quotas.server_streams.limit, quotas.bidi_streams.limit, quotas.unary.limit) == (
        7,
        2,
        30,
    )
    assert quotas.server_streams.setting == "CREDITWATCH_MAX_ALERT_STREAMS_PER_TENANT"
    assert quotas.bidi_streams.setting == "CREDITWATCH_MAX_SCORE_STREAMS_PER_TENANT"
    assert quotas.unary.setting == "CREDITWATCH_MAX_UNARY_CALLS_PER_TENANT"


def test_defaults_cap_each_tenant() -> None:
    settings = Settings.model_construct()
    defaults = (
        settings.max_alert_streams_per_tenant,
        settings.max_score_streams_per_tenant,
        settings.max_unary_calls_per_tenant,
    )
    assert defaults == (200, 8, 256)
