"""MLflow side of ABP training: log a run, register ``abp-nvsmi-xgb``, and the promotion gate.

The ``production`` alias moves only when the new version's recall at the target false-positive
rate (``settings.abp_target_fpr``, 0.1% by default) reaches the configured minimum and is not
below the current production version's on the same evaluation data. F1 (at the model's own
calibrated threshold) is recorded beside it but no longer decides. Aliases only; stages are never
used. Beside a production version the decision also records a paired 95% interval of the gain
(both versions scored on the same rows, test GPUs resampled whole), so a refusal or promotion
that is within the noise of which GPUs the evaluation data holds shows as such; the rule itself
compares the point estimates.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from secml.abp import EXPERIMENT_NAME, MODEL_NAME, PROD_ALIAS
from secml.abp.features import FEATURES
from secml.abp.model import (
    Dataset,
    booster_derived,
    booster_features,
    booster_temporal,
    model_inputs,
    plots,
    recall_at_fpr,
    recall_at_fpr_gain,
    score_dataset,
)

log = logging.getLogger(__name__)


@dataclass
class Registered:
    """What ``log_and_register`` produced."""

    run_id: str
    version: str
    model_uri: str


@dataclass
class GateDecision:
    """The promotion gate's verdict for one model version."""

    version: str
    promoted: bool
    reason: str
    f1: float
    min_f1: float
    production_version: str | None
    production_f1: float | None
    recall: float = float("nan")  # recall at target_fpr on the evaluation data
    min_recall: float = 0.0
    production_recall: float | None = None
    target_fpr: float = 0.001
    # paired 95% interval of (recall - production_recall), test GPUs resampled whole: whether
    # a difference is more than which GPUs the evaluation data happens to hold
    gain_low: float | None = None
    gain_high: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (for Prefect results and logs)."""
        return asdict(self)


def _client() -> Any:
    """An MlflowClient bound to the configured tracking server."""
    from mlflow import MlflowClient

    return MlflowClient()


def configure_tracking(tracking_uri: str) -> None:
    """Point mlflow at ``tracking_uri`` and select the ABP experiment."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(EXPERIMENT_NAME)


