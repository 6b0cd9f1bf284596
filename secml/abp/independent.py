"""A second, independent nvidia-smi fleet generator, for evaluation only (never for training).

``secml.abp.generator`` draws each metric of a workload directly (utilisation, clocks as shares
of their maximum, power as a share of the limit). This one is built differently so that a model
trained on the first is judged on data it could not have memorised:

- its own GPU catalogue, most boards absent from the training generator (GTX 1050 with power
  N/A, GTX 1660 Ti, RTX 2080 Ti/3070/3080/4070, P4, P100, V100 PCIe, A2, A40, A100 80GB PCIe,
  H100 PCIe, L40, RTX A4000) plus four it shares (T4, L4, RTX 3090, A100-SXM4-40GB);
- a small physical model instead of drawn shares: a workload states its SM and memory-bus
  activity, its clock policy (locks, offsets) and power limit; the board runs at the highest
  clock whose power fits the limit (power ~ idle + dynamic * activity * f^2.4), memory clocks
  follow the board's memory type (HBM sits at its maximum even when idle), temperature follows
  power through a thermal lag;
- its own benign look-alikes (rendering at the power cap, HPC FP64, NCCL spin, video
  transcode, bursty batch inference, idle with memory held, DL training, LLM decode) and
  mining profiles, evasive ones included (core-bound with the memory clock locked low,
  duty-cycled with the DAG resident while paused, low intensity, power-limited);
- a 30 s default interval (the training generator uses 10 s) and its own record layout code
  (driver 470-style ``power_readings``, 535+ ``gpu_power_readings``, 580 power N/A beside
  ``instant_power_draw``).

Writes ``nvsmi.jsonlines`` and ``labels.csv`` (``uuid, timestamp, line, mining, profile,
product_name, segment``) like the training generator, so every reader works on both.

    python -m secml.abp.independent --out data/abp-indep --gpus 40 --hours 24
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TS_FORMAT = "%a %b %d %H:%M:%S %Y"
LABEL_COLUMNS = ("uuid", "timestamp", "line", "mining", "profile", "product_name", "segment")


@dataclass(frozen=True)
class Board:
    """One GPU model: clocks MHz, memory MiB, power W, temperatures C."""

    name: str
    memory: int
    hbm: bool
    sm_max: int
    sm_idle: int
    mem_max: int
    mem_idle: int  # GDDR idle (P8) memory clock; HBM boards stay at mem_max
    tdp: float
    pl_min: float
    idle_w: float
    slow: int
    shut: int
    app: tuple[int, int] | None  # application clocks (graphics, mem); None: N/A (GeForce)
    power_na: bool = False  # the board reports no power reading at all


BOARDS: tuple[Board, ...] = (
    Board("NVIDIA GeForce GTX 1050", 2048, False, 1911, 139, 3504, 405, 75, 52, 5, 97, 102,
          None, power_na=True),
    Board("NVIDIA GeForce GTX 1660 Ti", 6144, False, 2100, 300, 6001, 405, 120, 70, 9, 95, 100,
          None),
    Board("NVIDIA GeForce RTX 2080 Ti", 11264, False, 2100, 300, 7000, 405, 250, 100, 18, 89, 94,
          None),
    Board("NVIDIA GeForce RTX 3070", 8192, False, 2100, 210, 7001, 405, 220, 100, 14, 95, 98,
          None),
    Board("NVIDIA GeForce RTX 3080", 10240, False, 2100, 210, 9501, 405, 320, 100, 22, 93, 98,
          None),
    Board("NVIDIA GeForce RTX 4070", 12282, False, 3105, 210, 10501, 405, 200, 100, 11, 90, 95,
          None),
    Board("Tesla P4", 7611, False, 1531, 455, 3003, 405, 75, 60, 7, 91, 94, (1113, 3003)),
    Board("Tesla P100-PCIE-16GB", 16280, True, 1328, 405, 715, 715, 250, 125, 27, 88, 90,
          (1189, 715)),
    Board("Tesla V100-PCIE-16GB", 16160, True, 1380, 135, 877, 877, 250, 100, 25, 87, 90,
          (1230, 877)),
    Board("NVIDIA A2", 15356, False, 1770, 210, 6251, 405, 60, 35, 7, 90, 95, (1770, 6251)),
    Board("NVIDIA A40", 46068, False, 1740, 210, 7251, 405, 300, 100, 30, 92, 97, (1740, 7251)),
    Board("NVIDIA A100 80GB PCIe", 81920, True, 1410, 210, 1512, 1512, 300, 150, 45, 92, 95,
          (1410, 1512)),
    Board("NVIDIA H100 PCIe", 81559, True, 1755, 345, 1593, 1593, 350, 200, 50, 92, 95,
          (1755, 1593)),
    Board("NVIDIA L40", 46068, False, 2490, 210, 9001, 405, 300, 100, 35, 95, 98, (2490, 9001)),
    Board("NVIDIA RTX A4000", 16376, False, 1560, 210, 7001, 405, 140, 100, 12, 95, 98,
          (1560, 7001)),
    Board("Tesla T4", 15360, False, 1590, 300, 5001, 405, 70, 60, 10, 93, 96, (585, 5001)),
    Board("NVIDIA L4", 23034, False, 2040, 210, 6251, 405, 72, 40, 16, 92, 95, (2040, 6251)),
    Board("NVIDIA GeForce RTX 3090", 24576, False, 2100, 210, 9751, 405, 350, 100, 30, 95, 98,
          None),
    Board("NVIDIA A100-SXM4-40GB", 40960, True, 1410, 210, 1215, 1215, 400, 100, 55, 89, 92,
          (1095, 1215)),
)  # fmt: skip
SHARED_WITH_TRAINING = frozenset(
    {"Tesla T4", "NVIDIA L4", "NVIDIA GeForce RTX 3090", "NVIDIA A100-SXM4-40GB"}
)

BENIGN = (
    "idle",
    "idle_mem_held",
    "dl_training",
    "llm_decode",
    "render_powercap",
    "hpc_fp64",
    "nccl_spin",
    "video_transcode",
    "batch_inference",
)
MINING = (
    "mine_memhard",
    "mine_compute",
    "mine_core_memlock",
    "mine_duty_cycled",
    "mine_low_intensity",
    "mine_power_limited",
)
WORKLOADS = BENIGN + MINING
DRIVERS = ("470.223.02", "525.147.05", "535.183.01", "550.127.05", "560.35.03", "580.65.06")


@dataclass
class Demand:
    """What a workload asks of the board, per sample (arrays of length n)."""

    sm: np.ndarray  # share of time SMs are busy (utilization.gpu)
    bus: np.ndarray  # share of time the memory controller is busy (utilization.memory)
    heat: float  # dynamic power per unit of SM activity at full clock (0..1.3)
    fb: np.ndarray  # frame-buffer use, MiB
    sm_lock: float | None = None  # locked core clock as a share of max
    mem_lock: float | None = None  # locked memory clock as a share of max (GDDR)
    mem_offset: float = 1.0  # memory overclock (reported clock = max * offset)
    pl: float = 1.0  # power limit as a share of TDP
    enc: np.ndarray | None = None


def _walk(rng: np.random.Generator, n: int, scale: float, keep: float = 0.95) -> np.ndarray:
    """A mean-reverting random walk around 0 (std ``scale``)."""
    steps = rng.normal(0.0, scale * np.sqrt(1 - keep**2), n)
    out = np.zeros(n)
    x = rng.normal(0.0, scale)
    for i in range(n):
        x = keep * x + steps[i]
        out[i] = x
    return out


def _demand(kind: str, b: Board, n: int, rng: np.random.Generator) -> Demand:
    """The demand of ``n`` samples of workload ``kind`` on board ``b``."""
    ones = np.ones(n)
    mem = float(b.memory)
    dag = min(mem * rng.uniform(0.7, 0.92), rng.uniform(3000, 6500))
    if kind == "idle":
        return Demand(0 * ones, 0 * ones, 0.0, ones * rng.uniform(0, 400))
    if kind == "idle_mem_held":  # a stopped job's process, or a notebook holding memory
        return Demand(0 * ones, 0 * ones, 0.0, ones * mem * rng.uniform(0.2, 0.95))
    if kind == "dl_training":
        step = rng.uniform(0.85, 1.0) + _walk(rng, n, 0.04)
        stall = rng.random(n) < rng.uniform(0.02, 0.12)
        sm = np.where(stall, rng.uniform(0, 0.3, n), step)
        return Demand(
            sm,
            sm * rng.uniform(0.3, 0.6),
            rng.uniform(0.7, 1.1),
            ones * mem * rng.uniform(0.5, 0.96),
        )
    if kind == "llm_decode":
        sm = rng.uniform(0.75, 1.0) + _walk(rng, n, 0.06)
        return Demand(
            sm,
            rng.uniform(0.6, 0.92) + _walk(rng, n, 0.05),
            rng.uniform(0.4, 0.7),
            ones * mem * rng.uniform(0.85, 0.95),
        )
    if kind == "render_powercap":  # path tracing: SMs flat out, power at the limit
        sm = np.clip(rng.uniform(0.96, 1.0) + _walk(rng, n, 0.01), 0, 1)
        return Demand(
            sm,
            rng.uniform(0.25, 0.6) + _walk(rng, n, 0.05),
            rng.uniform(1.1, 1.3),
            ones * mem * rng.uniform(0.1, 0.6),
            enc=ones * rng.uniform(0, 30),
        )
    if kind == "hpc_fp64":  # DGEMM/LINPACK: flat, hot, modest memory traffic
        sm = np.clip(rng.uniform(0.97, 1.0) + _walk(rng, n, 0.005), 0, 1)
        return Demand(
            sm,
            rng.uniform(0.15, 0.45) + _walk(rng, n, 0.02),
            rng.uniform(0.9, 1.2),
            ones * mem * rng.uniform(0.3, 0.8),
        )
    if kind == "nccl_spin":  # collectives waiting on peers: 100% util, little power
        return Demand(
            ones * 1.0,
            rng.uniform(0.0, 0.05) + _walk(rng, n, 0.01),
            rng.uniform(0.1, 0.25),
            ones * mem * rng.uniform(0.6, 0.95),
        )
    if kind == "video_transcode":
        sm = rng.uniform(0.15, 0.55) + _walk(rng, n, 0.08)
        return Demand(
            sm,
            sm * rng.uniform(0.3, 0.7),
            rng.uniform(0.3, 0.6),
            ones * mem * rng.uniform(0.05, 0.3),
            enc=np.clip(rng.uniform(50, 95) + _walk(rng, n, 8), 0, 100),
        )
    if kind == "batch_inference":  # a batch every few samples: on/off like a duty cycle
        period = int(rng.integers(3, 16))
        on = (np.arange(n) + int(rng.integers(period))) % period < max(1, period // 2)
        sm = np.where(on, rng.uniform(0.7, 1.0), rng.uniform(0, 0.05, n))
        return Demand(
            sm,
            sm * rng.uniform(0.3, 0.7),
            rng.uniform(0.6, 1.0),
            ones * mem * rng.uniform(0.2, 0.7),
        )
    # --- mining
    if kind == "mine_memhard":  # Ethash/Etchash: memory bus saturated, core clock locked low
        return Demand(
            ones * rng.uniform(0.98, 1.0),
            ones * rng.uniform(0.9, 1.0) + _walk(rng, n, 0.01),
            rng.uniform(0.4, 0.7),
            ones * dag,
            sm_lock=rng.uniform(0.45, 0.7),
            mem_offset=rng.choice([1.0, 1.0, 1.03, 1.06]),
        )
    if kind == "mine_compute":  # KawPow/Autolykos-like: core-bound at full boost
        return Demand(
            ones * 1.0,
            ones * rng.uniform(0.45, 0.75) + _walk(rng, n, 0.02),
            rng.uniform(0.9, 1.2),
            ones * min(mem * 0.8, rng.uniform(2500, 5000)),
        )
    if kind == "mine_core_memlock":  # core-bound algo, memory clock locked low, memory idle
        return Demand(
            ones * 1.0,
            ones * rng.uniform(0.02, 0.15),
            rng.uniform(0.8, 1.1),
            ones * rng.uniform(300, 1500),
            mem_lock=rng.uniform(0.06, 0.2),
            sm_lock=None if rng.random() < 0.5 else rng.uniform(0.8, 0.95),
        )
    if kind == "mine_duty_cycled":  # runs k samples, pauses j; the DAG stays resident
        on_len, off_len = int(rng.integers(2, 12)), int(rng.integers(2, 20))
        phase = (np.arange(n) + int(rng.integers(on_len + off_len))) % (on_len + off_len)
        on = phase < on_len
        return Demand(
            np.where(on, 1.0, 0.0),
            np.where(on, rng.uniform(0.85, 1.0), 0.0),
            rng.uniform(0.5, 0.8),
            ones * dag,
            sm_lock=rng.uniform(0.5, 0.75),
        )
    if kind == "mine_low_intensity":  # throttled intensity to stay under the radar
        level = rng.uniform(0.2, 0.5)
        sm = np.clip(level + rng.normal(0, 0.03, n), 0, 1)
        return Demand(
            sm,
            sm * rng.uniform(0.8, 1.0),
            rng.uniform(0.5, 0.8),
            ones * dag,
            sm_lock=rng.uniform(0.55, 0.8),
        )
    if kind == "mine_power_limited":  # power limit set near the board's minimum
        return Demand(
            ones * 1.0, ones * rng.uniform(0.8, 1.0), rng.uniform(0.7, 1.1), ones * dag, pl=0.0
        )  # pl 0: the board's minimum
    raise ValueError(f"unknown workload {kind!r}; known: {', '.join(WORKLOADS)}")


def _physics(d: Demand, b: Board, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Clocks, power and utilisation the board reports for demand ``d`` (per-sample arrays)."""
    n = len(d.sm)
    sm = np.clip(d.sm, 0, 1)
    bus = np.clip(d.bus, 0, 1)
    busy = sm > 0.02
    limit = b.pl_min if d.pl == 0.0 else min(b.tdp, max(b.pl_min, b.tdp * d.pl))
    want = np.where(busy, d.sm_lock or 1.0, b.sm_idle / b.sm_max)
    # memory clock: HBM runs at its maximum always; GDDR idles low unless busy or locked
    if b.hbm:
        mclk = np.ones(n) * d.mem_offset
    elif d.mem_lock is not None:
        mclk = np.where(busy, max(d.mem_lock, b.mem_idle / b.mem_max), b.mem_idle / b.mem_max)
    else:
        mclk = np.where(busy | (d.fb > 0.5 * b.memory), d.mem_offset, b.mem_idle / b.mem_max)
        mclk = np.where(busy, mclk, b.mem_idle / b.mem_max)
    dyn = b.tdp - b.idle_w
    mem_w = 0.25 * dyn * bus * mclk

    def power(f: np.ndarray) -> np.ndarray:
        return b.idle_w + dyn * d.heat * sm * f**2.4 + mem_w

    f = want.copy()
    over = power(f) > limit
    if over.any():  # DVFS: the highest clock whose power fits the limit
        room = np.maximum(limit - b.idle_w - mem_w, 1e-3) / np.maximum(dyn * d.heat * sm, 1e-6)
        f = np.where(over, np.minimum(f, room ** (1 / 2.4)), f)
    f = np.clip(f, b.sm_idle / b.sm_max, 1.0)
    p = np.minimum(power(f), limit) * (1 + rng.normal(0, 0.01, n))
    gfx = np.round(f * b.sm_max / 15) * 15
    return {
        "util": np.round(sm * 100),
        "mem_util": np.round(bus * 100),
        "gfx": np.clip(gfx, b.sm_idle, b.sm_max),
        "mclk": np.round(mclk * b.mem_max),
        "power": np.maximum(p, b.idle_w * 0.8),
        "limit": np.full(n, float(limit)),
        "fb": np.clip(np.round(d.fb + rng.normal(0, 2, n)), 0, b.memory - 200),
        "enc": np.round(d.enc) if d.enc is not None else np.zeros(n),
    }


