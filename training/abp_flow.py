"""Prefect flow ``abp-train``: nvsmi records -> features -> split -> XGBoost -> MLflow -> gate.

Each task is a thin wrapper around a plain function in ``secml.abp``. Large arguments
(records, datasets, boosters) are passed ``quote``-d so Prefect does not walk them looking
for futures (walking ~1M strings took minutes). Deployed as
``abp-train/default`` (see ``training/deploy.py``) so it runs from the Prefect UI with
parameters.

Step caching: featurise, split, fit, evaluate and register are Prefect-cached on a key made
of the content hash of the input files, the analyst labels and the step's parameters
(:func:`step_key`), so a re-run on unchanged data reuses the featurised data and the model;
those task runs show as ``Cached`` in the flow run and the flow's result lists them
(``cache``). Parameters left ``None`` come from the latest ``abp-tune`` study for the model
(``training/tune.py``), else from ``TrainParams``'s defaults.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import xgboost as xgb
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from secml.abp import MODEL_NAME
from secml.abp import gate as gate_mod
from secml.abp import model as m
from secml.abp.alerts import EPISODE_SOURCE
from secml.abp.generator import LABELS_FILE
from secml.settings import get_settings
from training.abp_evasion import after_promotion
from training.mlflow_retry import with_mlflow

log = logging.getLogger(__name__)

# Bump when a cached step's code changes what it returns for the same inputs.
CACHE_VERSION = "1"


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect cache key of a step: its task name and the ``key`` argument the flow computed."""
    return f"{context.task.name}-{parameters['key']}"


CACHED: dict[str, Any] = {
    "cache_key_fn": _cache_key,
    "persist_result": True,
    "cache_expiration": timedelta(days=30),
}


