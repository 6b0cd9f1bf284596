"""What the gateway knows about each (detector, source): its Triton model, how records become
the model's input tensors, and how the model's outputs become per-record answers.

ABP records are featurized here by the one featurizer (``secml.abp.features.extract``) and sent
as typed tensors (FP32 ``[-1, 18]``). DFP records are featurized by the DFP one featurizer
(``secml.dfp.schema.extract_columns``, then with the users' stored history states
``secml.dfp.serve.featurize``) and sent as typed tensors (contract in ``secml.dfp.serve``).
Every rejected record names its index and field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from secml.abp import features
from secml.abp.features import COLUMN_KEYS, MISSING
from secml.abp.serve import INPUT, INPUT_GPU, OUTPUT_SCORE, OUTPUT_THRESHOLD, OUTPUT_VERSION
from secml.dfp.serve import (
    BINARY,
    CATEGORICAL,
    NUMERIC,
    OUTPUTS,
    RISK_INPUTS,
    SOURCE,
    USER,
    Featurized,
    answers,
    featurize,
)
from secml.repository import ABP_MODEL, ABP_REGISTERED, DFP_MODEL
from serving.triton import Tensor, bytes_column, fp32

TRITON_ABP = ABP_MODEL
TRITON_DFP = DFP_MODEL
UUID_KEY = "nvidia_smi_log.gpu.uuid"
TIMESTAMP_KEY = "nvidia_smi_log.timestamp"
MAX_ERRORS = 50


class RecordError(ValueError):
    """One invalid record: its index, the field and what is wrong."""

    def __init__(self, index: int, field: str, message: str) -> None:
        """Keep the record index, field name and message."""
        super().__init__(f"record {index}: field {field!r}: {message}")
        self.index = index
        self.field = field
        self.message = message


def event_id(record: Mapping[str, Any]) -> str:
    """``secml.store.event_id`` (sha256 of the canonical JSON), computed with orjson.

    orjson writes the same canonical text as ``json.dumps(sort_keys=True, separators=(',',
    ':'), ensure_ascii=False)`` except for NaN/inf (null), floats below 1e-4 (written without an
    exponent, or with an unpadded one), big integers and non-JSON types; a record whose orjson
    text could be one of those takes the standard library's path.
    """
    text = None
    if _plain(record):
        try:
            text = orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # an integer beyond 64 bits
            text = None
    if text is None:
        text = json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        ).encode("utf-8")
    return hashlib.sha256(text).hexdigest()


def abp_event_ids(batch: Any) -> list[str]:
    """Event ids of nvidia-smi samples: sha256 of (GPU uuid, timestamp), the key that joins a
    sample to its label (``secml.abp.model.record_key``), so a sample sent twice is one event;
    a record without both takes the canonical-JSON id of ``event_id``."""
    if isinstance(batch, list):
        batch = DictRecords(batch)
    out = []
    for i, (uuid, ts) in enumerate(
        zip(batch.column(UUID_KEY), batch.column(TIMESTAMP_KEY), strict=True)
    ):
        if type(uuid) is str and type(ts) is str:
            out.append(hashlib.sha256(f"nvsmi\0{uuid}\0{ts}".encode()).hexdigest())
        else:
            out.append(event_id(batch.record(i)))
    return out


def event_ids(batch: DictRecords) -> list[str]:
    """Canonical-JSON event ids (``event_id``) of every record."""
    return [event_id(r) for r in batch.records]


def bounded_record(
    record: Mapping[str, Any], max_bytes: int, keep: Sequence[str] = ()
) -> dict[str, Any]:
    """The record as stored with a detection: whole when its JSON fits ``max_bytes``, else the
    ``keep`` keys (what the model reads) plus a ``_truncated`` note with the original size."""
    try:
        size = len(orjson.dumps(record, default=str))
    except TypeError:  # an integer beyond 64 bits
        size = len(json.dumps(record, default=str, ensure_ascii=False).encode())
    if size <= max_bytes:
        return dict(record)
    out = {k: record[k] for k in keep if k in record}
    out["_truncated"] = {"bytes": size, "keys": len(record), "kept": len(out)}
    return out


@dataclass
class Prepared:
    """Records turned into the model's inputs, or the errors that stop them. A stateful
    detector's inputs come later (``DetectorSpec.featurize``); ``context`` holds what it
    needs, ``ids`` the records' event ids when already computed."""

    inputs: list[Tensor] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    context: Any = None
    ids: list[str] | None = None


