"""ABP evaluation that generalises: unseen GPU models, unseen miners, an independent generator.

For each seed a training fleet is generated with ``secml.abp.generator`` and an evaluation fleet
with the structurally different ``secml.abp.independent``. Three detectors are trained and
judged the same way, each with its threshold chosen on out-of-fold training GPUs for the target FPR
(``settings.abp_target_fpr``, 0.1%):

- ``lr``: logistic regression on Morpheus's 18 columns (median-imputed, standardised), the
  baseline;
- ``xgb``: XGBoost on the 18 columns + the derived ratios, one sample at a time;
- ``xgb+temporal``: the same plus the per-GPU rolling-window features (``secml.abp.temporal``).

Splits: leave-one-GPU-model-out (train on every other model of the training fleet, test on the
held-out model's GPUs), leave-one-mining-profile-out (train without one mining profile, test on
held-out GPUs incl. that profile), and "independent" (train on the whole training fleet, test on
the independent fleet). Opt-in, ``ceiling``: train on a second fleet of the independent generator
(another seed, other GPUs) and test on the same independent fleet; not a generalisation figure
but what these columns allow when training data comes from the fleet's own world, so the gap
between ``indep`` and ``ceiling`` is what the training generator's view of GPUs costs.
Reported: recall and FPR at the calibrated threshold; recall at FPR <=
target on the test rows' own curve, with a 95% interval (test GPUs resampled whole, 200 times:
at 0.1% FPR one benign episode on one GPU can set the threshold, so the figure moves with the
GPUs a test fleet holds; the interval does not cover retraining) and each detector's gain there
over the baseline with a paired interval (the same resamples for every detector); ROC/PR AUC,
recall per mining profile, FPR per benign workload, recall per GPU model, segment recall and
median samples to the first alert. Printed, and logged to MLflow (experiment ``abp-eval``) when
the tracking server answers.

    python -m training.abp_eval --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from secml.abp import generator as gen1
from secml.abp import independent as gen2
from secml.abp import model as m

log = logging.getLogger(__name__)

DETECTORS = ("lr", "xgb", "xgb+temporal")
SPLITS = ("lomo", "lopo", "indep", "ceiling")
CEILING_SEED_OFFSET = 50  # the ceiling's training fleet: the independent generator, seed + this
BASELINE = "lr"
EXPERIMENT = "abp-eval"


@dataclass
class Fleet:
    """A labelled dataset plus the GPU model of each row."""

    ds: m.Dataset
    model: np.ndarray  # product name per row


def load_fleet(data: Path, labels: Path) -> Fleet:
    """Read a generated fleet (either generator) into a dataset with per-GPU temporal features."""
    ds, _ = m.build_dataset(m.read_jsonlines(str(data)), m.read_labels(str(labels)))
    with labels.open(newline="") as fh:
        names = {row["uuid"]: row["product_name"] for row in csv.DictReader(fh)}
    return Fleet(ds, np.asarray([names.get(g, "?") for g in ds.gpu]))


# ---------------------------------------------------------------- detectors


def _lr_matrix(d: m.Dataset) -> np.ndarray:
    """The 18 columns for the baseline; columns N/A everywhere (GeForce-only folds) -> 0."""
    return np.where(np.isnan(d.X).all(axis=0), 0.0, d.X.astype(np.float64))


def _fit_lr(ds: m.Dataset) -> Callable[[m.Dataset], np.ndarray]:
    """Logistic regression on the 18 columns (median-imputed, standardised); its scorer."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(
        SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000)
    )
    pipe.fit(_lr_matrix(ds), ds.y)
    return lambda d: pipe.predict_proba(_lr_matrix(d))[:, 1].astype(np.float32)


Scorer = Callable[[m.Dataset], np.ndarray]


# TrainParams fields for the XGBoost detectors, overridden from the command line (--xgb)
XGB_OVERRIDES: dict[str, Any] = {}


