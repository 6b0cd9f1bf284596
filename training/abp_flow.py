"""Prefect flow ``abp-train``: nvsmi records -> features -> split -> XGBoost -> MLflow -> gate.

Each task is a thin wrapper around a plain function in ``secml.abp``. Large arguments
(records, datasets, boosters) are passed ``quote``-d so Prefect does not walk them looking
for futures (walking ~1M strings took minutes). Deployed as
``abp-train/default`` (see ``training/deploy.py``) so it runs from the Prefect UI with
parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from secml.abp import MODEL_NAME
from secml.abp import gate as gate_mod
from secml.abp import model as m
from secml.abp.generator import LABELS_FILE
from secml.settings import get_settings

log = logging.getLogger(__name__)


@task(cache_policy=NO_CACHE)
def load(data: list[str], labels: list[str]) -> tuple[list[dict[str, Any]], dict]:
    """Read the nvsmi JSON-lines files and their ground-truth labels."""
    return m.read_jsonlines(data), m.read_labels(labels)


@task(cache_policy=NO_CACHE)
def analyst_labels(store_url: str) -> list[tuple[dict[str, Any], int]]:
    """Analyst labels of ``abp`` detections from the store: true_positive=1, false_positive=0."""
    try:
        from secml.store import DetectionStore
    except ImportError:
        log.warning("secml.store is not available; training without analyst labels")
        return []
    store = DetectionStore(store_url)
    try:
        df = store.labelled("abp")
    finally:
        store.close()
    out = []
    for rec, label in zip(df["record"], df["label"], strict=True):
        if isinstance(rec, str):
            import json

            rec = json.loads(rec)
        if label in ("true_positive", "false_positive"):
            out.append((rec, 1 if label == "true_positive" else 0))
    log.info("%d analyst labels joined from the store", len(out))
    return out


@task(cache_policy=NO_CACHE)
def features(records: list[dict], labels: dict, analyst: list) -> tuple[m.Dataset, dict]:
    """Parse the 18 features and join labels (analyst labels win)."""
    return m.build_dataset(records, labels, analyst)


@task(cache_policy=NO_CACHE)
def split(ds: m.Dataset, by: str, test_fraction: float, seed: int) -> tuple[m.Dataset, m.Dataset]:
    """Split by GPU or by time."""
    tr, te = m.split(ds, by, test_fraction, seed)
    return ds.subset(tr), ds.subset(te)


@task(cache_policy=NO_CACHE)
def fit(
    train: m.Dataset, test: m.Dataset, params: m.TrainParams, target_fpr: float
) -> tuple[Any, dict[str, float]]:
    """Train the XGBoost classifier; calibrate its threshold on out-of-fold GPUs."""
    return m.fit_calibrated(train, params, target_fpr, evals=test)


@task(cache_policy=NO_CACHE)
def evaluate(booster: Any, test: m.Dataset, target_fpr: float) -> dict[str, float]:
    """Held-out metrics at the calibrated threshold, per-profile rates included."""
    return m.evaluate(
        test.y,
        m.score_dataset(booster, test),
        test.profile,
        m.booster_threshold(booster),
        target_fpr,
    )


@task(cache_policy=NO_CACHE)
def register(
    booster: Any, params: dict, metrics: dict, test: m.Dataset, tags: dict, model_name: str
) -> Any:
    """Log the run and register a new model version."""
    return gate_mod.log_and_register(booster, params, metrics, test, tags, model_name)


@task(cache_policy=NO_CACHE)
def promote(
    version: str,
    metrics: dict,
    test: m.Dataset,
    min_f1: float,
    model_name: str,
    min_recall: float,
    target_fpr: float,
) -> dict[str, Any]:
    """The promotion gate (recall at the target FPR)."""
    return gate_mod.gate(
        version, metrics, test, min_f1, model_name, min_recall, target_fpr
    ).as_dict()


def _default_labels(files: list[str]) -> list[str]:
    """``labels.csv`` beside each data file (one per directory)."""
    dirs = dict.fromkeys(str(Path(f).parent) for f in files)
    return [f"{d}/{LABELS_FILE}" for d in dirs]


@flow(name="abp-train", log_prints=False)
def abp_train(
    data: list[str] | None = None,
    labels: list[str] | None = None,
    split_by: str = "gpu",
    test_fraction: float = 0.25,
    n_estimators: int = 200,
    max_depth: int = 6,
    learning_rate: float = 0.1,
    seed: int = 0,
    use_store_labels: bool = True,
    min_f1: float | None = None,
    model_name: str = MODEL_NAME,
    min_recall: float | None = None,
    target_fpr: float | None = None,
    temporal: bool = False,
) -> dict[str, Any]:
    """Train the ABP mining detector, register it and run the promotion gate.

    Args:
        data: JSON-lines files or globs (any fsspec URL); default ``<data_dir>/abp/*.jsonlines``.
        labels: labels CSVs or globs; default ``labels.csv`` beside each data file.
        split_by: ``gpu`` (whole GPUs held out) or ``time`` (the latest part held out).
        use_store_labels: join analyst labels of ``abp`` detections from the store.
        min_f1: recorded with the gate's decision, no longer deciding (recall at ``target_fpr``
            does); default ``settings.abp_min_f1``.
        model_name: registered model name (default ``abp-nvsmi-xgb``).
        min_recall: gate's minimum recall at ``target_fpr``; default ``settings.abp_min_recall``.
        target_fpr: FPR the threshold is calibrated for on out-of-fold GPUs (and the gate's
            recall is read at); default ``settings.abp_target_fpr``.
        temporal: add the per-GPU rolling-window features (``secml.abp.temporal``).
    """
    settings = get_settings()
    data = data or [str(Path(settings.data_dir) / "abp" / "*.jsonlines")]
    files = m.expand(data)
    labels = labels or _default_labels(files)
    gate_mod.configure_tracking(settings.mlflow_tracking_uri)
    records, truth = load(files, labels)
    analyst = analyst_labels(settings.store_url) if use_store_labels else []
    ds, counts = features(quote(records), quote(truth), quote(analyst))
    train, test = split(quote(ds), split_by, test_fraction, seed)
    params = m.TrainParams(n_estimators, max_depth, learning_rate, seed=seed, temporal=temporal)
    fpr = settings.abp_target_fpr if target_fpr is None else target_fpr
    booster, calib = fit(quote(train), quote(test), params, fpr)
    metrics = evaluate(quote(booster), quote(test), fpr)
    lo, hi = ds.window()
    tags = {
        "data_window_start": lo,
        "data_window_end": hi,
        "rows": str(counts["rows"]),
        "train_rows": str(len(train)),
        "test_rows": str(len(test)),
        "analyst_labels": str(len(analyst)),
        "split": split_by,
        "data_files": ",".join(files)[:4000],
        "threshold": repr(calib["threshold"]),
        "target_fpr": repr(fpr),
    }
    logged = params.as_dict() | {
        "split_by": split_by,
        "test_fraction": test_fraction,
        "device": m.device(),
        "tree_method": "hist",
    }
    reg = register(quote(booster), logged, metrics, quote(test), tags, model_name)
    floor = settings.abp_min_f1 if min_f1 is None else min_f1
    min_rec = settings.abp_min_recall if min_recall is None else min_recall
    decision = promote(reg.version, metrics, quote(test), floor, model_name, min_rec, fpr)
    log.info(
        "abp-train: %s v%s f1=%.4f promoted=%s",
        model_name,
        reg.version,
        metrics["f1"],
        decision["promoted"],
    )
    return {
        "version": reg.version,
        "run_id": reg.run_id,
        "metrics": metrics,
        "gate": decision,
        "counts": counts,
        "calibration": calib,
    }
