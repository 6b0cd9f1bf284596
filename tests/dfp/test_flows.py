"""Prefect flows dfp-train and dfp-infer on real MLflow and Prefect servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from secml.control import ControlMessageError
from secml.dfp.generator import generate, write_batches
from secml.dfp.postprocess import RISK_OUTPUT, feature_columns
from secml.dfp.registry import ModelRegistry
from secml.naming import GENERIC_USER, user_to_model_name
from secml.settings import Settings
from training.dfp_flows import _inputs, read_message

TINY = {"encoder_layers": [16], "decoder_layers": [16], "max_epochs": 4, "batch_size": 64}
MIN_EVENTS = 40


def message(
    files: str,
    task: str,
    data_type: str = "payload",
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A one-input duo control message with a load task and ``task``."""
    return {
        "inputs": [
            {
                "tasks": [
                    {"type": "load", "properties": {"loader_id": "fsspec", "files": [files]}},
                    {"type": task, "properties": properties or {}},
                ],
                "metadata": {"data_type": data_type, "source": "duo"},
            }
        ]
    }


@pytest.fixture(scope="module")
def duo_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    """Generated Duo batch files (a few users, a few days, some attacks) and their users."""
    out = tmp_path_factory.mktemp("duo")
    gen = generate("duo", n_users=5, days=4, n_attacks=3, attack_days=1, sparse_fraction=0.5)
    write_batches(gen, out)
    users = pd.Series([r["user"]["name"] for r in gen.records]).value_counts()
    return str(out / "DUO_*.json"), users


def test_read_message_forms(tmp_path: Path) -> None:
    """A control message is accepted as dict, JSON text or file; a bad one names the field."""
    msg = message("data/*.json", "training")
    path = tmp_path / "m.json"
    path.write_text(json.dumps(msg))
    assert read_message(msg) == read_message(json.dumps(msg)) == read_message(str(path))
    bad = message("data/*.json", "trian")
    with pytest.raises(ControlMessageError, match=r"inputs\[0\]\.tasks\[1\]\.type"):
        read_message(bad)
    nv = message("data/*.json", "training")
    nv["inputs"][0]["metadata"]["source"] = "nvsmi"
    with pytest.raises(ValueError, match=r"inputs\[0\].*nvsmi.*ABP"):
        _inputs(read_message(nv), "training")
    assert _inputs(read_message(msg), "inference") == []


@pytest.mark.integration
def test_train_then_infer(
    mlflow_server: Settings, prefect_server: Settings, duo_files, tmp_path: Path
) -> None:
    """dfp-train registers generic + users with enough events; dfp-infer scores every event
    with the user's model, else generic, and writes the DESIGN columns."""
    from mlflow import MlflowClient

    from training.dfp_flows import dfp_infer, dfp_train

    files, users = duo_files
    props = {"min_events": MIN_EVENTS, "model_params": TINY}
    summary = dfp_train(message(files, "training", properties=props))
    own = sorted(u for u, n in users.items() if n >= MIN_EVENTS)
    few = sorted(u for u, n in users.items() if n < MIN_EVENTS)
    assert own and few, f"test data needs both kinds of users: {users.to_dict()}"
    names = {m["model_name"] for m in summary["models"]}
    assert names == {user_to_model_name("duo", u) for u in [GENERIC_USER, *own]}
    assert set(summary["too_few_events"]) == {f"duo/{u}" for u in few}
    client = MlflowClient(mlflow_server.mlflow_tracking_uri)
    version = {
        m["model_name"]: client.get_model_version_by_alias(m["model_name"], "production").version
        for m in summary["models"]
    }

    out = dfp_infer(message(files, "inference"), output_dir=str(tmp_path), write_all=True)
    (res,) = out["outputs"]
    assert res["events"] == int(users.sum())
    rows = pd.read_json(res["output"], lines=True, dtype=False, convert_dates=False)
    assert len(rows) == res["events"]
    tail = [*feature_columns("duo"), "max_abs_z", "mean_abs_z", "model_version", "event_time"]
    tail += list(RISK_OUTPUT)  # the generic model carries a risk model
    assert list(rows.columns[-len(tail) :]) == tail
    assert rows["risk"].between(0, 1).all() and (rows["risk_threshold"] >= 0.5).all()
    assert (rows["anomaly"] == (rows["risk"] > rows["risk_threshold"])).all()
    assert "user.name" in rows.columns and "access_device.browser" in rows.columns
    listing = ModelRegistry("duo").production_models()
    for user, group in rows.groupby("user.name"):
        mine = user_to_model_name("duo", user)
        if user in own:
            expected = f"{mine}:{version[mine]}"
        elif mine in listing:  # an own model from an earlier run of this session
            expected = f"{mine}:{listing[mine]}"
        else:
            name = user_to_model_name("duo", GENERIC_USER)
            expected = f"{name}:{version[name]}"
        assert set(group["model_version"]) == {expected}, user
    assert rows["event_time"].str.endswith("Z").all()
    assert res["stored"] == res["anomalies"] == int(rows["anomaly"].sum())


@pytest.mark.integration
def test_streaming_trains_when_window_triggers(
    mlflow_server: Settings, prefect_server: Settings, duo_files, tmp_path: Path
) -> None:
    """Streaming goes through the rolling window: it trains at the minimum history, and the
    same events again (no increment) train nothing."""
    from training.dfp_flows import dfp_train

    files, users = duo_files
    top = users.index[0]
    props = {
        "train_users": "individual",
        "only_users": [top],
        "min_history": MIN_EVENTS,
        "min_increment": 10,
        "model_params": TINY,
    }
    msg = message(files, "training", "streaming", props)
    cache = str(tmp_path / "window")
    first = dfp_train(msg, window_cache_dir=cache)
    assert [m["model_name"] for m in first["models"]] == [user_to_model_name("duo", top)]
    assert first["models"][0]["rows"] == int(users[top])
    again = dfp_train(msg, window_cache_dir=cache)
    assert again["trained"] == 0


@pytest.mark.integration
def test_train_on_dask_local_cluster(
    mlflow_server: Settings, prefect_server: Settings, duo_files
) -> None:
    """With dask=True the per-user tasks run on a distributed LocalCluster via prefect-dask."""
    from training.dfp_flows import dfp_train

    files, users = duo_files
    props = {"train_users": "individual", "only_users": list(users.index[:2]), "min_events": 1}
    summary = dfp_train(message(files, "training", properties=props), model_params=TINY, dask=True)
    assert summary["trained"] == 2
    assert {m["rows"] for m in summary["models"]} == {int(n) for n in users.iloc[:2]}


@pytest.mark.integration
def test_deployed_flow_runs_on_worker(prefect_worker: Settings, duo_files) -> None:
    """dfp-train is deployed on the work pool and a run of the deployment completes."""
    from mlflow import MlflowClient
    from prefect.deployments import run_deployment

    files, users = duo_files
    props = {"train_users": "individual", "only_users": [users.index[0]], "min_events": 1}
    run = run_deployment(
        "dfp-train/default",
        parameters={"message": message(files, "training", properties=props), "model_params": TINY},
        timeout=300,
    )
    assert run.state is not None and run.state.is_completed(), run.state
    client = MlflowClient(prefect_worker.mlflow_tracking_uri)
    name = user_to_model_name("duo", users.index[0])
    assert client.get_registered_model(name).name == name
