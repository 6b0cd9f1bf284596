"""``dfp-tune`` on a tiny study; the next ``dfp-train`` of that source uses its parameters."""

from __future__ import annotations

import pytest

from secml.dfp.generator import generate, write_batches

pytestmark = pytest.mark.integration


def _message(files: str, properties: dict) -> dict:
    return {"inputs": [{"tasks": [
        {"type": "load", "properties": {"loader_id": "fsspec", "files": [files]}},
        {"type": "training", "properties": properties}],
        "metadata": {"data_type": "payload", "source": "duo"}}]}  # fmt: skip


def test_dfp_tune_then_train_uses_the_best(tmp_path, mlflow_server, prefect_server) -> None:
    from mlflow import MlflowClient

    from training.dfp_flows import dfp_train
    from training.tune import dfp_tune

    gen = generate("duo", n_users=4, days=4, n_attacks=0, sparse_fraction=0.0, seed=5)
    write_batches(gen, tmp_path)
    files = str(tmp_path / "DUO_*.json")
    res = dfp_tune(_message(files, {}), n_trials=3, max_epochs=2, dask=False)["duo"]
    client = MlflowClient()
    try:
        parent = client.get_run(res["run_id"])
        kids = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{res['run_id']}'")  # fmt: skip
        assert len(kids) == 3 and all("val_loss" in k.data.metrics for k in kids)
        best = res["best_params"]
        assert best["encoder_layers"] == [best["encoder_layers"][0]] * 2
        assert min(t["val_loss"] for t in res["trials"] if t["state"] == "complete") == (
            pytest.approx(res["best_val_loss"])
        )
        user = gen.records[0]["user"]["name"]
        props = {"train_users": "individual", "only_users": [user], "min_events": 1}
        summary = dfp_train(_message(files, props))
        assert summary["tuned_from_runs"] == {"duo": res["run_id"]}
        (model,) = summary["models"]
        mv = client.get_model_version(model["model_name"], model["version"])
        params = client.get_run(mv.run_id).data.params
        assert params["lr"] == str(best["lr"]) and params["batch_size"] == str(best["batch_size"])
    finally:
        client.delete_run(res["run_id"])  # other modules' dfp-train runs stay untuned


def test_pruned_trials_stop_mid_fit(tmp_path, mlflow_server, prefect_server) -> None:
    """The pruner sees each epoch's validation loss during the fit and stops poor trials there."""
    import optuna
    from mlflow import MlflowClient

    from training.tune import dfp_tune, open_storage, storage_url

    gen = generate("duo", n_users=6, days=6, n_attacks=0, sparse_fraction=0.0, seed=5)
    write_batches(gen, tmp_path)
    budget = 6
    res = dfp_tune(_message(str(tmp_path / "DUO_*.json"), {}), n_trials=8, max_epochs=budget,
                   dask=False, workers=1)["duo"]  # fmt: skip
    client = MlflowClient()
    try:
        pruned = [t for t in res["trials"] if t["state"] == "pruned"]
        assert pruned, res["trials"]
        assert all(t["epochs"] < budget for t in pruned), "a pruned trial trained fewer epochs"
        assert all(t["epochs"] >= budget // 3 for t in pruned), "not judged during warm-up"
        assert res["epochs_run"] == sum(t["epochs"] for t in res["trials"]) < res["epochs_budget"]
        assert res["epochs_budget"] == 8 * budget
        study = optuna.load_study(study_name=res["study"], storage=open_storage(storage_url()))
        by_number = {t.number: t for t in study.trials}
        parent = client.get_run(res["run_id"])
        query = f"tags.mlflow.parentRunId = '{res['run_id']}'"
        runs = client.search_runs([parent.info.experiment_id], query)
        kids = {int(k.data.tags["optuna.trial"]): k for k in runs}
        for t in pruned:
            ot = by_number[t["number"]]
            assert ot.state == optuna.trial.TrialState.PRUNED
            # reported epoch by epoch from inside the fit, up to the epoch it was stopped at
            assert sorted(ot.intermediate_values) == list(range(1, t["epochs"] + 1))
            hist = client.get_metric_history(kids[t["number"]].info.run_id, "epoch_val_loss")
            assert len(hist) == t["epochs"] == kids[t["number"]].data.metrics["epochs"]
        assert parent.data.metrics["epochs_run"] == res["epochs_run"]
    finally:
        client.delete_run(res["run_id"])  # other modules' dfp-train runs stay untuned
