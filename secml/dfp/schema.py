"""Duo and Azure AD schemas: raw records -> one row per event with the model's features.

``process(df_raw, source)`` takes the loader's raw frame (one row per record: ``_raw`` the
record dict, ``_file`` and ``_index`` where it came from) and returns, sorted by time:
``username``, ``timestamp`` (tz-aware UTC), ``location``, the feature columns of
``FEATURES[source]``, ``event_id`` (``secml.store.event_id`` of the raw record) and the raw
columns ``_raw``/``_file``/``_index`` kept so the writer can output the input columns.

Derived features are computed per user and UTC day, in time order: ``logcount`` (running
count of events), ``locincrement`` (running count of distinct locations), ``appincrement``
(Azure: running count of distinct applications). Real Duo records carry ``timestamp`` as
epoch seconds (``isotimestamp`` as ISO 8601) and ``result`` in lower case; both are honoured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from secml.dfp.history import HISTORY_BINARY, HISTORY_NUMERIC, UserState, featurize

try:  # the store needs SQLAlchemy, absent in the Triton model environment
    from secml.store import event_id as _event_id
except ImportError:  # pragma: no cover - exercised only in .venv-triton

    def _event_id(record: Mapping[str, Any]) -> str:
        """Same as ``secml.store.event_id``: sha256 of the record's canonical JSON."""
        canonical = json.dumps(
            record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


log = logging.getLogger(__name__)

Source = Literal["duo", "azure"]
SOURCES: tuple[str, ...] = ("duo", "azure")
MISSING = "unknown"
RAW_COLUMNS: tuple[str, ...] = ("_raw", "_file", "_index")


class SchemaError(ValueError):
    """A record does not fit its source's schema; the message names file, record and field."""


@dataclass(frozen=True)
class FeatureSpec:
    """The model's input columns for one source, by kind."""

    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    binary: list[str] = field(default_factory=list)

    @property
    def all(self) -> list[str]:
        """Every feature column: categorical, then numeric, then binary."""
        return [*self.categorical, *self.numeric, *self.binary]


# Morpheus's per-day counters (integers); the other numeric features are floats.
COUNT_FEATURES: frozenset[str] = frozenset({"logcount", "locincrement", "appincrement"})
# Morpheus's DFP columns, then the per-user history features (``secml.dfp.history``).
FEATURES: dict[str, FeatureSpec] = {
    "duo": FeatureSpec(
        categorical=["accessdevicebrowser", "accessdeviceos", "authdevicename", "reason"],
        numeric=["logcount", "locincrement", *HISTORY_NUMERIC],
        binary=["result", *HISTORY_BINARY],
    ),
    "azure": FeatureSpec(
        categorical=[
            "appDisplayName",
            "clientAppUsed",
            "deviceDetailbrowser",
            "deviceDetaildisplayName",
            "deviceDetailoperatingSystem",
            "statusfailureReason",
        ],
        numeric=["appincrement", "locincrement", "logcount", *HISTORY_NUMERIC],
        binary=[*HISTORY_BINARY],
    ),
}

# What Azure AD writes as ``failureReason`` of a successful sign-in.
AZURE_SUCCESS_REASON = "Other."
# Duo results (Admin API v2): only "success" lets the user in.
DUO_RESULTS: frozenset[str] = frozenset({"success", "denied", "fraud", "failure", "error"})
# Epoch seconds later than this (year 2286) are almost surely milliseconds.
_MAX_EPOCH_S = 1e10
_EARLIEST = pd.Timestamp.min.ceil("s").tz_localize("UTC")  # nanosecond timestamps: 1677..2262
_LATEST = pd.Timestamp.max.floor("s").tz_localize("UTC")
_LATEST_S = _LATEST.timestamp()
_EARLIEST_NS, _LATEST_NS = int(_EARLIEST.value), int(_LATEST.value)

# (output column, path in the record, required)
_DUO_FIELDS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("username", ("user", "name"), True),
    ("accessdevicebrowser", ("access_device", "browser"), False),
    ("accessdeviceos", ("access_device", "os"), False),
    ("authdevicename", ("auth_device", "name"), False),
    ("reason", ("reason",), False),
)
_AZURE_FIELDS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("username", ("properties", "userPrincipalName"), True),
    ("appDisplayName", ("properties", "appDisplayName"), False),
    ("clientAppUsed", ("properties", "clientAppUsed"), False),
    ("deviceDetailbrowser", ("properties", "deviceDetail", "browser"), False),
    ("deviceDetaildisplayName", ("properties", "deviceDetail", "displayName"), False),
    ("deviceDetailoperatingSystem", ("properties", "deviceDetail", "operatingSystem"), False),
    ("statusfailureReason", ("properties", "status", "failureReason"), False),
    ("category", ("category",), False),
)


