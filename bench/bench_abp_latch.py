"""ABP benchmark: what the per-GPU allocation latch costs the batch pipeline, and what it buys.

One booster is trained on a generated fleet; the same booster is then run through the batch
pipeline (``training.abp_pipeline.run``: file -> features -> XGBoost -> file) twice per round on
the same input, once with the latch (``latch`` attribute "1", the default) and once without
("0"), rounds interleaved. Printed: rows/s of each, their ratio, and the recall / FPR of each
at the booster's threshold on the labelled input (duty-cycled miners' pauses are where they
differ).

    python -m bench.bench_abp_latch [--gpus 40] [--hours 6] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import orjson

from secml.abp import model as m
from secml.abp.generator import generate
from training import abp_pipeline as pipe


def _run(model_path: Path, inp: Path, out: Path) -> tuple[float, np.ndarray]:
    scorer, _, thr = pipe.local_scorer(str(model_path))  # a fresh per-GPU history per run
    summary = pipe.run([str(inp)], str(out), scorer, threshold=thr, progress=False)
    flags = np.array([orjson.loads(x)["mining"] for x in out.read_bytes().splitlines()])
    return summary.scored / summary.seconds, flags


def main(argv: list[str] | None = None) -> int:
    """Print the table; exit 0."""
    p = argparse.ArgumentParser(prog="python -m bench.bench_abp_latch", description=__doc__)
    p.add_argument("--gpus", type=int, default=40)
    p.add_argument("--hours", type=float, default=6.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-abp-latch-") as tmp:
        work = Path(tmp)
        data, labels = generate(work / "train", gpus=args.gpus, hours=args.hours, seed=args.seed)
        ds, _ = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
        booster, _ = m.fit_calibrated(ds, m.TrainParams(seed=args.seed), 0.001)
        paths = {}
        for flag in ("1", "0"):
            booster.set_attr(latch=flag)
            paths[flag] = work / f"booster-latch{flag}.ubj"
            booster.save_model(str(paths[flag]))
        src, lab = generate(work / "score", gpus=args.gpus, hours=args.hours, seed=args.seed + 1)
        truth = m.read_labels(str(lab))
        y = np.array(
            [truth[m.record_key(orjson.loads(x))][0] for x in src.read_bytes().splitlines()]
        )
        speed: dict[str, list[float]] = {"1": [], "0": []}
        flags: dict[str, np.ndarray] = {}
        for _ in range(args.rounds):
            for flag in ("0", "1"):
                rate, flags[flag] = _run(paths[flag], src, work / f"out{flag}.jsonlines")
                speed[flag].append(rate)
    w = sys.stdout.write
    w(f"ABP batch pipeline, {len(y):,} rows ({args.gpus} GPUs x {args.hours:g} h), "
      f"median of {args.rounds} interleaved rounds\n")  # fmt: skip
    w(f"{'':<14}{'rows/s':>12}{'recall':>10}{'FPR':>10}\n")
    for flag, name in (("0", "no latch"), ("1", "latch")):
        f = flags[flag].astype(bool)
        rec, fpr = f[y == 1].mean(), f[y == 0].mean()
        w(f"{name:<14}{statistics.median(speed[flag]):>12,.0f}{rec:>10.4f}{fpr:>10.4f}\n")
    ratio = statistics.median(speed["1"]) / statistics.median(speed["0"])
    w(f"throughput ratio latch / no latch: {ratio:.3f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
