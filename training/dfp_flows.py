"""Prefect flows ``dfp-train`` and ``dfp-infer``, driven by a DFP control message.

Each flow takes a control message (a dict, JSON text or a file path; see ``secml.control``) and
runs the module chain over every input that carries its task: fsspec loader -> file batcher ->
schema -> (training) split users -> rolling window -> per-user training tasks, or (inference)
score with production models -> filter -> post-process -> write + detections store.

Per-user training runs as parallel Prefect tasks. ``dask=True`` runs them on a ``distributed``
cluster through prefect-dask: a ``LocalCluster`` by default, or the scheduler at
``dask_address`` to fan out past one machine (its workers need the same ``SECML_*`` settings
and access to MLflow).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from secml.control import ControlInput, ControlMessage, message_id, parse_control_message
from secml.dfp.batcher import batch_files
from secml.dfp.filter import filter_anomalies
from secml.dfp.history import load_states, save_states
from secml.dfp.infer import score_events
from secml.dfp.loader import expand_paths, load_records
from secml.dfp.postprocess import postprocess
from secml.dfp.registry import ModelRegistry
from secml.dfp.rolling import WindowOptions, rolling_window
from secml.dfp.schema import FEATURES, process, record_user
from secml.dfp.scoring import risk_details
from secml.dfp.split import split_users
from secml.dfp.train import exclude_confirmed_anomalies, experiment_id, train_user
from secml.dfp.writer import write_detections
from secml.settings import Settings, get_settings
from training.cluster import task_runner

log = logging.getLogger(__name__)

DFP_SOURCES = ("duo", "azure")
TOP_FEATURES = 3


def read_message(message: dict[str, Any] | str | Path) -> ControlMessage:
    """Parse a control message given as a dict, JSON text, or a path to a JSON file."""
    if isinstance(message, str) and not message.lstrip().startswith("{"):
        message = Path(message)
    return parse_control_message(message)


def _inputs(msg: ControlMessage, task_type: str) -> list[ControlInput]:
    """Inputs of ``msg`` with a ``task_type`` task over a DFP source."""
    out = []
    for i, inp in enumerate(msg.inputs):
        if task_type not in inp.task_types:
            continue
        if inp.metadata.source not in DFP_SOURCES:
            raise ValueError(
                f"inputs[{i}].metadata.source: {inp.metadata.source!r} is not a DFP source "
                f"({', '.join(DFP_SOURCES)}); send it to the ABP flows"
            )
        out.append(inp)
    return out


def _task_properties(inp: ControlInput, task_type: str) -> dict[str, Any]:
    """Merged ``properties`` of the input's tasks of ``task_type``."""
    props: dict[str, Any] = {}
    for t in inp.tasks:
        if t.type == task_type:
            props.update(t.properties)
    return props


def load_batches(inp: ControlInput, settings: Settings) -> list[pd.DataFrame]:
    """Processed events of one input, one frame per batch of the file batcher, in time order."""
    source = inp.metadata.source
    paths = expand_paths(inp.files, settings)
    opts = inp.metadata.batching_options
    kwargs: dict[str, Any] = {}
    if opts is not None:
        kwargs = {
            k: v
            for k, v in {
                "period": opts.period,
                "start_time": opts.start_time,
                "end_time": opts.end_time,
                "sampling": opts.sampling,
            }.items()
            if v is not None
        }
    frames = []
    for batch in batch_files(paths, settings=settings, **kwargs):
        raw = load_records(batch.files, source, settings)
        if len(raw):
            frames.append(process(raw, source))
    return frames


@task(name="dfp-train-user", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=5)
def train_user_task(
    df: pd.DataFrame, source: str, user: str, params: dict[str, Any] | None
) -> dict[str, Any]:
    """Train and register one user's model (thin wrapper over ``secml.dfp.train.train_user``)."""
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    result = train_user(df, source, user, params)
    return result.to_dict()