def fit_detector(
    kind: str, ds: m.Dataset, target_fpr: float, trees: int | None, seed: int
) -> tuple[Scorer, float]:
    """Train detector ``kind`` on ``ds``; (scorer over datasets, calibrated threshold)."""
    if kind == "lr":
        # calibrated as the XGBoost detectors are (--xgb may set calibration_repeats)
        repeats = XGB_OVERRIDES.get("calibration_repeats", m.TrainParams().calibration_repeats)
        thr, _ = m.oof_threshold(ds, _fit_lr, target_fpr, seed=seed + 1, repeats=repeats)
        return _fit_lr(ds), thr
    params = m.TrainParams(
        **{**({"n_estimators": trees} if trees else {}), **XGB_OVERRIDES},
        seed=seed,
        temporal=kind == "xgb+temporal",
    )
    booster, info = m.fit_calibrated(ds, params, target_fpr)
    return (lambda d: m.score_dataset(booster, d)), float(info["threshold"])


# ---------------------------------------------------------------- metrics


def segments(ds: m.Dataset) -> list[np.ndarray]:
    """Row indices of each mining episode: a GPU's consecutive rows of one mining profile."""
    order = np.lexsort((ds.time, ds.gpu))
    out: list[np.ndarray] = []
    cur: list[int] = []
    prev: tuple[str, str] | None = None
    for i in order:
        key = (ds.gpu[i], ds.profile[i])
        if ds.y[i] == 1 and key == prev:
            cur.append(i)
            continue
        if cur:
            out.append(np.asarray(cur))
        cur = [i] if ds.y[i] == 1 else []
        prev = key if ds.y[i] == 1 else None
    if cur:
        out.append(np.asarray(cur))
    return out


BOOT_PREFIX = "_boot/"  # keys holding bootstrap replicates, folded into intervals by ``evaluate``
BOOT = BOOT_PREFIX + "recall_at_fpr"
N_BOOT = 200


