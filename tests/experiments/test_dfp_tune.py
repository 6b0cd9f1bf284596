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
