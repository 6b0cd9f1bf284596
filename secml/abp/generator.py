"""Seeded generator of ``nvidia-smi`` records in Morpheus's ``nvsmi.jsonlines`` form.

Each GPU gets a time series of workload segments (idle, deep-learning training, inference,
LLM serving, rendering/encoding and several mining profiles). Every record is one JSON object
with flattened keys ``nvidia_smi_log.*`` whose values are strings as nvidia-smi prints them
("61.77 W", "3909 MiB", "100 %", "N/A"). Ground truth goes to a separate ``labels.csv`` keyed
by GPU uuid and timestamp, never into the records.

CLI: ``python -m secml.abp.generator --out DIR --gpus N --hours H --seed S``.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

P = "nvidia_smi_log."
G = P + "gpu."
TIMESTAMP_KEY = P + "timestamp"
UUID_KEY = G + "uuid"
TIMESTAMP_FORMAT = "%a %b %d %H:%M:%S %Y"
DATA_FILE = "nvsmi.jsonlines"
LABELS_FILE = "labels.csv"
LABEL_COLUMNS = ("uuid", "timestamp", "line", "mining", "profile", "product_name")

BENIGN_PROFILES = (
    "idle", "dl_training", "inference", "llm_inference", "render_encode",
    # look-alikes: flat-out and power-capped, 100% util at low power, bursty, memory held idle
    "render_powercap", "hpc_fp64", "nccl_spin", "batch_inference", "idle_mem_held",
)  # fmt: skip
MINING_PROFILES = (
    "mining_memhard", "mining_compute", "mining_stealth",
    # evasion: memory clock locked low, duty cycles with the DAG resident, low intensity,
    # power limit at the board's minimum
    "mining_core_memlock", "mining_duty_cycled", "mining_low_intensity", "mining_power_limited",
)  # fmt: skip
PROFILES = BENIGN_PROFILES + MINING_PROFILES
# Share of segments per profile; mining is a minority, as in a real fleet.
PROFILE_WEIGHTS = np.array(
    [0.14, 0.12, 0.08, 0.05, 0.05, 0.04, 0.04, 0.04, 0.05, 0.05]
    + [0.05, 0.05, 0.05, 0.05, 0.05, 0.04, 0.05]
)
# Boards whose driver reports no power reading at all (some GeForce cards).
POWER_NA_MODELS = frozenset({"NVIDIA GeForce GTX 1650"})


@dataclass(frozen=True)
class GpuSpec:
    """Published limits of one GPU model (clocks in MHz, memory in MiB, power in W, temps in C)."""

    name: str
    brand: str
    arch: str
    memory_mib: int
    bar1_mib: int
    max_graphics: int
    max_mem: int
    max_video: int
    app_graphics: int | None  # None: nvidia-smi prints N/A (GeForce boards)
    app_mem: int | None
    idle_graphics: int
    idle_mem: int
    power_limit: float
    min_power_limit: float
    max_power_limit: float
    temp_shutdown: int
    temp_slowdown: int
    temp_max_gpu: int
    temp_max_mem: int | None
    pcie_gen: int
    ecc: bool
    fan: bool


GPU_SPECS: tuple[GpuSpec, ...] = (
    GpuSpec("Tesla V100-SXM2-32GB", "Tesla", "Volta", 32768, 32768, 1530, 877, 1372, 1290, 877,
            135, 877, 300, 150, 300, 90, 87, 83, 85, 3, True, False),
    GpuSpec("Tesla T4", "Tesla", "Turing", 15360, 256, 1590, 5001, 1470, 585, 5001,
            300, 405, 70, 60, 70, 96, 93, 85, None, 3, True, False),
    GpuSpec("NVIDIA A100-SXM4-40GB", "NVIDIA", "Ampere", 40960, 65536, 1410, 1215, 1290, 1095,
            1215, 210, 1215, 400, 100, 400, 92, 89, 85, 95, 4, True, False),
    GpuSpec("NVIDIA A10", "NVIDIA", "Ampere", 23028, 32768, 1695, 6251, 1470, 1695, 6251,
            210, 405, 150, 100, 150, 98, 95, 88, None, 4, True, False),
    GpuSpec("NVIDIA GeForce RTX 3090", "GeForce", "Ampere", 24576, 256, 2100, 9751, 1950, None,
            None, 210, 405, 350, 100, 400, 98, 95, 93, None, 4, False, True),
    GpuSpec("NVIDIA GeForce RTX 3060 Ti", "GeForce", "Ampere", 8192, 256, 2100, 7001, 1950, None,
            None, 210, 405, 200, 100, 220, 98, 95, 93, None, 4, False, True),
    GpuSpec("NVIDIA H100 80GB HBM3", "NVIDIA", "Hopper", 81559, 131072, 1980, 2619, 1545, 1980,
            2619, 345, 2619, 700, 200, 700, 92, 89, 87, 95, 5, True, False),
    GpuSpec("NVIDIA A30", "NVIDIA", "Ampere", 24576, 32768, 1440, 1215, 1305, 930, 1215,
            210, 1215, 165, 100, 165, 92, 89, 85, 95, 4, True, False),
    GpuSpec("NVIDIA L4", "NVIDIA", "Ada Lovelace", 23034, 32768, 2040, 6251, 1770, 2040, 6251,
            210, 405, 72, 40, 72, 95, 92, 88, None, 4, True, False),
    GpuSpec("NVIDIA L40S", "NVIDIA", "Ada Lovelace", 46068, 65536, 2520, 9001, 1965, 2520, 9001,
            210, 405, 350, 100, 350, 98, 95, 88, None, 4, True, False),
    GpuSpec("NVIDIA RTX A6000", "NVIDIA RTX", "Ampere", 49140, 256, 2100, 8001, 1950, 1800, 8001,
            210, 405, 300, 100, 300, 98, 95, 93, None, 4, True, True),
    GpuSpec("NVIDIA GeForce RTX 4090", "GeForce", "Ada Lovelace", 24564, 256, 3105, 10501, 2415,
            None, None, 210, 405, 450, 150, 600, 90, 87, 83, None, 4, False, True),
    GpuSpec("NVIDIA GeForce GTX 1650", "GeForce", "Turing", 4096, 256, 1890, 4001, 1725, None,
            None, 300, 405, 75, 45, 75, 97, 94, 92, None, 3, False, True),
    GpuSpec("Tesla P40", "Tesla", "Pascal", 24451, 32768, 1531, 3615, 1379, 1303, 3615,
            544, 405, 250, 125, 250, 95, 92, 88, None, 3, True, False),
    GpuSpec("Quadro RTX 6000", "Quadro", "Turing", 24576, 256, 2100, 7001, 1950, 1770, 7001,
            300, 405, 260, 100, 260, 94, 91, 89, None, 3, True, True),
)  # fmt: skip
# Driver branches and the XML layout each prints (keys differ; the 18 features stay readable):
# <535 power_readings.* and clocks_throttle_reasons; 535/550 gpu_power_readings.* and
# clocks_event_reasons; 570 adds average/instant power; 580 prints power_draw N/A beside
# instant_power_draw and temperature thresholds relative to T.Limit instead of absolute ones.
DRIVERS: tuple[str, ...] = (
    "470.57.02", "510.47.03", "525.85.12", "535.129.03", "550.54.15", "570.86.15", "580.82.07",
)  # fmt: skip
DRIVER_WEIGHTS = np.array([0.12, 0.14, 0.14, 0.2, 0.16, 0.12, 0.12])
MIG_ARCHS = ("Ampere", "Hopper")
MIG_MODELS = ("NVIDIA A100-SXM4-40GB", "NVIDIA A30", "NVIDIA H100 80GB HBM3")


def _ar1(rng: np.random.Generator, n: int, rho: float, sigma: float) -> np.ndarray:
    """Smooth AR(1) noise of length ``n`` (stationary std ``sigma``)."""
    e = rng.normal(0.0, sigma * np.sqrt(1 - rho**2), n)
    out = np.empty(n)
    acc = rng.normal(0.0, sigma)
    for i in range(n):
        acc = rho * acc + e[i]
        out[i] = acc
    return out


def _segment(
    profile: str, spec: GpuSpec, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Per-sample metrics for ``n`` samples of one workload on one GPU."""
    one = np.ones(n)
    mem = float(spec.memory_mib)
    gfx_max = float(spec.max_graphics)
    enc = np.zeros(n)
    dec = np.zeros(n)
    mem_clock = one * spec.max_mem
    capped = np.zeros(n, dtype=bool)
    if profile == "idle":
        util = np.where(rng.random(n) < 0.05, rng.integers(1, 4, n), 0).astype(float)
        mem_util = np.where(util > 0, 1.0, 0.0)
        held = rng.random() < 0.4  # a notebook kernel holding memory: a hard benign case
        used = one * (mem * rng.uniform(0.3, 0.9) if held else rng.uniform(0, 600))
        power = spec.power_limit * (rng.uniform(0.06, 0.16) + _ar1(rng, n, 0.9, 0.005))
        gfx = one * spec.idle_graphics
        mem_clock = one * spec.idle_mem
    elif profile == "dl_training":
        dips = _ar1(rng, n, 0.7, 1.0) > 1.6  # eval, checkpointing, data-loader stalls
        util = np.where(dips, rng.uniform(0, 40, n), rng.uniform(88, 100, n))
        mem_util = np.clip(util * rng.uniform(0.25, 0.7) + _ar1(rng, n, 0.8, 4), 0, 100)
        used = one * mem * rng.uniform(0.55, 0.97)
        power = spec.power_limit * np.clip(
            np.where(dips, 0.35, rng.uniform(0.7, 1.0)) + _ar1(rng, n, 0.8, 0.04), 0.1, 1.0
        )
        gfx = gfx_max * np.clip(rng.uniform(0.85, 1.0) + _ar1(rng, n, 0.8, 0.03), 0.6, 1.0)
    elif profile == "inference":
        load = np.clip(rng.uniform(0.1, 0.6) + _ar1(rng, n, 0.95, 0.15), 0, 1)
        util = np.clip(load * 100 + rng.normal(0, 5, n), 0, 100)
        mem_util = np.clip(util * rng.uniform(0.3, 0.6), 0, 100)
        used = one * mem * rng.uniform(0.12, 0.6)
        power = spec.power_limit * np.clip(0.15 + 0.5 * load, 0.08, 0.8)
        gfx = np.where(util > 5, gfx_max * rng.uniform(0.85, 1.0), spec.idle_graphics * 2.0)
    elif profile == "llm_inference":  # memory-bandwidth bound decode: a hard benign case
        util = np.clip(rng.uniform(70, 100) + _ar1(rng, n, 0.9, 8), 0, 100)
        mem_util = np.clip(rng.uniform(55, 90) + _ar1(rng, n, 0.9, 6), 0, 100)
        used = one * mem * rng.uniform(0.85, 0.95)  # KV cache pre-allocated (vLLM-style)
        power = spec.power_limit * np.clip(rng.uniform(0.5, 0.85) + _ar1(rng, n, 0.9, 0.05), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.88, 1.0) + _ar1(rng, n, 0.8, 0.02), 0.6, 1.0)
    elif profile == "render_encode":
        util = np.clip(rng.uniform(30, 85) + _ar1(rng, n, 0.9, 10), 0, 100)
        enc = np.clip(rng.uniform(40, 100) + _ar1(rng, n, 0.9, 8), 0, 100)
        dec = np.clip(rng.uniform(20, 80) + _ar1(rng, n, 0.9, 8), 0, 100)
        mem_util = np.clip(util * rng.uniform(0.2, 0.5), 0, 100)
        used = one * mem * rng.uniform(0.04, 0.3)
        power = spec.power_limit * np.clip(0.2 + util / 180 + _ar1(rng, n, 0.8, 0.03), 0.1, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.8, 1.0) + _ar1(rng, n, 0.8, 0.03), 0.5, 1.0)
    elif profile == "mining_memhard":  # Ethash-like: DAG in memory, memory bus saturated
        util = np.clip(100 - np.abs(rng.normal(0, 0.6, n)), 0, 100).round()
        mem_util = np.clip(rng.uniform(82, 100) + _ar1(rng, n, 0.9, 1.5), 0, 100)
        used = one * min(mem * 0.9, rng.uniform(4600, 6800))
        power = spec.power_limit * np.clip(rng.uniform(0.5, 0.75) + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.5, 0.72) + _ar1(rng, n, 0.9, 0.005), 0.3, 1.0)
    elif profile == "mining_compute":  # compute-bound algorithms: core at full boost
        util = np.clip(100 - np.abs(rng.normal(0, 0.6, n)), 0, 100).round()
        mem_util = np.clip(rng.uniform(25, 60) + _ar1(rng, n, 0.9, 2), 0, 100)
        used = one * min(mem * 0.6, rng.uniform(900, 4200))
        power = spec.power_limit * np.clip(rng.uniform(0.85, 1.0) + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.92, 1.0) + _ar1(rng, n, 0.9, 0.005), 0.5, 1.0)
        mem_clock = one * spec.max_mem * rng.choice([0.6, 0.8, 1.0])
    elif profile == "mining_stealth":  # caps power and clocks, or throttles intensity, to hide
        if rng.random() < 0.5:
            util = np.clip(100 - np.abs(rng.normal(0, 0.8, n)), 0, 100).round()
        else:
            util = np.clip(rng.uniform(45, 75) + rng.normal(0, 2, n), 0, 100)
        mem_util = np.clip(util * rng.uniform(0.75, 0.98) + rng.normal(0, 1.5, n), 0, 100)
        used = one * min(mem * 0.9, rng.uniform(2500, 6200))
        floor = spec.min_power_limit / spec.power_limit
        power = (
            spec.power_limit
            * np.clip(rng.uniform(0.3, 0.55), floor, 1)
            * (1 + _ar1(rng, n, 0.9, 0.01))
        )
        gfx = gfx_max * np.clip(rng.uniform(0.4, 0.62) + _ar1(rng, n, 0.9, 0.005), 0.3, 1.0)
        capped[:] = True
    elif profile == "render_powercap":  # path tracing: SMs flat out against the power limit
        util = np.clip(rng.uniform(95, 100) + _ar1(rng, n, 0.8, 1), 0, 100)
        mem_util = np.clip(rng.uniform(25, 60) + _ar1(rng, n, 0.9, 5), 0, 100)
        enc = np.clip(rng.uniform(0, 30) + _ar1(rng, n, 0.9, 5), 0, 100)
        used = one * mem * rng.uniform(0.1, 0.6)
        power = spec.power_limit * np.clip(rng.uniform(0.97, 1.0) + _ar1(rng, n, 0.8, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.7, 0.9) + _ar1(rng, n, 0.8, 0.03), 0.4, 1.0)
        capped[:] = True
    elif profile == "hpc_fp64":  # DGEMM/LINPACK: flat, hot, modest memory traffic
        util = np.clip(rng.uniform(97, 100) + _ar1(rng, n, 0.8, 0.8), 0, 100)
        mem_util = np.clip(rng.uniform(15, 45) + _ar1(rng, n, 0.9, 3), 0, 100)
        used = one * mem * rng.uniform(0.3, 0.8)
        power = spec.power_limit * np.clip(rng.uniform(0.85, 1.0) + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.85, 1.0) + _ar1(rng, n, 0.9, 0.01), 0.5, 1.0)
    elif profile == "nccl_spin":  # collectives waiting on peers: 100% util at low power
        util = np.clip(100 - np.abs(rng.normal(0, 0.5, n)), 0, 100)
        mem_util = np.clip(rng.uniform(0, 5) + _ar1(rng, n, 0.9, 1), 0, 100)
        used = one * mem * rng.uniform(0.6, 0.95)
        power = spec.power_limit * np.clip(rng.uniform(0.2, 0.4) + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.85, 1.0) + _ar1(rng, n, 0.9, 0.01), 0.5, 1.0)
    elif profile == "batch_inference":  # a batch every few samples: on/off like a duty cycle
        period = int(rng.integers(3, 16))
        on = (np.arange(n) + int(rng.integers(period))) % period < max(1, period // 2)
        util = np.where(on, rng.uniform(70, 100, n), rng.uniform(0, 5, n))
        mem_util = util * rng.uniform(0.3, 0.7)
        used = one * mem * rng.uniform(0.2, 0.7)
        power = spec.power_limit * np.where(on, rng.uniform(0.6, 0.95), rng.uniform(0.1, 0.2))
        gfx = np.where(on, gfx_max * rng.uniform(0.85, 1.0), spec.idle_graphics * 2.0)
    elif profile == "idle_mem_held":  # a stopped job or notebook still holding its memory
        util = np.zeros(n)
        mem_util = np.zeros(n)
        used = one * mem * rng.uniform(0.2, 0.95)
        power = spec.power_limit * (rng.uniform(0.06, 0.16) + _ar1(rng, n, 0.9, 0.005))
        gfx = one * spec.idle_graphics
        mem_clock = one * spec.idle_mem
    elif profile == "mining_core_memlock":  # core-bound algorithm, memory clock locked low
        util = np.clip(100 - np.abs(rng.normal(0, 0.6, n)), 0, 100).round()
        mem_util = np.clip(rng.uniform(1, 12) + _ar1(rng, n, 0.9, 1), 0, 100)
        used = one * min(mem * 0.5, rng.uniform(250, 1600))
        power = spec.power_limit * np.clip(rng.uniform(0.6, 0.95) + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.8, 1.0) + _ar1(rng, n, 0.9, 0.005), 0.5, 1.0)
        hbm = spec.idle_mem >= spec.max_mem  # HBM boards cannot lock memory low
        low = max(spec.idle_mem, spec.max_mem * rng.uniform(0.08, 0.25))
        mem_clock = one * (spec.max_mem if hbm else low)
    elif profile == "mining_duty_cycled":  # runs k samples, pauses j; the DAG stays resident
        on_len, off_len = int(rng.integers(2, 15)), int(rng.integers(2, 25))
        on = (np.arange(n) + int(rng.integers(on_len + off_len))) % (on_len + off_len) < on_len
        util = np.where(on, np.clip(100 - np.abs(rng.normal(0, 0.6, n)), 0, 100), 0.0)
        mem_util = np.where(on, rng.uniform(80, 100, n), 0.0)
        used = one * min(mem * 0.9, rng.uniform(2500, 6800))
        power = spec.power_limit * np.where(on, rng.uniform(0.5, 0.75), rng.uniform(0.08, 0.15))
        gfx = np.where(on, gfx_max * rng.uniform(0.5, 0.72), spec.idle_graphics)
        mem_clock = np.where(on, spec.max_mem, spec.idle_mem)
    elif profile == "mining_low_intensity":  # intensity throttled to stay under the radar
        util = np.clip(rng.uniform(20, 55) + rng.normal(0, 3, n), 0, 100)
        mem_util = np.clip(util * rng.uniform(0.75, 1.0), 0, 100)
        used = one * min(mem * 0.9, rng.uniform(2500, 6800))
        power = spec.power_limit * np.clip(0.2 + util / 200 + _ar1(rng, n, 0.9, 0.01), 0, 1)
        gfx = gfx_max * np.clip(rng.uniform(0.5, 0.8) + _ar1(rng, n, 0.9, 0.005), 0.3, 1.0)
    elif profile == "mining_power_limited":  # power limit set to the board's minimum
        util = np.clip(100 - np.abs(rng.normal(0, 0.6, n)), 0, 100).round()
        mem_util = np.clip(rng.uniform(80, 100) + _ar1(rng, n, 0.9, 1.5), 0, 100)
        used = one * min(mem * 0.9, rng.uniform(2500, 6800))
        power = spec.min_power_limit * (1 + _ar1(rng, n, 0.9, 0.01))
        share = spec.min_power_limit / spec.power_limit
        gfx = gfx_max * np.clip(share * rng.uniform(0.6, 0.9) + _ar1(rng, n, 0.9, 0.005), 0.2, 1)
        capped[:] = True
    else:
        raise ValueError(f"unknown workload profile {profile!r}; known: {', '.join(PROFILES)}")
    gfx = np.clip(np.round(gfx / 15) * 15, spec.idle_graphics, spec.max_graphics)
    power = np.clip(power, 0.03 * spec.power_limit, spec.power_limit * 1.02)
    return {
        "util": np.clip(np.round(util), 0, 100),
        "mem_util": np.clip(np.round(mem_util), 0, 100),
        "used": np.clip(np.round(used + rng.normal(0, 3, n)), 0, mem - 300),
        "power": power,
        "gfx": gfx,
        "mem_clock": np.round(mem_clock),
        "enc": np.round(enc),
        "dec": np.round(dec),
        "capped": capped | (power >= spec.power_limit * 0.99),
    }