def _plan(
    rng: np.random.Generator, n: int, first: str, mining_share: float
) -> list[tuple[str, int]]:
    """Workload segments (kind, length in samples) covering ``n`` samples, ``first`` first."""
    out, used, kind = [], 0, first
    while used < n:
        length = min(n - used, int(rng.integers(30, 240)))
        out.append((kind, length))
        used += length
        pool = MINING if rng.random() < mining_share else BENIGN
        kind = str(pool[int(rng.integers(len(pool)))])
    return out


def _fmt(v: float, unit: str, dec: int = 0) -> str:
    """A reading as nvidia-smi prints it ("61.77 W"); never "-0"."""
    return f"{abs(v) if abs(v) < 0.5 else v:.{dec}f} {unit}"


def _records(b: Board, driver: str, uuid: str, m: dict[str, np.ndarray], temps: np.ndarray,
             times: list[str]) -> list[dict[str, str]]:  # fmt: skip
    """nvidia-smi flattened records for one segment in the layout ``driver`` prints."""
    g = "nvidia_smi_log.gpu."
    branch = int(driver.split(".")[0])
    app = b.app
    mhz = lambda v: "N/A" if v is None else f"{int(v)} MHz"  # noqa: E731
    static = {
        "nvidia_smi_log.driver_version": driver,
        "nvidia_smi_log.attached_gpus": "1",
        g + "product_name": b.name,
        g + "uuid": uuid,
        g + "fb_memory_usage.total": f"{b.memory} MiB",
        g + "temperature.gpu_temp_max_threshold": f"{b.shut} C",
        g + "temperature.gpu_temp_slow_threshold": f"{b.slow} C",
        g + "applications_clocks.graphics_clock": mhz(app and app[0]),
        g + "applications_clocks.mem_clock": mhz(app and app[1]),
        g + "default_applications_clocks.graphics_clock": mhz(app and app[0]),
        g + "default_applications_clocks.mem_clock": mhz(app and app[1]),
        g + "max_clocks.graphics_clock": mhz(b.sm_max),
        g + "max_clocks.sm_clock": mhz(b.sm_max),
        g + "max_clocks.mem_clock": mhz(b.mem_max),
    }
    pw = g + ("power_readings." if branch < 535 else "gpu_power_readings.")
    out = []
    for i, ts in enumerate(times):
        rec = dict(static)
        fb = float(m["fb"][i])
        rec["nvidia_smi_log.timestamp"] = ts
        rec[g + "fb_memory_usage.used"] = _fmt(fb, "MiB")
        rec[g + "fb_memory_usage.free"] = _fmt(max(0.0, b.memory - 200 - fb), "MiB")
        rec[g + "utilization.gpu_util"] = _fmt(m["util"][i], "%")
        rec[g + "utilization.memory_util"] = _fmt(m["mem_util"][i], "%")
        rec[g + "utilization.encoder_util"] = _fmt(m["enc"][i], "%")
        rec[g + "temperature.gpu_temp"] = _fmt(temps[i], "C")
        rec[g + "clocks.graphics_clock"] = mhz(m["gfx"][i])
        rec[g + "clocks.sm_clock"] = mhz(m["gfx"][i])
        rec[g + "clocks.mem_clock"] = mhz(m["mclk"][i])
        draw = "N/A" if b.power_na else _fmt(m["power"][i], "W", 2)
        rec[pw + "power_limit" if branch < 535 else pw + "current_power_limit"] = (
            "N/A" if b.power_na else _fmt(m["limit"][i], "W", 2)
        )
        if branch >= 580:
            rec[pw + "power_draw"] = "N/A"
            rec[pw + "instant_power_draw"] = draw
        else:
            rec[pw + "power_draw"] = draw
        out.append(rec)
    return out


