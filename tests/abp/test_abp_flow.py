"""The ``abp-train`` flow against real MLflow and Prefect servers: registry, gate, deployment."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from secml.abp import PROD_ALIAS
from secml.abp import model as m
from secml.abp.features import to_matrix
from secml.abp.temporal import TemporalState

pytestmark = pytest.mark.integration

SMALL = {"n_estimators": 40, "max_depth": 4, "seed": 0}


@pytest.fixture(scope="module")
def model_name() -> str:
    """A registered-model name of this module's own, so other tests' versions never mix in."""
    return f"abp-nvsmi-xgb-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def first(fleet, mlflow_server, prefect_server, model_name) -> dict:
    """Label one detection in the store as a false positive, then train and promote v1."""
    from secml.store import DetectionStore

    store = DetectionStore(mlflow_server.store_url)
    rec = fleet.records[0]
    (det,) = store.add_detections([{"detector": "abp", "source": "nvsmi", "record": rec,
                                    "score": 0.9, "model_version": "abp-nvsmi-xgb:0"}])  # fmt: skip
    store.add_label(det, "false_positive", "analyst", "test")
    store.close()
    from training.abp_flow import abp_train

    return abp_train(data=[str(fleet.data)], min_f1=0.5, model_name=model_name, **SMALL)


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


def test_first_version_is_logged_and_promoted(first, model_name) -> None:
    assert first["gate"]["promoted"] is True, first["gate"]
    # the gate reads recall at the target FPR (0.1%) on held-out GPUs
    assert first["metrics"]["target_fpr_recall"] >= first["gate"]["min_recall"] == 0.5
    assert first["metrics"]["roc_auc"] >= 0.95
    # the threshold was calibrated on out-of-fold GPUs for the target FPR and stored with it
    calib = first["calibration"]
    assert (
        calib["val_fpr"] <= calib["target_fpr"]
        and first["metrics"]["threshold"] == calib["threshold"]
    )
    assert first["counts"]["analyst_overrides"] == 1
    client = _client()
    prod = client.get_model_version_by_alias(model_name, PROD_ALIAS)
    assert prod.version == first["version"]
    tags = prod.tags
    for key in ("data_window_start", "data_window_end", "rows", "features", "f1", "gate"):
        assert key in tags, key
    assert int(tags["rows"]) == first["counts"]["rows"] and tags["gate"] == "passed"
    assert tags["data_window_start"] < tags["data_window_end"]
    run = client.get_run(first["run_id"])
    assert run.data.params["n_estimators"] == "40" and run.data.params["split_by"] == "gpu"
    assert {"f1", "precision", "recall", "roc_auc"} <= set(run.data.metrics)
    assert any(k.startswith("recall_mining_") for k in run.data.metrics)
    assert run.data.tags["analyst_labels"] == "1"
    assert run.data.tags["analyst_episode_labels"] == "0"
    assert run.data.tags["analyst_labels_left_out"] == "0"
    # calibrated over three fold draws pooled; the run keeps the range of single-draw thresholds
    lo, hi = map(float, run.data.tags["threshold_draws"].split(".."))
    assert calib["repeats"] == 3 and lo <= calib["threshold"] <= hi
    files = {f.path for f in client.list_artifacts(first["run_id"])}
    assert "features.json" in files
    plots = {f.path for f in client.list_artifacts(first["run_id"], "plots")}
    assert {"plots/confusion_matrix.png", "plots/roc_curve.png"} <= plots
    import mlflow

    info = mlflow.models.get_model_info(f"models:/{model_name}/{first['version']}")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [c.name for c in info.signature.inputs][0] == "nvidia_smi_log.gpu.fb_memory_usage.used"


def test_worse_model_leaves_the_alias(first, fleet, model_name) -> None:
    from training.abp_flow import abp_train

    worse = abp_train(data=[str(fleet.data)], min_f1=0.0, min_recall=0.0, model_name=model_name,
                      n_estimators=1, max_depth=1, learning_rate=0.05)  # fmt: skip
    gate = worse["gate"]
    assert gate["promoted"] is False
    assert "worse than production" in gate["reason"]
    assert gate["production_version"] == first["version"]
    assert gate["recall"] < gate["production_recall"]  # recall at the target FPR, same rows
    # a one-stump model is worse beyond the noise of which test GPUs were drawn
    assert gate["gain_low"] <= gate["gain_high"] < 0, gate
    assert "paired 95% interval" in gate["reason"]
    client = _client()
    assert client.get_model_version_by_alias(model_name, PROD_ALIAS).version == first["version"]
    tags = client.get_model_version(model_name, worse["version"]).tags
    assert tags["gate"] == "failed"
    assert tags["recall_gain_over_production_95"].startswith("[-")


def test_threshold_blocks_promotion(first, fleet, model_name) -> None:
    from training.abp_flow import abp_train

    res = abp_train(data=[str(fleet.data)], min_recall=1.01, model_name=model_name, **SMALL)
    assert res["gate"]["promoted"] is False and "below the minimum" in res["gate"]["reason"]
    assert _client().get_model_version_by_alias(model_name, PROD_ALIAS).version == first["version"]


def test_pipeline_scores_with_the_production_alias(first, fleet, model_name, tmp_path) -> None:
    import json

    import mlflow

    from training import abp_pipeline as pipe

    out = tmp_path / "scored.jsonlines"
    code = pipe.main(["--input", str(fleet.data), "--output", str(out), "--no-progress",
                      "--model", f"models:/{model_name}@{PROD_ALIAS}"])  # fmt: skip
    assert code == 0
    got = np.array([json.loads(x)["mining_score"] for x in out.read_text().splitlines()])
    booster = mlflow.xgboost.load_model(f"models:/{model_name}/{first['version']}")
    uuids = [r.get("nvidia_smi_log.gpu.uuid") for r in fleet.records]
    expected = m.score(booster, to_matrix(fleet.records), uuids, TemporalState())
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_deployment_runs_from_prefect_with_parameters(first, fleet, prefect_worker) -> None:
    """``abp-train/default`` is deployed on the work pool and completes a run with parameters."""
    from prefect.deployments import run_deployment

    name = f"abp-nvsmi-xgb-deployed-{uuid.uuid4().hex[:6]}"
    params = {"data": [str(fleet.data)], "min_f1": 0.5, "min_recall": 0.0, "model_name": name,
              "n_estimators": 10, "max_depth": 3}  # fmt: skip
    run = run_deployment("abp-train/default", parameters=params, timeout=480)
    assert run.state is not None and run.state.is_completed(), run.state
    assert _client().get_model_version_by_alias(name, PROD_ALIAS).version == "1"


def test_demo_generates_trains_and_promotes(mlflow_server, prefect_server, tmp_path) -> None:
    from demo.abp import demo

    # The wiring is under test here (quality is tested above): a small fleet, a low gate.
    settings = mlflow_server.model_copy(
        update={"data_dir": tmp_path, "abp_min_f1": 0.5, "abp_min_recall": 0.0}
    )
    name = f"abp-nvsmi-xgb-demo-{uuid.uuid4().hex[:6]}"
    res = demo(settings, gpus=12, hours=1.5, seed=1, model_name=name)
    assert (tmp_path / "abp" / "nvsmi.jsonlines").exists()
    assert res["gate"]["promoted"] is True, res["gate"]
    assert _client().get_model_version_by_alias(name, PROD_ALIAS).version == res["version"]