@dataclass
class DictRecords:
    """Records decoded in full (one dict each), with the column view ABP reads."""

    records: list[dict[str, Any]]

    def __len__(self) -> int:
        """Number of records."""
        return len(self.records)

    def column(self, key: str) -> list[Any]:
        """Every record's value of ``key`` (``MISSING`` where absent)."""
        return [r.get(key, MISSING) for r in self.records]

    def record(self, i: int) -> dict[str, Any]:
        """Record ``i``."""
        return self.records[i]


_FIELD_RE = re.compile(r"field '([^']+)'")


def _plain(value: Any) -> bool:
    """True when orjson writes ``value`` as the standard library does: strings, integers,
    booleans, None, and finite floats that are 0 or at least 1e-4 in size (orjson writes
    smaller ones without an exponent or with an unpadded one, and NaN as null), in dicts with
    string keys and lists. One pass over the values; flat records of strings are the common case."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return value == 0.0 or (math.isfinite(value) and abs(value) >= 1e-4)
    if t is dict:
        return all(type(k) is str for k in value) and all(map(_plain, value.values()))
    if t is list:
        return all(map(_plain, value))
    return False


_RECORD_RE = re.compile(r"record (\d+)")


def _schema_error(exc: Exception, default_index: int) -> RecordError:
    """Turn a shared-package schema error into a RecordError (index and field from its text)."""
    text = str(exc)
    fld = _FIELD_RE.search(text)
    idx = _RECORD_RE.search(text)
    return RecordError(
        int(idx.group(1)) if idx else default_index,
        fld.group(1) if fld else "record",
        text.split(": ", 1)[1] if ": " in text else text,
    )


# ---------------------------------------------------------------------------------- ABP
ABP_KEEP: tuple[str, ...] = (
    features.FEATURES
    + tuple(a for names in features.ALIASES.values() for a in names)
    + (UUID_KEY, TIMESTAMP_KEY, "nvidia_smi_log.gpu.product_name", "nvidia_smi_log.hostname")
)


def prepare_abp(batch: Any) -> Prepared:
    """Featurize nvidia-smi records (one featurizer) into FEATURES FP32 [-1, 18] + GPU.

    ``batch`` is a ``DictRecords``, a list of dicts, or ``serving.decode.NvsmiColumns``."""
    if isinstance(batch, list):
        batch = DictRecords(batch)
    columns = {k: batch.column(k) for k in COLUMN_KEYS}
    got = features.extract_columns(columns, len(batch), max_errors=MAX_ERRORS)
    if got.errors:
        return Prepared(
            errors=[RecordError(e.index or 0, e.field or "record", e.detail) for e in got.errors]
        )
    uuids = batch.column(UUID_KEY)
    gpu = bytes_column(INPUT_GPU, [u if type(u) is str else "" for u in uuids])
    return Prepared(
        [fp32(INPUT, got.X), gpu], outputs=[OUTPUT_SCORE, OUTPUT_THRESHOLD, OUTPUT_VERSION]
    )


def answer_abp(
    batch: Any, out: dict[str, Any], prepared: Prepared | None = None
) -> list[dict[str, Any]]:
    """Per-record answers from SCORE/THRESHOLD/VERSION; event times parsed in bulk."""
    if isinstance(batch, list):
        batch = DictRecords(batch)
    n = len(batch)
    scores = np.asarray(out[OUTPUT_SCORE], dtype=np.float32).reshape(-1)
    thresholds = np.asarray(out[OUTPUT_THRESHOLD], dtype=np.float32).reshape(-1)
    versions = np.asarray(out[OUTPUT_VERSION]).reshape(-1)
    if not len(scores) == len(thresholds) == len(versions) == n:
        raise ValueError(f"{TRITON_ABP} returned {len(scores)} scores for {n} records")
    stamps = [None if t is MISSING else t for t in batch.column(TIMESTAMP_KEY)]
    times = features.iso_utc(features.epoch_seconds(stamps))
    uuids = batch.column(UUID_KEY)
    results = []
    for i, (s, t, v, when, uuid) in enumerate(
        zip(scores.tolist(), thresholds.tolist(), versions.tolist(), times, uuids, strict=True)
    ):
        anomaly = s >= t
        version = str(v)
        results.append(
            {
                "index": i,
                "score": s,
                "anomaly": anomaly,
                "decision": "mining" if anomaly else "benign",
                "model": ABP_REGISTERED,
                "version": version,
                "model_version": f"{ABP_REGISTERED}:{version}",
                "top_features": None,
                "details": {"p_mining": s, "threshold": t},
                "user": None if uuid is None or uuid is MISSING else str(uuid),
                "event_time": when,
            }
        )
    return results


# ---------------------------------------------------------------------------------- DFP
def prepare_dfp(source: str) -> Callable[[DictRecords], Prepared]:
    """Check and extract DFP records of ``source`` (``schema.extract_columns``); their
    tensors are made by ``featurize_dfp`` once the users' states are loaded."""

    def prepare(batch: DictRecords) -> Prepared:
        from secml.dfp import schema

        records = batch.records
        files = ["request"] * len(records)
        ids = event_ids(batch)
        try:
            events = schema.extract_columns(records, source, files, event_ids=ids)
        except schema.SchemaError:
            errors = []
            for i, rec in enumerate(records):  # slow path, only for bad batches
                try:
                    schema.extract_columns([rec], source, ["request"], [i], [""])
                except schema.SchemaError as exc:
                    errors.append(_schema_error(exc, i))
                    if len(errors) >= MAX_ERRORS:
                        break
            return Prepared(errors=errors)
        errors = _user_name_errors(events.columns["username"], source)
        if errors:
            return Prepared(errors=errors)
        return Prepared(outputs=list(OUTPUTS), context=events, ids=ids)

    return prepare


