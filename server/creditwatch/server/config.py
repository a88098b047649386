"""The one settings object, read from the environment (and CLI flags) at start-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from creditwatch.server.domain.overrides import OverridePolicy


class Settings(BaseSettings):
    """Every knob of a creditwatch server. Environment names are `CREDITWATCH_<FIELD>`
    (upper case), except `DATABASE_URL`, which is also read without the prefix."""

    model_config = SettingsConfigDict(env_prefix="CREDITWATCH_", extra="ignore")

    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    port_file: Path | None = Field(
        None, description="If set, the bound port is written here once serving (for tests)."
    )
    database_url: str | None = Field(
        None,
        validation_alias=AliasChoices("DATABASE_URL", "CREDITWATCH_DATABASE_URL"),
        description="PostgreSQL URL; unset starts an embedded PostgreSQL in `data_dir`.",
    )
    data_dir: Path = Field(
        Path(".creditwatch"), description="Where the embedded PostgreSQL keeps its data."
    )
    db_pool_size: int = Field(10, ge=1, description="Connections kept open per replica.")
    migrate_on_start: bool = Field(True, description="Apply Alembic migrations at start-up.")
    migration_lock_timeout_seconds: float = Field(
        5.0,
        gt=0,
        le=2_147_483,  # PostgreSQL's lock_timeout is at most 2^31 - 1 ms
        description="How long one attempt at the migrations waits for a table lock before "
        "it rolls back (and lets the queries queued behind it go on).",
    )
    migration_wait_seconds: float = Field(
        300.0,
        ge=0,
        description="How long migrations go on trying to take their table locks, pausing "
        "between attempts, before they give up with nothing migrated.",
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate chain for TLS.")
    tls_key_file: Path | None = Field(None, description="PEM private key for TLS.")
    tls_client_ca_file: Path | None = Field(
        None, description="PEM CA bundle; when set, clients must present a certificate (mTLS)."
    )
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("json", pattern="^(json|text)$", description="json or text.")
    grace_period_seconds: float = Field(
        10.0, ge=0, description="On SIGTERM, how long in-flight calls may finish."
    )
    model_dir: Path | None = Field(
        None, description="Extra folder of model files (<stem>.onnx + <stem>.json) to load."
    )
    model_version: str | None = Field(
        None, description="Model version active at start-up; default: the newest loaded."
    )
    model_refresh_seconds: float = Field(
        5.0, gt=0, description="How often a replica checks which model version is active."
    )
    scoring_threads: int = Field(1, ge=1, le=64, description="Threads running onnxruntime.")
    override_policy_file: Path | None = Field(
        None,
        description="JSON file of the override policy (how events move a risk class); "
        "unset or empty: the built-in policy. A bad file stops the start-up.",
    )
    policy_rollout_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long a replica whose override policy is not the current one "
        "leaves re-scoring and the register feeds to the replicas on the current one; "
        "past it, its own policy becomes current (a rollback, an unfinished deploy).",
    )

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable that sets `field`, for messages to operators."""
        if field not in cls.model_fields:
            raise KeyError(field)
        return f"CREDITWATCH_{field.upper()}"

    @field_validator("override_policy_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `CREDITWATCH_OVERRIDE_POLICY_FILE=` in a compose file means "none",
        # not the current directory. (Only here: an empty TLS file must
        # still stop the start-up, not turn TLS off.)
        return None if value == "" else value

    stream_processes: int | None = Field(
        None,
        ge=0,
        le=256,
        description="Worker processes that score large StreamScores chunks, started on the "
        "first one; unset: one per core this process may use (none on one core); 0: none "
        "(chunks are scored in the server process).",
    )
    alert_poll_seconds: float = Field(
        1.0,
        gt=0,
        description="How often a replica polls the alert outbox when no NOTIFY wakes it.",
    )
    alert_stream_buffer: int = Field(
        1000,
        ge=10,
        description="Alerts buffered per stream; past it the stream reads its gap "
        "from the database instead.",
    )
    alert_max_lag_seconds: float = Field(
        60.0,
        gt=0,
        description="A stream behind the live feed for longer than this is disconnected "
        "with RESOURCE_EXHAUSTED (the client resumes from its cursor).",
    )
    alert_retention_days: float = Field(
        90.0, gt=0, description="Alerts older than this are deleted; older cursors expire."
    )
    jobs_enabled: bool = Field(
        True, description="Run scheduled jobs (re-scoring, retention) on this replica."
    )
    rescore_interval_seconds: float = Field(
        3600.0, gt=0, description="How often stale watched companies are re-scored."
    )
    rescore_stale_seconds: float = Field(
        86400.0,
        ge=0,
        description="A score older than this (or from another model version or override "
        "policy) is re-scored.",
    )
    rescore_chunk: int = Field(
        1000, ge=1, le=100_000, description="Companies re-scored per transaction."
    )
    # 3 rather than 2: one more chunk in flight keeps the Python work busy
    # while another chunk waits on PostgreSQL (bench_alerts on 2 cores:
    # 12.6k -> 13.8-14.7k companies/s; 4 gave nothing more).
    rescore_workers: int = Field(
        3, ge=1, le=32, description="Chunks a replica re-scores concurrently."
    )
    batch_share_interval_seconds: float = Field(
        2.0,
        gt=0,
        description=(
            "How often a replica looks for chunks of batch work another replica leads "
            "(a re-scoring run, a day's portfolio snapshots)."
        ),
    )
    retention_interval_seconds: float = Field(
        3600.0, gt=0, description="How often alerts past retention are deleted."
    )
    brreg_enabled: bool = Field(
        False,
        description="Follow Norway's Enhetsregisteret update feeds (units and roles).",
    )
    brreg_base_url: str = Field(
        "https://data.brreg.no", description="Base URL of the Enhetsregisteret API."
    )
    brreg_page_size: int = Field(500, ge=1, le=10_000, description="Updates per feed request.")
    registers_interval_seconds: float = Field(
        300.0, gt=0, description="How often the register feeds are polled."
    )
    registers_every_company: bool = Field(
        False,
        description="Apply register changes for every company, not only watched ones.",
    )
    registers_unit_patience_hours: float = Field(
        24.0,
        gt=0,
        description="How long register runs keep stopping at a company the register does not "
        "answer for (errors, maintenance pages) before they skip its update and go on.",
    )
    registers_read_batch: int = Field(
        500,
        ge=0,
        le=10_000,
        description="Watched companies never read from a register whose current state each "
        "register run reads (0: none; a company watched while already bankrupt then shows "
        "so only at the register's next change of it).",
    )
    metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve Prometheus metrics on this HTTP port (unset: no metrics endpoint).",
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest gRPC message accepted."
    )
    # Per-tenant caps (api.quotas): a call past one is RESOURCE_EXHAUSTED with
    # a QuotaFailure naming the setting. They count per replica.
    # 200: a consumer needs one stream per process and filter, so this is
    # far above any integration's need, yet keeps one tenant to a fifth of the
    # 1,000 streams a replica is built to fan out to.
    max_alert_streams_per_tenant: int = Field(
        200,
        ge=1,
        description="SubscribeAlerts streams one tenant may hold open on one replica.",
    )
    # 8: a stream keeps up to three chunks in the model at once, so 8 can
    # keep 24 worker processes busy, more than most replicas have cores; more
    # streams give a tenant no more throughput, only a longer queue in front
    # of everyone else's calls.
    max_score_streams_per_tenant: int = Field(
        8,
        ge=1,
        description="StreamScores streams one tenant may have open on one replica.",
    )
    # 256: four times the heaviest closed loop of bench_scoring (64 callers),
    # while a replica's 10 database connections and one event loop serve far
    # fewer at once: past this, a tenant's calls would only wait in line.
    max_unary_calls_per_tenant: int = Field(
        256,
        ge=1,
        description="Unary calls of one tenant a replica runs at once.",
    )


def override_policy(path: Path | None) -> OverridePolicy:
    """The override policy a process scores with: that of the JSON file at
    `path` (CREDITWATCH_OVERRIDE_POLICY_FILE), or the built-in one. Any problem
    with the file is a ValueError naming it and the problem."""
    if path is None:
        return OverridePolicy()
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (OSError, ValueError) as error:
        raise ValueError(f"override policy {path}: {error}") from None
    if not isinstance(data, dict):
        raise ValueError(f"override policy {path}: a JSON object is expected")
    try:
        return OverridePolicy.from_json(data)
    except ValueError as error:
        raise ValueError(f"override policy {path}: {error}") from None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of a
    repeated key without a word: in a policy file, a mistake)."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise ValueError(f"{key} is given twice")
        found[key] = value
    return found