def log_and_register(
    booster: xgb.Booster,
    params: dict[str, Any],
    metrics: dict[str, float],
    test: Dataset,
    tags: dict[str, str],
    model_name: str = MODEL_NAME,
) -> Registered:
    """Log params, metrics, plots, feature list and the model; register a new version.

    The logged XGBoost model's signature and input example are what the booster itself
    consumes: the 18 raw nvidia-smi features followed by the derived columns it was trained
    with (``secml.abp.model.score`` computes those from the 18). The ``features`` tag lists
    those columns; ``features.json`` also names the raw inputs and the derived part apart.
    """
    import mlflow
    import pandas as pd
    from mlflow.models import infer_signature

    derived = booster_derived(booster)
    columns = list(booster_features(booster))
    scores = score_dataset(booster, test)
    inputs = model_inputs(test.X, derived, test.T if booster_temporal(booster) else None)
    # complete rows first (derived ratios are NaN where a reading is N/A or a divisor is 0)
    example_rows = inputs[np.argsort(np.isnan(inputs).sum(axis=1), kind="stable")[:5]]
    example = pd.DataFrame(example_rows.astype(np.float64), columns=columns)
    output = np.asarray(booster.inplace_predict(example_rows), dtype=np.float64).reshape(-1)
    signature = infer_signature(example, output)
    feature_tags = {"features": json.dumps(columns), "derived_features": json.dumps(derived)}
    with mlflow.start_run(run_name=f"abp-train-{tags.get('data_window_end', '')}") as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
        mlflow.set_tags(tags | feature_tags)
        mlflow.log_dict(
            {
                # what the booster sees, in column order
                "features": columns,
                # what callers pass: the 18 nvidia-smi features (records need nothing more)
                "inputs": list(FEATURES),
                # computed from the inputs by secml.abp.features.derive inside score()
                "derived": list(derived),
            },
            "features.json",
        )
        for name, fig in plots(booster, test.y, scores, metrics).items():
            mlflow.log_figure(fig, f"plots/{name}")
        import matplotlib.pyplot as plt

        plt.close("all")
        info = mlflow.xgboost.log_model(
            booster,
            name="model",
            signature=signature,
            input_example=example,
            model_format="ubj",
            registered_model_name=model_name,
            # Explicit requirements: skips MLflow's slow dependency inference (a subprocess
            # that reloads the model) on every training run.
            pip_requirements=[
                f"xgboost=={xgb.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )
    version = str(info.registered_model_version)
    client = _client()
    for key, value in (
        tags
        | {
            "f1": f"{metrics['f1']:.6f}",
            "run_id": run.info.run_id,
        }
        | feature_tags
    ).items():
        client.set_model_version_tag(model_name, version, key, str(value))
    log.info("registered %s version %s (run %s)", model_name, version, run.info.run_id)
    return Registered(run.info.run_id, version, f"models:/{model_name}/{version}")


def production_version(model_name: str = MODEL_NAME) -> str | None:
    """The version the ``production`` alias points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(model_name, PROD_ALIAS).version)
    except MlflowException:
        return None


def load_version(version: str, model_name: str = MODEL_NAME) -> xgb.Booster:
    """Load one registered version's booster from MLflow."""
    import mlflow

    return mlflow.xgboost.load_model(f"models:/{model_name}/{version}")


def decide(
    recall: float,
    min_recall: float,
    target_fpr: float,
    f1: float,
    production: str | None = None,
    production_recall: float | None = None,
    same_data: bool = True,
) -> tuple[bool, str]:
    """The gate's rule (one home, also used for hand promotions): ``(promote?, reason)``.

    Promote when recall at ``target_fpr`` reaches ``min_recall`` and is not below
    production's (``same_data``: production was re-scored on the same rows).
    """
    at = f"recall at FPR <= {target_fpr:g}"
    where = "on the same data" if same_data else "as recorded at training"
    if not recall >= min_recall:
        return False, f"{at} {recall:.4f} is below the minimum {min_recall:.4f}"
    if production_recall is not None and recall < production_recall:
        return False, (
            f"{at} {recall:.4f} is worse than production v{production} "
            f"({production_recall:.4f}) {where}"
        )
    return True, f"{at} {recall:.4f} >= minimum {min_recall:.4f}, F1 {f1:.4f}" + (
        f" and >= production v{production} ({production_recall:.4f})"
        if production_recall is not None
        else " (no production version yet)"
    )


def gate(
    version: str,
    new_metrics: dict[str, float],
    test: Dataset,
    min_f1: float,
    model_name: str = MODEL_NAME,
    min_recall: float = 0.0,
    target_fpr: float = 0.001,
) -> GateDecision:
    """Move ``production`` to ``version`` only if its recall at ``target_fpr`` on ``test`` is
    at least ``min_recall`` and production's on the same rows.

    ``min_f1`` is recorded with the decision (callers still pass it) but does not gate: F1 at a
    threshold calibrated for 0.1% FPR depends on the test set's mining share, recall at that
    FPR does not.
    """
    f1 = float(new_metrics["f1"])
    recall = float(new_metrics.get("target_fpr_recall", float("nan")))
    prod = production_version(model_name)
    prod_f1: float | None = None
    prod_recall: float | None = None
    gain: tuple[float, float] | None = None
    if prod is not None and prod != version:
        from secml.abp.model import booster_threshold, evaluate

        prod_booster = load_version(prod, model_name)
        prod_scores = score_dataset(prod_booster, test)
        prod_recall = recall_at_fpr(test.y, prod_scores, target_fpr)
        prod_f1 = evaluate(
            test.y, prod_scores, test.profile, booster_threshold(prod_booster), target_fpr
        )["f1"]
        # the version as registered, scored on the same rows: the paired interval of its gain
        new_scores = score_dataset(load_version(version, model_name), test)
        gain = recall_at_fpr_gain(test.y, prod_scores, new_scores, test.gpu, target_fpr)
    promoted, reason = decide(recall, min_recall, target_fpr, f1, prod, prod_recall)
    if gain is not None:
        n_gpus = len(np.unique(test.gpu))
        reason += (
            f"; gain over production {recall - prod_recall:+.4f}, paired 95% interval "
            f"[{gain[0]:+.4f}, {gain[1]:+.4f}] over {n_gpus} test GPUs resampled"
        )
    # opt-in (settings.abp_robustness_gate): the evasion search may still refuse the version
    from secml.abp.evasion import apply_robustness_gate

    promoted, reason = apply_robustness_gate(promoted, reason, version, test, model_name)
    client = _client()
    if promoted:
        client.set_registered_model_alias(model_name, PROD_ALIAS, version)
    client.set_model_version_tag(model_name, version, "gate", "passed" if promoted else "failed")
    client.set_model_version_tag(model_name, version, "gate_reason", reason)
    client.set_model_version_tag(model_name, version, "recall_at_target_fpr", f"{recall:.6f}")
    if prod_f1 is not None:
        client.set_model_version_tag(
            model_name, version, "production_f1_same_data", f"{prod_f1:.6f}"
        )
        client.set_model_version_tag(
            model_name, version, "production_recall_at_target_fpr", f"{prod_recall:.6f}"
        )
    if gain is not None:
        client.set_model_version_tag(
            model_name, version, "recall_gain_over_production_95",
            f"[{gain[0]:.6f}, {gain[1]:.6f}]",
        )  # fmt: skip
    log.info(
        "gate for %s v%s: %s (%s)", model_name, version, "promoted" if promoted else "kept", reason
    )
    return GateDecision(
        version, promoted, reason, f1, min_f1, prod, prod_f1,
        recall, min_recall, prod_recall, target_fpr,
        *(gain if gain is not None else (None, None)),
    )  # fmt: skip
