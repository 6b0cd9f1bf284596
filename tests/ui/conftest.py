"""Fixtures of the UI tests: a fresh store and registry per test, seeded detections."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from secml.settings import Settings, get_settings

PASSWORD = "s3cret-for-tests"


def detection_rows() -> list[dict[str, Any]]:
    """A small, varied set of detections: DFP (duo, azure) with z-scores and ABP miners."""
    return [
        {
            "detector": "dfp",
            "source": "duo",
            "user": "alice@example.com",
            "event_time": "2026-11-20T03:12:00Z",
            "score": 4.7,
            "model_version": "dfp-duo-alice_40example.com:3",
            "record": {"user": {"name": "alice@example.com"}, "result": "success", "n": 1},
            "details": {
                "top_features": [
                    {"feature": "locincrement", "z": 6.2},
                    {"feature": "browser", "z": 3.1},
                ]
            },
        },
        {
            "detector": "dfp",
            "source": "duo",
            "user": "alice@example.com",
            "event_time": "2026-11-21T09:00:00Z",
            "score": 2.3,
            "model_version": "dfp-duo-alice_40example.com:3",
            "record": {"user": {"name": "alice@example.com"}, "result": "denied", "n": 2},
            "details": {"top_features": [{"feature": "result", "z": 2.9}]},
        },
        {
            "detector": "dfp",
            "source": "azure",
            "user": "bob@example.com",
            "event_time": "2026-11-19T23:59:00Z",
            "score": 2.1,
            "model_version": "dfp-azure-generic:1",
            "record": {"properties": {"userPrincipalName": "bob@example.com"}, "n": 3},
        },
        {
            "detector": "abp",
            "source": "nvsmi",
            "user": None,
            "event_time": "2026-11-21T12:00:00Z",
            "score": 0.98,
            "model_version": "abp-nvsmi-xgb:2",
            "record": {"nvidia_smi_log.gpu.power_readings.power_draw": "240.1 W", "n": 4},
        },
    ]


@pytest.fixture
def ui_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings pointing at an empty store in ``tmp_path`` and a known local password."""
    monkeypatch.setenv("SECML_RUN_DIR", str(tmp_path))
    monkeypatch.setenv("SECML_STORE_URL", f"sqlite:///{tmp_path / 'detections.db'}")
    monkeypatch.setenv("SECML_UI_USERNAME", "analyst")
    monkeypatch.setenv("SECML_UI_PASSWORD", PASSWORD)
    monkeypatch.setenv("SECML_UI_AUTH", "local")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def seeded_store(ui_settings: Settings) -> Any:
    """The settings' detections store holding ``detection_rows()``."""
    from secml.store import DetectionStore

    store = DetectionStore(str(ui_settings.store_url))
    store.add_detections(detection_rows())
    return store


@pytest.fixture(scope="session")
def registry_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An MLflow tracking/registry URI on a SQLite file (no server needed), shared per session."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return f"sqlite:///{path}"


def make_model(client: Any, name: str, metrics: list[dict[str, float]]) -> list[int]:
    """Register ``name`` with one version per metrics dict (each from its own run)."""
    exp_name = f"exp-{name}"
    exp = client.get_experiment_by_name(exp_name)
    exp_id = exp.experiment_id if exp else client.create_experiment(exp_name)
    client.create_registered_model(name)
    versions = []
    for m in metrics:
        run = client.create_run(exp_id)
        for k, v in m.items():
            client.log_metric(run.info.run_id, k, v)
        mv = client.create_model_version(
            name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        versions.append(int(mv.version))
    return versions


def page_app(module: str, user: str = "analyst") -> Any:
    """An AppTest that renders ``ui.views.<module>`` for a signed-in ``user``."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_string(
        f"from ui.views import {module}\n{module}.render()\n", default_timeout=60
    )
    if user:
        at.session_state["user"] = user
    return at


def texts(elements: Any) -> list[str]:
    """The string values of a list of AppTest elements."""
    return [str(e.value) for e in elements]


def frame_with(at: Any, column: str) -> Any:
    """The value of the first dataframe on the page that has ``column``."""
    for df in at.dataframe:
        if column in df.value.columns:
            return df.value
    raise AssertionError(f"no dataframe with column {column!r} on the page")


@pytest.fixture(scope="session")
def abp_registered(registry_uri: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small ABP booster (seeded fleet) registered twice in the session's MLflow registry,
    with per-profile metrics and a plot as ``abp-train`` logs them; and one record per class."""
    import json

    import mlflow
    import numpy as np

    from secml.abp import model as m
    from secml.abp.generator import generate

    out = tmp_path_factory.mktemp("abp-ui")
    data, labels = generate(out, gpus=12, hours=1, seed=3, interval_s=60)
    records = [json.loads(line) for line in data.read_text().splitlines()]
    ds, _ = m.build_dataset(records, m.read_labels(str(labels)))
    booster = m.train(ds, m.TrainParams(n_estimators=25, max_depth=4))
    booster.set_attr(threshold="0.42")
    scores = m.score_dataset(booster, ds)
    name = "abp-nvsmi-ui-test"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        client = mlflow.MlflowClient(registry_uri, registry_uri)
        exp = client.create_experiment("abp-ui", artifact_location=str(out / "artifacts"))
        versions = []
        for i, depth in enumerate((0, 1)):
            metrics = m.evaluate(ds.y, scores - 0.1 * depth, ds.profile, 0.42)
            with mlflow.start_run(experiment_id=exp):
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if np.isfinite(v)})
                fig = m.plots(booster, ds.y, scores, metrics)["confusion_matrix.png"]
                mlflow.log_figure(fig, "plots/confusion_matrix.png")
                info = mlflow.xgboost.log_model(
                    booster, name="model", model_format="ubj", registered_model_name=name
                )
            versions.append(int(info.registered_model_version))
            assert i == len(versions) - 1
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    miner = records[int(np.argmax(np.where(ds.y == 1, scores, -1)))]
    benign = records[int(np.argmin(np.where(ds.y == 0, scores, 2)))]
    return {"name": name, "versions": versions, "booster": booster, "miner": miner,
            "benign": benign, "scores": scores, "ds": ds}  # fmt: skip
