"""AppTest of the ABP explanation (SHAP from the registered booster) and the Compare runs page."""

from __future__ import annotations

import pytest

from secml.abp.explain import explain
from secml.abp.features import to_matrix
from secml.abp.model import score
from secml.settings import get_settings

from ..conftest import frame_with, page_app, texts


@pytest.fixture
def registry(registry_uri: str, ui_settings, monkeypatch) -> str:
    """Point the app at the session's SQLite registry."""
    monkeypatch.setenv("SECML_MLFLOW_TRACKING_URI", registry_uri)
    get_settings.cache_clear()
    return registry_uri


def test_abp_detail_explains_the_score_with_shap(registry, abp_registered) -> None:
    from secml.store import DetectionStore

    name, version = abp_registered["name"], abp_registered["versions"][0]
    record = abp_registered["miner"]
    p = float(score(abp_registered["booster"], to_matrix([record]))[0])
    store = DetectionStore(str(get_settings().store_url))
    (det_id,) = store.add_detections(
        [{"detector": "abp", "source": "nvsmi", "record": record, "score": p,
          "model_version": f"{name}:{version}", "details": {"p_mining": p, "threshold": 0.42}}]
    )  # fmt: skip
    at = page_app("detections")
    at.query_params["detection"] = str(det_id)
    at.run()
    assert not at.exception, at.exception
    assert not at.warning, texts(at.warning)
    assert texts(at.metric)[:3] == [f"{p:.3f}", "0.420", "mining"]
    top = frame_with(at, "contribution")
    want = explain(abp_registered["booster"], record, 0.42).top(10)
    assert list(top["feature"]) == list(want["feature"])
    assert top["contribution"].to_numpy() == pytest.approx(want["contribution"].to_numpy())
    chart = at.get("vega_lite_chart")
    assert len(chart) == 1 and "contribution to the mining log-odds" in chart[0].proto.spec
    assert any("→ probability" in c for c in texts(at.caption))


def test_abp_detail_without_the_model_says_why(registry, abp_registered) -> None:
    from secml.store import DetectionStore

    store = DetectionStore(str(get_settings().store_url))
    (det_id,) = store.add_detections(
        [{"detector": "abp", "source": "nvsmi", "record": abp_registered["benign"],
          "score": 0.9, "model_version": "abp-nvsmi-gone:7"}]
    )  # fmt: skip
    at = page_app("detections")
    at.query_params["detection"] = str(det_id)
    at.run()
    assert not at.exception
    assert any("No explanation" in w and "abp-nvsmi-gone" in w for w in texts(at.warning))
    assert f"Detection #{det_id}" in texts(at.subheader), "the rest of the page still shows"


def test_compare_two_versions_side_by_side(registry, abp_registered) -> None:
    name, (v1, v2) = abp_registered["name"], abp_registered["versions"]
    at = page_app("compare")
    at.query_params["model"] = name
    at.query_params["versions"] = f"{v1},{v2}"
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="cmp_versions").value == [v1, v2]
    per_profile = frame_with(at, f"v{v2}")
    profiles = at.dataframe
    shown = {tuple(df.value.columns) for df in profiles}
    assert ("metric", f"v{v1}", f"v{v2}") in shown
    recall = [df.value for df in profiles if df.value["metric"].str.startswith("recall_").any()]
    assert recall, "a per-mining-profile table"
    assert "per mining profile / attack type" in texts(at.subheader)
    assert "FPR per benign kind" in texts(at.subheader)
    links = " ".join(texts(at.markdown))
    assert "/#/compare-runs?runs=" in links
    assert "**confusion_matrix.png**" in texts(at.markdown), "the logged plots, side by side"
    assert len(at.get("image")) == 2
    assert len(per_profile) >= 1


def test_compare_needs_two_versions(registry, abp_registered) -> None:
    at = page_app("compare")
    at.query_params["model"] = abp_registered["name"]
    at.query_params["versions"] = str(abp_registered["versions"][0])
    at.run()
    assert not at.exception
    assert "Pick at least two versions to compare." in texts(at.info)