def record_user(rec: Mapping[str, Any], source: str) -> str:
    """The user name of a raw record of ``source`` (``SchemaError`` when it has none)."""
    fields = _DUO_FIELDS if check_source(source) == "duo" else _AZURE_FIELDS
    path = next(p for c, p, _ in fields if c == "username")
    return _text(_get(rec, path, "record"), ".".join(path), "record", True)


def check_source(source: str) -> Source:
    """Return ``source`` if it is a DFP source, else raise naming the allowed ones."""
    if source not in SOURCES:
        raise SchemaError(f"unknown DFP source {source!r}; expected one of {', '.join(SOURCES)}")
    return source  # type: ignore[return-value]


def frame_from_records(
    records: Iterable[Mapping[str, Any]], file: str = "<records>", start_index: int = 0
) -> pd.DataFrame:
    """Wrap raw record dicts in the loader's raw frame (``_raw``, ``_file``, ``_index``)."""
    recs = list(records)
    for i, rec in enumerate(recs):
        if not isinstance(rec, Mapping):
            raise SchemaError(
                f"{file} record {start_index + i}: expected a JSON object, got {type(rec).__name__}"
            )
    return pd.DataFrame(
        {
            "_raw": pd.Series(recs, dtype=object),
            "_file": pd.Series([file] * len(recs), dtype=object),
            "_index": pd.Series(range(start_index, start_index + len(recs)), dtype="int64"),
        }
    )


def _where(file: Any, index: Any) -> str:
    """Human-readable position of a record."""
    return f"{file} record {index}"


def _get(rec: Mapping[str, Any], path: Sequence[str], where: str) -> Any:
    """Value at ``path`` in nested dicts, None when absent; error if a parent is not an object."""
    cur: Any = rec
    for depth, key in enumerate(path):
        if cur is None:
            return None
        if not (type(cur) is dict or isinstance(cur, Mapping)):
            parent = ".".join(path[:depth])
            raise SchemaError(
                f"{where}: field '{parent}' should be an object, got {type(cur).__name__}"
            )
        cur = cur.get(key)
    return cur


def _text(value: Any, name: str, where: str, required: bool) -> str:
    """A string feature value; missing optional values become ``MISSING``."""
    if type(value) is str and value:
        return value
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        if required:
            raise SchemaError(f"{where}: required field '{name}' is missing or empty")
        return MISSING
    if isinstance(value, (Mapping, list)):
        raise SchemaError(f"{where}: field '{name}' should be a string, got {type(value).__name__}")
    return str(value)


def _location(parts: Sequence[Any]) -> str:
    """Join location parts (city, state, country) that are present."""
    vals = [str(p) for p in parts if p not in (None, "") and not isinstance(p, Mapping)]
    return ", ".join(vals) if vals else MISSING


def _duo_time(rec: Mapping[str, Any], where: str) -> tuple[int, bool]:
    """Event time of a Duo record (epoch ns, and whether pandas holds it in ns rather than
    us): ``timestamp`` epoch seconds, else ``isotimestamp``."""
    ts = rec.get("timestamp")
    if ts is not None and not isinstance(ts, bool):
        if type(ts) is int and 0 <= ts < _LATEST_S:  # the common case: whole seconds
            return ts * 1_000_000_000, False
        try:
            secs = float(ts)
        except (TypeError, ValueError):
            raise SchemaError(
                f"{where}: field 'timestamp' should be epoch seconds, got {ts!r}"
            ) from None
        if not math.isfinite(secs) or secs < 0:
            raise SchemaError(f"{where}: field 'timestamp' is not a valid epoch time: {ts!r}")
        if secs > _MAX_EPOCH_S:
            raise SchemaError(
                f"{where}: field 'timestamp' = {ts!r} looks like milliseconds; "
                "Duo writes epoch seconds"
            )
        if secs >= _LATEST_S:
            raise SchemaError(
                f"{where}: field 'timestamp' = {ts!r} is after 2262-04-11, the latest time "
                "a nanosecond timestamp holds"
            )
        base = int(secs)  # as pd.Timestamp(secs, unit="s"): whole seconds + rounded fraction
        return base * 1_000_000_000 + int(round(secs - base, 9) * 1e9), True
    iso = rec.get("isotimestamp")
    if iso is None:
        raise SchemaError(f"{where}: required field 'timestamp' (or 'isotimestamp') is missing")
    return _iso(iso, "isotimestamp", where)


