"""ABP generalisation benchmark: leave one GPU model out, raw features vs raw + derived ratios.

One seeded fleet is generated. For each GPU model in it, a classifier is trained on the rows of
every OTHER model and tested on that model's rows, once on the 18 raw nvidia-smi features and
once on the 18 plus the scale-free ratios of ``secml.abp.features.DERIVED``; the ordinary split
by GPU (held-out GPUs of models seen in training) is run for both as the in-distribution check.
Everything printed is measured in this one run.

    python -m bench.bench_abp_generalise [--gpus 56] [--hours 6] [--seed 0] [--trees 200]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from secml.abp import model as m
from secml.abp.features import DERIVED
from secml.abp.generator import BENIGN_PROFILES, MINING_PROFILES, generate

SETS = {"raw": False, "derived": True}
HEAD = ("f1", "precision", "recall", "roc_auc")


def gpu_models(labels: Path) -> dict[str, str]:
    """GPU uuid -> product name, from the generator's ``labels.csv``."""
    with labels.open(newline="") as fh:
        return {row["uuid"]: row["product_name"] for row in csv.DictReader(fh)}


def run(ds: m.Dataset, tr: np.ndarray, te: np.ndarray, params: m.TrainParams) -> dict[str, float]:
    """Train on rows ``tr``, evaluate on rows ``te``; metrics plus training seconds."""
    t0 = time.perf_counter()
    booster = m.train(ds.subset(tr), params)
    seconds = time.perf_counter() - t0
    test = ds.subset(te)
    s = m.score_dataset(booster, test)
    return m.evaluate(test.y, s, test.profile) | {"train_s": seconds}


def columns() -> list[tuple[str, str]]:
    """(metric key, short header) for the tables."""
    cols = [(k, k.replace("precision", "prec").replace("roc_auc", "auc")) for k in HEAD]
    cols += [(f"recall_{p}", "R:" + p.removeprefix("mining_")) for p in MINING_PROFILES]
    cols += [(f"specificity_{p}", "S:" + p[:8]) for p in BENIGN_PROFILES]
    return cols


def table(title: str, rows: list[tuple[str, str, dict[str, float]]]) -> None:
    """Print one results table: a row per (held-out model, feature set)."""
    cols = columns()
    print(f"\n== {title}")
    print(
        f"{'held out':<28}{'set':<9}{'rows':>7}{'mined':>7}" + "".join(f"{h:>11}" for _, h in cols)
    )
    for name, fset, met in rows:
        cells = "".join(
            f"{met.get(k, math.nan):>11.4f}"
            if not math.isnan(met.get(k, math.nan))
            else f"{'-':>11}"
            for k, _ in cols
        )
        print(f"{name[:27]:<28}{fset:<9}{met['rows']:>7}{met['tp'] + met['fn']:>7}{cells}")


def mean(results: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over held-out models (models lacking a profile are left out of it)."""
    keys = {k for r in results for k in r}
    out: dict[str, float] = {}
    for k in keys:
        vals = [r[k] for r in results if k in r and not math.isnan(r[k])]
        out[k] = float(np.mean(vals)) if vals else math.nan
    out["rows"] = int(sum(r["rows"] for r in results))
    out["tp"], out["fn"] = int(sum(r["tp"] for r in results)), int(sum(r["fn"] for r in results))
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=56, help="GPUs in the fleet")
    parser.add_argument("--hours", type=float, default=6.0, help="hours of samples per GPU")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0, help="fleet, split and XGBoost seed")
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temp dir")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-abp-gen-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        data, labels = generate(work, args.gpus, args.hours, args.seed, args.interval)
        ds, counts = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
        by_uuid = gpu_models(labels)
        model_of = np.array([by_uuid[g] for g in ds.gpu])
        print(f"fleet: {args.gpus} GPUs x {args.hours} h, seed {args.seed}: {counts['rows']} rows, "
              f"{counts['mining']} mining ({time.perf_counter() - t0:.1f} s to generate + parse); "
              f"{args.trees} trees on {m.device()}; derived = {len(DERIVED)} ratios")  # fmt: skip
        names = sorted(set(model_of.tolist()))
        print(f"{'GPU model':<28}{'GPUs':>5}{'rows':>8}{'mining rows':>12}")
        for name in names:
            sel = model_of == name
            print(f"{name[:27]:<28}{len(set(ds.gpu[sel])):>5}{sel.sum():>8}{ds.y[sel].sum():>12}")
        results: dict[str, dict] = {"lomo": {}, "by_gpu": {}}
        lomo_rows: list[tuple[str, str, dict[str, float]]] = []
        for name in names:
            te = np.flatnonzero(model_of == name)
            tr = np.flatnonzero(model_of != name)
            if len(np.unique(ds.y[tr])) < 2:
                print(f"skip {name}: the other models hold one class only")
                continue
            for fset, derived in SETS.items():
                params = m.TrainParams(n_estimators=args.trees, seed=args.seed, derived=derived)
                met = run(ds, tr, te, params)
                results["lomo"].setdefault(fset, {})[name] = met
                lomo_rows.append((name, fset, met))
        for fset in SETS:
            lomo_rows.append(
                ("MEAN over held-out models", fset, mean(list(results["lomo"][fset].values())))
            )
        table("leave one GPU model out: train on the other models, test on this one", lomo_rows)
        tr, te = m.split(ds, "gpu", 0.25, args.seed)
        split_rows = []
        for fset, derived in SETS.items():
            params = m.TrainParams(n_estimators=args.trees, seed=args.seed, derived=derived)
            met = run(ds, tr, te, params)
            results["by_gpu"][fset] = met
            split_rows.append(("by-GPU split (25% GPUs)", fset, met))
        table("ordinary split by GPU (every model also in training): in-distribution", split_rows)
        print("\nR:<profile> = recall of a mining profile, S:<profile> = specificity of a benign"
              " one; '-' = profile absent from the held-out rows.")  # fmt: skip
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=float))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
