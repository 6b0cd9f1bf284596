"""The 18 Morpheus ABP features, read from nvidia-smi strings with explicit N/A handling.

Values arrive as nvidia-smi prints them ("61.77 W", "3909 MiB", "100 %", "N/A"). The number
is read from the string and its unit checked; "N/A", "Not Supported" and friends, ``None``
and a missing key become NaN, which XGBoost treats as missing. Anything else is an error
that names the record and the field. Pure Python + numpy (works with numpy 1.26 and 2.x), so
the Triton python-backend model can import it.

The one featurizer of every ABP path (training, the batch CLI, the gateway): records are read
column by column (each distinct string of a column is parsed once), timestamps in bulk
(``epoch_seconds``), JSON lines decoded with orjson (``decode``); no pandas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:  # orjson is not in the Triton model environment
    from orjson import loads as _loads
except ImportError:  # pragma: no cover - exercised only in .venv-triton
    from json import loads as _loads

PREFIX = "nvidia_smi_log.gpu."
FEATURE_SUFFIXES: tuple[str, ...] = (
    "fb_memory_usage.used",
    "fb_memory_usage.free",
    "utilization.gpu_util",
    "utilization.memory_util",
    "temperature.gpu_temp",
    "temperature.gpu_temp_max_threshold",
    "temperature.gpu_temp_slow_threshold",
    "power_readings.power_draw",
    "clocks.graphics_clock",
    "clocks.sm_clock",
    "clocks.mem_clock",
    "applications_clocks.graphics_clock",
    "applications_clocks.mem_clock",
    "default_applications_clocks.graphics_clock",
    "default_applications_clocks.mem_clock",
    "max_clocks.graphics_clock",
    "max_clocks.sm_clock",
    "max_clocks.mem_clock",
)
FEATURES: tuple[str, ...] = tuple(PREFIX + s for s in FEATURE_SUFFIXES)
N_FEATURES = len(FEATURES)

_UNIT_BY_GROUP = {
    "fb_memory_usage": "MiB",
    "utilization": "%",
    "temperature": "C",
    "power_readings": "W",
    "clocks": "MHz",
    "applications_clocks": "MHz",
    "default_applications_clocks": "MHz",
    "max_clocks": "MHz",
}
UNITS: tuple[str, ...] = tuple(_UNIT_BY_GROUP[s.split(".")[0]] for s in FEATURE_SUFFIXES)

# Newer drivers (>= 530) moved power_draw under gpu_power_readings (and later split it).
ALIASES: dict[str, tuple[str, ...]] = {
    PREFIX + "power_readings.power_draw": (
        PREFIX + "gpu_power_readings.power_draw",
        PREFIX + "gpu_power_readings.instant_power_draw",
        PREFIX + "gpu_power_readings.average_power_draw",
    ),
}
NA_STRINGS = frozenset(
    {
        "",
        "n/a",
        "[n/a]",
        "not supported",
        "[not supported]",
        "unknown error",
        "[unknown error]",
        "not available",
        "[not available]",
        "requested functionality has been deprecated",
    }
)
_MISSING = object()
_cache: list[dict[str, float]] = [{} for _ in FEATURES]
_CACHE_LIMIT = 50_000


class FeatureError(ValueError):
    """A record whose feature values cannot be read; names the record and the field."""

    def __init__(self, message: str, *, index: int | None = None, field: str | None = None):
        where = f"record {index}" if index is not None else "value"
        super().__init__(f"{where}: {message}")
        self.detail = message
        self.index = index
        self.field = field


def _is_na(value: Any) -> bool:
    """True for None and the strings nvidia-smi prints for a missing reading."""
    return value is None or (isinstance(value, str) and value.strip().lower() in NA_STRINGS)


def parse_value(value: Any, field: str, unit: str) -> float:
    """Read one nvidia-smi value ("61.77 W") as a float in ``unit``; N/A and None give NaN."""
    if _is_na(value):
        return math.nan
    if isinstance(value, bool):
        raise FeatureError(
            f"field {field!r} is a boolean ({value!r}), expected '<number> {unit}'", field=field
        )
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        raise FeatureError(
            f"field {field!r} has type {type(value).__name__}, expected a string like '12 {unit}'",
            field=field,
        )
    number, _, got = value.strip().partition(" ")
    got = got.strip()
    if got and got != unit:
        raise FeatureError(
            f"field {field!r} = {value!r}: unit {got!r}, expected {unit!r}", field=field
        )
    try:
        out = float(number)
    except ValueError:
        raise FeatureError(
            f"field {field!r} = {value!r} is not a number in {unit}", field=field
        ) from None
    if not math.isfinite(out):
        raise FeatureError(f"field {field!r} = {value!r} is not finite", field=field)
    return out


def _parse_cached(value: Any, j: int) -> float:
    """``parse_value`` of column ``j`` with a per-column cache of parsed strings."""
    if type(value) is str:
        cache = _cache[j]
        hit = cache.get(value)
        if hit is not None:
            return hit
        parsed = parse_value(value, FEATURES[j], UNITS[j])
        if len(cache) > _CACHE_LIMIT:
            cache.clear()
        cache[value] = parsed
        return parsed
    return parse_value(value, FEATURES[j], UNITS[j])


def _alias_pick(found: Iterable[Any], value: Any) -> Any:
    """Newer drivers print power_draw N/A and the reading under instant_power_draw: the first
    alias key with a reading wins; an all-N/A set stays N/A (present, NaN)."""
    present = [v for v in found if v is not _MISSING]
    return next((v for v in present if not _is_na(v)), present[0] if present else value)


@dataclass
class Extracted:
    """The features of a batch of records, read column by column.

    ``X`` holds NaN in the rows of bad records; ``errors`` names each bad record once (its
    first bad field in feature order), in record order; ``ok`` marks the good rows.
    """

    X: np.ndarray
    errors: list[FeatureError]
    ok: np.ndarray


def _column_values(
    col: list[Any], j: int
) -> tuple[np.ndarray, np.ndarray, dict[int, FeatureError]]:
    """Parse a list of raw values of column ``j``: (values, present mask, errors by position)."""
    out = np.empty(len(col), dtype=np.float32)
    present = np.ones(len(col), dtype=bool)
    errors: dict[int, FeatureError] = {}
    for i, v in enumerate(col):
        if v is _MISSING:
            out[i], present[i] = math.nan, False
            continue
        try:
            out[i] = _parse_cached(v, j)
        except FeatureError as exc:
            out[i] = math.nan
            errors[i] = exc
    return out, present, errors


def _column(
    columns: Mapping[str, Sequence[Any]], n: int, j: int
) -> tuple[np.ndarray, np.ndarray | None, dict[int, FeatureError]]:
    """Column ``j``: (values, present mask or None when all present, row errors)."""
    name = FEATURES[j]
    col = list(columns.get(name) or [_MISSING] * n)
    aliases = [columns.get(a) for a in ALIASES.get(name, ())]
    aliases = [a for a in aliases if a is not None]

    def alias_of(i: int, v: Any) -> Any:
        return _alias_pick([a[i] for a in aliases], v) if aliases else v

    n = len(col)
    errors: dict[int, FeatureError] = {}
    try:
        uniq = dict.fromkeys(col)
        # True == 1 == 1.0 share a key: with numbers about, a boolean must not hide behind one
        numbers = any(type(v) in (bool, int, float) for v in uniq)
        fast = not (numbers and any(type(v) is bool for v in col))
    except TypeError:  # a dict or list value: unhashable
        fast = False
    if not fast:  # rare: per value, no lookup table
        if name in ALIASES:
            col = [alias_of(i, v) if v is _MISSING or _is_na(v) else v for i, v in enumerate(col)]
        return _column_values(col, j)
    table: dict[Any, float] = {}
    bad: dict[Any, FeatureError] = {}
    for v in uniq:
        if v is _MISSING:
            table[v] = math.nan
            continue
        try:
            table[v] = _parse_cached(v, j)
        except FeatureError as exc:
            table[v] = math.nan
            bad[v] = exc
    vals = np.fromiter(map(table.__getitem__, col), dtype=np.float32, count=n)
    present = None
    if _MISSING in uniq:
        present = np.fromiter((v is not _MISSING for v in col), dtype=bool, count=n)
    if name in ALIASES:
        na = {v for v in uniq if v is _MISSING or _is_na(v)}
        rows = [i for i, v in enumerate(col) if v in na] if na and aliases else []
        if rows:
            sub = [alias_of(i, col[i]) for i in rows]
            sub_vals, sub_present, sub_errors = _column_values(sub, j)
            vals[rows] = sub_vals
            if present is None:
                present = np.ones(n, dtype=bool)
            present[rows] = sub_present
            for k, exc in sub_errors.items():
                errors[rows[k]] = exc
    if bad:
        for i, v in enumerate(col):
            if v in bad:
                errors.setdefault(i, bad[v])
    return vals, present, errors


COLUMN_KEYS: tuple[str, ...] = FEATURES + tuple(a for names in ALIASES.values() for a in names)
MISSING = _MISSING  # the value of a key a record does not have (for ``extract_columns``)


def extract(
    records: Iterable[Any], start_index: int | None = 0, max_errors: int | None = None
) -> Extracted:
    """Read the 18 features of ``records`` column by column (one table lookup per distinct
    value); bad records are reported, not raised. Errors carry ``start_index + position``."""
    recs = records if isinstance(records, list) else list(records)
    first: dict[int, FeatureError] = {}
    not_maps = [i for i, r in enumerate(recs) if not isinstance(r, Mapping)]
    if not_maps:
        bad_type = set(not_maps)
        for i in not_maps:
            first[i] = FeatureError(
                f"expected a JSON object with nvidia_smi_log.* keys, got {type(recs[i]).__name__}",
                index=None if start_index is None else start_index + i,
            )
        recs = [{} if i in bad_type else r for i, r in enumerate(recs)]
    columns = {k: [r.get(k, _MISSING) for r in recs] for k in COLUMN_KEYS}
    return extract_columns(columns, len(recs), start_index, max_errors, first)


def extract_columns(
    columns: Mapping[str, Sequence[Any]],
    n: int,
    start_index: int | None = 0,
    max_errors: int | None = None,
    first: dict[int, FeatureError] | None = None,
) -> Extracted:
    """``extract`` from columns already split out: ``columns[key][i]`` is record i's value of
    ``key`` (one of ``COLUMN_KEYS``; ``MISSING`` where the record lacks it, a key absent
    from ``columns`` is missing everywhere). Decoders that read only these keys use it."""
    first = dict(first or {})
    X = np.empty((n, N_FEATURES), dtype=np.float32)

    def at(i: int) -> int | None:
        return None if start_index is None else start_index + i

    present = np.zeros(n, dtype=np.int16)
    for j in range(N_FEATURES):
        vals, pres, errs = _column(columns, n, j)
        X[:, j] = vals
        present += 1 if pres is None else pres
        for i, exc in errs.items():
            if i not in first:
                first[i] = FeatureError(exc.detail, index=at(i), field=FEATURES[j])
    for i in np.flatnonzero(present == 0).tolist():
        if i not in first:
            first[i] = FeatureError(
                f"none of the {N_FEATURES} feature fields ({PREFIX}fb_memory_usage.used, ...) is "
                "present; is this a flattened nvidia-smi record?",
                index=at(i),
            )
    ok = np.ones(n, dtype=bool)
    errors = []
    for i in sorted(first):
        ok[i] = False
        X[i] = np.nan
        if max_errors is None or len(errors) < max_errors:
            errors.append(first[i])
    return Extracted(X, errors, ok)


def parse_record(record: Any, index: int | None = None) -> np.ndarray:
    """The 18 features of one flattened nvidia-smi record as a float32 vector (NaN = missing)."""
    got = extract([record], start_index=index)
    if got.errors:
        raise got.errors[0]
    return got.X[0]


def to_matrix(records: Iterable[Any], start_index: int = 0) -> np.ndarray:
    """Stack the features of ``records`` into an (n, 18) float32 matrix; errors name the record."""
    got = extract(records, start_index=start_index, max_errors=1)
    if got.errors:
        raise got.errors[0]
    return got.X


# ---------------------------------------------------------------- decoding and timestamps


def decode(lines: Sequence[bytes | str]) -> list[dict[str, Any] | ValueError | None]:
    """Each JSON line as a dict, the ValueError saying why it is not one, or None when blank."""
    out: list[dict[str, Any] | ValueError | None] = []
    for line in lines:
        if not line.strip():
            out.append(None)
            continue
        try:
            rec = _loads(line)
        except ValueError as exc:
            msg, col = getattr(exc, "msg", str(exc)), getattr(exc, "colno", None)
            out.append(ValueError(f"invalid JSON ({msg}{f' at column {col}' if col else ''})"))
            continue
        if not isinstance(rec, dict):
            out.append(ValueError(f"expected a JSON object, got {type(rec).__name__}"))
            continue
        out.append(rec)
    return out


_MONTHS = {
    m: f"{i:02d}"
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}


def _iso_of_nvsmi(value: str) -> str | None:
    """'Mon Nov 02 10:00:00 2026' as '2026-11-02T10:00:00' (string slicing; None if not that)."""
    v = value.strip()
    if len(v) != 24 or v[3] != " " or v[7] != " " or v[10] != " " or v[19] != " ":
        return None
    month = _MONTHS.get(v[4:7])
    if month is None:
        return None
    return f"{v[20:24]}-{month}-{v[8:10]}T{v[11:19]}"


def _epoch_slow(value: Any) -> float:
    """Epoch seconds of an ISO 8601 time (naive = UTC), NaN when unreadable."""
    from datetime import UTC, datetime

    if not isinstance(value, str):
        return math.nan
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return math.nan
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def epoch_seconds(values: Sequence[Any]) -> np.ndarray:
    """Epoch seconds (float64, NaN when unreadable) of nvidia-smi timestamps, parsed in bulk.

    nvidia-smi's 'Mon Nov 02 10:00:00 2026' (taken as UTC) is rewritten to ISO by slicing and
    converted by numpy in one call; anything else goes through ``datetime.fromisoformat``.
    """
    n = len(values)
    iso = [_iso_of_nvsmi(v) if type(v) is str else None for v in values]
    out = np.full(n, np.nan, dtype=np.float64)
    fast = [i for i, s in enumerate(iso) if s is not None]
    if fast:
        try:
            stamps = np.array([iso[i] for i in fast], dtype="datetime64[s]")
            out[fast] = stamps.astype(np.int64).astype(np.float64)
        except ValueError:  # a day like 'Feb 31': element by element
            for i in fast:
                try:
                    out[i] = float(np.datetime64(iso[i], "s").astype(np.int64))
                except ValueError:
                    out[i] = math.nan
    for i in (i for i, s in enumerate(iso) if s is None):
        out[i] = _epoch_slow(values[i])
    return out


def iso_utc(epochs: np.ndarray) -> list[str | None]:
    """ISO 8601 UTC strings ('2026-11-02T10:00:00+00:00') of epoch seconds; None for NaN."""
    epochs = np.asarray(epochs, dtype=np.float64)
    ok = np.isfinite(epochs)
    out: list[str | None] = [None] * len(epochs)
    if ok.any():
        whole = np.floor(epochs[ok])
        texts = np.datetime_as_string(whole.astype(np.int64).astype("datetime64[s]"), unit="s")
        frac = epochs[ok] - whole
        for i, t, f in zip(np.flatnonzero(ok).tolist(), texts.tolist(), frac.tolist(), strict=True):
            out[i] = f"{t}.{round(f * 1e6):06d}+00:00" if f else f"{t}+00:00"
    return out


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts into dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``)."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- derived, scale-free features
#
# The 18 raw values are absolute (MiB, MHz, W, C), and their ranges differ between GPU models:
# 1,500 MHz is full boost on one board and two thirds of it on another. Each derived feature
# is a ratio of raw columns that means the same on every board: how far a clock is pushed
# towards its limit, how full the frame buffer is, how close the core is to thermal slowdown.
# They are computed from the 18 columns only, so records and the input contract stay as they
# are. A missing (NaN) or zero denominator, or a missing numerator, gives NaN (missing).

DERIVED_PREFIX = "derived."
_F = {s: j for j, s in enumerate(FEATURE_SUFFIXES)}
# name -> (numerator, denominator) as raw-feature suffixes; a tuple is their sum.
_RATIOS: dict[str, tuple[str | tuple[str, ...], str | tuple[str, ...]]] = {
    # clock as a share of the board's maximum (power/thermal headroom the workload uses)
    "graphics_clock_of_max": ("clocks.graphics_clock", "max_clocks.graphics_clock"),
    "sm_clock_of_max": ("clocks.sm_clock", "max_clocks.sm_clock"),
    "mem_clock_of_max": ("clocks.mem_clock", "max_clocks.mem_clock"),
    # clock against the configured application clocks (N/A on GeForce boards -> NaN)
    "graphics_clock_of_app": ("clocks.graphics_clock", "applications_clocks.graphics_clock"),
    "mem_clock_of_app": ("clocks.mem_clock", "applications_clocks.mem_clock"),
    # frame-buffer occupancy; used + free is the usable memory of the board
    "fb_used_of_total": (
        "fb_memory_usage.used",
        ("fb_memory_usage.used", "fb_memory_usage.free"),
    ),
    # core temperature against the board's slowdown threshold
    "temp_of_slowdown": ("temperature.gpu_temp", "temperature.gpu_temp_slow_threshold"),
    # memory-controller busy time per unit of SM busy time (memory-bound vs compute-bound)
    "mem_util_per_gpu_util": ("utilization.memory_util", "utilization.gpu_util"),
}
# Not here: a core-vs-memory clock balance (graphics share of max / mem share of max).
# HBM data-centre boards (V100, A100, H100) report their memory clock at its maximum even
# when idle, so an idle HBM board shows the "core low, memory full" balance of memory-hard
# mining; a model trained with it flagged idle A100/A30 boards it had not seen.
# name -> (activity, clock share, coolness?) as raw-feature suffixes: a *lock* signature.
# A board that is busy runs its core and memory at (or near) their maximum clocks unless its
# power or thermal limit holds them down; a core or memory clock held well below the maximum
# while the GPU is busy, and while it is cool, is a clock someone locked (miners lock the core
# low on memory-hard algorithms and the memory low on core-bound ones). Each is
# ``activity% / 100 * (1 - clock / max clock)``, times ``1 - temp / slowdown`` for the cool one;
# shared by the mining profiles, so a miner absent from training still lands on it (leave one
# mining profile out on the training generator, 3 seeds: held-out core-memlock recall at 0.1%
# FPR 0.24 -> 0.47).
_LOCKS: dict[str, tuple[str, str, bool]] = {
    "busy_sm_clock_deficit": ("utilization.gpu_util", "sm_clock", False),
    "busy_mem_clock_deficit": ("utilization.gpu_util", "mem_clock", False),
    "membus_sm_clock_deficit": ("utilization.memory_util", "sm_clock", False),
    "cool_busy_sm_clock_deficit": ("utilization.gpu_util", "sm_clock", True),
}
DERIVED: tuple[str, ...] = tuple(DERIVED_PREFIX + k for k in (*_RATIOS, *_LOCKS))
MODEL_FEATURES: tuple[str, ...] = FEATURES + DERIVED


def _col(X: np.ndarray, part: str | tuple[str, ...]) -> np.ndarray:
    """One raw column by suffix, or the sum of several (NaN if any is NaN)."""
    if isinstance(part, str):
        return X[:, _F[part]]
    return np.sum(X[:, [_F[p] for p in part]], axis=1)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` with NaN where either is NaN/inf or ``den`` is 0; never warns."""
    out = np.full(num.shape, np.nan, dtype=np.float32)
    ok = np.isfinite(num) & np.isfinite(den) & (den != 0)
    np.divide(num, den, out=out, where=ok)
    return out


