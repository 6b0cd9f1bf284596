"""AppTest of the Home page: triage counts, detections over time, alerts, services."""

from __future__ import annotations

import json

import pytest

from secml.stack import SERVICES

from ..conftest import detection_rows, frame_with, page_app, texts


def test_home_shows_every_service(ui_settings, monkeypatch) -> None:
    from secml.settings import get_settings
    from secml.stack import port_free

    # a Prometheus port nothing listens on (the session's Prometheus may be up by now)
    port = next(p for p in range(39090, 39190) if port_free("127.0.0.1", p))
    monkeypatch.setenv("SECML_PROMETHEUS_PORT", str(port))
    get_settings.cache_clear()
    ui_settings = get_settings()
    at = page_app("home").run()
    assert not at.exception
    table = frame_with(at, "service")
    assert list(table["service"]) == [s.name for s in SERVICES]
    assert {"mlflow", "prefect", "triton", "gateway", "ui", "kafka", "prometheus"} <= set(
        table["service"]
    )
    # the run directory is fresh, so nothing of this stack runs
    assert set(table["state"]) <= {"stopped", "not built yet"}
    assert table.set_index("service").loc["mlflow", "url"] == ui_settings.mlflow_tracking_uri
    assert f"0 / {len(SERVICES)}" in texts(at.metric)
    assert any("make demo" in i for i in texts(at.info)), "empty store: how to get detections"
    # nothing listens on the session's Prometheus port: said, not a traceback
    assert any("Prometheus at" in w and "not available" in w for w in texts(at.warning))


def test_triage_counts_events_per_detector_and_unlabelled(seeded_store) -> None:
    first = detection_rows()[0]
    ids = seeded_store.add_detections([first, first])  # the same record scored twice more
    seeded_store.label_event(ids[0], "true_positive", "ana")
    at = page_app("home")
    at.session_state["home_window"] = "all time"
    at.run()
    assert not at.exception
    metrics = texts(at.metric)
    assert metrics[:3] == ["3", "1", "3"], metrics  # unlabelled, ABP events, DFP events
    counts = frame_with(at, "unlabelled").set_index("detector")
    assert counts.loc["dfp"].to_dict() == {
        "detections": 5, "events": 3, "unlabelled": 2, "true_positive": 1, "false_positive": 0
    }  # fmt: skip
    charts = at.get("vega_lite_chart")
    assert len(charts) == 1, "detections over time"
    enc = json.loads(charts[0].proto.spec)["encoding"]
    assert enc["y"]["title"] == "detections per day", "axis titles carry the unit"
    assert enc["x"]["title"] == "event time (UTC, per day)"


@pytest.mark.integration
def test_alerts_come_from_the_real_prometheus(prometheus_server, monkeypatch) -> None:
    import httpx

    from secml.settings import get_settings

    monkeypatch.setenv("SECML_PROMETHEUS_URL", str(prometheus_server.prometheus_url))
    get_settings.cache_clear()
    body = httpx.get(f"{prometheus_server.prometheus_url}/api/v1/alerts", timeout=5).json()
    at = page_app("home").run()
    assert not at.exception
    if body["data"]["alerts"]:
        alerts = frame_with(at, "severity")
        assert set(alerts["alert"]) == {a["labels"]["alertname"] for a in body["data"]["alerts"]}
    else:
        assert "No alerts firing." in texts(at.success)
