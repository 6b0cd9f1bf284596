"""Code tests for the 18 ABP features: parsing, units, N/A handling, errors that name the field."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secml.abp.features import (
    DERIVED,
    DERIVED_PREFIX,
    FEATURES,
    MODEL_FEATURES,
    N_FEATURES,
    UNITS,
    FeatureError,
    derive,
    flatten,
    parse_record,
    parse_value,
    to_matrix,
)

G = "nvidia_smi_log.gpu."


def test_the_18_morpheus_features_in_order() -> None:
    assert N_FEATURES == 18
    assert FEATURES[0] == G + "fb_memory_usage.used"
    assert FEATURES[7] == G + "power_readings.power_draw"
    assert FEATURES[-1] == G + "max_clocks.mem_clock"
    assert len(set(FEATURES)) == 18
    assert dict(zip(FEATURES, UNITS, strict=True))[G + "temperature.gpu_temp"] == "C"


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [("61.77 W", "W", 61.77), ("3909 MiB", "MiB", 3909), ("100 %", "%", 100),
     ("1530 MHz", "MHz", 1530), ("45 C", "C", 45), (" 7 % ", "%", 7),
     ("12", "MiB", 12), (5, "%", 5.0), (2.5, "W", 2.5)],
)  # fmt: skip
def test_parse_value_reads_the_number(value: object, unit: str, expected: float) -> None:
    assert parse_value(value, "f", unit) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value", ["N/A", "[N/A]", "Not Supported", "[Not Supported]", "", "  ", None, "Unknown Error"]
)
def test_missing_values_become_nan(value: object) -> None:
    assert math.isnan(parse_value(value, "f", "W"))


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("61 MiB", "unit 'MiB', expected 'W'"), ("abc W", "is not a number"), (True, "boolean"),
     ({"a": 1}, "has type dict"), ("inf W", "not finite")],
)  # fmt: skip
def test_bad_values_name_the_field(value: object, fragment: str) -> None:
    with pytest.raises(FeatureError) as exc:
        parse_value(value, G + "power_readings.power_draw", "W")
    assert fragment in str(exc.value)
    assert "power_readings.power_draw" in str(exc.value)


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False), st.sampled_from(UNITS))
def test_round_trip_of_printed_numbers(x: float, unit: str) -> None:
    assert parse_value(f"{x:.2f} {unit}", "f", unit) == pytest.approx(round(x, 2), abs=1e-9)


def test_parse_record_missing_keys_are_nan_and_error_names_record(fleet) -> None:
    rec = dict(fleet.records[0])
    del rec[G + "clocks.mem_clock"]
    row = parse_record(rec)
    assert math.isnan(row[FEATURES.index(G + "clocks.mem_clock")])
    assert not math.isnan(row[0])
    with pytest.raises(FeatureError, match=r"record 4: .*none of the 18 feature fields"):
        parse_record({"foo": "1 W"}, index=4)
    with pytest.raises(FeatureError, match=r"record 9: expected a JSON object"):
        parse_record(["1 W"], index=9)
    bad = dict(fleet.records[0]) | {G + "utilization.gpu_util": "99 MHz"}
    with pytest.raises(FeatureError) as exc:
        to_matrix([fleet.records[0], bad], start_index=10)
    assert exc.value.index == 11 and exc.value.field == G + "utilization.gpu_util"


def test_newer_driver_power_key_is_used() -> None:
    rec = {G + "gpu_power_readings.power_draw": "120.5 W", G + "utilization.gpu_util": "50 %"}
    row = parse_record(rec)
    assert row[FEATURES.index(G + "power_readings.power_draw")] == pytest.approx(120.5)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"power_readings.power_draw": "N/A", "gpu_power_readings.instant_power_draw": "7 W"}, 7),
        ({"gpu_power_readings.power_draw": " N/A ", "gpu_power_readings.average_power_draw": "8 W",
          "gpu_power_readings.instant_power_draw": "9 W"}, 9),
        ({"power_readings.power_draw": "6 W", "gpu_power_readings.instant_power_draw": "7 W"}, 6),
        ({"gpu_power_readings.power_draw": "N/A", "gpu_power_readings.instant_power_draw": "N/A"},
         None),
    ],
)  # fmt: skip
def test_power_falls_back_past_na_to_the_first_reading(fields: dict, expected: float | None):
    rec = {G + k: v for k, v in fields.items()} | {G + "utilization.gpu_util": "1 %"}
    value = parse_record(rec)[FEATURES.index(G + "power_readings.power_draw")]
    assert math.isnan(value) if expected is None else value == pytest.approx(expected)


def test_to_matrix_matches_parse_record(fleet) -> None:
    X = to_matrix(fleet.records[:50])
    assert X.shape == (50, 18) and X.dtype == np.float32
    np.testing.assert_array_equal(X[3], parse_record(fleet.records[3]))
    assert to_matrix([]).shape == (0, 18)


def test_flatten_nested() -> None:
    nested = {"nvidia_smi_log": {"gpu": {"utilization": {"gpu_util": "5 %"}}, "timestamp": "x"}}
    flat = flatten(nested)
    assert flat == {G + "utilization.gpu_util": "5 %", "nvidia_smi_log.timestamp": "x"}
    assert parse_record(flat)[FEATURES.index(G + "utilization.gpu_util")] == 5


# ---------------------------------------------------------------- derived features


def _raw(**values: float) -> np.ndarray:
    """One (1, 18) row: the named raw features set (suffix with '.' as '__'), the rest NaN."""
    row = np.full((1, N_FEATURES), np.nan, dtype=np.float32)
    for key, value in values.items():
        row[0, FEATURES.index(G + key.replace("__", "."))] = value
    return row


def _d(X: np.ndarray, name: str) -> np.ndarray:
    return derive(X)[:, N_FEATURES + DERIVED.index(DERIVED_PREFIX + name)]


def test_derived_names_are_new_and_the_raw_columns_pass_through() -> None:
    assert DERIVED and all(n.startswith(DERIVED_PREFIX) for n in DERIVED)
    assert len(set(DERIVED)) == len(DERIVED) and not set(DERIVED) & set(FEATURES)
    assert MODEL_FEATURES == FEATURES + DERIVED
    X = np.arange(2 * N_FEATURES, dtype=np.float32).reshape(2, N_FEATURES) + 1
    out = derive(X)
    assert out.shape == (2, N_FEATURES + len(DERIVED)) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :N_FEATURES], X)
    sub = derive(X, DERIVED[2:0:-1])  # a subset, in the caller's order
    np.testing.assert_array_equal(sub[:, N_FEATURES:], out[:, [N_FEATURES + 2, N_FEATURES + 1]])
    assert derive(np.empty((0, N_FEATURES))).shape == (0, N_FEATURES + len(DERIVED))


def test_derived_ratios_on_a_hand_built_row() -> None:
    X = _raw(
        clocks__graphics_clock=900, max_clocks__graphics_clock=1800,
        clocks__sm_clock=450, max_clocks__sm_clock=1800,
        clocks__mem_clock=5000, max_clocks__mem_clock=5000,
        applications_clocks__graphics_clock=1500, applications_clocks__mem_clock=4000,
        fb_memory_usage__used=3000, fb_memory_usage__free=1000,
        temperature__gpu_temp=45, temperature__gpu_temp_slow_threshold=90,
        utilization__gpu_util=50, utilization__memory_util=100,
    )  # fmt: skip
    expected = {
        "graphics_clock_of_max": 0.5, "sm_clock_of_max": 0.25, "mem_clock_of_max": 1.0,
        "graphics_clock_of_app": 0.6, "mem_clock_of_app": 1.25, "fb_used_of_total": 0.75,
        "temp_of_slowdown": 0.5, "mem_util_per_gpu_util": 2.0,
        # locks: busy 50% with the core at a quarter of its maximum, memory at its maximum
        "busy_sm_clock_deficit": 0.375, "busy_mem_clock_deficit": 0.0,
        "membus_sm_clock_deficit": 0.75, "cool_busy_sm_clock_deficit": 0.1875,
    }  # fmt: skip
    assert set(expected) == {n.removeprefix(DERIVED_PREFIX) for n in DERIVED}
    for name, value in expected.items():
        assert _d(X, name)[0] == pytest.approx(value), name


def test_derived_nan_in_nan_out_and_zero_divisors_give_nan() -> None:
    base = dict(
        clocks__graphics_clock=900, max_clocks__graphics_clock=1800, clocks__mem_clock=5000,
        max_clocks__mem_clock=5000, fb_memory_usage__used=0, fb_memory_usage__free=0,
        utilization__gpu_util=0, utilization__memory_util=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division or invalid-value warnings
        X = np.vstack([
            _raw(**base),
            _raw(**base | {"max_clocks__graphics_clock": 0, "clocks__mem_clock": np.nan}),
        ])  # fmt: skip
        out = derive(X)
    assert math.isnan(_d(X, "fb_used_of_total")[0])  # used + free == 0
    assert math.isnan(_d(X, "mem_util_per_gpu_util")[0])  # idle: gpu_util == 0
    assert math.isnan(_d(X, "graphics_clock_of_app")[0])  # N/A application clocks (GeForce)
    assert math.isnan(_d(X, "temp_of_slowdown")[0])  # missing temperature
    assert _d(X, "graphics_clock_of_max")[0] == pytest.approx(0.5)
    assert math.isnan(_d(X, "graphics_clock_of_max")[1])  # zero divisor
    assert math.isnan(_d(X, "mem_clock_of_max")[1])  # NaN numerator
    assert not np.isinf(out).any()


def test_derive_checks_shape_and_names() -> None:
    with pytest.raises(ValueError, match=r"\(n, 18\)"):
        derive(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="unknown derived feature"):
        derive(np.zeros((2, N_FEATURES)), ["derived.nope"])


def test_derived_features_are_scale_free() -> None:
    """The same workload on a board with every limit doubled gives the same ratios."""
    small = _raw(
        clocks__graphics_clock=900, max_clocks__graphics_clock=1800, clocks__sm_clock=900,
        max_clocks__sm_clock=1800, clocks__mem_clock=5000, max_clocks__mem_clock=5000,
        applications_clocks__graphics_clock=1500, applications_clocks__mem_clock=5000,
        fb_memory_usage__used=3000, fb_memory_usage__free=1000,
        temperature__gpu_temp=60, temperature__gpu_temp_slow_threshold=90,
        utilization__gpu_util=100, utilization__memory_util=90,
    )  # fmt: skip
    big = small.copy()
    for suffix in ("clocks.", "max_clocks.", "applications_clocks.", "fb_memory_usage."):
        for j, name in enumerate(FEATURES):
            if name.startswith(G + suffix):
                big[0, j] *= 2
    np.testing.assert_allclose(derive(big)[:, N_FEATURES:], derive(small)[:, N_FEATURES:])