def dfp_users(prepared: Prepared) -> list[str]:
    """The users of prepared DFP records (whose states the request reads and writes)."""
    return sorted(set(prepared.context.columns["username"]))


def featurize_dfp(
    prepared: Prepared, stored: Mapping[str, Any]
) -> tuple[list[Tensor], dict[str, Any]]:
    """The ``dfp`` model's tensors from the users' ``stored`` history states; the states
    after these records (to store once Triton has answered)."""
    from secml.dfp.history import UserState

    events = prepared.context
    states = {u: UserState.from_dict(d) for u, d in stored.items()}
    feats = featurize(events, states)
    prepared.context = feats
    n = len(feats)
    inputs = [
        bytes_column(SOURCE, [events.source] * n),
        bytes_column(USER, feats.users),
        Tensor(CATEGORICAL, "BYTES", _bytes(feats.categorical)),
        Tensor(NUMERIC, "FP64", np.ascontiguousarray(feats.numeric)),
        fp32(BINARY, feats.binary),
        Tensor(RISK_INPUTS, "FP64", np.ascontiguousarray(feats.risk_inputs)),
    ]
    return inputs, {u: s.to_dict() for u, s in states.items()}


def _bytes(values: np.ndarray) -> np.ndarray:
    """An object array of strings as UTF-8 bytes (a BYTES tensor)."""
    out = np.empty(values.shape, dtype=object)
    out.flat = [v.encode() for v in values.flat]
    return out


