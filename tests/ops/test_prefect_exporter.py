"""The training exporter: flow-run metrics from the Prefect API, production versions from MLflow."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client import generate_latest

from secml.settings import Settings
from training.prefect_exporter import TrainingExporter, _run_seconds

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
FLOWS = {"f-dfp": "dfp-train", "f-abp": "abp-train"}


def _run(rid: str, flow_id: str, state: str, seconds: float | None = None) -> dict[str, Any]:
    """A flow run as the Prefect API returns it."""
    return {
        "id": rid,
        "flow_id": flow_id,
        "state_type": state,
        "state_name": state.title(),
        "total_run_time": seconds if seconds is not None else 0.0,
        "start_time": (NOW - timedelta(minutes=5)).isoformat(),
        "end_time": NOW.isoformat() if seconds is not None else None,
    }


class FakePrefect:
    """An httpx transport answering ``/flows/filter`` and ``/flow_runs/filter``."""

    def __init__(self, runs: list[dict[str, Any]], status: int = 200) -> None:
        self.runs = runs
        self.status = status
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content or b"{}")
        self.bodies.append(body)
        if self.status != 200:
            return httpx.Response(self.status, text="database is locked")
        offset, limit = body.get("offset", 0), body.get("limit", 200)
        if request.url.path.endswith("/flows/filter"):
            rows = [{"id": k, "name": v} for k, v in FLOWS.items()]
        elif request.url.path.endswith("/flow_runs/filter"):
            rows = self.runs
        else:
            return httpx.Response(404)
        return httpx.Response(200, json=rows[offset : offset + limit])


class Paged(list):
    """A page of results with MLflow's ``token`` attribute."""

    token: str | None = None


class FakeMlflow:
    """The few MlflowClient calls the exporter makes."""

    def __init__(self, models: dict[str, dict[str, str]], metrics: dict[str, dict[str, Any]]):
        self.models = models
        self.metrics = metrics
        self.run_reads: list[str] = []

    def search_registered_models(self, max_results: int, page_token: str | None) -> Paged:
        page = Paged(SimpleNamespace(name=n, aliases=a) for n, a in self.models.items())
        return page

    def get_model_version(self, name: str, version: str) -> SimpleNamespace:
        return SimpleNamespace(run_id=f"run-{name}-{version}")

    def get_run(self, run_id: str) -> SimpleNamespace:
        self.run_reads.append(run_id)
        return SimpleNamespace(data=SimpleNamespace(metrics=self.metrics.get(run_id, {})))


class NoLabels:
    """A detections store without labels."""

    def labelled(self, detector: str) -> pd.DataFrame:
        return pd.DataFrame(columns=["model_version", "label"])


def _exporter(
    transport: FakePrefect, mlflow: Any | None = None, store: Any | None = None
) -> TrainingExporter:
    settings = Settings(prefect_api_url="http://prefect.test/api")
    http = httpx.Client(transport=httpx.MockTransport(transport))
    return TrainingExporter(
        settings, http=http, mlflow_client=mlflow or FakeMlflow({}, {}), store=store or NoLabels()
    )


def _value(exp: TrainingExporter, name: str, **labels: str) -> float | None:
    return exp.registry.get_sample_value(name, labels)


def test_counts_runs_by_flow_and_state_type() -> None:
    """Runs are grouped by flow name and lower-case state type; every state has a series."""
    runs = [
        _run("r1", "f-dfp", "COMPLETED", 120.0),
        _run("r2", "f-dfp", "FAILED", 30.0),
        _run("r3", "f-dfp", "RUNNING"),
        _run("r4", "f-abp", "COMPLETED", 10.0),
    ]
    exp = _exporter(FakePrefect(runs))
    exp.poll_prefect(NOW)
    assert _value(exp, "prefect_flow_runs", flow="dfp-train", state="completed") == 1
    assert _value(exp, "prefect_flow_runs", flow="dfp-train", state="failed") == 1
    assert _value(exp, "prefect_flow_runs", flow="dfp-train", state="running") == 1
    assert _value(exp, "prefect_flow_runs", flow="abp-train", state="failed") == 0
    assert _value(exp, "prefect_flow_runs", flow="abp-train", state="crashed") == 0
    assert _value(exp, "prefect_flow_runs_finished_total", flow="dfp-train", state="failed") == 1
    assert _value(exp, "prefect_flow_runs_finished_total", flow="abp-train", state="failed") == 0
    done = {"flow": "dfp-train", "state": "completed"}
    count = _value(exp, "prefect_flow_run_duration_seconds_count", **done)
    total = _value(exp, "prefect_flow_run_duration_seconds_sum", **done)
    assert (count, total) == (1, 120.0)


