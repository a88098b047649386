"""SQLAlchemy 2.0 typed models: the schema as Alembic migrations create it.

Citus-ready: every tenant-owned table has `tenant_id` first in its primary key
and in its foreign keys (distribution column); company facts (`companies`,
`scores`) are keyed by company and hold no tenant data.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Double,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from creditwatch.server.domain.financials import LINE_ITEMS

# The generated `financial_statements.line_items` expression (migration 0009).
LINE_ITEMS_SQL = (
    "ARRAY[" + ", ".join(f"coalesce((items ->> '{i}')::float8, 'NaN')" for i in LINE_ITEMS) + "]"
)

# Amounts: 20 digits before the point, 9 after (google.type.Money's nanos).
AMOUNT = Numeric(29, 9)


class Base(DeclarativeBase):
    """Declarative base of all creditwatch tables."""


class Tenant(Base):
    """A customer organisation; owns watch lists, keys, limits and alerts."""

    __tablename__ = "tenants"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ApiKey(Base):
    """An API key; only a SHA-256 of its secret part is stored."""

    __tablename__ = "api_keys"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    display_name: Mapped[str] = mapped_column(Text, default="")
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    revoke_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Grants: "tenant:read" alone makes a read-only key ("tenant:write", or no
    # tenant grant at all, reads and writes the tenant's own data); beyond it,
    # e.g. "models:activate", "companies:write".
    scopes: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]"), default=list
    )


class WatchList(Base):
    """A tenant's portfolio of watched companies."""

    __tablename__ = "watch_lists"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    display_name: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")
    pd_threshold: Mapped[float] = mapped_column(Double, default=0.0)
    alert_rules: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    # Kept in step by AddEntries/RemoveEntries in the same transaction, so
    # listing watch lists never counts millions of rows.
    entry_count: Mapped[int] = mapped_column(BigInteger, default=0)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Company(Base):
    """Register master data of a company; shared by all tenants (facts, not opinions)."""

    __tablename__ = "companies"

    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(Text, default="")
    industry_code: Mapped[str] = mapped_column(Text, default="")
    legal_form: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[int] = mapped_column(SmallInteger, default=0)
    status_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    """When the status took effect (its event's time, or the UpsertCompany call's)."""
    # google.type.PostalAddress as JSON ({} when unknown).
    address: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    registration_date: Mapped[date | None] = mapped_column(Date)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class WatchListEntry(Base):
    """A company on a tenant's watch list with the tenant's exposure to it."""

    __tablename__ = "watch_list_entries"
    __table_args__ = (
        # No foreign key to `watch_lists`: a per-row FK check was 30 % of a
        # 10,000-entry upsert. The store gives the same guarantee by locking the
        # watch-list row (FOR UPDATE) in every transaction that writes entries,
        # and deletes a list's entries in the transaction that deletes the list.
        # No foreign key to `companies`: a tenant may watch a company before any
        # fact about it has arrived; facts and scores attach by company key.
        # "Which watch lists hold this company?" — asked on every intake.
        Index("ix_watch_list_entries_company", "country", "register_number"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    watch_list_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    exposure_currency: Mapped[str | None] = mapped_column(CHAR(3))
    exposure_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    credit_limit_currency: Mapped[str | None] = mapped_column(CHAR(3))
    credit_limit_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    external_reference: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Score(Base):
    """Every score a company has had since it was first scored, or since its
    score last ended; the newest per company is its current one.

    A score ends when a class-D override is lifted and there is no statement
    left to score: `facts.end_scores` deletes the company's rows, and it is
    unscored, as if never scored, until it is scored again.

    No foreign key to `companies` (the per-row check was half the cost of a
    re-score's append): every writer creates the company row in the same
    transaction first, and companies are never deleted (migration 0009).
    """

    __tablename__ = "scores"

    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    # Identity, not time, orders a company's scores: two scores in one
    # microsecond still have a defined latest.
    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    probability_of_default: Mapped[float] = mapped_column(Double)
    risk_class: Mapped[int] = mapped_column(SmallInteger)
    model_risk_class: Mapped[int] = mapped_column(SmallInteger)
    # json, not jsonb: stored and read back whole, never queried into.
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    model_version: Mapped[str] = mapped_column(Text)
    # The override policy's tag (OverridePolicy.tag): with the model version,
    # what made the score; the scheduled re-score redoes scores of others.
    # The default, the built-in policy's tag until 0015, is for replicas of
    # earlier releases during a rolling upgrade; this release names the tag.
    override_policy: Mapped[str] = mapped_column(Text, server_default=text("'0e9b52c933dff796'"))
    data_as_of: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    score_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FinancialStatement(Base):
    """A company's statement for one fiscal period; a resubmission replaces it."""

    __tablename__ = "financial_statements"
    __table_args__ = (
        ForeignKeyConstraint(
            ["country", "register_number"], ["companies.country", "companies.register_number"]
        ),
    )

    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    period_end: Mapped[date] = mapped_column(Date, primary_key=True)
    period_start: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(CHAR(3))
    # Reported line items only ({name: amount}); absent means not reported.
    items: Mapped[dict[str, float]] = mapped_column(JSONB)
    # `items` in LINE_ITEMS order (NaN = not reported), computed by PostgreSQL
    # when the row is written, for bulk reads (migration 0009 has the order).
    line_items: Mapped[list[float]] = mapped_column(
        ARRAY(Double), Computed(LINE_ITEMS_SQL, persisted=True)
    )
    source: Mapped[str] = mapped_column(Text, default="")
    submitted_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    submit_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


NO_SENDER = uuid.UUID(int=0)
"""`CompanyEvent.recorded_by` of events creditwatch records itself (register
feeds, statuses set by UpsertCompany): a sender of their own."""


class CompanyEvent(Base):
    """A registered event about a company, idempotent by the sender's event id
    (ids are the sender's own: two feeds' ids never collide)."""

    __tablename__ = "company_events"
    __table_args__ = (
        ForeignKeyConstraint(
            ["country", "register_number"], ["companies.country", "companies.register_number"]
        ),
    )

    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    recorded_by: Mapped[uuid.UUID] = mapped_column(
        UUID, primary_key=True, server_default=text(f"'{NO_SENDER}'::uuid")
    )
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[int] = mapped_column(SmallInteger)
    occurred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reference: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    source: Mapped[str] = mapped_column(Text, default="")
    record_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ModelActivation(Base):
    """Which model version became active when; the newest row is the active one."""

    __tablename__ = "model_activations"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    version: Mapped[str] = mapped_column(Text)
    activated_by: Mapped[uuid.UUID | None] = mapped_column(UUID)
    activate_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class OverridePolicyChange(Base):
    """Override policies replicas started with, one row per policy, added when
    a replica starts with a policy never recorded before; the newest row is
    the policy the replicas should run (store.policies)."""

    __tablename__ = "override_policy_changes"
    __table_args__ = (Index("ix_override_policy_changes_fingerprint", "fingerprint", unique=True),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # sha256 of the policy's canonical JSON.
    fingerprint: Mapped[str] = mapped_column(Text)
    version: Mapped[str] = mapped_column(Text)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB)
    apply_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IdempotencyKey(Base):
    """The first result of a request carrying a client `request_id`."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    method: Mapped[str] = mapped_column(Text, primary_key=True)
    request_id: Mapped[str] = mapped_column(Text, primary_key=True)
    result: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # sha256 of what the first call asked; NULL for keys stored before 0018
    # (those replay whatever a repeat asks).
    fingerprint: Mapped[str | None] = mapped_column(Text)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class Alert(Base):
    """The alert outbox: one row per (fact, watch list that wants it).

    Position = (xid, seq): `xid` is the writing transaction's id, `seq` an
    identity. Readers take only rows of settled transactions (xid below the
    snapshot xmin), so positions are read in an order no late commit can break.
    """

    __tablename__ = "alerts"
    # No foreign key to tenants (0011): every row's check locked the tenant's
    # row, which concurrent re-score workers then shared as a multixact. A
    # trigger on tenants deletes a deleted tenant's alerts instead.
    __table_args__ = (
        UniqueConstraint("tenant_id", "id"),
        Index("ix_alerts_position", "xid", "seq"),
        Index("ix_alerts_tenant_create_time", "tenant_id", text("create_time DESC")),
        Index(
            "ix_alerts_tenant_priority",
            "tenant_id",
            text("priority DESC"),
            text("severity DESC"),
            text("create_time DESC"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    # The writing transaction's id, by default (0010); a trigger NOTIFYs the
    # hubs after every statement that inserts alerts.
    xid: Mapped[int] = mapped_column(
        BigInteger, primary_key=True, server_default=text("pg_current_xact_id()::text::bigint")
    )
    seq: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    # Made by PostgreSQL (0009): uuid4 in Python was a tenth of a re-score's
    # alert writing.
    id: Mapped[uuid.UUID] = mapped_column(UUID, server_default=text("gen_random_uuid()"))
    watch_list_id: Mapped[uuid.UUID] = mapped_column(UUID)
    country: Mapped[str] = mapped_column(CHAR(2))
    register_number: Mapped[str] = mapped_column(String(16))
    type: Mapped[int] = mapped_column(SmallInteger)
    severity: Mapped[int] = mapped_column(SmallInteger)
    priority: Mapped[float] = mapped_column(Double)
    company_legal_name: Mapped[str] = mapped_column(Text)
    external_reference: Mapped[str] = mapped_column(Text)
    exposure_currency: Mapped[str | None] = mapped_column(CHAR(3))
    exposure_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    # json, not jsonb: stored and read back whole, never queried into; rows
    # stay inline and uncompressed up to 8 KB (toast_tuple_target, 0009).
    previous_score: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    score: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    suggested_action: Mapped[int] = mapped_column(SmallInteger)
    summary: Mapped[str] = mapped_column(Text)
    occurred_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AlertConsumer(Base):
    """A durable consumer's acknowledged position."""

    __tablename__ = "alert_consumers"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    name: Mapped[str] = mapped_column(Text, primary_key=True)
    xid: Mapped[int] = mapped_column(BigInteger)
    seq: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AlertRetention(Base):
    """One row: the newest alert position retention has deleted."""

    __tablename__ = "alert_retention"
    __table_args__ = (CheckConstraint("id = 1"),)

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    purged_xid: Mapped[int] = mapped_column(BigInteger)
    purged_seq: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class PaymentExperience(Base):
    """A tenant's own overdue invoice for a company; private to the tenant,
    pooled (anonymously) into the company's risk state."""

    __tablename__ = "payment_experiences"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        Index("ix_payment_experiences_company", "country", "register_number"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    invoice_id: Mapped[str] = mapped_column(Text, primary_key=True)
    country: Mapped[str] = mapped_column(CHAR(2))
    register_number: Mapped[str] = mapped_column(String(16))
    due_date: Mapped[date] = mapped_column(Date)
    days_past_due: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    settled_date: Mapped[date | None] = mapped_column(Date)
    report_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RegisterCursor(Base):
    """The last update id of an official register's change feed that was applied."""

    __tablename__ = "register_cursors"

    register: Mapped[str] = mapped_column(Text, primary_key=True)
    feed: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger)
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class RegisterUnit(Base):
    """A watched company whose current state was read from a register (not
    only its changes since): a company put on a watch list is read once,
    so one already bankrupt shows so before the register changes it again."""

    __tablename__ = "register_units"

    register: Mapped[str] = mapped_column(Text, primary_key=True)
    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    read_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class RescoreChunk(Base):
    """A re-scoring run's chunk of companies, claimed by any replica's worker
    (FOR UPDATE SKIP LOCKED) and marked done in the transaction that re-scores it."""

    __tablename__ = "rescore_chunks"
    __table_args__ = (
        Index("ix_rescore_chunks_pending", "id", postgresql_where=text("done_time IS NULL")),
        Index("ix_rescore_chunks_run", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    run_id: Mapped[uuid.UUID] = mapped_column(UUID)
    model_version: Mapped[str] = mapped_column(Text)
    # The run's OverridePolicy.tag ('': queued by a release before 0015).
    override_policy: Mapped[str] = mapped_column(Text, server_default=text("''"))
    countries: Mapped[str] = mapped_column(Text)
    numbers: Mapped[str] = mapped_column(Text)
    size: Mapped[int] = mapped_column(Integer)
    stale_before: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    done_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(Text)
    scored: Mapped[int | None] = mapped_column(Integer)
    alerts: Mapped[int | None] = mapped_column(Integer)
    skipped_locked: Mapped[int | None] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))


class SnapshotChunk(Base):
    """A day's portfolio snapshots of a group of watch lists, claimed by any
    replica's worker (FOR UPDATE SKIP LOCKED) and marked done in the
    transaction that takes them."""

    __tablename__ = "snapshot_chunks"
    __table_args__ = (
        Index("ix_snapshot_chunks_pending", "id", postgresql_where=text("done_time IS NULL")),
        Index("ix_snapshot_chunks_day", "snapshot_date"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    snapshot_date: Mapped[date] = mapped_column(Date)
    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID)
    watch_list_ids: Mapped[list[uuid.UUID]] = mapped_column(ARRAY(UUID))
    entries: Mapped[int] = mapped_column(BigInteger)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    done_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    done_by: Mapped[str | None] = mapped_column(Text)
    written: Mapped[int | None] = mapped_column(BigInteger)
    failures: Mapped[int] = mapped_column(SmallInteger, server_default=text("0"))


class CreditPolicyVersion(Base):
    """One version of a tenant's credit policy (the newest is current)."""

    __tablename__ = "credit_policies"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB)
    update_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class CreditLimit(Base):
    """A tenant's standing credit limit on one buyer."""

    __tablename__ = "credit_limits"
    __table_args__ = (
        ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
        UniqueConstraint("tenant_id", "country", "register_number"),
        Index("ix_credit_limits_company", "country", "register_number"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    country: Mapped[str] = mapped_column(CHAR(2))
    register_number: Mapped[str] = mapped_column(String(16))
    external_reference: Mapped[str] = mapped_column(Text)
    state: Mapped[int] = mapped_column(SmallInteger)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    max_payment_terms_days: Mapped[int] = mapped_column(Integer)
    valid_until: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    exposure_currency: Mapped[str | None] = mapped_column(CHAR(3))
    exposure_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    latest_decision: Mapped[dict[str, Any]] = mapped_column(JSONB)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cover: Mapped[list[list[str]] | None] = mapped_column(JSONB)
    """The periods the limit was in force, [first day, last day] (migration 0019)."""


class PortfolioSnapshot(Base):
    """One watch list entry on one day: exposure and the score it had."""

    __tablename__ = "portfolio_snapshots"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    watch_list_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    snapshot_date: Mapped[date] = mapped_column(Date, primary_key=True)
    country: Mapped[str] = mapped_column(CHAR(2), primary_key=True)
    register_number: Mapped[str] = mapped_column(String(16), primary_key=True)
    exposure_currency: Mapped[str | None] = mapped_column(CHAR(3))
    exposure_amount: Mapped[Decimal | None] = mapped_column(AMOUNT)
    probability_of_default: Mapped[float | None] = mapped_column(Double)
    risk_class: Mapped[int | None] = mapped_column(SmallInteger)


class PortfolioSnapshotDay(Base):
    """That a watch list has a snapshot for a day (even an empty one)."""

    __tablename__ = "portfolio_snapshot_days"
    __table_args__ = (ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),)

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    watch_list_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    snapshot_date: Mapped[date] = mapped_column(Date, primary_key=True)
    entry_count: Mapped[int] = mapped_column(BigInteger)


class OverduePayment(Base):
    """An insured invoice the buyer has not paid on time, with its claims clock."""

    __tablename__ = "overdue_payments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["tenant_id", "credit_limit_id"],
            ["credit_limits.tenant_id", "credit_limits.id"],
            ondelete="CASCADE",
        ),
        UniqueConstraint("tenant_id", "credit_limit_id", "invoice_id"),
        Index(
            "ix_overdue_payments_waiting",
            "claim_eligible_date",
            postgresql_where=text("state = 1"),
        ),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    credit_limit_id: Mapped[uuid.UUID] = mapped_column(UUID)
    country: Mapped[str] = mapped_column(CHAR(2))
    register_number: Mapped[str] = mapped_column(String(16))
    invoice_id: Mapped[str] = mapped_column(Text)
    invoice_date: Mapped[date] = mapped_column(Date)
    due_date: Mapped[date] = mapped_column(Date)
    currency: Mapped[str] = mapped_column(CHAR(3))
    amount: Mapped[Decimal] = mapped_column(AMOUNT)
    settled_date: Mapped[date | None] = mapped_column(Date)
    claim_basis: Mapped[int] = mapped_column(SmallInteger)
    claim_eligible_date: Mapped[date | None] = mapped_column(Date)
    state: Mapped[int] = mapped_column(SmallInteger)
    alerted: Mapped[bool] = mapped_column(Boolean)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # The credit policy version whose waiting periods run the claims clock:
    # the one current when the invoice was first reported (0022). NULL for
    # payments stored before, and by replicas of an earlier release during a
    # rolling upgrade: the tenant's current policy.
    policy_version: Mapped[int | None] = mapped_column(Integer)


class ServerSecret(Base):
    """A secret every replica of the deployment shares (store.secrets): the key
    alert cursors are sealed with, made by the first replica to need it."""

    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    create_time: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
