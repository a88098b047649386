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

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import numpy.typing as npt
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
_SHORT_ARRAY = np.array(_SHORT, dtype=object)
_EIGHT_BYTES = np.dtype("V8")  # a float64's bytes, which .tolist() gives as bytes


def _length(size: int) -> bytes:
    return _SHORT[size] if size < 1 << 14 else _varint(size)


def _lengths(sizes: npt.NDArray[np.intp]) -> npt.NDArray[np.object_]:
    """Many lengths as varints (an object array of bytes)."""
    if sizes.max(initial=0) < len(_SHORT):
        result: npt.NDArray[np.object_] = _SHORT_ARRAY[sizes]
        return result
    return np.array([_length(size) for size in sizes.tolist()], dtype=object)


def _varint_sizes(values: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
    """How many bytes each value takes as a varint (values below 2**28)."""
    sizes: npt.NDArray[np.intp] = 1 + (values >= 1 << 7) + (values >= 1 << 14) + (values >= 1 << 21)
    return sizes


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
        self._model_version = _field(_MODEL_VERSION, texts.version.encode())
        # A model reason is: reasons key, length | code field, description key
        # (per feature) | description length, description | kind field,
        # contribution key | contribution. `_fixed` is the length of all but
        # the description and its length, per feature.
        heads = [_field(_CODE, code.encode()) + _DESCRIPTION for code in texts.codes]
        self._tail = _KIND + _varint(ReasonKind.MODEL_FEATURE) + _CONTRIBUTION
        self._fixed = np.array([len(head) + len(self._tail) + 8 for head in heads])
        self._heads = np.array(heads, dtype=object)
        self._templates = np.array(texts.templates, dtype=object)

    def scores(self, block: ScoreBlock) -> list[bytes]:
        """Each row of `block` as a serialised Score message (no company)."""
        if block.model_version != self.version:
            raise ValueError(f"{block.model_version} scores written as {self.version}'s")
        reasons, ends = self._reasons(block)
        classes = {c: _RISK_CLASS + _varint(c) for c in set(block.risk_classes)}
        model_classes = {c: _MODEL_RISK_CLASS + _varint(c) for c in set(block.model_risk_classes)}
        overrides: dict[tuple[Reason, ...], bytes] = {}
        times: dict[datetime, bytes] = {}
        score_time = _field(_SCORE_TIME, _time(block.score_time, times))
        as_of: dict[datetime, bytes] = {}
        # Every PD is written, even a 0 (upb writes a -0.0 too).
        pds = np.asarray(block.pds, dtype="<f8").view(_EIGHT_BYTES).tolist()
        out: list[bytes] = []
        start = 0
        for pd, risk_class, model_class, applied, data_as_of, end in zip(
            pds,
            block.risk_classes,
            block.model_risk_classes,
            block.overrides,
            block.data_as_of,
            ends,
            strict=True,
        ):
            if applied not in overrides:
                overrides[applied] = _overrides(applied)
            if data_as_of not in as_of:
                as_of[data_as_of] = _field(_DATA_AS_OF, _time(data_as_of, times))
            out.append(
                b"".join(
                    (
                        _PD,
                        pd,
                        classes[risk_class],
                        model_classes[model_class],
                        reasons[start:end],
                        overrides[applied],
                        self._model_version,
                        as_of[data_as_of],
                        score_time,
                    )
                )
            )
            start = end
        return out

    def _reasons(self, block: ScoreBlock) -> tuple[bytes, list[int]]:
        """The model reasons of every row of `block`, serialised as `reasons`
        fields one after the other, and where each row's end in those bytes.

        A chunk has thousands of reasons; each Python step per reason counted.
        Here the texts are formatted in one call (the reasons' templates joined
        by NUL, which neither a template nor a number holds, then split), and
        the fields' pieces are put in order by numpy and joined in one call.
        """
        features = block.reason_features
        count = len(features)
        if not count:
            return b"", [0] * len(block)
        values = block.reason_values
        contributions = block.reason_contributions
        chosen = features * 4 + ~np.isnan(values) * 2 + (contributions > 0)
        arguments = np.empty((count, 2))
        arguments[:, 0] = values
        arguments[:, 1] = np.abs(contributions) * 100
        pattern = "\0".join(self._templates[chosen].tolist())
        texts = (pattern % tuple(arguments.ravel().tolist())).encode().split(b"\0")
        text_sizes = np.fromiter(map(len, texts), dtype=np.intp, count=count)
        sizes = text_sizes + _varint_sizes(text_sizes) + self._fixed[features]
        pieces = np.empty((count, 7), dtype=object)
        pieces[:, 0] = _REASONS
        pieces[:, 1] = _lengths(sizes)
        pieces[:, 2] = self._heads[features]
        pieces[:, 3] = _lengths(text_sizes)
        pieces[:, 4] = texts
        pieces[:, 5] = self._tail
        pieces[:, 6] = contributions.astype("<f8").view(_EIGHT_BYTES).tolist()
        written = np.cumsum(len(_REASONS) + _varint_sizes(sizes) + sizes)
        ends = [0, *written.tolist()]
        return b"".join(pieces.ravel().tolist()), [ends[end] for end in block.reason_ends]


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
