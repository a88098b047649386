"""Two credit-policy updates that read the same version: the second to store
is refused (ABORTED), not stored over the first's change."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from creditwatch.server.domain.errors import Aborted
from creditwatch.server.domain.scores import RiskClass
from creditwatch.server.store import limits as store
from tests.conftest import new_tenant


@pytest.mark.asyncio
async def test_an_update_built_on_a_version_another_update_replaced_is_aborted(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    tenant = (await new_tenant(sessions, "policy-race")).tenant_id
    # B reads version 1 to change how long decisions are valid...
    async with sessions.begin() as b:
        base = await store.policy(b, tenant)
        assert base.version == 1
        # ...while A changes the decline class to C and commits version 2.
        async with sessions.begin() as a:
            read = await store.policy(a, tenant)
            declined_c = dataclasses.replace(read, decline_class=RiskClass.C)
            assert (await store.save_policy(a, tenant, declined_c, read, 0)).version == 2
        # B's change, merged onto version 1, would put the decline class back
        # to D: no version given (0), and still refused.
        longer = dataclasses.replace(base, decision_validity_days=base.decision_validity_days + 7)
        with pytest.raises(Aborted):
            await store.save_policy(b, tenant, longer, base, 0)
    async with sessions() as session:
        current = await store.policy(session, tenant)
    assert current.version == 2
    assert current.decline_class == RiskClass.C
