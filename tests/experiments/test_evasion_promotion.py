"""The production ABP model's evasion report without a manual step (real MLflow and Prefect).

``abp-train`` logs the report of each version its gate promotes; the ``abp-evasion`` flow makes
one for a version without (default: production) and reuses an existing one; ``make demo``'s
ABP part ends with the production version's report.
"""

from __future__ import annotations

import uuid

import pytest

from secml.abp import PROD_ALIAS
from secml.abp import evasion as ev
from secml.settings import get_settings

pytestmark = pytest.mark.integration


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


@pytest.fixture(scope="module")
def trained(small_fleet, mlflow_server, prefect_server) -> dict:
    """v1 promoted by the gate, then v2 refused by it (recall floor above 1)."""
    from training.abp_flow import abp_train

    name = f"abp-evasion-promo-{uuid.uuid4().hex[:8]}"
    kw = {"data": [str(small_fleet)], "model_name": name, "use_store_labels": False,
          "n_estimators": 60}  # fmt: skip
    first = abp_train(**kw, min_recall=0.0)
    second = abp_train(**kw, min_recall=1.01, max_depth=2)
    return {"name": name, "first": first, "second": second}


def test_a_promoted_version_gets_its_report(trained) -> None:
    name, first = trained["name"], trained["first"]
    assert first["gate"]["promoted"]
    evasion = first["evasion"]
    assert evasion["reused"] is False and "error" not in evasion
    client = _client()
    prod = client.get_model_version_by_alias(name, PROD_ALIAS)
    assert prod.version == first["version"]
    assert prod.tags[ev.TAG] == evasion["run_id"]
    run = client.get_run(evasion["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == ev.EXPERIMENT
    assert run.data.tags["trigger"] == "promotion"
    assert run.data.tags["model_uri"] == f"models:/{name}/{first['version']}"
    report = ev.load_report(client, evasion["run_id"])
    s = get_settings()
    assert len(report["configs"]) == s.abp_evasion_configs + 6  # + no attack, one per knob
    assert report["rows"] <= s.abp_evasion_max_rows + 200  # whole GPUs: up to one over
    # held-out GPUs only (a quarter of the fleet), not the training ones
    assert report["gpus"] <= 6
    assert run.data.metrics["baseline_recall"] == evasion["baseline_recall"]
    assert evasion["worst_recall"]["0.50"] == report["frontier"]["0.50"]["worst_recall"]


def test_a_refused_version_gets_none(trained) -> None:
    second = trained["second"]
    assert not second["gate"]["promoted"]
    assert second["evasion"] is None
    assert ev.TAG not in _client().get_model_version(trained["name"], second["version"]).tags


def test_a_failed_search_does_not_fail_training(trained, small_fleet) -> None:
    """Held-out data without miners: the step says why and the version stays without a report."""
    import numpy as np
    from prefect import flow

    from secml.abp import model as m
    from training.abp_evasion import after_promotion

    ds, _ = m.build_dataset(m.read_jsonlines(str(small_fleet)),
                            m.read_labels(str(small_fleet.parent / "labels.csv")))  # fmt: skip
    benign = ds.subset(np.flatnonzero(ds.y == 0))

    @flow
    def training_flow() -> dict:  # the step runs inside abp-train's flow run
        return after_promotion(trained["name"], trained["second"]["version"], benign)

    out = training_flow()
    assert out == {"error": "ValueError: no mining samples to attack: the data set has no "
                            "plain-miner rows"}  # fmt: skip
    assert (
        ev.TAG
        not in _client().get_model_version(trained["name"], trained["second"]["version"]).tags
    )


def test_the_flow_reports_a_version_without_one(trained, small_fleet) -> None:
    from training.abp_evasion import abp_evasion

    name, first, second = trained["name"], trained["first"], trained["second"]
    again = abp_evasion(model_name=name, data=[str(small_fleet)])  # production: has one
    assert again == {"version": first["version"], "run_id": first["evasion"]["run_id"],
                     "reused": True}  # fmt: skip
    made = abp_evasion(model_name=name, version=second["version"], data=[str(small_fleet)])
    assert made["reused"] is False and made["version"] == second["version"]
    tags = _client().get_model_version(name, second["version"]).tags
    assert tags[ev.TAG] == made["run_id"] != first["evasion"]["run_id"]
    assert _client().get_run(made["run_id"]).data.tags["trigger"] == "abp-evasion"
    # the same held-out split as abp-train's: the report attacks the same miners
    assert made["rows"] == first["evasion"]["rows"]


def test_the_flow_without_production_names_the_model(mlflow_server, prefect_server) -> None:
    from training.abp_evasion import abp_evasion

    name = f"abp-nothing-{uuid.uuid4().hex[:6]}"
    with pytest.raises(ValueError, match=f"{name} has no 'production' version"):
        abp_evasion(model_name=name)


def test_the_setting_turns_the_step_off(trained, monkeypatch) -> None:
    from training.abp_evasion import after_promotion

    monkeypatch.setenv("SECML_ABP_EVASION_ON_PROMOTION", "false")
    get_settings.cache_clear()
    try:
        out = after_promotion(trained["name"], trained["first"]["version"], None)  # type: ignore[arg-type]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert out == {"skipped": "SECML_ABP_EVASION_ON_PROMOTION is off"}


def test_the_demo_ends_with_the_production_report(mlflow_server, prefect_server, tmp_path) -> None:
    from demo.abp import demo

    settings = mlflow_server.model_copy(
        update={"data_dir": tmp_path, "abp_min_f1": 0.5, "abp_min_recall": 0.0}
    )
    name = f"abp-evasion-demo-{uuid.uuid4().hex[:6]}"
    res = demo(settings, gpus=12, hours=1.5, seed=1, model_name=name)
    prod = _client().get_model_version_by_alias(name, PROD_ALIAS)
    assert res["evasion"]["run_id"] == prod.tags[ev.TAG]
    report = ev.load_report(_client(), prod.tags[ev.TAG])
    assert report["frontier"]["0.50"]["worst_recall"] <= report["baseline_recall"]


def test_the_deployment_runs_from_prefect(trained, small_fleet, prefect_worker) -> None:
    """``abp-evasion/default`` is deployed on the work pool; forced, it makes a new report."""
    from prefect.deployments import run_deployment

    name, first = trained["name"], trained["first"]
    params = {"model_name": name, "data": [str(small_fleet)], "force": True}
    run = run_deployment("abp-evasion/default", parameters=params, timeout=480)
    assert run.state is not None and run.state.is_completed(), run.state
    tag = _client().get_model_version_by_alias(name, PROD_ALIAS).tags[ev.TAG]
    assert tag != first["evasion"]["run_id"], "a new report for production"
    assert _client().get_run(tag).data.tags["trigger"] == "abp-evasion"


def test_the_robustness_gates_report_is_kept(small_fleet, mlflow_server, prefect_server,
                                             monkeypatch) -> None:  # fmt: skip
    """With the opt-in robustness gate on, the gate's own report is the version's: no second."""
    from training.abp_flow import abp_train

    monkeypatch.setenv("SECML_ABP_ROBUSTNESS_GATE", "true")
    monkeypatch.setenv("SECML_ABP_ROBUSTNESS_MIN_RECALL", "0.0")
    get_settings.cache_clear()
    try:
        name = f"abp-evasion-gate-{uuid.uuid4().hex[:8]}"
        res = abp_train(data=[str(small_fleet)], model_name=name, use_store_labels=False,
                        n_estimators=60, min_recall=0.0)  # fmt: skip
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert res["gate"]["promoted"] and res["evasion"]["reused"] is True
    run = _client().get_run(res["evasion"]["run_id"])
    assert run.data.tags["gate"] == "robustness"
    reports = _client().search_runs(
        [run.info.experiment_id], f"tags.model_uri = 'models:/{name}/{res['version']}'"
    )
    assert len(reports) == 1
