"""What the gateway knows about each (detector, source): its Triton model, validation, answers.

Validation here uses the shared package's own record parsing (``secml.dfp.schema``,
``secml.abp``) so a record the gateway accepts is one the model can score. Every error names
the record index and the field.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from secml.store import event_id

TRITON_ABP = "abp_nvsmi_xgb"
TRITON_DFP = "dfp"
ABP_REGISTERED = "abp-nvsmi-xgb"


class RecordError(ValueError):
    """One invalid record: its index, the field and what is wrong."""

    def __init__(self, index: int, field: str, message: str) -> None:
        """Keep the record index, field name and message."""
        super().__init__(f"record {index}: field {field!r}: {message}")
        self.index = index
        self.field = field
        self.message = message


_FIELD_RE = re.compile(r"field '([^']+)'")
_RECORD_RE = re.compile(r"record (\d+)")


def _schema_error(exc: Exception, default_index: int) -> RecordError:
    """Turn a shared-package schema error into a RecordError (index and field from its text)."""
    text = str(exc)
    field = _FIELD_RE.search(text)
    idx = _RECORD_RE.search(text)
    return RecordError(
        int(idx.group(1)) if idx else default_index,
        field.group(1) if field else "record",
        text.split(": ", 1)[1] if ": " in text else text,
    )


def _finite(value: Any, path: str = "") -> str | None:
    """The path of the first non-finite float inside ``value`` (JSON cannot carry NaN/inf)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "record"
    if isinstance(value, dict):
        for k, v in value.items():
            bad = _finite(v, f"{path}.{k}" if path else str(k))
            if bad:
                return bad
    if isinstance(value, list):
        for i, v in enumerate(value):
            bad = _finite(v, f"{path}[{i}]")
            if bad:
                return bad
    return None


def _common_checks(records: list[dict[str, Any]]) -> list[RecordError]:
    """Checks every detector needs: finite numbers only."""
    errors = []
    for i, rec in enumerate(records):
        bad = _finite(rec)
        if bad:
            errors.append(RecordError(i, bad, "must be a finite number (NaN/Infinity given)"))
    return errors


def validate_dfp(source: str) -> Callable[[list[dict[str, Any]]], list[RecordError]]:
    """A validator for DFP records of ``source`` built on ``secml.dfp.schema``."""

    def check(records: list[dict[str, Any]]) -> list[RecordError]:
        from secml.dfp import schema

        errors = _common_checks(records)
        if errors:
            return errors
        try:
            schema.extract(schema.frame_from_records(records, file="request"), source)
            return []
        except schema.SchemaError:
            pass
        # slow path, only for bad batches: find every bad record
        for i, rec in enumerate(records):
            try:
                schema.extract(schema.frame_from_records([rec], "request", start_index=i), source)
            except schema.SchemaError as exc:
                errors.append(_schema_error(exc, i))
                if len(errors) >= 50:
                    break
        return errors

    return check


def validate_abp(records: list[dict[str, Any]]) -> list[RecordError]:
    """Validate flattened nvidia-smi records with the ABP feature parser (secml.abp.features)."""
    from secml.abp import features

    errors = _common_checks(records)
    if errors:
        return errors
    for i, rec in enumerate(records):
        try:
            features.parse_record(rec, i)
        except features.FeatureError as exc:
            errors.append(RecordError(i, exc.field or "record", exc.detail))
            if len(errors) >= 50:
                break
    return errors


@dataclass(frozen=True)
class DetectorSpec:
    """How the gateway serves one (detector, source) pair."""

    detector: str
    source: str
    triton_model: str
    validate: Callable[[list[dict[str, Any]]], list[RecordError]]
    with_source: bool = False
    # DFP: per-user history state read from and written back to the detections store
    stateful: bool = False
    positive: str = "anomalous"
    negative: str = "normal"

    def encode(self, record: dict[str, Any]) -> str:
        """The record as compact JSON for Triton's BYTES input."""
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False)

    def parse(self, index: int, record: dict[str, Any], raw: str | bytes) -> dict[str, Any]:
        """Turn one RESULT element (JSON from the Triton model) into the per-record answer."""
        res = json.loads(raw)
        anomaly = bool(res["anomaly"])
        model, version = str(res["model"]), str(res["version"])
        return {
            "index": index,
            "event_id": event_id(record),
            "score": float(res["score"]),
            "anomaly": anomaly,
            "decision": self.positive if anomaly else self.negative,
            "model": model,
            "version": version,
            "model_version": f"{model}:{version}",
            "top_features": res.get("top_features"),
            "details": res.get("details") or {},
            "user": res.get("user"),
            "event_time": res.get("event_time"),
        }


DETECTORS: dict[tuple[str, str], DetectorSpec] = {
    ("abp", "nvsmi"): DetectorSpec(
        "abp", "nvsmi", TRITON_ABP, validate_abp, positive="mining", negative="benign"
    ),
    ("dfp", "duo"): DetectorSpec(
        "dfp", "duo", TRITON_DFP, validate_dfp("duo"), with_source=True, stateful=True
    ),
    ("dfp", "azure"): DetectorSpec(
        "dfp", "azure", TRITON_DFP, validate_dfp("azure"), with_source=True, stateful=True
    ),
}


def known_pairs() -> list[dict[str, str]]:
    """Every (detector, source) the gateway serves, for 404 answers."""
    return [{"detector": d, "source": s} for d, s in DETECTORS]