@flow(name="dfp-train-users", log_prints=False)
def train_users_flow(
    jobs: list[tuple[str, str, pd.DataFrame]],
    params: dict[str, Any] | None = None,
    source_params: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Train every (source, user, rows) job as a parallel task; fail listing failed users.

    ``source_params`` (source -> model parameters, e.g. tuned ones) wins over ``params``.
    """
    logger = get_run_logger()
    by_source = source_params or {}
    futures = [
        (s, u, train_user_task.submit(df, s, u, by_source.get(s, params))) for s, u, df in jobs
    ]
    results, failed = [], []
    for source, user, fut in futures:
        fut.wait()
        if fut.state.is_completed():
            results.append(fut.result())
        else:
            failed.append(f"{source}/{user}: {fut.state.message}")
            logger.error("training %s/%s failed: %s", source, user, fut.state.message)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} models failed to train: {failed}")
    return results


@flow(name="dfp-train")
def dfp_train(
    message: dict[str, Any] | str,
    train_users: str | None = None,
    min_events: int | None = None,
    model_params: dict[str, Any] | None = None,
    dask: bool = False,
    dask_address: str | None = None,
    workers: int = 2,
    window_cache_dir: str | None = None,
    use_tuned: bool = True,
) -> dict[str, Any]:
    """Train DFP models for every ``training`` input of ``message``; return a summary.

    Arguments left ``None`` are taken from the training task's ``properties`` (``train_users``,
    ``min_events``, ``skip_users``, ``only_users``, ``model_params``, ``min_history``,
    ``min_increment``, ``max_history``), else from settings and defaults. With no model
    parameters anywhere and ``use_tuned``, each source takes the best parameters of its latest
    ``dfp-tune`` study (``training/tune.py``), if any. ``dask``/``dask_address`` (default
    ``settings.dask_address``) fan the per-user tasks out on Dask.
    """
    logger = get_run_logger()
    settings = get_settings()
    msg = read_message(message)
    inputs = _inputs(msg, "training")
    if not inputs:
        raise ValueError("control message has no 'training' task over duo or azure")
    jobs: list[tuple[str, str, pd.DataFrame]] = []
    skipped: dict[str, Any] = {}
    params: dict[str, Any] | None = model_params
    for inp in inputs:
        source, data_type = inp.metadata.source, inp.metadata.data_type
        props = _task_properties(inp, "training")
        params = params if params is not None else props.get("model_params")
        mode = train_users or props.get("train_users", "all")
        minimum = min_events if min_events is not None else props.get("min_events")
        window = WindowOptions(
            min_history=int(props.get("min_history", settings.dfp_min_user_events)),
            min_increment=int(props.get("min_increment", settings.dfp_min_user_events)),
            max_history=props.get("max_history", "60d"),
        )
        cache_dir = window_cache_dir or str(settings.run_dir / "dfp-window")
        batches = [exclude_confirmed_anomalies(b, source) for b in load_batches(inp, settings)]
        if data_type == "payload":  # the whole window at once; no rolling window
            batches = [pd.concat(batches, ignore_index=True)] if batches else []
        latest: dict[str, pd.DataFrame] = {}
        for batch in batches:
            split = split_users(
                batch,
                mode,
                # streaming: the rolling window's min_history decides who has enough history
                min_events=0 if data_type == "streaming" else minimum,
                skip_users=props.get("skip_users", ()),
                only_users=props.get("only_users", ()),
            )
            skipped.update({f"{source}/{u}": n for u, n in split.too_few.items()})
            for user, rows in split.items():
                win = rolling_window(
                    rows, user, source, data_type=data_type, cache_dir=cache_dir, options=window
                )
                if win is not None:
                    latest[user] = win  # streaming: the newest triggered window wins
        jobs += [(source, u, rows.reset_index(drop=True)) for u, rows in latest.items()]
        experiment_id(source)  # create once, before the tasks race
    logger.info("dfp-train: %d models to train (%s)", len(jobs), "dask" if dask else "threads")
    found = _tuned_params({s for s, _, _ in jobs}) if params is None and use_tuned else {}
    tuned = {src: p for src, (p, _) in found.items()}
    runner = task_runner(dask, dask_address, workers)
    started = time.monotonic()
    flow_fn = train_users_flow.with_options(task_runner=runner)
    results = flow_fn(jobs, params, tuned) if jobs else []
    summary = {
        "message_id": message_id(msg),
        "trained": len(results),
        "promoted": sum(1 for r in results if r["promoted"]),
        "models": [
            {k: r[k] for k in ("model_name", "version", "rows", "val_loss", "promoted")}
            for r in results
        ],
        "too_few_events": skipped,
        "seconds": round(time.monotonic() - started, 2),
        "tuned_from_runs": {src: run for src, (_, run) in found.items()},
    }
    logger.info(
        "dfp-train: trained %d, promoted %d, %d users below minimum",
        summary["trained"],
        summary["promoted"],
        len(skipped),
    )
    return summary


def _tuned_params(sources: set[str]) -> dict[str, tuple[dict[str, Any], str]]:
    """Best parameters and run id of the latest ``dfp-tune`` study per source (if any)."""
    from training.tuned import DFP_EXPERIMENT, latest_best_params

    out = {}
    for source in sorted(sources):
        found = latest_best_params(f"dfp-{source}-generic", DFP_EXPERIMENT)
        if found is not None:
            log.info("dfp-train %s: tuned parameters of dfp-tune run %s: %s",
                     source, found[1], found[0])  # fmt: skip
            out[source] = found
    return out


def _top_features(row: pd.Series, features: list[str], k: int = TOP_FEATURES) -> list[dict]:
    """The ``k`` features with the largest absolute z-scores of one scored row."""
    zs = sorted(((f, float(row[f"{f}_z_loss"])) for f in features), key=lambda x: -x[1])
    return [{"feature": f, "z": round(z, 4)} for f, z in zs[:k]]


def detection_rows(anomalies: pd.DataFrame, source: str) -> list[dict[str, Any]]:
    """Store rows (``secml.store`` contract) for scored, filtered events."""
    feats = FEATURES[source].all
    return [
        {
            "detector": "dfp",
            "source": source,
            "event_id": row["event_id"],
            "user": row["username"],
            "event_time": row["timestamp"],
            "score": float(row["risk"]) if _has_risk(row) else float(row["mean_abs_z"]),
            "is_anomaly": True,
            "model_version": row["model_version"],
            "record": row["_raw"],
            "details": {
                "mean_abs_z": float(row["mean_abs_z"]),
                "max_abs_z": float(row["max_abs_z"]),
                "top": _top_features(row, feats),
                **risk_details(row),
            },
        }
        for _, row in anomalies.iterrows()
    ]


def _has_risk(row: pd.Series) -> bool:
    """The row was scored by a risk model."""
    return "risk" in row and pd.notna(row["risk"])


@flow(name="dfp-infer")
def dfp_infer(
    message: dict[str, Any] | str,
    output_dir: str | None = None,
    threshold: float | None = None,
    write_all: bool = False,
    store_detections: bool = True,
) -> dict[str, Any]:
    """Score every ``inference`` input of ``message``; write detections; return a summary.

    Output goes to ``<output_dir>/dfp-<source>-<message id>.jsonl`` (``output_file`` in the
    inference task's properties overrides it; ``.csv`` or ``.jsonl``).
    """
    logger = get_run_logger()
    settings = get_settings()
    msg = read_message(message)
    inputs = _inputs(msg, "inference")
    if not inputs:
        raise ValueError("control message has no 'inference' task over duo or azure")
    out_dir = Path(output_dir) if output_dir else Path(settings.data_dir) / "detections"
    mid = message_id(msg).replace("sha256:", "")[:16]
    outputs = []
    for i, inp in enumerate(inputs):
        source = inp.metadata.source
        props = _task_properties(inp, "inference")
        thr = threshold if threshold is not None else props.get("threshold")
        registry = ModelRegistry(source, settings=settings)
        frames = load_batches(inp, settings)
        if not frames:
            logger.warning("inputs[%d]: no %s events in the window", i, source)
            continue
        # featurize the window as a whole, continuing each user's stored history state
        raw = pd.concat(frames, ignore_index=True)[["_raw", "_file", "_index"]]
        from secml.store import get_store

        users = {record_user(r, source) for r in raw["_raw"]}
        states = load_states(get_store(), source, users)
        events = process(raw, source, states)
        save_states(get_store(), source, states)
        scored = score_events(events, source, registry)
        anomalies = filter_anomalies(scored, thr)
        chosen = scored if write_all else anomalies
        path = props.get("output_file") or str(out_dir / f"dfp-{source}-{mid}-{i}.jsonl")
        write_detections(postprocess(chosen, source), path)
        stored = 0
        if store_detections and len(anomalies):
            from secml.store import get_store

            stored = len(get_store().add_detections(detection_rows(anomalies, source)))
        outputs.append(
            {
                "source": source,
                "events": len(scored),
                "anomalies": len(anomalies),
                "stored": stored,
                "output": path,
                "models": sorted(scored["model_version"].unique().tolist()),
            }
        )
        logger.info(
            "dfp-infer %s: %d events, %d anomalies -> %s", source, len(scored), len(anomalies), path
        )
    return {"message_id": message_id(msg), "outputs": outputs}