def derive(X: np.ndarray, names: Iterable[str] = DERIVED) -> np.ndarray:
    """The (n, 18) raw matrix with the derived columns ``names`` appended, as float32.

    ``names`` defaults to all of :data:`DERIVED`; a booster trained on a subset passes its
    own list (in its order). Unknown names are an error that lists the known ones.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise ValueError(f"expected an (n, {N_FEATURES}) feature matrix, got shape {X.shape}")
    names = tuple(names)
    unknown = [n for n in names if n not in DERIVED]
    if unknown:
        raise ValueError(f"unknown derived feature(s) {unknown}; known: {', '.join(DERIVED)}")
    out = np.empty((len(X), N_FEATURES + len(names)), dtype=np.float32)
    out[:, :N_FEATURES] = X
    for j, name in enumerate(names, N_FEATURES):
        key = name.removeprefix(DERIVED_PREFIX)
        if key in _RATIOS:
            num, den = _RATIOS[key]
            out[:, j] = _ratio(_col(X, num), _col(X, den))
        else:
            out[:, j] = _lock(X, *_LOCKS[key])
    return out


def _lock(X: np.ndarray, activity: str, clock: str, cool: bool) -> np.ndarray:
    """``activity / 100 * (1 - clock / its max)`` (x ``1 - temp / slowdown`` if ``cool``)."""
    share = _ratio(_col(X, "clocks." + clock), _col(X, "max_clocks." + clock))
    out = _col(X, activity) / np.float32(100) * (1 - share)
    if cool:
        out = out * (
            1
            - _ratio(
                _col(X, "temperature.gpu_temp"), _col(X, "temperature.gpu_temp_slow_threshold")
            )
        )
    return out.astype(np.float32)


# A MIG-enabled board reads utilisation N/A, and its current clocks say nothing of its work
# (held at their maximum, busy or idle). Its rows are scored by a booster trained on every
# training row seen this way (``secml.abp.model``), so a MIG board is judged by memory, power
# and temperature learnt from the whole fleet, not from the few MIG boards it happened to hold.
BLIND_SUFFIXES: tuple[str, ...] = (
    "utilization.gpu_util",
    "utilization.memory_util",
    "clocks.graphics_clock",
    "clocks.sm_clock",
    "clocks.mem_clock",
)
_BLIND = [_F[s] for s in BLIND_SUFFIXES]


def util_blind(X: np.ndarray) -> np.ndarray:
    """The (n, 18) matrix as a MIG board reads it: utilisation and current clocks missing."""
    out = np.array(X, dtype=np.float32, copy=True)
    out[:, _BLIND] = np.nan
    return out
