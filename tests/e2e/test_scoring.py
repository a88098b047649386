"""ScoringService end to end: the real ONNX model behind real gRPC and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from google.type import date_pb2
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.identifiers import CompanyId
from creditwatch.server.domain.overrides import OverridePolicy
from creditwatch.server.domain.scores import RiskClass, StoredScore
from creditwatch.server.store.scores import ScoreStore
from creditwatch.v1 import common_pb2, companies_pb2, scoring_pb2, scoring_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e.rpc_errors import field_violations
from tests.identifiers import norwegian_numbers
from tests.unit.test_scoring_converters import statement_variants

pytestmark = pytest.mark.asyncio


def _stub(channel: grpc.aio.Channel) -> scoring_pb2_grpc.ScoringServiceStub:
    return scoring_pb2_grpc.ScoringServiceStub(channel)


def healthy(**overrides: float) -> companies_pb2.FinancialStatement:
    """A profitable, well-capitalised manufacturer (NOK)."""
    items: dict[str, float] = dict(
        total_assets=50_000_000, fixed_assets=20_000_000, current_assets=30_000_000,
        inventory=8_000_000, receivables=12_000_000, cash=9_000_000,
        short_term_securities=1_000_000,
        equity=30_000_000, share_capital=5_000_000, retained_earnings=20_000_000,
        total_liabilities=20_000_000, long_term_liabilities=8_000_000,
        short_term_liabilities=12_000_000, sales=80_000_000, sales_previous_year=72_000_000,
        total_sales=81_000_000, cost_of_products_sold=60_000_000, operating_expenses=72_000_000,
        total_costs=74_000_000, gross_profit=7_000_000, gross_profit_last_3_years=18_000_000,
        profit_on_sales=8_000_000, operating_profit=7_500_000, ebit=7_000_000,
        depreciation=2_000_000, financial_expenses=500_000, interest=400_000,
        extraordinary_items=0, net_profit=5_500_000,
    )  # fmt: skip
    items.update(overrides)
    return companies_pb2.FinancialStatement(
        period_start=date_pb2.Date(year=2025, month=1, day=1),
        period_end=date_pb2.Date(year=2025, month=12, day=31),
        currency_code="NOK",
        **items,
    )


def distressed() -> companies_pb2.FinancialStatement:
    """Losses, negative equity, liabilities above assets, shrinking sales."""
    return healthy(
        equity=-6_000_000, retained_earnings=-14_000_000, total_liabilities=56_000_000,
        short_term_liabilities=44_000_000, long_term_liabilities=12_000_000, cash=200_000,
        sales=40_000_000, sales_previous_year=70_000_000, total_sales=40_500_000,
        gross_profit=-9_000_000, gross_profit_last_3_years=-15_000_000, profit_on_sales=-7_000_000,
        operating_profit=-8_000_000, ebit=-9_000_000, net_profit=-9_500_000,
        financial_expenses=3_000_000, interest=2_800_000,
    )  # fmt: skip


async def _score(
    channel: grpc.aio.Channel,
    tenant: TenantKey,
    statement: companies_pb2.FinancialStatement,
    **kw: object,
) -> common_pb2.Score:
    response = await _stub(channel).ScoreFinancials(
        scoring_pb2.ScoreFinancialsRequest(financial_statement=statement, **kw),  # type: ignore[arg-type]
        metadata=tenant.metadata,
    )
    return response.score


async def test_model_registry_describes_the_shipped_model(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    listed = await _stub(channel).ListModels(
        scoring_pb2.ListModelsRequest(), metadata=tenant.metadata
    )
    active = [m for m in listed.models if m.active]
    assert len(active) == 1
    model = active[0]
    # Both shipped models are loaded; the newest, v2, scores and v1 stays
    # there to be activated again.
    shipped = {m.version: m for m in listed.models if m.version.startswith("pd-lgbm-")}
    assert set(shipped) == {"pd-lgbm-2026.11.1", "pd-lgbm-2026.12.1"}
    assert model.version == "pd-lgbm-2026.12.1"
    assert "1year.arff" in model.description and "12 months" in model.description
    assert model.training_metrics.roc_auc_mean >= 0.965
    assert "1year.arff" not in shipped["pd-lgbm-2026.11.1"].description
    assert len(model.features) == 64
    assert model.features[0].formula == "net profit / total assets"
    assert [b.risk_class for b in model.pd_bands] == [1, 2, 3, 4]
    assert model.pd_bands[0].min_probability_of_default == 0.0
    assert model.pd_bands[-1].max_probability_of_default == 1.0
    assert model.training_metrics.roc_auc_mean > 0.95
    assert len(model.training_metrics.roc_auc_per_fold) == 15
    got = await _stub(channel).GetModel(
        scoring_pb2.GetModelRequest(name=model.name), metadata=tenant.metadata
    )
    assert got.model.version == model.version
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(channel).GetModel(
            scoring_pb2.GetModelRequest(name="models/nope"), metadata=tenant.metadata
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_distressed_company_scores_riskier_than_healthy_one(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    good = await _score(channel, tenant, healthy())
    bad = await _score(channel, tenant, distressed())
    assert 0.0 <= good.probability_of_default < bad.probability_of_default <= 1.0
    assert good.risk_class < bad.risk_class
    assert bad.risk_class == common_pb2.RISK_CLASS_D
    assert good.model_version and good.model_version == bad.model_version
    assert good.data_as_of.ToDatetime(UTC).date().isoformat() == "2025-12-31"
    # Reasons come from the model's own per-feature contributions: signed
    # shares of the PD's distance from the model's base PD, strongest first.
    assert bad.reasons, "a D company gets reasons"
    contributions = [r.pd_contribution for r in bad.reasons]
    assert all(r.kind == common_pb2.REASON_KIND_MODEL_FEATURE for r in bad.reasons)
    assert all(r.code.startswith("FEATURE_") for r in bad.reasons)
    assert len(bad.reasons) <= 5
    assert contributions == sorted(contributions, key=abs, reverse=True)
    assert max(contributions) > 0  # something pushes a distressed company's PD up
    assert all(abs(c) < bad.probability_of_default for c in contributions)
    for reason in bad.reasons:
        verb = "raises" if reason.pd_contribution > 0 else "lowers"
        assert f"{verb} the PD by {abs(reason.pd_contribution) * 100:.2f} percentage" in (
            reason.description
        )


async def test_class_follows_the_manifest_bands(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    model = (
        await _stub(channel).ListModels(scoring_pb2.ListModelsRequest(), metadata=tenant.metadata)
    ).models[0]
    for statement in (healthy(), distressed(), healthy(net_profit=100_000, equity=3_000_000)):
        score = await _score(channel, tenant, statement)
        band = next(b for b in model.pd_bands if b.risk_class == score.model_risk_class)
        assert band.min_probability_of_default <= score.probability_of_default
        assert (
            score.probability_of_default < band.max_probability_of_default or band.risk_class == 4
        )


def _event(**detail: object) -> companies_pb2.CompanyEvent:
    ts = Timestamp()
    ts.FromDatetime(datetime(2026, 3, 1, tzinfo=UTC))
    return companies_pb2.CompanyEvent(event_id="e1", occurred_time=ts, **detail)  # type: ignore[arg-type]


async def test_overrides_are_applied_and_recorded(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    plain = await _score(channel, tenant, healthy())
    bankrupt = await _score(
        channel,
        tenant,
        healthy(),
        events=[_event(bankruptcy_opened=companies_pb2.BankruptcyOpened())],
    )
    assert bankrupt.risk_class == common_pb2.RISK_CLASS_D
    assert bankrupt.model_risk_class == plain.model_risk_class
    assert bankrupt.probability_of_default == pytest.approx(plain.probability_of_default)
    assert "OVERRIDE_BANKRUPTCY" in [r.code for r in bankrupt.reasons]

    remark = await _score(
        channel,
        tenant,
        healthy(),
        events=[
            _event(payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r1"))
        ],
    )
    assert remark.risk_class == min(4, plain.risk_class + 1)
    assert "OVERRIDE_PAYMENT_REMARK" in [r.code for r in remark.reasons]
    cleared = await _score(
        channel,
        tenant,
        healthy(),
        events=[
            _event(payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r1")),
            _event(payment_remark_removed=companies_pb2.PaymentRemarkRemoved(remark_id="r1")),
        ],
    )
    assert cleared.risk_class == plain.risk_class


@pytest.mark.parametrize(
    ("statement", "fields"),
    [
        (healthy(total_assets=-5), {"financial_statement.total_assets"}),
        (
            healthy(inventory=-1, cash=-2),
            {"financial_statement.inventory", "financial_statement.cash"},
        ),
        (
            companies_pb2.FinancialStatement(
                period_start=date_pb2.Date(year=2025, month=1, day=1),
                period_end=date_pb2.Date(year=2025, month=12, day=31),
                currency_code="NOK",
                total_assets=10,
            ),
            {
                "financial_statement.total_liabilities",
                "financial_statement.sales",
                "financial_statement.net_profit",
            },
        ),
        (healthy(), None),
    ],
    ids=["negative-total-assets", "negative-items", "missing-required", "bad-currency"],
)
async def test_bad_statements_are_refused_naming_fields(
    channel: grpc.aio.Channel,
    tenant: TenantKey,
    statement: companies_pb2.FinancialStatement,
    fields: set[str] | None,
) -> None:
    if fields is None:
        statement.currency_code = "XXX"
        fields = {"financial_statement.currency_code"}
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score(channel, tenant, statement)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fields <= set(field_violations(caught.value))


async def test_unknown_model_version_is_refused(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score(channel, tenant, healthy(), model_version="v0")
    assert "model_version" in field_violations(caught.value)


async def test_every_problem_of_a_prospect_is_refused_in_one_answer(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """Model version, statement, events and company are all checked before
    the refusal: the caller fixes them in one round trip, not four."""
    statement = healthy(total_assets=-5.0)
    statement.period_start.month = 13
    event = companies_pb2.CompanyEvent(
        payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _score(
            channel,
            tenant,
            statement,
            model_version="v0",
            events=[event],
            company=common_pb2.CompanyRef(country="NO", register_number="923609017"),
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert {
        "model_version",
        "financial_statement.period_start",
        "financial_statement.total_assets",
        "events[0].occurred_time",
        "events[0].payment_remark_registered.remark_id",
        "company.register_number",
    } <= set(field_violations(caught.value))


async def test_score_company_returns_the_stored_score(
    channel: grpc.aio.Channel, tenant: TenantKey, sessions: async_sessionmaker[AsyncSession]
) -> None:
    number = norwegian_numbers(1, start=96_500_000)[0]
    await ScoreStore(sessions).record(
        CompanyId("NO", number),
        StoredScore(0.02, RiskClass.B, RiskClass.B, (), "stored-model", None, datetime.now(UTC)),
        OverridePolicy().tag,
    )
    got = await _stub(channel).ScoreCompany(
        scoring_pb2.ScoreCompanyRequest(
            company=common_pb2.CompanyRef(country="NO", register_number=number)
        ),
        metadata=tenant.metadata,
    )
    assert (got.score.risk_class, got.score.model_version, got.computed) == (
        2,
        "stored-model",
        False,
    )
    unknown = norwegian_numbers(2, start=96_600_000)[1]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(channel).ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(
                company=common_pb2.CompanyRef(country="NO", register_number=unknown)
            ),
            metadata=tenant.metadata,
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # never seen
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _stub(channel).ScoreCompany(
            scoring_pb2.ScoreCompanyRequest(
                company=common_pb2.CompanyRef(country="NO", register_number="923609017")
            ),
            metadata=tenant.metadata,
        )
    assert "company.register_number" in field_violations(caught.value)


async def test_stream_scores_answers_each_chunk_in_order_with_per_item_errors(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    bad = healthy(total_assets=-1)
    chunks = [
        [("a1", healthy()), ("a2", bad), ("a3", distressed())],
        [(f"b{i}", healthy(net_profit=1_000_000 + i * 10_000)) for i in range(500)],
        [("c1", common_pb2.CompanyRef(country="NO", register_number="923609017"))],
    ]

    async def requests():  # type: ignore[no-untyped-def]
        for chunk in chunks:
            items = []
            for correlation, subject in chunk:
                if isinstance(subject, companies_pb2.FinancialStatement):
                    items.append(
                        scoring_pb2.ScoreItem(
                            correlation_id=correlation, financial_statement=subject
                        )
                    )
                else:
                    items.append(scoring_pb2.ScoreItem(correlation_id=correlation, company=subject))
            yield scoring_pb2.StreamScoresRequest(items=items)

    responses = [r async for r in _stub(channel).StreamScores(requests(), metadata=tenant.metadata)]
    assert [[x.correlation_id for x in r.results] for r in responses] == [
        [c for c, _ in chunk] for chunk in chunks
    ]
    first = responses[0].results
    assert first[0].HasField("score") and first[2].HasField("score")
    assert first[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert first[2].score.probability_of_default > first[0].score.probability_of_default
    assert all(x.HasField("score") for x in responses[1].results)
    assert responses[2].results[0].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    # A big chunk is scored in one batch, with the same figures as one at a time.
    alone = await _score(channel, tenant, healthy(net_profit=1_000_000))
    streamed = responses[1].results[0].score
    assert streamed.probability_of_default == pytest.approx(alone.probability_of_default)
    assert [(r.code, r.description) for r in streamed.reasons] == [
        (r.code, r.description) for r in alone.reasons
    ]


async def test_stream_scores_refuses_bad_correlation_ids_item_by_item(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """1..128 characters, as the contract says: an empty or longer id is an
    item error naming `correlation_id`, in a small chunk (scored in the server)
    and a large one (scored in columns, by a worker process) alike."""
    bad_ids = ["", "x" * 129, "é" * 200]
    good = "ø" * 128  # characters, not bytes

    def chunk(size: int) -> scoring_pb2.StreamScoresRequest:
        ids = [*bad_ids, good, *(f"n{i}" for i in range(size - len(bad_ids) - 1))]
        return scoring_pb2.StreamScoresRequest(
            items=[
                scoring_pb2.ScoreItem(correlation_id=i, financial_statement=healthy()) for i in ids
            ]
        )

    async def requests():  # type: ignore[no-untyped-def]
        yield chunk(5)
        yield chunk(300)

    responses = [r async for r in _stub(channel).StreamScores(requests(), metadata=tenant.metadata)]
    assert [len(r.results) for r in responses] == [5, 300]
    for response in responses:
        refused, kept = response.results[:3], response.results[3:]
        for result, sent in zip(refused, bad_ids, strict=True):
            assert result.correlation_id == sent
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            fields = []
            for detail in result.error.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    fields += [v.field for v in bad_request.field_violations]
            assert fields == ["correlation_id"]
        assert kept[0].correlation_id == good
        assert all(x.HasField("score") for x in kept)


async def test_stream_scores_applies_each_items_events(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    bankrupt = _event(bankruptcy_opened=companies_pb2.BankruptcyOpened())

    async def requests():  # type: ignore[no-untyped-def]
        yield scoring_pb2.StreamScoresRequest(
            items=[
                scoring_pb2.ScoreItem(correlation_id="plain", financial_statement=healthy()),
                scoring_pb2.ScoreItem(
                    correlation_id="bankrupt", financial_statement=healthy(), events=[bankrupt]
                ),
            ]
        )

    (response,) = [
        r async for r in _stub(channel).StreamScores(requests(), metadata=tenant.metadata)
    ]
    plain, bankrupt_score = (r.score for r in response.results)
    assert "OVERRIDE_BANKRUPTCY" not in [r.code for r in plain.reasons]
    assert bankrupt_score.risk_class == common_pb2.RISK_CLASS_D
    assert bankrupt_score.reasons[-1].code == "OVERRIDE_BANKRUPTCY"
    assert bankrupt_score.probability_of_default == plain.probability_of_default


async def test_stream_scores_refuses_an_empty_chunk(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    async def requests():  # type: ignore[no-untyped-def]
        yield scoring_pb2.StreamScoresRequest(items=[])

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in _stub(channel).StreamScores(requests(), metadata=tenant.metadata):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "items" in field_violations(caught.value)


async def test_a_large_chunk_answers_every_item_as_score_financials_does(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """A 1,000-item chunk is read in columns: every kind of good and bad
    statement, some with events, gets what ScoreFinancials gives it alone."""
    remark = _event(payment_remark_registered=companies_pb2.PaymentRemarkRegistered(remark_id="r"))
    kinds = [(s, []) for s in statement_variants()] + [
        (healthy(), [remark]),
        (distressed(), []),
        (healthy(cash=float("nan")), [remark]),
    ]
    items = [
        scoring_pb2.ScoreItem(
            correlation_id=str(i), financial_statement=kinds[i % len(kinds)][0],
            events=kinds[i % len(kinds)][1],
        )
        for i in range(1_000)
    ]  # fmt: skip

    async def requests():  # type: ignore[no-untyped-def]
        yield scoring_pb2.StreamScoresRequest(items=items)

    (response,) = [
        r async for r in _stub(channel).StreamScores(requests(), metadata=tenant.metadata)
    ]
    assert [r.correlation_id for r in response.results] == [str(i) for i in range(1_000)]
    scored = 0
    for statement, events in kinds:
        position = kinds.index((statement, events))
        streamed = [response.results[i] for i in range(position, 1_000, len(kinds))]
        try:
            alone = await _score(channel, tenant, statement, events=events)
        except grpc.aio.AioRpcError as error:
            for result in streamed:
                assert result.error.code == error.code().value[0]
                bad = error_details_pb2.BadRequest()
                assert result.error.details[0].Unpack(bad)
                assert {v.field: v.description for v in bad.field_violations} == (
                    field_violations(error)
                )
            continue
        scored += len(streamed)
        for result in streamed:
            got = result.score
            assert got.probability_of_default == pytest.approx(
                alone.probability_of_default, abs=1e-7
            )
            assert (got.risk_class, got.model_risk_class) == (
                alone.risk_class,
                alone.model_risk_class,
            )
            assert [(r.code, r.description) for r in got.reasons] == [
                (r.code, r.description) for r in alone.reasons
            ]
            assert got.data_as_of == alone.data_as_of
    assert 200 < scored < 800  # both paths are exercised


async def test_a_client_that_waits_for_each_answer_is_answered_chunk_by_chunk(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    """Chunks overlap on the server, but a client that sends the next chunk
    only after the previous answer still gets each answer; a refused chunk
    ends the stream after the answers before it."""
    call = _stub(channel).StreamScores(metadata=tenant.metadata)
    for round_ in range(3):
        await call.write(
            scoring_pb2.StreamScoresRequest(
                items=[
                    scoring_pb2.ScoreItem(correlation_id=f"{round_}-{i}", financial_statement=s)
                    for i, s in enumerate([healthy(), distressed()] * 100)
                ]
            )
        )
        answer = await asyncio.wait_for(call.read(), timeout=10)
        assert answer.results[0].correlation_id == f"{round_}-0"
        assert all(r.HasField("score") for r in answer.results)
    await call.write(scoring_pb2.StreamScoresRequest(items=[]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_refused_chunk_comes_after_the_answers_to_the_chunks_before_it(
    channel: grpc.aio.Channel, tenant: TenantKey
) -> None:
    async def requests():  # type: ignore[no-untyped-def]
        for round_ in range(4):
            yield scoring_pb2.StreamScoresRequest(
                items=[
                    scoring_pb2.ScoreItem(correlation_id=f"{round_}-{i}", financial_statement=s)
                    for i, s in enumerate([healthy()] * 500)
                ]
            )
        yield scoring_pb2.StreamScoresRequest(items=[])

    answers = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for answer in _stub(channel).StreamScores(requests(), metadata=tenant.metadata):
            answers.append(answer.results[0].correlation_id)
    assert answers == ["0-0", "1-0", "2-0", "3-0"]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
