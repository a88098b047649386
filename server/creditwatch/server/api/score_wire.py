"""Score messages written straight in protobuf's wire format, for StreamScores.

A 1,000-statement StreamScores chunk answers with 1,000 Score messages of
five reasons each. Built as protobuf objects field by field, that took as
long as the model run itself. Written here from a ScoreBlock's columns, with
what every score of a model version shares (reason codes, kinds, the
version) encoded once, a reason is its formatted text and a few joined bytes.
The bytes parse to the message `converters.fill_score` builds for the same
score (tests/unit/test_score_wire.py compares them field for field).

Only the field numbers and types of the messages written here are assumed,
and they are read from the generated descriptors, not written down again.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.descriptor import Descriptor

from creditwatch.server.api.converters import timestamp
from creditwatch.server.domain.scores import FeatureTexts, Reason, ReasonKind
from creditwatch.server.scoring.engine import ScoreBlock
from creditwatch.v1 import common_pb2, scoring_pb2

_VARINT, _FIXED64, _LENGTH_DELIMITED = 0, 1, 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SHORT = [_varint(n) for n in range(1 << 14)]  # every length up to 16 KB: two bytes at most


def _length(size: int) -> bytes:
    return _SHORT[size] if size < 1 << 14 else _varint(size)


def _key(message: Descriptor, name: str, wire_type: int) -> bytes:
    return _varint(message.fields_by_name[name].number << 3 | wire_type)


def _field(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    return key + _length(len(payload)) + payload


_SCORE = common_pb2.Score.DESCRIPTOR
_REASON = common_pb2.ReasonCode.DESCRIPTOR
_RESULT = scoring_pb2.ScoreItemResult.DESCRIPTOR
_PD = _key(_SCORE, "probability_of_default", _FIXED64)
_RISK_CLASS = _key(_SCORE, "risk_class", _VARINT)
_MODEL_RISK_CLASS = _key(_SCORE, "model_risk_class", _VARINT)
_REASONS = _key(_SCORE, "reasons", _LENGTH_DELIMITED)
_MODEL_VERSION = _key(_SCORE, "model_version", _LENGTH_DELIMITED)
_DATA_AS_OF = _key(_SCORE, "data_as_of", _LENGTH_DELIMITED)
_SCORE_TIME = _key(_SCORE, "score_time", _LENGTH_DELIMITED)
_CODE = _key(_REASON, "code", _LENGTH_DELIMITED)
_DESCRIPTION = _key(_REASON, "description", _LENGTH_DELIMITED)
_KIND = _key(_REASON, "kind", _VARINT)
_CONTRIBUTION = _key(_REASON, "pd_contribution", _FIXED64)
_CORRELATION_ID = _key(_RESULT, "correlation_id", _LENGTH_DELIMITED)
_RESULT_SCORE = _key(_RESULT, "score", _LENGTH_DELIMITED)
_RESULTS = _key(scoring_pb2.StreamScoresResponse.DESCRIPTOR, "results", _LENGTH_DELIMITED)
_DOUBLE = struct.Struct("<d").pack


def _time(value: datetime, times: dict[datetime, bytes]) -> bytes:
    """A serialised Timestamp (memoised in `times`: a block's rows share theirs)."""
    encoded = times.get(value)
    if encoded is None:
        message = timestamp(value)
        assert message is not None
        encoded = times[value] = message.SerializeToString()
    return encoded


def _overrides(reasons: tuple[Reason, ...]) -> bytes:
    return b"".join(
        _field(
            _REASONS,
            common_pb2.ReasonCode(
                code=r.code,
                description=r.description,
                kind=common_pb2.ReasonKind.ValueType(r.kind),
                pd_contribution=r.pd_contribution,
            ).SerializeToString(),
        )
        for r in reasons
    )


class ScoreWire:
    """Serialised Score messages of one model version's ScoreBlocks."""

    def __init__(self, texts: FeatureTexts) -> None:
        self.version = texts.version
        self._templates = texts.templates
        self._model_version = _field(_MODEL_VERSION, texts.version.encode())
        # A model reason is: reasons key, length | code field, description key
        # (per feature) | description length, description | kind field,
        # contribution key | contribution. `_fixed` is the length of all but
        # the description and its length, per feature.
        self._heads = [_field(_CODE, code.encode()) + _DESCRIPTION for code in texts.codes]
        self._tail = _KIND + _varint(ReasonKind.MODEL_FEATURE) + _CONTRIBUTION
        self._fixed = [len(head) + len(self._tail) + 8 for head in self._heads]

    def scores(self, block: ScoreBlock) -> list[bytes]:
        """Each row of `block` as a serialised Score message (no company)."""
        if block.model_version != self.version:
            raise ValueError(f"{block.model_version} scores written as {self.version}'s")
        templates, heads, tail, fixed = self._templates, self._heads, self._tail, self._fixed
        short, limit, key, double, join = _SHORT, len(_SHORT), _REASONS, _DOUBLE, b"".join
        classes = {c: _RISK_CLASS + _varint(c) for c in set(block.risk_classes)}
        model_classes = {c: _MODEL_RISK_CLASS + _varint(c) for c in set(block.model_risk_classes)}
        reasons: list[bytes] = []
        for feature, value, contribution in zip(
            block.reason_features.tolist(),
            block.reason_values.tolist(),
            block.reason_contributions.tolist(),
            strict=True,
        ):
            text = templates[feature * 4 + (value == value) * 2 + (contribution > 0)]
            encoded = (text % (value, abs(contribution) * 100)).encode()
            size = len(encoded)
            text_length = short[size] if size < limit else _varint(size)
            size += fixed[feature] + len(text_length)
            reasons.append(
                join(
                    (
                        key,
                        short[size] if size < limit else _varint(size),
                        heads[feature],
                        text_length,
                        encoded,
                        tail,
                        double(contribution),
                    )
                )
            )
        overrides: dict[tuple[Reason, ...], bytes] = {}
        times: dict[datetime, bytes] = {}
        score_time = _field(_SCORE_TIME, _time(block.score_time, times))
        as_of: dict[datetime, bytes] = {}
        out: list[bytes] = []
        start = 0
        for pd, risk_class, model_class, applied, data_as_of, end in zip(
            block.pds,
            block.risk_classes,
            block.model_risk_classes,
            block.overrides,
            block.data_as_of,
            block.reason_ends,
            strict=True,
        ):
            if applied not in overrides:
                overrides[applied] = _overrides(applied)
            if data_as_of not in as_of:
                as_of[data_as_of] = _field(_DATA_AS_OF, _time(data_as_of, times))
            out.append(
                b"".join(
                    (
                        _PD + double(pd),  # even a 0 (upb writes a -0.0 too)
                        classes[risk_class],
                        model_classes[model_class],
                        *reasons[start:end],
                        overrides[applied],
                        self._model_version,
                        as_of[data_as_of],
                        score_time,
                    )
                )
            )
            start = end
        return out


def result(correlation_id: str, score: bytes) -> bytes:
    """A serialised ScoreItemResult holding a serialised Score."""
    encoded = correlation_id.encode()
    return (
        (_CORRELATION_ID + _length(len(encoded)) + encoded if encoded else b"")
        + _RESULT_SCORE
        + _length(len(score))
        + score
    )


def response(results: Sequence[bytes]) -> bytes:
    """A serialised StreamScoresResponse of serialised ScoreItemResults."""
    return b"".join(_RESULTS + _length(len(r)) + r for r in results)
