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