def generate(out: Path, gpus: int = 40, hours: float = 24.0, seed: int = 0,
             interval_s: float = 30.0, mining_share: float = 0.3) -> tuple[Path, Path]:  # fmt: skip
    """Write ``nvsmi.jsonlines`` and ``labels.csv`` under ``out``; return both paths.

    Every fleet of >= 15 GPUs starts each workload on some GPU (the first segment cycles
    through them), so every profile is present.
    """
    if gpus < 1 or hours <= 0 or interval_s <= 0:
        raise ValueError(
            f"need gpus >= 1, hours > 0, interval > 0 (got {gpus}, {hours}, {interval_s})"
        )
    rng = np.random.default_rng([seed, 14])
    out.mkdir(parents=True, exist_ok=True)
    data, labels = out / "nvsmi.jsonlines", out / "labels.csv"
    n = max(1, int(hours * 3600 / interval_s))
    t0 = datetime(2027, 3, 1, tzinfo=UTC) + timedelta(minutes=int(rng.integers(0, 20000)))
    times = [(t0 + timedelta(seconds=i * interval_s)).strftime(TS_FORMAT) for i in range(n)]
    line = 0
    with data.open("w", encoding="utf-8") as fd, labels.open("w", newline="") as fl:
        w = csv.writer(fl)
        w.writerow(LABEL_COLUMNS)
        for k in range(gpus):
            b = (
                BOARDS[k % len(BOARDS)]
                if k < len(BOARDS)
                else BOARDS[int(rng.integers(len(BOARDS)))]
            )
            uuid = "GPU-" + "-".join(rng.bytes(s).hex() for s in (4, 2, 2, 2, 6))
            driver = str(DRIVERS[int(rng.integers(len(DRIVERS)))])
            temp = ambient = rng.uniform(22, 38)
            start = 0
            for seg, (kind, length) in enumerate(
                _plan(rng, n, WORKLOADS[k % len(WORKLOADS)], mining_share)
            ):
                m = _physics(_demand(kind, b, length, rng), b, rng)
                temps = np.empty(length)
                for i in range(length):  # thermal lag toward ambient + power share
                    share = m["power"][i] / b.tdp
                    temp += 0.3 * (ambient + 50 * share - temp)
                    temps[i] = min(b.slow - 1, round(temp + rng.normal(0, 0.5)))
                seg_times = times[start : start + length]
                mining = int(kind in MINING)
                for rec in _records(b, driver, uuid, m, temps, seg_times):
                    line += 1
                    fd.write(json.dumps(rec, separators=(",", ":")) + "\n")
                    w.writerow([uuid, rec["nvidia_smi_log.timestamp"], line, mining, kind, b.name,
                                f"{uuid}/{seg}"])  # fmt: skip
                start += length
    log.info("wrote %d records for %d GPUs to %s", line, gpus, data)
    return data, labels


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", type=int, default=40)
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--interval", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        generate(args.out, args.gpus, args.hours, args.seed, args.interval)
    except ValueError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
