"""Data tests for the nvsmi generator: schema, units, ranges, labels kept apart, determinism."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from secml.abp.features import FEATURES, parse_record
from secml.abp.generator import (
    GPU_SPECS,
    LABEL_COLUMNS,
    MINING_PROFILES,
    POWER_NA_MODELS,
    PROFILES,
    TIMESTAMP_FORMAT,
    TIMESTAMP_KEY,
    generate,
    main,
)

G = "nvidia_smi_log.gpu."
UNIT_RE = {
    "fb_memory_usage": re.compile(r"^\d+ MiB$"),
    "utilization": re.compile(r"^\d{1,3} %$"),
    "temperature": re.compile(r"^\d+ C$"),
    "power_readings": re.compile(r"^\d+\.\d\d W$"),
    "clocks": re.compile(r"^\d+ MHz$"),
}


def _num(value: str) -> float:
    return float(value.split()[0])


# Keys a newer driver prints elsewhere or not at all (read through features.ALIASES or N/A).
MOVED = {G + "power_readings.power_draw", G + "temperature.gpu_temp_max_threshold",
         G + "temperature.gpu_temp_slow_threshold"}  # fmt: skip
POWER = re.compile(r"^\d+\.\d\d W$")


def _power(rec: dict[str, str]) -> str:
    """The power reading whichever driver layout the record has."""
    return str(parse_record(rec)[FEATURES.index(G + "power_readings.power_draw")])


def test_schema_every_record_same_keys_strings(fleet) -> None:
    keys_by_gpu: dict[str, set[str]] = {}
    for i, rec in enumerate(fleet.records):
        keys = keys_by_gpu.setdefault(rec[G + "uuid"], set(rec))
        assert set(rec) == keys, f"record {i} has different keys from its GPU's first"
        assert len(keys) >= 150
        assert all(k.startswith("nvidia_smi_log.") for k in keys)
        assert set(FEATURES) - MOVED <= keys and TIMESTAMP_KEY in keys
        assert all(isinstance(v, str) for v in rec.values()), f"record {i} has a non-string"


def test_units_as_nvidia_smi_prints_them(fleet) -> None:
    for rec in fleet.records:
        for name in FEATURES:
            value = rec.get(name, "N/A")
            if value == "N/A":
                continue
            group = name.removeprefix(G).split(".")[0]
            pattern = UNIT_RE.get(group) or UNIT_RE["clocks"]
            assert pattern.match(value), f"{name} = {value!r}"
        powers = [v for k, v in rec.items() if "power_readings." in k and k.endswith("power_draw")]
        assert powers and all(v == "N/A" or POWER.match(v) for v in powers), powers


def test_ranges_follow_the_gpu_model_limits(fleet) -> None:
    specs = {s.name: s for s in GPU_SPECS}
    for rec in fleet.records:
        spec = specs[rec[G + "product_name"]]
        used, free = _num(rec[G + "fb_memory_usage.used"]), _num(rec[G + "fb_memory_usage.free"])
        assert used + free <= spec.memory_mib
        for key in ("utilization.gpu_util", "utilization.memory_util"):
            if rec[G + key] != "N/A":
                assert 0 <= _num(rec[G + key]) <= 100
        for clock in ("graphics_clock", "sm_clock", "mem_clock"):
            if rec[G + f"clocks.{clock}"] != "N/A":
                assert _num(rec[G + f"clocks.{clock}"]) <= _num(rec[G + f"max_clocks.{clock}"])
        power = float(_power(rec))
        assert power != power or 0 < power <= spec.max_power_limit  # NaN: a dropped reading
        if rec[G + "temperature.gpu_temp"] != "N/A":
            assert 15 <= _num(rec[G + "temperature.gpu_temp"]) < spec.temp_slowdown
        if G + "temperature.gpu_temp_max_threshold" in rec:
            assert _num(rec[G + "temperature.gpu_temp_max_threshold"]) == spec.temp_shutdown


def test_fleet_mixes_driver_layouts_and_mig(tmp_path: Path) -> None:
    data, _ = generate(tmp_path, gpus=60, hours=0.1, seed=11)
    recs = [json.loads(line) for line in data.read_text().splitlines()]
    branches = {int(r["nvidia_smi_log.driver_version"].split(".")[0]) for r in recs}
    assert min(branches) < 535 and max(branches) >= 580
    legacy = [r for r in recs if G + "power_readings.power_draw" in r]
    newer = [r for r in recs if G + "gpu_power_readings.power_draw" in r]
    r580 = [r for r in recs if r["nvidia_smi_log.driver_version"].startswith("580.")]
    mig = [r for r in recs if r[G + "mig_mode.current_mig"] == "Enabled"]
    assert legacy and newer and r580 and mig
    assert all(any(k.startswith(G + "clocks_event_reasons.") for k in r) for r in newer)
    for r in r580:
        assert r[G + "gpu_power_readings.power_draw"] == "N/A"
        assert G + "temperature.gpu_temp_slow_threshold" not in r
        assert G + "temperature.gpu_temp_tlimit" in r
    # Every layout still yields the power feature (from instant_power_draw on 580); only the
    # occasional dropped reading (at most 1% of a GPU's samples) is missing.
    # Boards that report no power at all (POWER_NA_MODELS) are N/A throughout.
    for group in (legacy, newer, r580):
        na = [r for r in group if r[G + "product_name"] in POWER_NA_MODELS]
        assert all(_power(r) == "nan" for r in na)
        group = [r for r in group if r[G + "product_name"] not in POWER_NA_MODELS]
        assert sum(_power(r) == "nan" for r in group) <= 0.01 * len(group) + 1
    for r in mig:
        assert r[G + "utilization.gpu_util"] == "N/A"
        assert r[G + "clocks.graphics_clock"] == r[G + "max_clocks.graphics_clock"]
        assert G + "mig_devices.mig_device.1.fb_memory_usage.used" in r


def test_geforce_application_clocks_are_na(fleet) -> None:
    geforce = [r for r in fleet.records if r[G + "product_brand"] == "GeForce"]
    datacenter = [r for r in fleet.records if r[G + "product_brand"] != "GeForce"]
    assert geforce and datacenter
    assert all(r[G + "applications_clocks.graphics_clock"] == "N/A" for r in geforce)
    assert all(r[G + "applications_clocks.graphics_clock"].endswith("MHz") for r in datacenter)


def test_labels_are_kept_apart_and_line_up(fleet) -> None:
    rows = list(csv.DictReader(fleet.labels.open()))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert len(rows) == len(fleet.records)
    assert not any("mining" in k or "profile" in k for k in fleet.records[0])
    for row in rows[:: max(1, len(rows) // 50)]:
        rec = fleet.records[int(row["line"]) - 1]
        assert rec[G + "uuid"] == row["uuid"] and rec[TIMESTAMP_KEY] == row["timestamp"]
        assert row["mining"] == str(int(row["profile"] in MINING_PROFILES))
    assert {r["profile"] for r in rows} == set(PROFILES)


def test_time_series_per_gpu_is_regular(fleet) -> None:
    from datetime import datetime

    by_gpu: dict[str, list[datetime]] = {}
    for rec in fleet.records:
        ts = datetime.strptime(rec[TIMESTAMP_KEY], TIMESTAMP_FORMAT)
        by_gpu.setdefault(rec[G + "uuid"], []).append(ts)
    assert len(by_gpu) == 48
    for times in by_gpu.values():
        steps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
        assert steps == {60.0}


def test_seeded_and_deterministic(tmp_path: Path) -> None:
    a, _ = generate(tmp_path / "a", gpus=2, hours=0.2, seed=3)
    b, _ = generate(tmp_path / "b", gpus=2, hours=0.2, seed=3)
    c, _ = generate(tmp_path / "c", gpus=2, hours=0.2, seed=4)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_cli_writes_files_and_rejects_bad_arguments(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--gpus", "2", "--hours", "0.1", "--seed", "1"]) == 0
    lines = (tmp_path / "nvsmi.jsonlines").read_text().splitlines()
    assert len(lines) == 2 * 36 and json.loads(lines[0])
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path), "--gpus", "0", "--hours", "1"])
    assert exc.value.code == 2
