"""Request bodies decoded with msgspec: for nvidia-smi records, one pass reads only the keys the
ABP featurizer needs, straight into columns (no dict per record); a record is decoded in full
only when it is stored with a detection.

A body msgspec cannot decode this way (a record that is not an object, a feature value that is
an object or a list) is decoded again with orjson by the caller, whose checks name the record
and the field; nothing is rejected here that the full path would accept.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import msgspec

from secml.abp.features import COLUMN_KEYS, MISSING

UUID_KEY = "nvidia_smi_log.gpu.uuid"
TIMESTAMP_KEY = "nvidia_smi_log.timestamp"
_KEYS = (*COLUMN_KEYS, UUID_KEY, TIMESTAMP_KEY)
_Value = str | int | float | bool | None


NvsmiRow = msgspec.defstruct(
    "NvsmiRow",
    [(f"k{i}", _Value, msgspec.field(default=MISSING)) for i in range(len(_KEYS))],
    rename={f"k{i}": key for i, key in enumerate(_KEYS)},
)


class AbpBody(msgspec.Struct):
    """A /predict body read as ABP: ``records`` hold only the keys the featurizer reads."""

    detector: Any = None
    source: Any = None
    records: list[NvsmiRow] = None  # type: ignore[valid-type,assignment] - None when absent


class RawBody(msgspec.Struct):
    """A /predict body with each record left as its raw JSON."""

    records: list[msgspec.Raw]


_ABP = msgspec.json.Decoder(AbpBody)
_RAW = msgspec.json.Decoder(RawBody)
_GET = {key: attrgetter(f"k{i}") for i, key in enumerate(_KEYS)}


class Undecodable(ValueError):
    """The fast path does not apply: decode the body in full instead."""


@dataclass
class NvsmiColumns:
    """nvidia-smi records as columns of the keys the featurizer reads; a record in full is
    decoded from the body only when asked for (a stored detection)."""

    columns: dict[str, list[Any]]
    body: bytes
    _raws: list[msgspec.Raw] | None = None

    def __len__(self) -> int:
        """Number of records."""
        return len(self.columns[UUID_KEY])

    def column(self, key: str) -> list[Any]:
        """Every record's value of ``key`` (``MISSING`` where absent)."""
        return self.columns[key]

    def record(self, i: int) -> dict[str, Any]:
        """Record ``i`` in full."""
        if self._raws is None:
            self._raws = _RAW.decode(self.body).records
        return msgspec.json.decode(self._raws[i])


def abp_body(body: bytes) -> tuple[Any, Any, NvsmiColumns | None]:
    """(detector, source, columns) of a body in one pass; columns is None unless the body is
    ABP on nvidia-smi records. ``Undecodable`` when a record is not an object or a feature
    value is an object or a list (the caller decodes in full and names it)."""
    try:
        got = _ABP.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Undecodable(str(exc)) from None
    if (got.detector, got.source) != ("abp", "nvsmi") or got.records is None:
        return got.detector, got.source, None
    columns = {k: list(map(get, got.records)) for k, get in _GET.items()}
    return got.detector, got.source, NvsmiColumns(columns, body)