# ISO 8601 times datetime.fromisoformat reads as pandas does (at most microseconds)
_SIMPLE_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})?")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def _iso(value: Any, name: str, where: str) -> tuple[int, bool]:
    """Parse an ISO 8601 time into epoch ns (UTC; naive times are taken as UTC), and whether
    pandas holds it in ns (finer than microseconds) rather than us."""
    if not isinstance(value, str) or not value:
        raise SchemaError(f"{where}: field '{name}' should be an ISO 8601 string, got {value!r}")
    if _SIMPLE_ISO.fullmatch(value):
        try:
            d = datetime.fromisoformat(value)
        except ValueError:
            d = None
        if d is not None:
            d = d.replace(tzinfo=UTC) if d.tzinfo is None else d
            ns = ((d - _EPOCH) // _US) * 1000
            if _EARLIEST_NS <= ns <= _LATEST_NS:
                return ns, False
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise SchemaError(f"{where}: field '{name}' is not an ISO 8601 time: {value!r}") from exc
    if ts is pd.NaT:
        raise SchemaError(f"{where}: field '{name}' is not an ISO 8601 time: {value!r}")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    if not _EARLIEST <= ts <= _LATEST:
        raise SchemaError(
            f"{where}: field '{name}' = {value!r} is outside 1677-09-22..2262-04-11, the times "
            "a nanosecond timestamp holds"
        )
    return int(ts.as_unit("ns").value), ts.unit == "ns"


def _duo_row(rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Extract one Duo event's columns."""
    row: dict[str, Any] = {"timestamp": _duo_time(rec, where)}
    for col, path, required in _DUO_FIELDS:
        row[col] = _text(_get(rec, path, where), ".".join(path), where, required)
    result = rec.get("result")
    if not isinstance(result, str) or result.lower() not in DUO_RESULTS:
        raise SchemaError(
            f"{where}: field 'result' should be one of {sorted(DUO_RESULTS)}, got {result!r}"
        )
    row["result"] = result.lower() == "success"
    loc = _get(rec, ("access_device", "location"), where) or {}
    if not isinstance(loc, Mapping):
        raise SchemaError(f"{where}: field 'access_device.location' should be an object")
    row["location"] = _location([loc.get("city"), loc.get("state"), loc.get("country")])
    row["country"] = _text(loc.get("country"), "access_device.location.country", where, False)
    row["application"] = _text(
        _get(rec, ("application", "name"), where), "application.name", where, False
    )
    row["failed"] = not row["result"]
    return row


def _azure_row(rec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Extract one Azure AD sign-in event's columns."""
    props = rec.get("properties")
    if not isinstance(props, Mapping):
        raise SchemaError(f"{where}: required field 'properties' is missing or not an object")
    time = rec.get("time", props.get("createdDateTime"))
    if time is None:
        raise SchemaError(f"{where}: required field 'time' is missing")
    row: dict[str, Any] = {"timestamp": _iso(time, "time", where)}
    for col, path, required in _AZURE_FIELDS:
        row[col] = _text(_get(rec, path, where), ".".join(path), where, required)
    loc = _get(rec, ("properties", "location"), where) or {}
    if not isinstance(loc, Mapping):
        raise SchemaError(f"{where}: field 'properties.location' should be an object")
    row["location"] = _location([loc.get("city"), loc.get("countryOrRegion")])
    row["country"] = _text(
        loc.get("countryOrRegion"), "properties.location.countryOrRegion", where, False
    )
    row["failed"] = _azure_failed(props, row["statusfailureReason"])
    return row


def _azure_failed(props: Mapping[str, Any], reason: str) -> bool:
    """A sign-in failed: ``status.errorCode`` is not 0, else a failure reason is given."""
    status = props.get("status")
    code = status.get("errorCode") if isinstance(status, Mapping) else None
    if code is not None and not isinstance(code, bool):
        try:
            return int(code) != 0
        except (TypeError, ValueError):
            pass
    return reason not in (MISSING, AZURE_SUCCESS_REASON)


_EXTRACT = {"duo": _duo_row, "azure": _azure_row}


@dataclass
class Events:
    """Records of one source as columns, in input order (``extract_columns``): ``ns`` the event
    times (epoch ns, UTC), ``columns`` every ``extract`` column but the time (lists), and
    ``event_ids`` (``secml.store.event_id`` of each raw record)."""

    source: str
    ns: np.ndarray
    columns: dict[str, list[Any]]
    event_ids: list[str]
    unit: str = "us"  # the time column's unit, as pandas infers it from the records

    def __len__(self) -> int:
        """Number of events."""
        return len(self.ns)


def extract_columns(
    records: Sequence[Any],
    source: str,
    files: Sequence[Any] | None = None,
    indexes: Sequence[Any] | None = None,
    event_ids: Sequence[str] | None = None,
) -> Events:
    """Every record's columns, checked (``SchemaError`` names the file, record and field).

    The one extraction behind ``extract`` (training, batch) and the gateway: no frame, times
    parsed to epoch ns. ``files``/``indexes`` say where each record came from (``<records>``
    and its position when None); ``event_ids`` are computed when not given.
    """
    check_source(source)
    fn = _EXTRACT[source]
    n = len(records)
    files = ["<records>"] * n if files is None else files
    indexes = range(n) if indexes is None else indexes
    names = _columns(source)[1:]
    rows, ns, fine = [], np.zeros(n, dtype=np.int64), False
    for k, (rec, f, i) in enumerate(zip(records, files, indexes, strict=True)):
        if not isinstance(rec, Mapping):
            raise SchemaError(f"{_where(f, i)}: expected a JSON object, got {type(rec).__name__}")
        row = fn(rec, _where(f, i))
        ns[k], row_fine = row.pop("timestamp")
        fine = fine or row_fine
        rows.append(row)
    columns = {c: [r[c] for r in rows] for c in names}
    ids = [_event_id(r) for r in records] if event_ids is None else list(event_ids)
    return Events(source, ns, columns, ids, "ns" if fine else "us")


def extract(df_raw: pd.DataFrame, source: str) -> pd.DataFrame:
    """Per-record columns (no derived features) in input order; raw columns kept."""
    check_source(source)
    if "_raw" not in df_raw.columns:
        raise SchemaError(
            "raw frame has no '_raw' column; build it with loader.load_records or "
            "schema.frame_from_records"
        )
    files = df_raw["_file"].tolist() if "_file" in df_raw.columns else None
    idxs = df_raw["_index"].tolist() if "_index" in df_raw.columns else None
    ev = extract_columns(df_raw["_raw"].tolist(), source, files, idxs)
    times = pd.to_datetime(ev.ns, utc=True).as_unit(ev.unit)
    out = pd.DataFrame({"timestamp": times, **ev.columns}, columns=_columns(source))
    out["event_id"] = pd.Series(ev.event_ids, dtype=object)
    for col in RAW_COLUMNS:
        out[col] = df_raw[col].to_numpy() if col in df_raw.columns else None
    if "_file" not in df_raw.columns:
        out["_file"] = "<records>"
    if "_index" not in df_raw.columns:
        out["_index"] = range(len(out))
    return out


def _columns(source: str) -> list[str]:
    """Columns produced by ``extract`` before derived features."""
    base = ["timestamp"] + [c for c, _, _ in (_DUO_FIELDS if source == "duo" else _AZURE_FIELDS)]
    if source == "duo":
        return [*base, "result", "location", "country", "application", "failed"]
    return [*base, "location", "country", "failed"]


def derive_features(
    df: pd.DataFrame, source: str, states: MutableMapping[str, UserState] | None = None
) -> pd.DataFrame:
    """Sort by time and compute the per-user features from ``states`` (fresh when None).

    Morpheus's per-day ``logcount``, ``locincrement`` (and ``appincrement``) and the history
    features of ``secml.dfp.history`` all come from one state per user, updated in place, so
    an event scores the same alone (with the stored state) or inside the day's batch.
    """
    check_source(source)
    keys = [c for c in ("timestamp", "username", "event_id") if c in df.columns]
    out = df.sort_values(keys, kind="stable").reset_index(drop=True)
    feats = featurize(out, source, states)
    for col in feats.columns:
        if col == "appincrement" and source != "azure":
            continue
        out[col] = feats[col].to_numpy()
    return out


def process(
    df_raw: pd.DataFrame, source: str, states: MutableMapping[str, UserState] | None = None
) -> pd.DataFrame:
    """Raw frame -> events with ``username``, ``timestamp``, features, ``event_id`` and raw cols.

    ``states`` (user -> ``history.UserState``) is what each user did before this frame; it is
    updated in place. None starts every user with no history.
    """
    df = derive_features(extract(df_raw, source), source, states)
    spec = FEATURES[source]
    for col in spec.categorical:
        df[col] = df[col].astype(object)
    for col in spec.binary:
        df[col] = df[col].astype(bool)
    for col in spec.numeric:
        df[col] = df[col].astype("int64" if col in COUNT_FEATURES else "float64")
    lead = ["username", "timestamp", *spec.all, "location", "event_id"]
    rest = [c for c in df.columns if c not in lead]
    return df[lead + rest]


def process_records(
    records: Iterable[Mapping[str, Any]],
    source: str,
    states: MutableMapping[str, UserState] | None = None,
) -> pd.DataFrame:
    """Shortcut: raw record dicts -> processed events (see ``process``)."""
    return process(frame_from_records(records), source, states)