def file_digest(paths: list[str]) -> str:
    """SHA-256 over the contents of ``paths`` in order (any fsspec URL)."""
    import fsspec

    h = hashlib.sha256()
    for path in paths:
        h.update(b"\0file\0")
        with fsspec.open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def step_key(*parts: Any) -> str:
    """A stable hash of a step's inputs (JSON of ``parts``; dataclasses by their fields)."""
    blob = json.dumps(
        [CACHE_VERSION, xgb.__version__, *parts],
        sort_keys=True,
        default=lambda o: o.__dict__ if hasattr(o, "__dict__") else str(o),
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _run(hits: dict[str, bool], step: str, tk: Any, *args: Any, **kwargs: Any) -> Any:
    """Call task ``tk``, note whether its state is ``Cached``, return its result."""
    state = tk(*args, return_state=True, **kwargs)
    hits[step] = state.name == "Cached"
    return state.result()


def resolve_params(
    model_name: str, explicit: dict[str, Any], use_tuned: bool
) -> tuple[m.TrainParams, str | None]:
    """``TrainParams`` from explicit values, else the latest tuned ones, else the defaults.

    Returns the parameters and the ``abp-tune`` run id they came from (None: not tuned).
    """
    names = {f.name for f in fields(m.TrainParams)}
    tuned: dict[str, Any] = {}
    source = None
    if use_tuned:
        from training.tuned import latest_best_params

        found = latest_best_params(model_name)
        if found is not None:
            tuned, source = {k: v for k, v in found[0].items() if k in names}, found[1]
            log.info("abp-train: using tuned parameters of abp-tune run %s: %s", source, tuned)
    given = {k: v for k, v in explicit.items() if v is not None}
    return m.TrainParams(**(tuned | given)), source


@dataclass
class AnalystLabels:
    """Analyst labels of ``abp`` detections: of single samples, and of GPU episode alerts."""

    samples: list[tuple[dict[str, Any], int]] = field(default_factory=list)
    episodes: list[m.EpisodeLabel] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # labels left out, and why

    def __len__(self) -> int:
        """Labels joined (samples and episodes)."""
        return len(self.samples) + len(self.episodes)


def split_labels(df: Any) -> AnalystLabels:
    """Labelled ``abp`` detections (``DetectionStore.labelled``) -> :class:`AnalystLabels`.

    A sample detection (the gateway's, source ``nvsmi``) carries its nvidia-smi record; an
    episode alert (source ``nvsmi-episode``, ``training.abp_pipeline --store-alerts``) carries
    the GPU and the span of the run, and its label covers every sample of that span. An episode
    record that is not one is left out with a warning naming the detection (the others stay).
    """
    out = AnalystLabels()
    for det_id, source, rec, label in zip(
        df["detection_id"], df["source"], df["record"], df["label"], strict=True
    ):
        if label not in ("true_positive", "false_positive"):
            continue
        mining = 1 if label == "true_positive" else 0
        try:
            if isinstance(rec, str):
                rec = json.loads(rec)
            if source == EPISODE_SOURCE:
                out.episodes.append(m.EpisodeLabel.of(rec, mining))
            else:
                out.samples.append((rec, mining))
        except (ValueError, m.DataError) as exc:
            out.bad.append(f"detection {det_id}: {exc}")
            log.warning("analyst label of detection %s left out: %s", det_id, exc)
    return out


@task(cache_policy=NO_CACHE)
def analyst_labels(store_url: str) -> AnalystLabels:
    """Analyst labels of ``abp`` detections from the store: true_positive=1, false_positive=0."""
    try:
        from secml.store import DetectionStore
    except ImportError:
        log.warning("secml.store is not available; training without analyst labels")
        return AnalystLabels()
    store = DetectionStore(store_url)
    try:
        df = store.labelled("abp")
    finally:
        store.close()
    out = split_labels(df)
    log.info(
        "%d sample and %d episode analyst labels joined from the store",
        len(out.samples),
        len(out.episodes),
    )
    return out


@task(name="abp-featurise", **CACHED)
def featurise(
    files: list[str], labels: list[str], analyst: AnalystLabels, key: str
) -> tuple[m.Dataset, dict]:
    """Read the records and labels, parse the 18 features and join labels (analyst labels win).

    Cached on ``key`` (content hash of the files + the analyst labels): a re-run on unchanged
    data reads the featurised dataset instead of parsing every record again.
    """
    return m.build_dataset(
        m.read_jsonlines(files),
        m.read_labels(labels),
        analyst.samples,
        episodes=analyst.episodes,
    )


@task(name="abp-split", **CACHED)
def split(
    ds: m.Dataset, by: str, test_fraction: float, seed: int, key: str
) -> tuple[m.Dataset, m.Dataset]:
    """Split by GPU or by time."""
    tr, te = m.split(ds, by, test_fraction, seed)
    return ds.subset(tr), ds.subset(te)


@task(name="abp-fit", **CACHED)
def fit(
    train: m.Dataset, test: m.Dataset, params: m.TrainParams, target_fpr: float, key: str
) -> tuple[Any, dict[str, float]]:
    """Train the XGBoost classifier; calibrate its threshold on out-of-fold GPUs."""
    return m.fit_calibrated(train, params, target_fpr, evals=test)


@task(name="abp-evaluate", **CACHED)
def evaluate(booster: Any, test: m.Dataset, target_fpr: float, key: str) -> dict[str, float]:
    """Held-out metrics at the calibrated threshold, per-profile rates included."""
    return m.evaluate(
        test.y,
        m.score_dataset(booster, test),
        test.profile,
        m.booster_threshold(booster),
        target_fpr,
    )


@task(name="abp-register", **CACHED)
def register(
    booster: Any, params: dict, metrics: dict, test: m.Dataset, tags: dict, model_name: str,
    key: str,
) -> Any:  # fmt: skip
    """Log the run and register a new model version (a re-run with the same key reuses it)."""
    return with_mlflow(
        f"registering {model_name}",
        gate_mod.log_and_register,
        booster,
        params,
        metrics,
        test,
        tags,
        model_name,
    )


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
    return with_mlflow(
        f"the promotion gate of {model_name} v{version}",
        gate_mod.gate,
        version,
        metrics,
        test,
        min_f1,
        model_name,
        min_recall,
        target_fpr,
    ).as_dict()


def _default_labels(files: list[str]) -> list[str]:
    """``labels.csv`` beside each data file (one per directory) where there is one.

    A directory without one holds unlabelled logs (a fleet's own nvidia-smi logs, say): its
    records train only where an analyst's label covers them (a labelled episode alert).
    """
    import fsspec

    out = []
    for d in dict.fromkeys(str(Path(f).parent) for f in files):
        path = f"{d}/{LABELS_FILE}"
        fs, local = fsspec.core.url_to_fs(path)
        if fs.exists(local):
            out.append(path)
        else:
            log.info("%s: no %s; its records train only where analysts labelled them", d,
                     LABELS_FILE)  # fmt: skip
    return out


def prepare(
    data: list[str] | None,
    labels: list[str] | None,
    split_by: str,
    test_fraction: float,
    seed: int,
    use_store_labels: bool,
    hits: dict[str, bool],
) -> dict[str, Any]:
    """Files, featurised dataset and split (cached steps); shared by ``abp-train`` and ``abp-tune``.

    Returns ``files``, ``labels``, ``analyst``, ``ds``, ``counts``, ``train``, ``test`` and the
    ``data_key`` (content hash of files, labels and analyst labels).
    """
    settings = get_settings()
    data = data or [str(Path(settings.data_dir) / "abp" / "*.jsonlines")]
    files = m.expand(data)
    labels = m.expand(labels or _default_labels(files))
    analyst = analyst_labels(settings.store_url) if use_store_labels else AnalystLabels()
    data_key = step_key(
        file_digest(files),
        file_digest(labels),
        json.dumps([analyst.samples, analyst.episodes], sort_keys=True, default=str),
    )
    ds, counts = _run(hits, "featurise", featurise, files, labels, quote(analyst), data_key)
    split_key = step_key(data_key, split_by, test_fraction, seed)
    train, test = _run(hits, "split", split, quote(ds), split_by, test_fraction, seed, split_key)
    return {
        "files": files,
        "labels": labels,
        "analyst": analyst,
        "ds": ds,
        "counts": counts,
        "train": train,
        "test": test,
        "data_key": split_key,
    }


@flow(name="abp-train", log_prints=False)
def abp_train(
    data: list[str] | None = None,
    labels: list[str] | None = None,
    split_by: str = "gpu",
    test_fraction: float = 0.25,
    n_estimators: int | None = None,
    max_depth: int | None = None,
    learning_rate: float | None = None,
    seed: int = 0,
    use_store_labels: bool = True,
    min_f1: float | None = None,
    model_name: str = MODEL_NAME,
    min_recall: float | None = None,
    target_fpr: float | None = None,
    temporal: bool = False,
    use_tuned: bool = True,
) -> dict[str, Any]:
    """Train the ABP mining detector, register it and run the promotion gate.

    Args:
        data: JSON-lines files or globs (any fsspec URL); default ``<data_dir>/abp/*.jsonlines``.
        labels: labels CSVs or globs; default ``labels.csv`` beside each data file.
        split_by: ``gpu`` (whole GPUs held out) or ``time`` (the latest part held out).
        n_estimators, max_depth, learning_rate: XGBoost parameters; ``None`` takes the tuned
            value (``use_tuned``) or ``TrainParams``'s default.
        use_store_labels: join analyst labels of ``abp`` detections from the store.
        min_f1: recorded with the gate's decision, no longer deciding (recall at ``target_fpr``
            does); default ``settings.abp_min_f1``.
        model_name: registered model name (default ``abp-nvsmi-xgb``).
        min_recall: gate's minimum recall at ``target_fpr``; default ``settings.abp_min_recall``.
        target_fpr: FPR the threshold is calibrated for on out-of-fold GPUs (and the gate's
            recall is read at); default ``settings.abp_target_fpr``.
        temporal: add the per-GPU rolling-window features (``secml.abp.temporal``).
        use_tuned: start from the best parameters of the latest ``abp-tune`` study of
            ``model_name`` (explicit arguments still win).
    """
    started = time.monotonic()
    settings = get_settings()
    with_mlflow("abp-train", gate_mod.configure_tracking, settings.mlflow_tracking_uri)
    hits: dict[str, bool] = {}
    prep = prepare(data, labels, split_by, test_fraction, seed, use_store_labels, hits)
    files, ds, counts, train, test = (prep[k] for k in ("files", "ds", "counts", "train", "test"))
    explicit = {"n_estimators": n_estimators, "max_depth": max_depth,
                "learning_rate": learning_rate, "seed": seed, "temporal": temporal}  # fmt: skip
    params, tuned_run = resolve_params(model_name, explicit, use_tuned)
    fpr = settings.abp_target_fpr if target_fpr is None else target_fpr
    fit_key = step_key(prep["data_key"], params, fpr)
    booster, calib = _run(hits, "fit", fit, quote(train), quote(test), params, fpr, fit_key)
    metrics = _run(hits, "evaluate", evaluate, quote(booster), quote(test), fpr, fit_key)
    lo, hi = ds.window()
    tags = {
        "data_window_start": lo,
        "data_window_end": hi,
        "rows": str(counts["rows"]),
        "train_rows": str(len(train)),
        "test_rows": str(len(test)),
        "analyst_labels": str(len(prep["analyst"])),
        "analyst_episode_labels": str(len(prep["analyst"].episodes)),
        "episode_labelled_rows": str(counts.get("episode_labelled", 0)),
        "analyst_labels_left_out": str(len(prep["analyst"].bad)),
        "split": split_by,
        "data_files": ",".join(files)[:4000],
        "threshold": repr(calib["threshold"]),
        "target_fpr": repr(fpr),
        # the single fold draws' thresholds the calibration pooled: how much one draw moved
        "threshold_draws": "..".join(
            repr(calib.get(k)) for k in ("threshold_draw_min", "threshold_draw_max")
        ),
        "tuned_from_run": tuned_run or "",
    }
    logged = params.as_dict() | {
        "split_by": split_by,
        "test_fraction": test_fraction,
        "device": m.device(),
        "tree_method": "hist",
    }
    floor = settings.abp_min_f1 if min_f1 is None else min_f1
    min_rec = settings.abp_min_recall if min_recall is None else min_recall
    # the same data, parameters, registry and gate settings re-use the registered version
    reg_key = step_key(fit_key, model_name, settings.mlflow_tracking_uri, floor, min_rec)
    reg_args = (quote(booster), logged, metrics, quote(test), tags, model_name, reg_key)
    reg = _run(hits, "register", register, *reg_args)
    if hits["register"] and not _version_exists(model_name, reg.version):
        log.warning("cached %s v%s is gone from the registry; registering again",
                    model_name, reg.version)  # fmt: skip
        reg = _run(hits, "register", register.with_options(refresh_cache=True), *reg_args)
    decision = promote(reg.version, metrics, quote(test), floor, model_name, min_rec, fpr)
    # a promoted version gets its evasion report (training/abp_evasion.py)
    evasion = after_promotion(model_name, reg.version, test, seed) if decision["promoted"] else None
    log.info(
        "abp-train: %s v%s f1=%.4f promoted=%s cached=%s",
        model_name,
        reg.version,
        metrics["f1"],
        decision["promoted"],
        sorted(k for k, v in hits.items() if v),
    )
    return {
        "version": reg.version,
        "run_id": reg.run_id,
        "metrics": metrics,
        "gate": decision,
        "counts": counts,
        "calibration": calib,
        "params": params.as_dict(),
        "tuned_from_run": tuned_run,
        "cache": {k: "hit" if v else "miss" for k, v in hits.items()},
        "evasion": evasion,
        "seconds": round(time.monotonic() - started, 3),
    }


def _version_exists(model_name: str, version: str) -> bool:
    """Whether ``model_name`` version ``version`` is still in the registry."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version(model_name, version)
    except MlflowException:
        return False
    return True