def _schedule(
    rng: np.random.Generator, n: int, interval_s: float, first: str
) -> list[tuple[str, int, int]]:
    """Split ``n`` samples into workload segments of 20 minutes to 3 hours, ``first`` first."""
    out = []
    start = 0
    profile = first
    while start < n:
        length = max(1, int(rng.uniform(20 * 60, 3 * 3600) / interval_s))
        out.append((profile, start, min(n, start + length)))
        start += length
        profile = PROFILES[rng.choice(len(PROFILES), p=PROFILE_WEIGHTS / PROFILE_WEIGHTS.sum())]
    return out


def _fmt(value: float, unit: str, decimals: int = 0) -> str:
    """Format a number the way nvidia-smi prints it ("61.77 W", "100 %"); never "-0"."""
    text = f"{value:.{decimals}f}"
    if text.startswith("-") and not text.strip("-0."):
        text = text[1:]
    return f"{text} {unit}"


@dataclass(frozen=True)
class _Gpu:
    """Static identity of one simulated GPU."""

    spec: GpuSpec
    uuid: str
    serial: str
    bus: int
    minor: int
    driver: str
    cuda: str
    mig: bool = False  # MIG on: utilization N/A, clocks held at their maximum

    @property
    def branch(self) -> int:
        """The driver's major version (470, 535, 580...)."""
        return int(self.driver.split(".")[0])


