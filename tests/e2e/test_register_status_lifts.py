"""Over gRPC: a bankruptcy reported as an event is lifted when the register
later says the company is active (UpsertCompany, as the register feed does
when a unit's bankruptcy flag is cleared)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import field_mask_pb2

from creditwatch.v1 import common_pb2, companies_pb2, companies_pb2_grpc
from tests.conftest import TenantKey
from tests.e2e import alerting
from tests.e2e.alerting import bankruptcy, record, ref, subscribe, watch
from tests.e2e.test_scoring import healthy
from tests.identifiers import norwegian_numbers

pytestmark = pytest.mark.asyncio

A = common_pb2.AlertType


async def test_an_active_status_after_a_bankruptcy_event_restores_the_model_class(
    channel: grpc.aio.Channel, feed: TenantKey, tenant: TenantKey
) -> None:
    number = norwegian_numbers(1, start=98_200_000)[0]
    data = companies_pb2_grpc.CompanyDataServiceStub(channel)
    first = await alerting.submit(channel, feed, number, healthy())
    model_class = first.effect.score.risk_class
    assert model_class != common_pb2.RISK_CLASS_D
    await watch(channel, tenant, [number])
    call = subscribe(channel, tenant)
    await alerting.first_heartbeat(call)

    recorded = await record(channel, feed, bankruptcy(number, "konkurs-1"))  # dated 2026-05-01
    assert recorded.effects[0].score.risk_class == common_pb2.RISK_CLASS_D
    assert {a.type for a in await alerting.alerts(call, 2)} == {
        A.ALERT_TYPE_BANKRUPTCY_OPENED,
        A.ALERT_TYPE_RISK_CLASS_DOWNGRADE,
    }

    lifted = await data.UpsertCompany(
        companies_pb2.UpsertCompanyRequest(
            company=companies_pb2.Company(
                company=ref(number), status=companies_pb2.COMPANY_STATUS_ACTIVE
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["status"]),
        ),
        metadata=feed.metadata,
    )
    assert lifted.effect.previous_score.risk_class == common_pb2.RISK_CLASS_D
    assert lifted.effect.score.risk_class == model_class
    assert not [r for r in lifted.effect.score.reasons if r.kind == common_pb2.REASON_KIND_OVERRIDE]
    got = {a.type: a for a in await alerting.alerts(call, 2)}
    assert set(got) == {A.ALERT_TYPE_RISK_CLASS_UPGRADE, A.ALERT_TYPE_MASTER_DATA_CHANGED}
    assert got[A.ALERT_TYPE_RISK_CLASS_UPGRADE].score.risk_class == model_class
