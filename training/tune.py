"""Prefect flows ``abp-tune`` and ``dfp-tune``: Optuna studies whose trials fan out on Dask.

``abp-tune`` reads the same (cached) featurised data and split as ``abp-train``, runs an
Optuna study over the XGBoost parameters with k-fold cross-validation over whole training GPUs
(the held-out GPUs of the split are never seen by a trial), reports each fold's running mean so
the median pruner stops poor trials early, and logs every trial as a nested MLflow run under
one parent run (experiment ``abp-tune``). The default parameters are the study's first trial,
so the best trial is never worse than them on the cross-validation folds; both are then
trained on the whole training split and judged on the held-out GPUs. The best parameters are
stored on the parent run (tag ``best_params``) and ``abp-train`` picks them up
(``training.tuned.latest_best_params``). Optuna's plots are logged to the parent run.

``dfp-tune`` does the same for the generic DFP autoencoder (validation loss on the model's own
held-out rows, reported to the pruner from inside the fit after every epoch, so a trial the
median pruner stops trains no further epochs), and ``dfp-train`` uses its best parameters.

Trials are Prefect tasks: threads with ``dask=False``, a ``distributed`` LocalCluster of
``workers`` processes by default, or the scheduler at ``dask_address``. Each trial asks the
shared study storage for its parameters (a journal file under ``run_dir``, or
``settings.tune_storage_url``), so the sampler and pruner see every finished trial.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from secml.abp import MODEL_NAME
from secml.abp import model as m
from secml.settings import get_settings
from training.cluster import task_runner
from training.tuned import ABP_EXPERIMENT, DFP_EXPERIMENT, MODEL_TAG, ROLE_TAG

log = logging.getLogger(__name__)

METRICS = ("pr_auc", "roc_auc", "target_fpr_recall")


# ---------------------------------------------------------------- study storage


def storage_url() -> str:
    """The Optuna storage all trials share: ``settings.tune_storage_url`` or a journal file."""
    settings = get_settings()
    if settings.tune_storage_url:
        return settings.tune_storage_url
    path = Path(settings.run_dir) / "optuna" / "studies.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"journal:{path}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` (``journal:<file>`` or an SQLAlchemy URL)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.RDBStorage(url)


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def create_study(name: str, url: str, seed: int, startup: int, warmup: int = 0) -> Any:
    """A new maximising/minimising study with TPE (constant liar, for parallel trials) + pruning."""
    import optuna

    _quiet_optuna()
    return optuna.create_study(
        study_name=name,
        storage=open_storage(url),
        sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=warmup),
        direction="maximize",
    )


def _load_study(ctx: dict[str, Any]) -> Any:
    import optuna

    _quiet_optuna()
    return optuna.load_study(
        study_name=ctx["study"],
        storage=open_storage(ctx["storage"]),
        sampler=optuna.samplers.TPESampler(seed=ctx["seed"] + 7919, constant_liar=True),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=ctx["startup"], n_warmup_steps=ctx.get("warmup", 0)
        ),
    )


def ask(ctx: dict[str, Any]) -> tuple[Any, Any]:
    """The shared study and a new trial whose sampler is seeded by the trial's number.

    Every trial task opens the study afresh; a sampler with the same seed in each would draw
    the same random parameters for every start-up trial, so each trial gets its own seed.
    """
    import optuna

    study = _load_study(ctx)
    trial = study.ask()
    study.sampler = optuna.samplers.TPESampler(
        seed=ctx["seed"] + 7919 * (trial.number + 1), constant_liar=True
    )
    return study, trial


# ---------------------------------------------------------------- ABP search space


def abp_space(trial: Any, max_estimators: int = 400) -> dict[str, Any]:
    """XGBoost parameters of one trial (ranges around ``TrainParams``'s defaults)."""
    return {
        "n_estimators": trial.suggest_int("n_estimators", 25, max(50, max_estimators), log=True),
        "max_depth": trial.suggest_int("max_depth", 2, 10),
        "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.4, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 30.0, log=True),
    }


ABP_TUNED = ("n_estimators", "max_depth", "learning_rate", "subsample", "colsample_bytree",
             "min_child_weight")  # fmt: skip


def abp_defaults() -> dict[str, Any]:
    """``TrainParams``'s defaults for the tuned parameters (the study's first trial)."""
    d = asdict(m.TrainParams())
    return {k: d[k] for k in ABP_TUNED}


def abp_metric(metric: str, y: np.ndarray, scores: np.ndarray, target_fpr: float) -> float:
    """``pr_auc``, ``roc_auc`` or ``target_fpr_recall`` of scores (NaN: one class only)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan
    if metric == "pr_auc":
        return float(average_precision_score(y, scores))
    if metric == "roc_auc":
        return float(roc_auc_score(y, scores))
    if metric == "target_fpr_recall":
        return m.recall_at_fpr(y, scores, target_fpr)
    raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")


def heldout(
    train: m.Dataset, test: m.Dataset, params: m.TrainParams, target_fpr: float
) -> dict[str, float]:
    """Train on the whole training split, score the held-out GPUs: every metric of ``METRICS``."""
    booster = m.train(train, params)
    scores = m.score_dataset(booster, test)
    return {k: abp_metric(k, test.y, scores, target_fpr) for k in METRICS}


@task(name="abp-tune-trial", cache_policy=NO_CACHE)
def abp_trial(ctx: dict[str, Any], data: m.Dataset) -> dict[str, Any]:
    """One trial: ask the study, cross-validate over GPU folds (reporting for pruning), tell."""
    train = data
    import mlflow
    from optuna.trial import TrialState

    study, trial = ask(ctx)
    params = abp_space(trial, ctx["max_estimators"])
    tp = m.TrainParams(**params, seed=ctx["seed"])
    folds = [p for p in m.gpu_folds(train, ctx["folds"], ctx["seed"]) if len(p)]
    mlflow.set_tracking_uri(ctx["tracking_uri"])
    values: list[float] = []
    state, value = "complete", math.nan
    t0 = time.monotonic()
    with mlflow.start_run(
        experiment_id=ctx["experiment_id"],
        run_name=f"trial-{trial.number}",
        parent_run_id=ctx["parent_run_id"],
        tags={ROLE_TAG: "trial", MODEL_TAG: ctx["model"], "optuna.trial": str(trial.number)},
    ):
        mlflow.log_params(params)
        for step, part in enumerate(folds):
            rest = np.setdiff1d(np.arange(len(train)), part)
            booster = m.train(train.subset(rest), tp)
            held = train.subset(part)
            values.append(abp_metric(ctx["metric"], held.y, m.score_dataset(booster, held),
                                     ctx["target_fpr"]))  # fmt: skip
            running = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
            trial.report(running, step)
            mlflow.log_metric(f"cv_{ctx['metric']}", running, step=step)
            if step < len(folds) - 1 and trial.should_prune():
                state = "pruned"
                break
        value = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
        if state == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
            mlflow.log_metric(ctx["metric"], value)
        mlflow.set_tag("optuna.state", state)
        mlflow.log_metric("seconds", time.monotonic() - t0)
    return {"number": trial.number, "state": state, "value": value, "params": params,
            "folds_run": len(values)}  # fmt: skip


def run_trials(
    ctx: dict[str, Any], run: Any, tk: Any, data: Any, n: int, where: tuple[bool, Any, int]
) -> tuple[list[dict[str, Any]], Any]:
    """Fan ``n`` trials of ``tk`` out (``where`` = dask, address, workers) under parent ``run``.

    Returns the trials' summaries and the study reloaded with all of them.
    """
    ctx |= {"tracking_uri": get_settings().mlflow_tracking_uri, "parent_run_id": run.info.run_id}
    trials = fan_out(task_runner(*where), tk, ctx, data, n)
    return trials, _load_study(ctx)


def fan_out(runner: Any, tk: Any, ctx: dict[str, Any], data: Any, n: int) -> list[Any]:
    """Run ``n`` copies of trial task ``tk`` on ``runner`` (threads or Dask); their results.

    The runner is entered here rather than through a subflow so the data set is shipped to the
    workers as a task argument, never written into a flow run's parameters.
    """
    with runner:
        futures = [runner.submit(tk, {"ctx": ctx, "data": data}) for _ in range(n)]
        return [f.result() for f in futures]


@flow(name="abp-tune")
def abp_tune(
    data: list[str] | None = None,
    labels: list[str] | None = None,
    n_trials: int = 20,
    metric: str = "pr_auc",
    folds: int = 3,
    split_by: str = "gpu",
    test_fraction: float = 0.25,
    seed: int = 0,
    use_store_labels: bool = True,
    model_name: str = MODEL_NAME,
    target_fpr: float | None = None,
    max_estimators: int = 400,
    dask: bool = True,
    dask_address: str | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Tune the ABP classifier; store the best parameters for the next ``abp-train``.

    Args:
        data, labels, split_by, test_fraction, seed, use_store_labels: as ``abp-train`` (the
            same cached featurised data and held-out split).
        n_trials: trials in the study (the first one is ``TrainParams``'s defaults).
        metric: what trials maximise over the GPU folds: ``pr_auc``, ``roc_auc`` or
            ``target_fpr_recall`` (recall at ``target_fpr``).
        folds: cross-validation folds over whole training GPUs (pruning steps).
        model_name: whose ``abp-train`` picks the parameters up.
        max_estimators: upper bound of the ``n_estimators`` range.
        dask, dask_address, workers: where trials run (see ``training/cluster.py``).
    """
    from training.abp_flow import prepare

    logger = get_run_logger()
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}; got {metric!r}")
    if n_trials < 1 or folds < 2:
        raise ValueError(f"need n_trials >= 1 and folds >= 2 (got {n_trials}, {folds})")
    settings = get_settings()
    started = time.monotonic()
    hits: dict[str, bool] = {}
    prep = prepare(data, labels, split_by, test_fraction, seed, use_store_labels, hits)
    train, test = prep["train"], prep["test"]
    fpr = settings.abp_target_fpr if target_fpr is None else target_fpr
    name = f"{ABP_EXPERIMENT}-{model_name}-{uuid.uuid4().hex[:8]}"
    url = storage_url()
    startup = max(3, min(5, n_trials // 4))
    study = create_study(name, url, seed, startup)
    defaults = abp_defaults()
    defaults["n_estimators"] = min(defaults["n_estimators"], max(50, max_estimators))
    study.enqueue_trial(defaults, user_attrs={"defaults": True})
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    exp = mlflow.set_experiment(ABP_EXPERIMENT).experiment_id
    address = dask_address
    with mlflow.start_run(run_name=name, tags={ROLE_TAG: "study", MODEL_TAG: model_name}) as run:
        mlflow.log_params({"n_trials": n_trials, "metric": metric, "folds": folds,
                           "split_by": split_by, "test_fraction": test_fraction, "seed": seed,
                           "target_fpr": fpr, "max_estimators": max_estimators,
                           "runner": address or ("dask" if dask else "threads"),
                           "workers": workers, "study": name})  # fmt: skip
        mlflow.set_tags({"data_files": ",".join(prep["files"])[:4000],
                         "data_key": prep["data_key"]})  # fmt: skip
        ctx = {"study": name, "storage": url, "seed": seed, "startup": startup,
               "metric": metric, "folds": folds, "target_fpr": fpr,
               "max_estimators": max_estimators, "model": model_name,
               "experiment_id": exp}  # fmt: skip
        trials, study = run_trials(ctx, run, abp_trial, train, n_trials, (dask, address, workers))
        best = study.best_trial
        best_params = dict(best.params)
        default_value = next(
            (t["value"] for t in trials if t["number"] == 0 and t["state"] == "complete"), None
        )
        base = m.TrainParams(seed=seed)
        held_default = heldout(train, test, base, fpr)
        held_best = heldout(train, test, m.TrainParams(**best_params, seed=seed), fpr)
        # what the next abp-train uses: the study's best only where it does at least as well
        # as the defaults on the held-out GPUs too (the folds' winner can be the folds' luck)
        study_best = best_params
        chosen = "study" if held_best[metric] >= held_default[metric] else "defaults"
        if chosen == "defaults":
            best_params = dict(defaults)
            logger.info(
                "abp-tune: the study's best did worse on the held-out GPUs (%s %.4f vs %.4f); "
                "the next abp-train keeps the defaults", metric, held_best[metric],
                held_default[metric],
            )  # fmt: skip
        counts = {s: sum(1 for t in trials if t["state"] == s) for s in ("complete", "pruned")}
        mlflow.log_metrics(
            {f"best_cv_{metric}": float(best.value), "trials_complete": counts["complete"],
             "trials_pruned": counts["pruned"]}
            | ({f"default_cv_{metric}": float(default_value)} if default_value is not None else {})
            | {f"heldout_{k}_default": v for k, v in held_default.items() if np.isfinite(v)}
            | {f"heldout_{k}_best": v for k, v in held_best.items() if np.isfinite(v)}
        )  # fmt: skip
        mlflow.set_tags({"best_params": json.dumps(best_params, sort_keys=True),
                         "study_best_params": json.dumps(study_best, sort_keys=True),
                         "chosen": chosen, "best_trial": str(best.number)})  # fmt: skip
        mlflow.log_dict({"best_params": best_params, "study_best_params": study_best,
                         "chosen": chosen, "trials": trials}, "study.json")  # fmt: skip
        log_plots(study)
    summary = {
        "run_id": run.info.run_id,
        "study": name,
        "best_params": best_params,
        "study_best_params": study_best,
        "chosen": chosen,
        "best_trial": best.number,
        f"best_cv_{metric}": float(best.value),
        f"default_cv_{metric}": default_value,
        "heldout_default": held_default,
        "heldout_best": held_best,
        "trials": trials,
        "pruned": counts["pruned"],
        "cache": {k: "hit" if v else "miss" for k, v in hits.items()},
        "seconds": round(time.monotonic() - started, 2),
    }
    logger.info(
        "abp-tune: best trial %d %s=%.4f (defaults %s); held-out %s best %.4f vs default %.4f; "
        "%d pruned",
        best.number, metric, best.value, default_value, metric, held_best[metric],
        held_default[metric], counts["pruned"],
    )  # fmt: skip
    return summary


def log_plots(study: Any) -> list[str]:
    """Optuna's matplotlib plots of ``study`` as artifacts of the active run; return the names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import optuna.visualization.matplotlib as vis

    _quiet_optuna()
    logged = []
    for name, plot in (
        ("optimization_history", vis.plot_optimization_history),
        ("intermediate_values", vis.plot_intermediate_values),
        ("param_importances", vis.plot_param_importances),
        ("parallel_coordinate", vis.plot_parallel_coordinate),
        ("slice", vis.plot_slice),
    ):
        try:
            ax = plot(study)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log.warning("optuna plot %s skipped: %s", name, exc)
            continue
        first = ax.flat[0] if isinstance(ax, np.ndarray) else ax
        fig = first.figure
        fig.set_size_inches(9, 5)
        mlflow.log_figure(fig, f"optuna/{name}.png")
        logged.append(name)
    plt.close("all")
    return logged


# ---------------------------------------------------------------- DFP (generic model)


def dfp_space(trial: Any) -> dict[str, Any]:
    """Autoencoder parameters of one trial (``AutoEncoderConfig`` names)."""
    width = trial.suggest_categorical("width", [128, 256, 512])
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "swap_p": trial.suggest_float("swap_p", 0.05, 0.35),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512]),
        "encoder_layers": [width, width],
        "decoder_layers": [width],
    }


def dfp_params(best: dict[str, Any]) -> dict[str, Any]:
    """Model parameters from a study's ``best_params`` (``width`` expands to the layers)."""
    out = {k: v for k, v in best.items() if k != "width"}
    if "width" in best:
        out |= {"encoder_layers": [best["width"]] * 2, "decoder_layers": [best["width"]]}
    return out


@task(name="dfp-tune-trial", cache_policy=NO_CACHE)
def dfp_trial(ctx: dict[str, Any], data: Any) -> dict[str, Any]:
    """One trial: fit the generic autoencoder reporting each epoch's validation loss (the
    pruner may stop the fit there), tell the study."""
    df = data
    import mlflow
    from optuna.trial import TrialState

    from secml.dfp.model import AutoEncoder, feature_config

    study, trial = ask(ctx)
    params = dfp_space(trial)
    model = AutoEncoder(feature_config(ctx["source"]), max_epochs=ctx["max_epochs"],
                        seed=ctx["seed"], **params)  # fmt: skip
    mlflow.set_tracking_uri(ctx["tracking_uri"])
    pruned = False

    def on_epoch(h: dict[str, float]) -> bool:
        """Report the epoch's validation loss; stop the fit here if the pruner says so."""
        nonlocal pruned
        trial.report(-float(h["val_loss"]), int(h["epoch"]))  # maximised: the negative loss
        mlflow.log_metric("epoch_val_loss", float(h["val_loss"]), step=int(h["epoch"]))
        pruned = int(h["epoch"]) < ctx["max_epochs"] and trial.should_prune()
        return pruned

    with mlflow.start_run(
        experiment_id=ctx["experiment_id"],
        run_name=f"trial-{trial.number}",
        parent_run_id=ctx["parent_run_id"],
        tags={ROLE_TAG: "trial", MODEL_TAG: ctx["model"], "optuna.trial": str(trial.number)},
    ):
        mlflow.log_params(trial.params)
        model.fit(df, on_epoch=on_epoch)
        state = "pruned" if pruned else "complete"
        if pruned:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, -float(model.val_loss))
        mlflow.log_metrics({"val_loss": float(model.val_loss), "epochs": len(model.history)})
        mlflow.set_tag("optuna.state", state)
    return {"number": trial.number, "state": state, "val_loss": float(model.val_loss),
            "epochs": len(model.history), "params": trial.params}  # fmt: skip


@flow(name="dfp-tune")
def dfp_tune(
    message: dict[str, Any] | str,
    n_trials: int = 10,
    max_epochs: int = 10,
    max_rows: int = 20000,
    seed: int = 0,
    dask: bool = True,
    dask_address: str | None = None,
    workers: int = 2,
) -> dict[str, Any]:
    """Tune the generic DFP autoencoder on a control message's training data, per source.

    The best parameters are stored on the study run (tag ``best_params``) and used by the next
    ``dfp-train`` of that source when it is given no ``model_params``.
    """
    import mlflow
    import pandas as pd

    from training.dfp_flows import _inputs, load_batches, read_message

    settings = get_settings()
    msg = read_message(message)
    inputs = _inputs(msg, "training")
    if not inputs:
        raise ValueError("control message has no 'training' task over duo or azure")
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    exp = mlflow.set_experiment(DFP_EXPERIMENT).experiment_id
    address = dask_address
    out: dict[str, Any] = {}
    for inp in inputs:
        source = inp.metadata.source
        frames = load_batches(inp, settings)
        if not frames:
            raise ValueError(f"no {source} events in the message's files")
        df = pd.concat(frames, ignore_index=True)
        if len(df) > max_rows:
            df = df.sample(max_rows, random_state=seed).sort_index().reset_index(drop=True)
        name = f"{DFP_EXPERIMENT}-{source}-{uuid.uuid4().hex[:8]}"
        url = storage_url()
        startup = max(2, min(5, n_trials // 3))
        warmup = max_epochs // 3  # a trial is not judged on its first third of epochs
        study = create_study(name, url, seed, startup, warmup)
        model_key = f"dfp-{source}-generic"
        with mlflow.start_run(run_name=name, tags={ROLE_TAG: "study", MODEL_TAG: model_key}) as run:
            mlflow.log_params({"n_trials": n_trials, "max_epochs": max_epochs, "rows": len(df),
                               "source": source, "study": name})  # fmt: skip
            ctx = {"study": name, "storage": url, "seed": seed, "startup": startup,
                   "warmup": warmup, "source": source, "max_epochs": max_epochs,
                   "model": model_key, "experiment_id": exp}  # fmt: skip
            trials, study = run_trials(ctx, run, dfp_trial, df, n_trials, (dask, address, workers))
            best = study.best_trial
            epochs = {"epochs_run": sum(t["epochs"] for t in trials),
                      "epochs_budget": n_trials * max_epochs}  # fmt: skip
            mlflow.log_metrics({"best_val_loss": -float(best.value)} | epochs)
            mlflow.set_tags({"best_params": json.dumps(dfp_params(best.params), sort_keys=True),
                             "best_trial": str(best.number)})  # fmt: skip
            log_plots(study)
        log.info("dfp-tune %s: %d trials, %d pruned; %d of %d epochs trained", source,
                 len(trials), sum(t["state"] == "pruned" for t in trials), epochs["epochs_run"],
                 epochs["epochs_budget"])  # fmt: skip
        out[source] = {"run_id": run.info.run_id, "study": name,
                       "best_params": dfp_params(best.params),
                       "best_val_loss": -float(best.value), "trials": trials} | epochs  # fmt: skip
    return out