def test_finished_runs_are_counted_once_and_running_ones_when_they_end() -> None:
    """A second poll does not count a run again; a run that finishes meanwhile is counted."""
    transport = FakePrefect([_run("r1", "f-dfp", "FAILED", 5.0), _run("r2", "f-dfp", "RUNNING")])
    exp = _exporter(transport)
    exp.poll_prefect(NOW)
    exp.poll_prefect(NOW)
    assert _value(exp, "prefect_flow_runs_finished_total", flow="dfp-train", state="failed") == 1
    transport.runs = [_run("r1", "f-dfp", "FAILED", 5.0), _run("r2", "f-dfp", "CRASHED", 7.0)]
    exp.poll_prefect(NOW)
    assert _value(exp, "prefect_flow_runs_finished_total", flow="dfp-train", state="crashed") == 1
    assert _value(exp, "prefect_flow_runs_finished_total", flow="dfp-train", state="failed") == 1
    assert _value(exp, "prefect_flow_runs", flow="dfp-train", state="running") == 0


def test_first_runs_of_a_new_flow_are_counted_one_poll_later() -> None:
    """A flow first seen after startup starts at 0 so increase() sees its first failure."""
    transport = FakePrefect([_run("r1", "f-dfp", "FAILED", 5.0)])
    exp = _exporter(transport)
    exp.poll_prefect(NOW)  # startup: the baseline counts at once
    assert _value(exp, "prefect_flow_runs_finished_total", flow="dfp-train", state="failed") == 1
    FLOWS["f-new"] = "new-train"
    try:
        transport.runs.append(_run("r2", "f-new", "FAILED", 5.0))
        exp.poll_prefect(NOW)
        assert (
            _value(exp, "prefect_flow_runs_finished_total", flow="new-train", state="failed") == 0
        )
        assert _value(exp, "prefect_flow_runs", flow="new-train", state="failed") == 1
        exp.poll_prefect(NOW)
        assert (
            _value(exp, "prefect_flow_runs_finished_total", flow="new-train", state="failed") == 1
        )
        exp.poll_prefect(NOW)
        assert (
            _value(exp, "prefect_flow_runs_finished_total", flow="new-train", state="failed") == 1
        )
    finally:
        del FLOWS["f-new"]


def test_pages_through_many_runs_and_asks_for_the_lookback_window() -> None:
    """More runs than one page are all read; the filter starts at now - lookback."""
    runs = [_run(f"r{i}", "f-abp", "COMPLETED", 1.0) for i in range(450)]
    transport = FakePrefect(runs)
    exp = _exporter(transport)
    exp.poll_prefect(NOW)
    assert _value(exp, "prefect_flow_runs", flow="abp-train", state="completed") == 450
    run_bodies = [b for b in transport.bodies if "flow_runs" in b]
    assert len(run_bodies) == 3
    after = run_bodies[0]["flow_runs"]["expected_start_time"]["after_"]
    assert datetime.fromisoformat(after) == NOW - timedelta(days=1)


def test_prefect_failure_marks_api_down_and_keeps_registry_metrics() -> None:
    """An erroring Prefect API sets api_up 0 but the registry side still updates."""
    mlflow = FakeMlflow({"abp-nvsmi-xgb": {"production": "3"}}, {})
    exp = _exporter(FakePrefect([], status=500), mlflow)
    exp.poll()
    assert _value(exp, "prefect_exporter_api_up", api="prefect") == 0
    assert _value(exp, "prefect_exporter_api_up", api="mlflow") == 1
    assert _value(exp, "registry_production_version", model="abp-nvsmi-xgb", version="3") == 3


def test_unreachable_prefect_names_the_url() -> None:
    """The error names the API URL it could not reach."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = Settings(prefect_api_url="http://prefect.test/api")
    exp = TrainingExporter(settings, http=httpx.Client(transport=httpx.MockTransport(refuse)))
    with pytest.raises(RuntimeError, match=r"http://prefect\.test/api/flows/filter"):
        exp.poll_prefect(NOW)


def test_registry_production_versions_and_metrics() -> None:
    """Only models with a production alias appear; their run's finite metrics are exported."""
    mlflow = FakeMlflow(
        {
            "abp-nvsmi-xgb": {"production": "3", "candidate": "4"},
            "dfp-duo-generic": {"candidate": "1"},
            "dfp-duo-alice": {"production": "12"},
        },
        {
            "run-abp-nvsmi-xgb-3": {"f1": 0.97, "auc": 0.99, "bad": float("nan")},
            "run-dfp-duo-alice-12": {"loss": 0.12},
        },
    )
    exp = _exporter(FakePrefect([]), mlflow)
    exp.poll_registry()
    text = generate_latest(exp.registry).decode()
    assert 'registry_production_version{model="abp-nvsmi-xgb",version="3"} 3.0' in text
    assert "dfp-duo-alice" not in text  # per-user models are counted, not listed
    assert "dfp-duo-generic" not in text  # no production alias
    assert _value(exp, "registry_production_models", family="dfp-duo") == 1
    assert _value(exp, "registry_production_models", family="abp-nvsmi") == 1
    assert _value(exp, "registry_production_metric", model="abp-nvsmi-xgb", metric="f1") == 0.97
    assert _value(exp, "registry_production_metric", model="abp-nvsmi-xgb", metric="bad") is None
    # The alias moves: the old version disappears; a version's run is read once.
    mlflow.models["abp-nvsmi-xgb"] = {"production": "4"}
    mlflow.models["dfp-azure-generic"] = {"production": "2"}
    exp.poll_registry()
    exp.poll_registry()
    assert mlflow.run_reads.count("run-abp-nvsmi-xgb-4") == 1
    assert _value(exp, "registry_production_version", model="dfp-azure-generic", version="2") == 2
    assert _value(exp, "registry_production_version", model="abp-nvsmi-xgb", version="3") is None
    assert _value(exp, "registry_production_version", model="abp-nvsmi-xgb", version="4") == 4


