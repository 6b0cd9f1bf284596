"""The best parameters of the latest tuning study, for the training flows.

``abp-tune`` / ``dfp-tune`` (``training/tune.py``) store them on their study's MLflow run (tag
``best_params``); ``abp-train`` and ``dfp-train`` read them here, without importing the tuning
flows (which import the training flows' data steps).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from secml.settings import get_settings

log = logging.getLogger(__name__)

ABP_EXPERIMENT = "abp-tune"
DFP_EXPERIMENT = "dfp-tune"
ROLE_TAG = "secml.tune.role"
MODEL_TAG = "secml.tune.model"


def latest_best_params(
    model_name: str, experiment: str = ABP_EXPERIMENT
) -> tuple[dict[str, Any], str] | None:
    """Best parameters and run id of the latest finished study for ``model_name``, or None."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(get_settings().mlflow_tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
    except MlflowException as exc:
        log.warning("tuned parameters not looked up (%s): %s", experiment, exc)
        return None
    if exp is None:
        return None
    quoted = model_name.replace("'", "\\'")
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=(
            f"tags.`{ROLE_TAG}` = 'study' and tags.`{MODEL_TAG}` = '{quoted}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    for run in runs:
        text = run.data.tags.get("best_params")
        if text:
            return json.loads(text), run.info.run_id
    return None
