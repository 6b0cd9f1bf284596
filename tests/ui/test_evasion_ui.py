"""AppTest of the ABP evasion report on the Models and Compare runs pages (real MLflow registry).

A seeded booster is registered twice; version 1 (production) gets a real evasion report logged
by ``secml.abp.evasion.log_report`` (``evasion.json`` + the ``evasion_run_id`` tag), version 2
has none.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from secml.abp import evasion as ev
from secml.settings import get_settings
from ui.views.evasion import X_TITLE, Y_TITLE

from .conftest import frame_with, page_app, texts


@pytest.fixture(scope="module")
def reported(registry_uri: str, abp_registered: dict, tmp_path_factory) -> dict[str, Any]:
    """A new ABP model with two versions; v1 is production and has an evasion report."""
    import mlflow

    out = tmp_path_factory.mktemp("evasion-ui")
    name = f"abp-evasion-ui-{uuid.uuid4().hex[:6]}"
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(registry_uri)
    mlflow.set_registry_uri(registry_uri)
    try:
        client = mlflow.MlflowClient(registry_uri, registry_uri)
        if client.get_experiment_by_name(ev.EXPERIMENT) is None:  # artifacts under tmp, not cwd
            client.create_experiment(ev.EXPERIMENT, artifact_location=str(out / "evasion"))
        exp = client.create_experiment(name, artifact_location=str(out / "models"))
        versions = []
        for _ in range(2):
            with mlflow.start_run(experiment_id=exp):
                info = mlflow.xgboost.log_model(
                    abp_registered["booster"], name="model", model_format="ubj",
                    registered_model_name=name,
                )  # fmt: skip
            versions.append(int(info.registered_model_version))
        client.set_registered_model_alias(name, "production", str(versions[0]))
        report = ev.search(abp_registered["booster"], abp_registered["ds"], n_configs=20, seed=1)
        run_id = ev.log_report(report, f"models:/{name}/{versions[0]}")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    return {"name": name, "versions": versions, "report": report, "run_id": run_id,
            "client": client}  # fmt: skip


@pytest.fixture
def registry(registry_uri: str, ui_settings, monkeypatch) -> str:
    """Point the app at the session's SQLite registry."""
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", registry_uri)
    get_settings.cache_clear()
    return registry_uri


def _evasion_charts(at: Any) -> list[dict]:
    """Vega-Lite specs on the page that plot recall against the attacker's budget."""
    specs = [json.loads(c.proto.spec) for c in at.get("vega_lite_chart")]
    return [s for s in specs if X_TITLE in json.dumps(s)]


def test_models_page_plots_recall_against_the_budget(registry, reported) -> None:
    name, (v1, _) = reported["name"], reported["versions"]
    at = page_app("models")
    at.query_params["model"] = name
    at.run()
    assert not at.exception, at.exception
    assert "Robustness: recall against the attacker's budget" in texts(at.subheader)
    assert at.selectbox(key=f"ev_ver_{name}").value == v1, "production is shown first"
    (spec,) = _evasion_charts(at)
    blob = json.dumps(spec)
    assert Y_TITLE in blob and "(% of its full rate)" in blob, "axis titles with units"
    table = frame_with(at, "hash rate kept ≥")
    report = reported["report"]
    want = [report.frontier[f"{b:.2f}"]["worst_recall"] for b in ev.BUDGETS]
    assert list(table["hash rate kept ≥"]) == [f"{b:.0%}" for b in ev.BUDGETS]
    assert table[f"v{v1}"].tolist() == pytest.approx(want)
    caption = " ".join(texts(at.caption))
    assert f"{len(report.configs)} settings on {report.rows} plain-miner samples" in caption
    assert reported["run_id"] in caption, "a link to the evasion run"


def test_a_version_without_a_report_says_so(registry, reported) -> None:
    name, (_, v2) = reported["name"], reported["versions"]
    at = page_app("models")
    at.query_params["model"] = name
    at.run()
    at.selectbox(key=f"ev_ver_{name}").select(v2).run()
    assert not at.exception, at.exception
    assert not _evasion_charts(at)
    (msg,) = [i for i in texts(at.info) if f"v{v2}" in i]
    assert "no evasion report" in msg and f"models:/{name}/{v2}" in msg


def test_compare_overlays_the_versions_reports(registry, reported) -> None:
    name, (v1, v2) = reported["name"], reported["versions"]
    at = page_app("compare")
    at.query_params["model"] = name
    at.query_params["versions"] = f"{v1},{v2}"
    at.run()
    assert not at.exception, at.exception
    assert "Robustness: recall against the attacker's budget" in texts(at.subheader)
    assert len(_evasion_charts(at)) == 1
    assert any(f"v{v2}" in i and "no evasion report" in i for i in texts(at.info))
    assert f"v{v1}" in frame_with(at, "hash rate kept ≥").columns


def test_a_tag_naming_a_run_without_the_report_is_named(registry, reported) -> None:
    name, (_, v2) = reported["name"], reported["versions"]
    client = reported["client"]
    run_id = client.get_model_version(name, str(v2)).run_id  # a run with no evasion.json
    client.set_model_version_tag(name, str(v2), ev.TAG, run_id)
    try:
        at = page_app("models")
        at.query_params["model"] = name
        at.run()
        at.selectbox(key=f"ev_ver_{name}").select(v2).run()
        assert not at.exception, at.exception
        assert any(run_id in i and "evasion.json" in i for i in texts(at.info))
    finally:
        client.delete_model_version_tag(name, str(v2), ev.TAG)