def metrics(
    ds: m.Dataset,
    gpu_model: np.ndarray,
    s: np.ndarray,
    thr: float,
    target_fpr: float,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """Every figure the report prints, for scores ``s`` at threshold ``thr``.

    ``BOOT`` holds ``N_BOOT`` replicates of recall at the FPR target over test GPUs resampled
    whole (seeded by ``boot_seed``); ``evaluate`` turns their fold and seed means into a 95%
    interval.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = ds.y
    pred = s >= thr
    both = (y == 1).any() and (y == 0).any()
    out: dict[str, Any] = {
        "recall": float(pred[y == 1].mean()) if (y == 1).any() else math.nan,
        "fpr": float(pred[y == 0].mean()) if (y == 0).any() else math.nan,
        "precision": float(y[pred].mean()) if pred.any() else math.nan,
        "recall_at_fpr": m.recall_at_fpr(y, s, target_fpr),
        BOOT: m.recall_at_fpr_interval(y, s, ds.gpu, target_fpr, N_BOOT, boot_seed),
        "roc_auc": float(roc_auc_score(y, s)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, s)) if both else math.nan,
    }
    for prof in np.unique(ds.profile):
        mask = ds.profile == prof
        key = "recall" if y[mask].any() else "fpr"
        out[f"{key}/{prof}"] = float(pred[mask].mean())
    for name in np.unique(gpu_model):
        mask = (gpu_model == name) & (y == 1)
        if mask.any():
            out[f"model_recall/{name}"] = float(pred[mask].mean())
    segs = segments(ds)
    ttd = [int(np.argmax(pred[seg])) + 1 for seg in segs if pred[seg].any()]
    out["segments"] = float(len(segs))
    out["segment_recall"] = len(ttd) / len(segs) if segs else math.nan
    out["median_ttd"] = float(np.median(ttd)) if ttd else math.nan
    return out


# ---------------------------------------------------------------- splits


def leave_one_model_out(
    f: Fleet, kinds: tuple[str, ...], fpr: float, trees: int | None, seed: int
) -> dict:
    """Per detector: metrics pooled over folds (each GPU model held out once), fold means."""
    pooled: dict[str, list] = defaultdict(list)
    folds: dict[str, list[dict[str, float]]] = defaultdict(list)
    for name in np.unique(f.model):
        tr, te = np.flatnonzero(f.model != name), np.flatnonzero(f.model == name)
        train, test = f.ds.subset(tr), f.ds.subset(te)
        if len(np.unique(train.y)) < 2:
            continue
        for kind in kinds:
            score_fn, thr = fit_detector(kind, train, fpr, trees, seed)
            s = score_fn(test)
            boot_seed = seed * 1000 + len(folds[kind])
            folds[kind].append(metrics(test, f.model[te], s, thr, fpr, boot_seed))
            pooled[kind].append((te, s, thr))
    return _summarise(f, pooled, folds, fpr)


def leave_one_profile_out(
    f: Fleet, kinds: tuple[str, ...], fpr: float, trees: int | None, seed: int
) -> dict:
    """Per detector: one mining profile left out of training.

    Training: the training GPUs' rows, less every row of the held-out profile. Test: the
    held-out GPUs' rows plus every row of the held-out profile (none of which was trained on).
    """
    tr_idx, te_idx = m.split(f.ds, "gpu", 0.3, seed)
    folds: dict[str, list[dict[str, float]]] = defaultdict(list)
    mining = sorted({p for p, y in zip(f.ds.profile, f.ds.y, strict=True) if y == 1})
    for prof in mining:
        out = f.ds.profile == prof
        tr = tr_idx[~out[tr_idx]]
        te = np.union1d(te_idx, np.flatnonzero(out))
        train, test = f.ds.subset(tr), f.ds.subset(te)
        for kind in kinds:
            score_fn, thr = fit_detector(kind, train, fpr, trees, seed)
            s = score_fn(test)
            res = metrics(test, f.model[te], s, thr, fpr, seed * 1000 + len(folds[kind]))
            mask = test.profile == prof
            res["heldout_recall"] = float((s[mask] >= thr).mean())
            # recall on the unseen profile at the FPR target on this fold's benign rows
            keep = mask | (test.y == 0)
            res["heldout_recall_at_fpr"] = m.recall_at_fpr(test.y[keep], s[keep], fpr)
            res[f"heldout/{prof}"] = res["heldout_recall"]
            folds[kind].append(res)
    return {k: _mean(v) for k, v in folds.items()}


def independent(
    train: Fleet, test: Fleet, kinds: tuple[str, ...], fpr: float, trees: int | None, seed: int
) -> dict:
    """Per detector: trained on the whole training fleet, judged on the independent one."""
    out = {}
    for kind in kinds:
        score_fn, thr = fit_detector(kind, train.ds, fpr, trees, seed)
        out[kind] = metrics(test.ds, test.model, score_fn(test.ds), thr, fpr, seed * 1000)
    return out


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Key-wise mean over folds (NaN-free where any fold has the key); replicate arrays are
    averaged replicate by replicate (each fold resampled independently: a draw of the mean)."""
    keys = {k for r in rows for k in r}
    out: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a replicate NaN in every fold
        for k in sorted(keys):
            vals = [r[k] for r in rows if k in r]
            if k.startswith(BOOT_PREFIX):
                out[k] = np.nanmean(np.stack(vals), axis=0)
            else:
                out[k] = float(np.nanmean(vals))
    return out


def _intervals(res: dict[str, Any]) -> dict[str, float]:
    """``res`` with each replicate array replaced by its 2.5% and 97.5% percentiles
    (``recall_at_fpr_low`` / ``_high``)."""
    out = {k: v for k, v in res.items() if not k.startswith(BOOT_PREFIX)}
    for k, v in res.items():
        if k.startswith(BOOT_PREFIX):
            name = k.removeprefix(BOOT_PREFIX)
            ok = np.asarray(v)[np.isfinite(v)]
            lo, hi = np.percentile(ok, [2.5, 97.5]) if len(ok) else (math.nan, math.nan)
            out[f"{name}_low"], out[f"{name}_high"] = float(lo), float(hi)
    return out


def _summarise(f: Fleet, pooled: dict, folds: dict, fpr: float) -> dict:
    """Fold means, plus pooled per-model / per-profile rates over every fold's rows."""
    out = {}
    for kind, parts in pooled.items():
        mean = _mean(folds[kind])
        idx = np.concatenate([p[0] for p in parts])
        pred = np.concatenate([p[1] >= p[2] for p in parts])
        ds = f.ds.subset(idx)
        for name in np.unique(f.model[idx]):
            mask = (f.model[idx] == name) & (ds.y == 1)
            if mask.any():
                mean[f"model_recall/{name}"] = float(pred[mask].mean())
        out[kind] = mean
    return out


# ---------------------------------------------------------------- report


def _row(label: str, res: dict[str, dict[str, float]], key: str, kinds: tuple[str, ...]) -> str:
    vals = [res.get(k, {}).get(key, math.nan) for k in kinds]
    return f"{label:<34}" + "".join(f"{v:>15.4f}" for v in vals)


def report(
    results: dict[str, dict[str, dict[str, float]]], kinds: tuple[str, ...], fpr: float
) -> str:
    """The printed tables (seed means)."""
    lines = []
    head = f"{'':<34}" + "".join(f"{k:>15}" for k in kinds)
    main = (
        "recall_at_fpr",
        "recall_at_fpr_low",
        "recall_at_fpr_high",
        f"recall_at_fpr_over_{BASELINE}_low",
        f"recall_at_fpr_over_{BASELINE}_high",
        "recall",
        "fpr",
        "precision",
        "roc_auc",
        "pr_auc",
        "segment_recall",
        "median_ttd",
    )
    titles = {
        "lomo": "leave one GPU model out (training generator; fold means)",
        "lopo": "leave one mining profile out (training generator; fold means)",
        "indep": "trained on the training generator, scored on the independent generator",
        "ceiling": "ceiling: trained on another fleet of the independent generator, same test",
    }
    for split, title in titles.items():
        res = results.get(split)
        if not res:
            continue
        lines += ["", f"== {title}; threshold for FPR <= {fpr:g} from out-of-fold GPUs"]
        lines.append(head)
        extra = ("heldout_recall", "heldout_recall_at_fpr") if split == "lopo" else ()
        for key in main + extra:
            if not any(key in r for r in res.values()):
                continue  # the gain over the baseline, when the baseline did not run
            label = {
                "recall_at_fpr": f"recall at FPR<={fpr:g} (test curve)",
                "recall_at_fpr_low": "  95% interval, low (GPUs resampled)",
                "recall_at_fpr_high": "  95% interval, high",
                f"recall_at_fpr_over_{BASELINE}_low": f"  gain over {BASELINE}, 95% low (paired)",
                f"recall_at_fpr_over_{BASELINE}_high": f"  gain over {BASELINE}, 95% high",
            }.get(key, key)
            lines.append(_row(label, res, key, kinds))
        keys = sorted({k for r in res.values() for k in r if "/" in k})
        for key in keys:
            lines.append(_row("  " + key, res, key, kinds))
    return "\n".join(lines)


def _mlflow_reachable(uri: str) -> bool:
    """True when ``uri`` is an MLflow server that answers /health (or a local file store)."""
    if not uri.startswith("http"):
        return uri.startswith(("file:", "sqlite:"))
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def log_to_mlflow(uri: str, results: dict, params: dict[str, Any], text: str) -> str:
    """Log seed-mean metrics (``<split>.<detector>.<metric>``) and the report; return run id."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(EXPERIMENT)
    flat = {}
    for split, res in results.items():
        for kind, vals in res.items():
            for k, v in vals.items():
                if np.isfinite(v):
                    name = f"{split}.{kind}.{k}".replace("+", "_").replace("/", ".")
                    flat["".join(c if c.isalnum() or c in "._- " else "_" for c in name)] = v
    with mlflow.start_run(run_name="abp-eval") as run:
        mlflow.log_params(params)
        mlflow.log_metrics(flat)
        mlflow.log_text(text, "report.txt")
        mlflow.log_dict(results, "results.json")
    return run.info.run_id


def _say(text: str) -> None:
    """Print to stdout (the report is this command's output)."""
    sys.stdout.write(text + "\n")


def evaluate(seeds: list[int], work: Path, args: argparse.Namespace) -> dict:
    """Run every split for every seed; seed means per split and detector."""
    kinds = tuple(args.detectors)
    per_seed: dict[str, dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for seed in seeds:
        t0 = time.perf_counter()
        d1, l1 = gen1.generate(work / f"train-{seed}", args.gpus, args.hours, seed, args.interval)
        d2, l2 = gen2.generate(work / f"indep-{seed}", args.indep_gpus, args.indep_hours, seed)
        f1, f2 = load_fleet(d1, l1), load_fleet(d2, l2)
        f3 = None
        if "ceiling" in args.splits:
            d3, l3 = gen2.generate(
                work / f"ceiling-{seed}",
                args.indep_gpus,
                args.indep_hours,
                seed + CEILING_SEED_OFFSET,
            )
            f3 = load_fleet(d3, l3)
            if set(f3.ds.gpu) & set(f2.ds.gpu):
                raise RuntimeError("the ceiling's training fleet shares GPUs with the test fleet")
        log.info(
            "seed %d: %d training rows, %d independent rows (%.0f s)",
            seed,
            len(f1.ds),
            len(f2.ds),
            time.perf_counter() - t0,
        )
        for name in args.splits:
            t1 = time.perf_counter()
            fpr, trees = args.target_fpr, args.trees
            if name == "lomo":
                res = leave_one_model_out(f1, kinds, fpr, trees, seed)
            elif name == "lopo":
                res = leave_one_profile_out(f1, kinds, fpr, trees, seed)
            elif name == "ceiling":
                assert f3 is not None
                res = independent(f3, f2, kinds, fpr, trees, seed)
            else:
                res = independent(f1, f2, kinds, fpr, trees, seed)
            for kind, vals in res.items():
                per_seed[name][kind].append(vals)
            log.info("seed %d: %s done in %.0f s", seed, name, time.perf_counter() - t1)
    return {
        split: _with_intervals({k: _mean(v) for k, v in r.items()}) for split, r in per_seed.items()
    }


def _with_intervals(means: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Seed means per detector with replicates folded into intervals, plus each detector's gain
    in recall at the FPR target over the baseline (``recall_at_fpr_over_lr_low`` / ``_high``):
    every detector is resampled with the same test GPUs (same fold, same seed), so replicate
    differences are a paired bootstrap of the gain."""
    base = means.get(BASELINE, {}).get(BOOT)
    out = {}
    for kind, vals in means.items():
        if base is not None and kind != BASELINE and BOOT in vals:
            vals = {**vals, f"{BOOT}_over_{BASELINE}": vals[BOOT] - base}
        out[kind] = _intervals(vals)
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(
        prog="python -m training.abp_eval", description=__doc__.splitlines()[0]
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--gpus", type=int, default=48, help="GPUs in each training fleet")
    p.add_argument("--hours", type=float, default=8.0)
    p.add_argument("--interval", type=float, default=30.0, help="training fleet sample interval")
    p.add_argument("--indep-gpus", type=int, default=40)
    p.add_argument("--indep-hours", type=float, default=24.0)
    p.add_argument("--trees", type=int, default=None, help="default: TrainParams' n_estimators")
    p.add_argument(
        "--target-fpr", type=float, default=None, help="default: settings.abp_target_fpr"
    )
    p.add_argument("--detectors", nargs="+", choices=DETECTORS, default=list(DETECTORS))
    p.add_argument(
        "--splits",
        nargs="+",
        choices=SPLITS,
        default=["lomo", "lopo", "indep"],
        help="ceiling (opt-in): trained on another fleet of the independent generator",
    )
    p.add_argument(
        "--xgb",
        type=json.loads,
        default={},
        help="TrainParams overrides for the XGBoost detectors, JSON: '{\"max_depth\": 4}'",
    )
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--no-mlflow", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from secml.settings import get_settings

    settings = get_settings()
    fields = set(m.TrainParams().as_dict()) - {"seed", "temporal"}
    unknown = set(args.xgb) - fields
    if unknown:
        p.error(f"--xgb: not TrainParams fields this command may set: {sorted(unknown)}")
    XGB_OVERRIDES.clear()
    XGB_OVERRIDES.update(args.xgb)
    if args.target_fpr is None:
        args.target_fpr = settings.abp_target_fpr
    with tempfile.TemporaryDirectory(prefix="abp-eval-") as tmp:
        results = evaluate(args.seeds, args.workdir or Path(tmp), args)
    text = report(results, tuple(args.detectors), args.target_fpr)
    _say(
        f"seeds {args.seeds}; training fleet {args.gpus} GPUs x {args.hours} h at "
        f"{args.interval:g} s; independent {args.indep_gpus} GPUs x {args.indep_hours} h at 30 s"
    )
    _say(text)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    uri = settings.mlflow_tracking_uri
    if args.no_mlflow:
        _say("\nMLflow: not logged (--no-mlflow)")
    elif _mlflow_reachable(uri):
        params = {k: str(v) for k, v in vars(args).items() if k not in ("workdir", "json")}
        run_id = log_to_mlflow(uri, results, params, text)
        _say(f"\nMLflow: logged to {uri} experiment {EXPERIMENT} run {run_id}")
    else:
        _say(f"\nMLflow: {uri} not reachable; printed only")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
