"""ABP benchmark: what pooling several fold draws costs the threshold calibration, and what it buys.

``secml.abp.model.fit_calibrated`` chooses the threshold for the target FPR on out-of-fold
scores of the training GPUs. One draw of the GPUs into folds costs ``folds`` trainings;
``TrainParams.calibration_repeats`` draws pooled cost that many times as many. On one generated
fleet, for each training seed (``TrainParams.seed``: the booster's subsampling and the fold
draws), this times ``fit_calibrated`` with one draw and with ``--repeats`` draws, and prints the
median seconds, their ratio, and the thresholds each chose: how far the single draw's threshold
moves with the seed, and how far the pooled one does.

    python -m bench.bench_abp_calibration [--gpus 48] [--hours 8] [--interval 30] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from secml.abp import model as m
from secml.abp.generator import generate


def _logit(p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return float(np.log(p / (1 - p)))


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 0."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_abp_calibration", description=__doc__)
    p.add_argument("--gpus", type=int, default=48)
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--interval", type=float, default=30.0)
    p.add_argument("--seeds", type=int, default=3, help="training seeds (the fleet stays the same)")
    p.add_argument("--repeats", type=int, default=m.TrainParams().calibration_repeats)
    p.add_argument("--target-fpr", type=float, default=0.001)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-abp-calibration-") as tmp:
        data, labels = generate(Path(tmp), args.gpus, args.hours, 0, args.interval)
        ds, _ = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
    seconds: dict[int, list[float]] = {1: [], args.repeats: []}
    thresholds: dict[int, list[float]] = {1: [], args.repeats: []}
    for seed in range(args.seeds):
        for repeats in seconds:
            params = replace(m.TrainParams(seed=seed), calibration_repeats=repeats)
            t0 = time.perf_counter()
            _, info = m.fit_calibrated(ds, params, args.target_fpr)
            seconds[repeats].append(time.perf_counter() - t0)
            thresholds[repeats].append(info["threshold"])
    w = sys.stdout.write
    w(f"ABP threshold calibration, {len(ds):,} training rows ({args.gpus} GPUs x "
      f"{args.hours:g} h at {args.interval:g} s), {args.seeds} training seeds, target FPR "
      f"{args.target_fpr:g}\n")  # fmt: skip
    w(f"{'fold draws':<12}{'seconds':>10}{'log-odds s.d.':>15}  thresholds\n")
    for repeats, secs in seconds.items():
        ts = thresholds[repeats]
        sd = statistics.pstdev([_logit(t) for t in ts])
        w(f"{repeats:<12}{statistics.median(secs):>10.1f}{sd:>15.2f}  "
          + " ".join(f"{t:.4f}" for t in ts) + "\n")  # fmt: skip
    ratio = statistics.median(seconds[args.repeats]) / statistics.median(seconds[1])
    w(f"time ratio {args.repeats} draws / 1 draw: {ratio:.2f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
