"""Code tests for the 18 ABP features: parsing, units, N/A handling, errors that name the field."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from secml.abp.features import (
    FEATURES,
    N_FEATURES,
    UNITS,
    FeatureError,
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