def _static_fields(gpu: _Gpu) -> dict[str, str]:
    """Keys that do not change between samples of one GPU."""
    s = gpu.spec
    na = "N/A"
    bus_id = f"00000000:{gpu.bus:02X}:00.0"
    mig = ("Enabled" if gpu.mig else "Disabled") if s.arch in MIG_ARCHS else na
    f: dict[str, str] = {
        P + "driver_version": gpu.driver,
        P + "cuda_version": gpu.cuda,
        P + "attached_gpus": "1",
        G + "product_name": s.name,
        G + "product_brand": s.brand,
        G + "product_architecture": s.arch,
        G + "display_mode": "Enabled" if s.fan else "Disabled",
        G + "display_active": "Disabled",
        G + "persistence_mode": "Enabled",
        G + "mig_mode.current_mig": mig,
        G + "mig_mode.pending_mig": mig,
        G + "mig_devices": "None",
        G + "accounting_mode": "Disabled",
        G + "accounting_mode_buffer_size": "4000",
        G + "driver_model.current_dm": na,
        G + "driver_model.pending_dm": na,
        G + "serial": gpu.serial,
        G + "uuid": gpu.uuid,
        G + "minor_number": str(gpu.minor),
        G + "vbios_version": "90.02.4B.00.01",
        G + "multigpu_board": "No",
        G + "board_id": f"0x{gpu.bus:x}00",
        G + "gpu_part_number": "900-2G500-0010-000",
        G + "gpu_module_id": "1",
        G + "inforom_version.img_version": "G500.0202.00.02",
        G + "inforom_version.oem_object": "1.1",
        G + "inforom_version.ecc_object": "5.0" if s.ecc else na,
        G + "inforom_version.pwr_object": na,
        G + "gpu_operation_mode.current_gom": na,
        G + "gpu_operation_mode.pending_gom": na,
        G + "gsp_firmware_version": na,
        G + "gpu_virtualization_mode.virtualization_mode": "None",
        G + "gpu_virtualization_mode.host_vgpu_mode": na,
        G + "ibmnpu.relaxed_ordering_mode": na,
        G + "pci.pci_bus": f"{gpu.bus:02X}",
        G + "pci.pci_device": "00",
        G + "pci.pci_domain": "0000",
        G + "pci.pci_device_id": "20B010DE",
        G + "pci.pci_bus_id": bus_id,
        G + "pci.pci_sub_system_id": "134F10DE",
        G + "pci.pci_gpu_link_info.pcie_gen.max_link_gen": str(s.pcie_gen),
        G + "pci.pci_gpu_link_info.link_widths.max_link_width": "16x",
        G + "pci.pci_gpu_link_info.link_widths.current_link_width": "16x",
        G + "pci.pci_bridge_chip.bridge_chip_type": na,
        G + "pci.pci_bridge_chip.bridge_chip_fw": na,
        G + "pci.replay_counter": "0",
        G + "pci.replay_rollover_counter": "0",
        G + "fb_memory_usage.total": _fmt(s.memory_mib, "MiB"),
        G + "fb_memory_usage.reserved": _fmt(min(600, s.memory_mib // 40), "MiB"),
        G + "bar1_memory_usage.total": _fmt(s.bar1_mib, "MiB"),
        G + "compute_mode": "Default",
        G + "encoder_stats.session_count": "0",
        G + "encoder_stats.average_fps": "0",
        G + "encoder_stats.average_latency": "0",
        G + "fbc_stats.session_count": "0",
        G + "fbc_stats.average_fps": "0",
        G + "fbc_stats.average_latency": "0",
        G + "ecc_mode.current_ecc": "Enabled" if s.ecc else na,
        G + "ecc_mode.pending_ecc": "Enabled" if s.ecc else na,
        G + "retired_pages.multiple_single_bit_retirement.retired_count": "0" if s.ecc else na,
        G + "retired_pages.multiple_single_bit_retirement.retired_pagelist": "",
        G + "retired_pages.double_bit_retirement.retired_count": "0" if s.ecc else na,
        G + "retired_pages.double_bit_retirement.retired_pagelist": "",
        G + "retired_pages.pending_blacklist": "No" if s.ecc else na,
        G + "retired_pages.pending_retirement": "No" if s.ecc else na,
        G + "remapped_rows": na,
        G + "temperature.gpu_temp_max_threshold": _fmt(s.temp_shutdown, "C"),
        G + "temperature.gpu_temp_slow_threshold": _fmt(s.temp_slowdown, "C"),
        G + "temperature.gpu_temp_max_gpu_threshold": _fmt(s.temp_max_gpu, "C"),
        G + "temperature.gpu_target_temperature": na if not s.fan else "83 C",
        G + "temperature.gpu_temp_max_mem_threshold": (
            _fmt(s.temp_max_mem, "C") if s.temp_max_mem else na
        ),
        G + "supported_gpu_target_temp.gpu_target_temp_min": "65 C" if s.fan else na,
        G + "supported_gpu_target_temp.gpu_target_temp_max": "91 C" if s.fan else na,
        G + "power_readings.power_management": "Supported",
        G + "power_readings.default_power_limit": _fmt(s.power_limit, "W", 2),
        G + "power_readings.min_power_limit": _fmt(s.min_power_limit, "W", 2),
        G + "power_readings.max_power_limit": _fmt(s.max_power_limit, "W", 2),
        G + "applications_clocks.graphics_clock": _mhz(s.app_graphics),
        G + "applications_clocks.mem_clock": _mhz(s.app_mem),
        G + "default_applications_clocks.graphics_clock": _mhz(s.app_graphics),
        G + "default_applications_clocks.mem_clock": _mhz(s.app_mem),
        G + "max_clocks.graphics_clock": _mhz(s.max_graphics),
        G + "max_clocks.sm_clock": _mhz(s.max_graphics),
        G + "max_clocks.mem_clock": _mhz(s.max_mem),
        G + "max_clocks.video_clock": _mhz(s.max_video),
        G + "max_customer_boost_clocks.graphics_clock": _mhz(s.max_graphics),
        G + "clock_policy.auto_boost": na,
        G + "clock_policy.auto_boost_default": na,
        G + "processes": "",
        G + "accounted_processes": "",
    }
    for scope in ("volatile", "aggregate"):
        for bits in ("single_bit", "double_bit"):
            for part in (
                "device_memory",
                "register_file",
                "l1_cache",
                "l2_cache",
                "texture_memory",
                "texture_shm",
                "cbu",
                "total",
            ):
                value = "0" if s.ecc and part in ("device_memory", "register_file", "total") else na
                f[f"{G}ecc_errors.{scope}.{bits}.{part}"] = value
    return f


def _apply_layout(rec: dict[str, str], gpu: _Gpu) -> dict[str, str]:
    """Rewrite a legacy-layout record into the layout ``gpu``'s driver branch prints."""
    if gpu.mig:
        for key in ("utilization.gpu_util", "utilization.memory_util"):
            rec[G + key] = "N/A"
        mig_used = _num(rec[G + "fb_memory_usage.used"])
        half = gpu.spec.memory_mib // 2
        rec.pop(G + "mig_devices", None)  # "None" when MIG is off; instances below when on
        for i in range(2):
            used = min(half, max(0, mig_used - i * half))
            base = f"{G}mig_devices.mig_device.{i}."
            rec[base + "index"] = str(i)
            rec[base + "fb_memory_usage.total"] = _fmt(half, "MiB")
            rec[base + "fb_memory_usage.used"] = _fmt(used, "MiB")
            rec[base + "fb_memory_usage.free"] = _fmt(half - used, "MiB")
    if gpu.branch < 535:
        return rec
    out: dict[str, str] = {}
    renames = {
        "power_limit": "current_power_limit",
        "enforced_power_limit": "requested_power_limit",
    }
    for key, value in rec.items():
        if key.startswith(G + "power_readings."):
            leaf = key.removeprefix(G + "power_readings.")
            out[G + "gpu_power_readings." + renames.get(leaf, leaf)] = value
        elif key.startswith(G + "clocks_throttle_reasons."):
            leaf = key.removeprefix(G + "clocks_throttle_reasons.clocks_throttle_reason_")
            out[f"{G}clocks_event_reasons.clocks_event_reason_{leaf}"] = value
        else:
            out[key] = value
    if gpu.branch >= 570:
        draw = out[G + "gpu_power_readings.power_draw"]
        out[G + "gpu_power_readings.average_power_draw"] = draw
        out[G + "gpu_power_readings.instant_power_draw"] = draw
    if gpu.branch >= 580:
        s = gpu.spec
        out[G + "gpu_power_readings.power_draw"] = "N/A"
        out[G + "gpu_power_readings.average_power_draw"] = "N/A"
        for key in ("gpu_temp_max_threshold", "gpu_temp_slow_threshold",
                    "gpu_temp_max_gpu_threshold"):  # fmt: skip
            del out[f"{G}temperature.{key}"]
        temp = out[G + "temperature.gpu_temp"]
        headroom = "N/A" if temp == "N/A" else _fmt(s.temp_slowdown - _num(temp), "C")
        out[G + "temperature.gpu_temp_tlimit"] = headroom
        out[G + "temperature.gpu_temp_max_tlimit_threshold"] = _fmt(
            s.temp_slowdown - s.temp_shutdown, "C"
        )
        out[G + "temperature.gpu_temp_slow_tlimit_threshold"] = "0 C"
    return out


def _num(value: str) -> float:
    """The number in an nvidia-smi string ("3909 MiB" -> 3909.0)."""
    return float(value.split()[0])


def _mhz(value: float | None) -> str:
    """A clock as nvidia-smi prints it, or N/A."""
    return "N/A" if value is None else _fmt(value, "MHz")


def _gpu_records(
    gpu: _Gpu, start: datetime, n: int, interval_s: float, rng: np.random.Generator, first: str
) -> Iterator[tuple[dict[str, str], str]]:
    """Yield (record, profile) for ``n`` samples of one GPU, starting with workload ``first``."""
    s = gpu.spec
    static = _static_fields(gpu)
    ambient = rng.uniform(24, 40)
    temp = ambient
    na_rate = rng.choice([0.0, 0.002, 0.01])  # some hosts drop readings now and then
    for profile, a, b in _schedule(rng, n, interval_s, first):
        m = _segment(profile, s, b - a, rng)
        if gpu.mig:  # a MIG-enabled board holds its clocks at the maximum, busy or idle
            m["gfx"] = np.full(b - a, float(s.max_graphics))
            m["mem_clock"] = np.full(b - a, float(s.max_mem))
        for j in range(b - a):
            i = a + j
            util = m["util"][j]
            power = m["power"][j]
            target = ambient + 55 * power / s.power_limit
            temp += 0.35 * (target - temp)
            t = min(round(temp + rng.normal(0, 0.4)), s.temp_slowdown - 1)
            used = m["used"][j]
            total = float(s.memory_mib)
            reserved = float(min(600, s.memory_mib // 40))
            busy = util > 0 or used > 1000
            rec = dict(static)
            ts = start + timedelta(seconds=i * interval_s)
            rec[TIMESTAMP_KEY] = ts.strftime(TIMESTAMP_FORMAT)
            rec.update(
                {
                    G + "fan_speed": _fmt(min(100, 30 + max(0, t - 40) * 1.5), "%")
                    if s.fan
                    else "N/A",
                    G + "performance_state": "P0" if busy else "P8",
                    G + "fb_memory_usage.used": _fmt(used, "MiB"),
                    G + "fb_memory_usage.free": _fmt(max(0.0, total - reserved - used), "MiB"),
                    G + "bar1_memory_usage.used": _fmt(min(s.bar1_mib, 2 + used // 64), "MiB"),
                    G + "bar1_memory_usage.free": _fmt(
                        max(0, s.bar1_mib - min(s.bar1_mib, 2 + used // 64)), "MiB"
                    ),
                    G + "utilization.gpu_util": _fmt(util, "%"),
                    G + "utilization.memory_util": _fmt(m["mem_util"][j], "%"),
                    G + "utilization.encoder_util": _fmt(m["enc"][j], "%"),
                    G + "utilization.decoder_util": _fmt(m["dec"][j], "%"),
                    G + "pci.pci_gpu_link_info.pcie_gen.current_link_gen": str(
                        s.pcie_gen if busy else 1
                    ),
                    G + "pci.tx_util": _fmt(util * 120, "KB/s"),
                    G + "pci.rx_util": _fmt(util * 250, "KB/s"),
                    G + "temperature.gpu_temp": _fmt(t, "C"),
                    G + "temperature.memory_temp": _fmt(t + 4, "C") if s.temp_max_mem else "N/A",
                    G + "power_readings.power_state": "P0" if busy else "P8",
                    G + "power_readings.power_draw": "N/A"
                    if s.name in POWER_NA_MODELS
                    else _fmt(power, "W", 2),
                    G + "power_readings.power_limit": _fmt(
                        power * 1.05
                        if m["capped"][j] and profile == "mining_stealth"
                        else s.power_limit,
                        "W",
                        2,
                    ),
                    G + "power_readings.enforced_power_limit": _fmt(s.power_limit, "W", 2),
                    G + "clocks.graphics_clock": _mhz(m["gfx"][j]),
                    G + "clocks.sm_clock": _mhz(m["gfx"][j]),
                    G + "clocks.mem_clock": _mhz(m["mem_clock"][j]),
                    G + "clocks.video_clock": _mhz(min(s.max_video, m["gfx"][j] * 0.9)),
                    G + "voltage.graphics_volt": _fmt(
                        650 + 400 * m["gfx"][j] / s.max_graphics, "mV", 3
                    ),
                }
            )
            reasons = {
                "clocks_throttle_reason_gpu_idle": not busy,
                "clocks_throttle_reason_applications_clocks_setting": False,
                "clocks_throttle_reason_sw_power_cap": bool(m["capped"][j]),
                "clocks_throttle_reason_hw_slowdown": False,
                "clocks_throttle_reason_hw_thermal_slowdown": False,
                "clocks_throttle_reason_hw_power_brake_slowdown": False,
                "clocks_throttle_reason_sync_boost": False,
                "clocks_throttle_reason_sw_thermal_slowdown": t >= s.temp_slowdown - 3,
                "clocks_throttle_reason_display_clocks_setting": False,
            }
            for k, v in reasons.items():
                rec[f"{G}clocks_throttle_reasons.{k}"] = "Active" if v else "Not Active"
            if na_rate and rng.random() < na_rate:
                key = rng.choice(
                    [
                        G + "power_readings.power_draw",
                        G + "utilization.memory_util",
                        G + "temperature.gpu_temp",
                        G + "clocks.mem_clock",
                    ]
                )
                rec[str(key)] = "N/A"
            yield _apply_layout(rec, gpu), profile


def generate(
    out: Path, gpus: int, hours: float, seed: int, interval_s: float = 10.0
) -> tuple[Path, Path]:
    """Write ``nvsmi.jsonlines`` and ``labels.csv`` under ``out``; return both paths."""
    if gpus < 1 or hours <= 0 or interval_s <= 0:
        raise ValueError(
            f"need gpus >= 1, hours > 0, interval > 0 (got {gpus}, {hours}, {interval_s})"
        )
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    data_path, labels_path = out / DATA_FILE, out / LABELS_FILE
    n = max(1, int(hours * 3600 / interval_s))
    start = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=int(rng.integers(0, 7 * 86400)))
    line = 0
    counts: dict[str, int] = {}
    with data_path.open("w", encoding="utf-8") as fd, labels_path.open("w", newline="") as fl:
        writer = csv.writer(fl)
        writer.writerow(LABEL_COLUMNS)
        offset = int(rng.integers(len(PROFILES)))
        for g in range(gpus):
            spec = GPU_SPECS[int(rng.integers(len(GPU_SPECS)))]
            gpu = _Gpu(
                spec=spec,
                uuid=f"GPU-{uuidlib.UUID(bytes=rng.bytes(16), version=4)}",
                serial=str(1320000000000 + int(rng.integers(0, 10**9))),
                bus=int(rng.integers(0x10, 0xF0)),
                minor=g % 8,
                driver=str(DRIVERS[rng.choice(len(DRIVERS), p=DRIVER_WEIGHTS)]),
                cuda=str(rng.choice(["11.4", "11.6", "12.0", "12.4", "13.0"])),
                mig=spec.name in MIG_MODELS and rng.random() < 0.35,
            )
            # The first workload cycles through the profiles so every fleet of >= 17 GPUs
            # holds each of them; later segments are drawn by weight.
            first = PROFILES[(g + offset) % len(PROFILES)]
            for rec, profile in _gpu_records(gpu, start, n, interval_s, rng, first):
                line += 1
                fd.write(json.dumps(rec, separators=(",", ":")) + "\n")
                mining = int(profile in MINING_PROFILES)
                writer.writerow([gpu.uuid, rec[TIMESTAMP_KEY], line, mining, profile, spec.name])
                counts[profile] = counts.get(profile, 0) + 1
    log.info("wrote %d records for %d GPUs to %s (%s)", line, gpus, data_path, counts)
    return data_path, labels_path


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument("--gpus", type=int, default=16, help="number of GPUs")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of samples per GPU")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        generate(args.out, args.gpus, args.hours, args.seed, args.interval)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
