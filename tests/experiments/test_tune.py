"""``abp-tune`` on a tiny study against real MLflow and Prefect, on a 2-process Dask cluster."""

from __future__ import annotations

import uuid

import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_name() -> str:
    return f"abp-tune-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def study(small_fleet, mlflow_server, prefect_server, model_name) -> dict:
    from training.tune import abp_tune

    return abp_tune(data=[str(small_fleet)], n_trials=6, folds=3, max_estimators=120,
                    model_name=model_name, use_store_labels=False, dask=True,
                    workers=2)  # fmt: skip


def test_defaults_are_trial_zero_and_best_is_no_worse(study) -> None:
    trials = {t["number"]: t for t in study["trials"]}
    assert len(trials) == 6 and 0 in trials
    # trial 0 is the defaults (enqueued), so the best CV value is at least theirs
    assert study["best_cv_pr_auc"] >= study["default_cv_pr_auc"]
    assert all(t["state"] in ("complete", "pruned") for t in trials.values())
    # the held-out GPUs were judged for both parameter sets
    for key in ("pr_auc", "roc_auc", "target_fpr_recall"):
        assert 0.0 <= study["heldout_best"][key] <= 1.0
        assert 0.0 <= study["heldout_default"][key] <= 1.0
    # what the next abp-train gets is no worse than the defaults on the held-out GPUs
    better = study["heldout_best"]["pr_auc"] >= study["heldout_default"]["pr_auc"]
    assert study["chosen"] == ("study" if better else "defaults")
    if not better:  # trial 0's parameters: the defaults (trees capped at max_estimators)
        assert study["best_params"] == pytest.approx(trials[0]["params"])
    else:
        assert study["best_params"] == study["study_best_params"]


def test_trials_are_nested_runs_with_plots(study, model_name) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    parent = client.get_run(study["run_id"])
    assert parent.data.tags["secml.tune.model"] == model_name
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{study['run_id']}'",
    )
    assert len(children) == 6
    assert {c.data.tags["optuna.state"] for c in children} <= {"complete", "pruned"}
    # each trial logged its fold-by-fold running metric (what the pruner saw)
    hist = client.get_metric_history(children[0].info.run_id, "cv_pr_auc")
    assert len(hist) >= 1
    plots = {f.path for f in client.list_artifacts(study["run_id"], "optuna")}
    assert "optuna/optimization_history.png" in plots
    assert "optuna/intermediate_values.png" in plots
    assert "heldout_pr_auc_best" in parent.data.metrics


def test_next_abp_train_uses_the_tuned_params(study, small_fleet, model_name) -> None:
    from mlflow import MlflowClient

    from training.abp_flow import abp_train

    res = abp_train(data=[str(small_fleet)], model_name=model_name, use_store_labels=False,
                    min_recall=0.0)  # fmt: skip
    assert res["tuned_from_run"] == study["run_id"]
    for k, v in study["best_params"].items():
        assert res["params"][k] == pytest.approx(v), k
    run = MlflowClient().get_run(res["run_id"])
    assert run.data.tags["tuned_from_run"] == study["run_id"]
    assert run.data.params["max_depth"] == str(study["best_params"]["max_depth"])
    # an explicit argument still wins over the tuned value
    other = abp_train(data=[str(small_fleet)], model_name=model_name, use_store_labels=False,
                      min_recall=0.0, max_depth=1 if study["best_params"]["max_depth"] != 1
                      else 2)  # fmt: skip
    assert other["params"]["max_depth"] != study["best_params"]["max_depth"]
    # and use_tuned=False goes back to the defaults
    plain = abp_train(data=[str(small_fleet)], model_name=model_name, use_store_labels=False,
                      min_recall=0.0, use_tuned=False)  # fmt: skip
    from secml.abp.model import TrainParams

    default_depth = TrainParams().max_depth
    assert plain["tuned_from_run"] is None and plain["params"]["max_depth"] == default_depth
