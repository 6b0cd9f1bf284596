"""AppTest of the Models page: registry listing, gate, forced promotion with a reason, history."""

from __future__ import annotations

import uuid

import pytest
from mlflow import MlflowClient

from secml.settings import get_settings

from ..conftest import frame_with, make_model, page_app, texts


@pytest.fixture
def registry(registry_uri: str, ui_settings, monkeypatch) -> MlflowClient:
    """Point the app at the session's SQLite registry."""
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", registry_uri)
    monkeypatch.setenv("SECML_ABP_MIN_RECALL", "0.9")
    get_settings.cache_clear()
    return MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)


def _promote(at, name: str, version: int, force: bool = False, reason: str = ""):
    """Fill and submit the promotion form."""
    at.selectbox(key=f"p_ver_{name}").select(version)
    at.checkbox(key=f"p_force_{name}").set_value(force)
    at.text_input(key=f"p_reason_{name}").input(reason)
    next(b for b in at.button if b.label == "Move production").click()
    return at.run()


def test_versions_gate_force_and_history(registry) -> None:
    name = f"abp-nvsmi-{uuid.uuid4().hex[:6]}"
    make_model(
        registry,
        name,
        [{"target_fpr_recall": r, "f1": f1} for r, f1 in ((0.95, 0.9), (0.97, 0.97), (0.5, 1.0))],
    )
    registry.set_registered_model_alias(name, "production", "1")
    at = page_app("models", user="dana").run()
    assert not at.exception
    assert name in list(frame_with(at, "latest_version")["name"])
    at.text_input(key="m_filter").input(name[-6:]).run()
    assert list(frame_with(at, "latest_version")["name"]) == [name]
    at.text_input(key="m_filter").input("no-such-model").run()
    assert any("No registered model name contains" in i for i in texts(at.info))
    at.text_input(key="m_filter").input("").run()
    at.selectbox(key="m_name").select(name).run()
    versions = frame_with(at, "run_id").set_index("version")
    assert versions.loc[1, "aliases"] == "production"
    assert versions.loc[2, "metric.f1"] == pytest.approx(0.97)
    assert "No promotions recorded from this app yet." in texts(at.caption)

    _promote(at, name, 3)
    assert any("the gate refused" in e and "below the minimum" in e for e in texts(at.error))
    assert registry.get_registered_model(name).aliases["production"] in (1, "1")

    _promote(at, name, 3, force=True)
    assert any("needs a reason" in e for e in texts(at.error))
    assert registry.get_registered_model(name).aliases["production"] in (1, "1")

    _promote(at, name, 2)
    assert not at.exception
    assert any("v1 → v2 (promote, gate passed)" in s for s in texts(at.success))
    assert registry.get_registered_model(name).aliases["production"] in (2, "2")

    _promote(at, name, 1, force=True, reason="v2 misses a new miner family")
    assert any("v2 → v1 (rollback, forced)" in s for s in texts(at.success))
    hist = frame_with(at, "to_version")
    assert list(hist["to_version"]) == [1, 2]
    assert list(hist["by"]) == ["dana", "dana"]
    assert hist["reason"].iloc[0] == "v2 misses a new miner family"


def test_empty_registry(ui_settings, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    get_settings.cache_clear()
    at = page_app("models").run()
    assert not at.exception
    assert any("No registered models yet" in i for i in texts(at.info))


def test_model_in_the_url_is_opened(registry) -> None:
    names = [f"dfp-duo-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for n in names:
        make_model(registry, n, [{"val_loss": 1.0}])
    at = page_app("models")
    at.query_params["model"] = names[1]
    at.run()
    assert not at.exception
    assert at.selectbox(key="m_name").value == names[1]
    at.selectbox(key="m_name").select(names[0]).run()
    model = at.query_params["model"]
    assert (model[-1] if isinstance(model, list) else model) == names[0]