def _user_name_errors(users: Sequence[str], source: str) -> list[RecordError]:
    """Users whose name cannot become a model name (too long once escaped)."""
    from secml.naming import user_to_model_name

    field = "user.name" if source == "duo" else "properties.userPrincipalName"
    errors, seen = [], set()
    for i, user in enumerate(users):
        if user in seen:
            continue
        seen.add(user)
        try:
            user_to_model_name(source, user)
        except ValueError as exc:
            errors.append(RecordError(i, field, str(exc)))
            if len(errors) >= MAX_ERRORS:
                break
    return errors


def answer_dfp(positive: str, negative: str) -> Callable[..., list[dict[str, Any]]]:
    """Per-record answers from the ``dfp`` model's typed outputs (``secml.dfp.serve.answers``)."""

    def answer(
        batch: DictRecords, out: dict[str, Any], prepared: Prepared | None = None
    ) -> list[dict[str, Any]]:
        from secml.settings import get_settings

        if prepared is None or not isinstance(prepared.context, Featurized):
            raise ValueError("DFP answers need the featurized request")
        got = answers(prepared.context, out, get_settings().dfp_z_threshold)
        if len(got) != len(batch):
            raise ValueError(f"{TRITON_DFP} returned {len(got)} results for {len(batch)}")
        results = []
        for i, res in enumerate(got):
            anomaly = res["anomaly"]
            model, version = res["model"], res["version"]
            results.append(
                {
                    "index": i,
                    "score": res["score"],
                    "anomaly": anomaly,
                    "decision": positive if anomaly else negative,
                    "model": model,
                    "version": version,
                    "model_version": f"{model}:{version}",
                    "top_features": res["top_features"],
                    "details": res["details"],
                    "user": res["user"],
                    "event_time": res["event_time"],
                }
            )
        return results

    return answer


@dataclass(frozen=True)
class DetectorSpec:
    """How the gateway serves one (detector, source) pair."""

    detector: str
    source: str
    triton_model: str
    prepare: Callable[[Any], Prepared]  # records (DictRecords, NvsmiColumns) -> inputs
    answer: Callable[..., list[dict[str, Any]]]  # (records, outputs, prepared) -> answers
    keep: tuple[str, ...] = ()  # keys a bounded stored copy keeps
    ids: Callable[[Any], list[str]] = event_ids
    # DFP: per-user history state read from and written back to the detections store: the
    # users of a prepared request, and its tensors from their stored states
    stateful: bool = False
    users: Callable[[Prepared], list[str]] | None = None
    featurize: Callable[[Prepared, Mapping[str, Any]], tuple[list[Tensor], dict]] | None = None


DETECTORS: dict[tuple[str, str], DetectorSpec] = {
    ("abp", "nvsmi"): DetectorSpec(
        "abp", "nvsmi", TRITON_ABP, prepare_abp, answer_abp, ABP_KEEP, abp_event_ids
    ),
    ("dfp", "duo"): DetectorSpec(
        "dfp",
        "duo",
        TRITON_DFP,
        prepare_dfp("duo"),
        answer_dfp("anomalous", "normal"),
        ("timestamp", "isotimestamp", "user", "result", "reason", "access_device", "auth_device"),
        stateful=True,
        users=dfp_users,
        featurize=featurize_dfp,
    ),
    ("dfp", "azure"): DetectorSpec(
        "dfp",
        "azure",
        TRITON_DFP,
        prepare_dfp("azure"),
        answer_dfp("anomalous", "normal"),
        ("time", "properties", "category"),
        stateful=True,
        users=dfp_users,
        featurize=featurize_dfp,
    ),
}


def known_pairs() -> list[dict[str, str]]:
    """Every (detector, source) the gateway serves, for 404 answers."""
    return [{"detector": d, "source": s} for d, s in DETECTORS]