def test_label_precision_per_model_version(tmp_path: Path) -> None:
    """Precision is TP / (TP + FP) over each detection's latest label, per model version."""
    from secml.store import DetectionStore

    store = DetectionStore(f"sqlite:///{tmp_path / 'detections.db'}")
    rows = [
        {"detector": det, "source": src, "record": {"i": i, "d": det}, "score": 0.9,
         "model_version": version}
        for i, (det, src, version) in enumerate(
            [("abp", "nvsmi", "abp-nvsmi-xgb:3")] * 4
            + [("abp", "nvsmi", "abp-nvsmi-xgb:4")] * 2
            + [("dfp", "duo", "dfp-duo-generic:1")]
        )
    ]  # fmt: skip
    ids = store.add_detections(rows)
    for i in ids[:3]:
        store.add_label(i, "true_positive", "ana")
    store.add_label(ids[3], "true_positive", "ana")
    store.add_label(ids[3], "false_positive", "bob", "relabelled: a benign render job")
    store.add_label(ids[4], "false_positive", "ana")
    exp = _exporter(FakePrefect([]), store=store)
    exp.poll_labels()
    v3 = {"detector": "abp", "model_version": "abp-nvsmi-xgb:3"}
    assert _value(exp, "gateway_labels_precision", **v3) == 0.75
    assert _value(exp, "store_labelled_detections", **v3, label="false_positive") == 1
    v4 = {"detector": "abp", "model_version": "abp-nvsmi-xgb:4"}
    assert _value(exp, "gateway_labels_precision", **v4) == 0.0
    assert _value(exp, "store_labelled_detections", **v4, label="true_positive") == 0
    # An unlabelled detector has no precision series at all (not a misleading 0).
    assert (
        _value(exp, "gateway_labels_precision", detector="dfp", model_version="dfp-duo-generic:1")
        is None
    )


def test_labels_are_read_at_most_every_interval() -> None:
    """poll() reads the store on its first call and then only after labels_interval_s."""

    class Counting(NoLabels):
        calls = 0

        def labelled(self, detector: str) -> pd.DataFrame:
            Counting.calls += 1
            return super().labelled(detector)

    exp = _exporter(FakePrefect([]), store=Counting())
    exp.poll()
    exp.poll()
    assert Counting.calls == 2  # one call per detector, on the first poll only
    assert _value(exp, "prefect_exporter_api_up", api="store") == 1


def test_run_seconds_falls_back_to_end_minus_start() -> None:
    """Without total_run_time the duration is end - start; without times it is 0."""
    run = _run("r", "f", "COMPLETED", None)
    run["end_time"] = NOW.isoformat()
    run["total_run_time"] = None
    assert _run_seconds(run) == 300.0
    assert _run_seconds({"state_type": "COMPLETED"}) == 0.0


@pytest.mark.integration
def test_live_prefect_and_mlflow(prefect_server: Settings, mlflow_server: Settings) -> None:
    """Against real servers: a failed and a completed flow run and a production alias show up."""
    import mlflow
    from mlflow import MlflowClient
    from prefect import flow

    tag = uuid.uuid4().hex[:6]

    @flow(name=f"exporter-ok-{tag}", persist_result=False)
    def ok_flow() -> int:
        return 1

    @flow(name=f"exporter-fail-{tag}", persist_result=False)
    def failing_flow() -> None:
        raise RuntimeError("boom")

    ok_flow()
    with pytest.raises(RuntimeError):
        failing_flow()

    client = MlflowClient(mlflow_server.mlflow_tracking_uri)
    name = f"exporter-model-{tag}"
    mlflow.set_tracking_uri(mlflow_server.mlflow_tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_metric("f1", 0.93)
    client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(name, "production", version.version)

    exp = TrainingExporter(prefect_server)
    exp.poll()
    assert _value(exp, "prefect_exporter_api_up", api="prefect") == 1
    assert _value(exp, "prefect_exporter_api_up", api="mlflow") == 1
    ok, fail = f"exporter-ok-{tag}", f"exporter-fail-{tag}"
    assert _value(exp, "prefect_flow_runs", flow=ok, state="completed") == 1
    assert _value(exp, "prefect_flow_runs", flow=fail, state="failed") == 1
    assert _value(exp, "prefect_flow_runs_finished_total", flow=fail, state="failed") == 1
    assert _value(exp, "prefect_flow_run_duration_seconds_count", flow=ok, state="completed") == 1
    v = str(version.version)
    assert _value(exp, "registry_production_version", model=name, version=v) == float(v)
    assert _value(exp, "registry_production_metric", model=name, metric="f1") == 0.93
