"""ABP benchmark: training time, held-out metrics per profile, and batch-pipeline throughput.

The pipeline (file -> JSON parse -> 18 features -> XGBoost -> file) is timed end to end on N
generated rows and compared with xgboost's in-process ``inplace_predict`` on the same rows'
feature matrix (already parsed, in memory): the ratio says what the file and string handling
costs on top of the model itself. "parse+score" reads and parses the same file into the matrix
and scores it, without writing output. Everything is measured in this one run; memory stays
flat (the 1M-row input is about 9 GB on disk, streamed).

    python -m bench.bench_abp --rows 10000,100000 [--rows 1000000] [--trees N]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from secml.abp import model as m
from secml.abp.features import to_matrix
from secml.abp.generator import UUID_KEY, generate
from secml.abp.temporal import TemporalState
from training import abp_pipeline as pipe

ROWS_PER_GPU = 2160  # 6 hours at 10 s


def _head(src: Path, dst: Path, n: int) -> None:
    """Copy the first ``n`` lines of ``src`` to ``dst``."""
    with src.open() as fi, dst.open("w") as fo:
        for i, line in enumerate(fi):
            if i >= n:
                break
            fo.write(line)


def _parse_matrix(path: Path, n: int) -> tuple[np.ndarray, list[str | None]]:
    """The (n, 18) feature matrix and GPU uuids of a JSON-lines file (the one featurizer,
    column by column, as the pipeline reads a block)."""
    with path.open("rb") as fh:
        records = [orjson.loads(line) for line in fh]
    return to_matrix(records), [rec.get(UUID_KEY) for rec in records]


def bench_training(work: Path, gpus: int, trees: int | None, seed: int) -> tuple[object, dict]:
    """Generate a fleet, train on 3/4 of the GPUs; print timings and held-out metrics."""
    t0 = time.perf_counter()
    data, labels = generate(work / "train", gpus=gpus, hours=6, seed=seed)
    t1 = time.perf_counter()
    ds, counts = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
    t2 = time.perf_counter()
    tr, te = m.split(ds, "gpu", 0.25, seed)
    params = m.TrainParams(seed=seed, **({"n_estimators": trees} if trees else {}))
    booster = m.train(ds.subset(tr), params)
    t3 = time.perf_counter()
    test = ds.subset(te)
    metrics = m.evaluate(test.y, m.score_dataset(booster, test), test.profile)
    trees_n = params.n_estimators
    print(f"\n== training ({m.device()}): {counts['rows']} rows, {gpus} GPUs, {trees_n} trees")
    print(f"generate {t1 - t0:7.2f} s | load+features {t2 - t1:7.2f} s | "
          f"train {t3 - t2:7.2f} s ({len(tr)} rows)")  # fmt: skip
    print(f"held-out GPUs ({len(te)} rows): F1 {metrics['f1']:.4f}  precision "
          f"{metrics['precision']:.4f}  recall {metrics['recall']:.4f}  ROC AUC "
          f"{metrics['roc_auc']:.4f}  fp {metrics['fp']}  fn {metrics['fn']}")  # fmt: skip
    print(f"{'profile':<18}{'rows':>8}  rate")
    for key, value in sorted(metrics.items()):
        if (
            key.startswith(("recall_", "specificity_"))
            and "rows_" + key.split("_", 1)[1] in metrics
        ):
            prof = key.split("_", 1)[1]
            print(f"{prof:<18}{metrics['rows_' + prof]:>8}  {key.split('_')[0]} {value:.4f}")
    return booster, metrics


def bench_pipeline(work: Path, booster: object, rows: list[int], seed: int) -> None:
    """Time the pipeline and inplace_predict on the same rows; print a table with the ratio."""
    model_path = work / "booster.ubj"
    booster.save_model(str(model_path))  # type: ignore[attr-defined]
    largest = max(rows)
    src, _ = generate(work / "score", gpus=math.ceil(largest / ROWS_PER_GPU), hours=6,
                      seed=seed + 1)  # fmt: skip
    head = ("rows", "pipeline s", "pipeline rows/s", "parse+score rows/s", "inplace rows/s",
            "inplace/pipeline")  # fmt: skip
    table = []
    for n in rows:
        inp, out = work / f"in-{n}.jsonlines", work / f"out-{n}.jsonlines"
        _head(src, inp, n)
        scorer = pipe.local_scorer(str(model_path))[0]  # fresh per-GPU history per run
        summary = pipe.run([str(inp)], str(out), scorer, progress=False)
        assert summary.scored == n, summary.line()
        t0 = time.perf_counter()
        X, uuids = _parse_matrix(inp, n)
        m.score(booster, X, uuids, TemporalState())  # type: ignore[arg-type]
        feat_score = time.perf_counter() - t0
        # The booster's own input: the 18 columns, the derived and temporal ones it was
        # trained with (computed outside the timing).
        T = TemporalState().features(X, uuids) if m.booster_temporal(booster) else None  # type: ignore[arg-type]
        Xm = m.model_inputs(X, m.booster_derived(booster), T)  # type: ignore[arg-type]
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            booster.inplace_predict(Xm)  # type: ignore[attr-defined]
            best = min(best, time.perf_counter() - t0)
        pipe_rps, inplace_rps = summary.rows_per_s, n / best
        table.append((n, summary.seconds, pipe_rps, n / feat_score, inplace_rps,
                      inplace_rps / pipe_rps))  # fmt: skip
        del X, Xm
        inp.unlink()
        out.unlink()
    print("\n== batch pipeline (file -> file, in-process XGBoost) vs inplace_predict")
    print(" | ".join(f"{h:>17}" for h in head))
    for r in table:
        print(f"{r[0]:>17,} | {r[1]:>17.2f} | {r[2]:>17,.0f} | {r[3]:>17,.0f} | {r[4]:>17,.0f} | "
              f"{r[5]:>16.1f}x")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000", help="comma-separated row counts")
    parser.add_argument("--gpus", type=int, default=24, help="GPUs in the training fleet")
    parser.add_argument("--trees", type=int, default=None, help="default: TrainParams'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    rows = [int(x) for x in args.rows.split(",") if x]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-abp-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        booster, _ = bench_training(work, args.gpus, args.trees, args.seed)
        bench_pipeline(work, booster, rows, args.seed)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"\nnumpy {np.__version__}; machine load affects all columns alike (one run).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
