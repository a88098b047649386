"""Which Enhetsregisteret updates tell a unit's status (and so may set an
ACTIVE status over a risk status), and which leave it to the flags' events."""

from __future__ import annotations

import pytest

from creditwatch.server.registers.brreg import _says_status


def _changed(*paths: str) -> dict[str, object]:
    return {"endringstype": "Endring", "endringer": [{"op": "replace", "path": p} for p in paths]}


@pytest.mark.parametrize(
    ("update", "says"),
    [
        (None, True),  # the unit's current state, read as it is
        ({"endringstype": "Ny"}, True),
        ({"endringstype": "Endring"}, True),  # changes not listed: the flags are all there is
        (_changed("/konkurs"), True),
        (_changed("/underAvviklingDato"), True),
        (_changed("/tvangsopplostPgaManglendeRevisorDato"), True),
        (_changed("/slettedato"), True),  # a deletion reversed
        (_changed("/forretningsadresse/adresse/0"), False),
        (_changed("/navn", "/naeringskode1/kode"), False),
    ],
)
def test_only_updates_about_flags_or_deletion_tell_the_status(
    update: dict[str, object] | None, says: bool
) -> None:
    assert _says_status(update) is says
