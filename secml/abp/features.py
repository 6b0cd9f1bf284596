"""The 18 Morpheus ABP features, read from nvidia-smi strings with explicit N/A handling.

Values arrive as nvidia-smi prints them ("61.77 W", "3909 MiB", "100 %", "N/A"). The number
is read from the string and its unit checked; "N/A", "Not Supported" and friends, ``None``
and a missing key become NaN, which XGBoost treats as missing. Anything else is an error
that names the record and the field. Pure Python + numpy (works with numpy 1.26 and 2.x), so
the Triton python-backend model can import it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

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


def parse_record(record: Any, index: int | None = None) -> np.ndarray:
    """The 18 features of one flattened nvidia-smi record as a float32 vector (NaN = missing)."""
    if not isinstance(record, Mapping):
        raise FeatureError(
            f"expected a JSON object with nvidia_smi_log.* keys, got {type(record).__name__}",
            index=index,
        )
    row = np.empty(N_FEATURES, dtype=np.float32)
    present = 0
    for j, name in enumerate(FEATURES):
        value = record.get(name, _MISSING)
        if name in ALIASES and (value is _MISSING or _is_na(value)):
            # Newer drivers print power_draw N/A and the reading under instant_power_draw:
            # the first key with a reading wins; an all-N/A set stays N/A (present, NaN).
            found = [
                v for v in (record.get(a, _MISSING) for a in ALIASES[name]) if v is not _MISSING
            ]
            value = next((v for v in found if not _is_na(v)), found[0] if found else value)
        if value is _MISSING:
            row[j] = math.nan
            continue
        present += 1
        cache = _cache[j]
        if isinstance(value, str):
            hit = cache.get(value)
            if hit is not None:
                row[j] = hit
                continue
        try:
            parsed = parse_value(value, name, UNITS[j])
        except FeatureError as exc:
            raise FeatureError(exc.detail, index=index, field=name) from None
        if isinstance(value, str):
            if len(cache) > _CACHE_LIMIT:
                cache.clear()
            cache[value] = parsed
        row[j] = parsed
    if present == 0:
        raise FeatureError(
            f"none of the {N_FEATURES} feature fields ({PREFIX}fb_memory_usage.used, ...) is "
            "present; is this a flattened nvidia-smi record?",
            index=index,
        )
    return row


def to_matrix(records: Iterable[Any], start_index: int = 0) -> np.ndarray:
    """Stack the features of ``records`` into an (n, 18) float32 matrix; errors name the record."""
    rows = [parse_record(r, start_index + i) for i, r in enumerate(records)]
    if not rows:
        return np.empty((0, N_FEATURES), dtype=np.float32)
    return np.vstack(rows)


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
DERIVED: tuple[str, ...] = tuple(DERIVED_PREFIX + k for k in _RATIOS)
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
        num, den = _RATIOS[name.removeprefix(DERIVED_PREFIX)]
        out[:, j] = _ratio(_col(X, num), _col(X, den))
    return out
