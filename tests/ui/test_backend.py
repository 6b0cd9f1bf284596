"""Tests of ui.backend: filters, z-scores, labels, precision, the registry gate, Prometheus."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from secml.settings import Settings
from ui import backend

from .conftest import detection_rows, make_model


def test_filter_detections_by_every_field(seeded_store) -> None:
    df = seeded_store.detections()
    assert len(backend.filter_detections(df, detectors=["abp"])) == 1
    assert len(backend.filter_detections(df, sources=["duo"])) == 2
    assert set(backend.filter_detections(df, users=["bob@example.com"])["source"]) == {"azure"}
    high = backend.filter_detections(df, min_score=2.2)
    assert sorted(high["score"]) == [2.3, 4.7]
    day = backend.filter_detections(
        df, start=datetime(2026, 11, 21, tzinfo=UTC), end=datetime(2026, 11, 21, 23, tzinfo=UTC)
    )
    assert sorted(day["score"]) == [0.98, 2.3]
    undated = df.iloc[:1].assign(event_time=pd.NaT)
    assert len(backend.filter_detections(undated, start=datetime(2030, 1, 1, tzinfo=UTC))) == 1
    seeded_store.add_label(int(df["detection_id"].iloc[0]), "true_positive", user="x")
    unl = backend.filter_detections(seeded_store.detections(), unlabelled_only=True)
    assert len(unl) == 3


def test_z_scores_from_details_and_columns() -> None:
    row = {"details": {"top_features": [{"feature": "browser", "z": -3.5}, {"feature": "os"}]}}
    assert backend.z_scores(row) == {"browser": 3.5}
    assert backend.z_scores({"browser_z_loss": 2.0, "os_z_loss": "x", "score": 1}) == {
        "browser": 2.0
    }
    assert backend.z_scores({"details": json.dumps({"z_scores": {"a": 1.5}})}) == {"a": 1.5}
    assert backend.z_scores({"details": None, "record": {}}) == {}
    # the shape the DFP flow stores: details.top = [{"feature", "z"}]
    dfp = {"details": {"max_abs_z": 7.0, "top": [{"feature": "locincrement", "z": 7.0}]}}
    assert backend.z_scores(dfp) == {"locincrement": 7.0}


def test_label_events_appends_events_and_latest_counts(seeded_store) -> None:
    ids = list(seeded_store.detections()["detection_id"].astype(int))
    done = backend.label_events(seeded_store, ids[:2], "true_positive", user="alice", note="bulk")
    assert done == ids[:2]
    backend.label_events(seeded_store, ids[:1], "false_positive", user="bob")
    df = seeded_store.detections().set_index("detection_id")
    assert df.loc[ids[0], "label"] == "false_positive"
    assert df.loc[ids[0], "labelled_by"] == "bob"
    assert df.loc[ids[1], "label"] == "true_positive"
    assert len(seeded_store.labels_history(ids[0])) == 2


@pytest.mark.parametrize(
    ("label", "user", "match"),
    [("maybe", "alice", "label must be one of"), ("true_positive", "", "sign in")],
)
def test_label_events_refuses_bad_input(seeded_store, label, user, match) -> None:
    with pytest.raises(backend.BackendError, match=match):
        backend.label_events(seeded_store, [1], label, user=user)
    assert seeded_store.labels_history(1).empty


def test_precision_by_version() -> None:
    labelled = pd.DataFrame(
        {
            "detection_id": [1, 2, 3, 4, 5, 5],
            "detector": ["dfp"] * 4 + ["abp"] * 2,
            "model_version": ["m:1", "m:1", "m:1", "m:2", "a:1", "a:1"],
            "label": [
                "true_positive",
                "false_positive",
                "false_positive",
                "true_positive",
                "false_positive",
                "true_positive",
            ],
        }
    )
    out = backend.precision_by_version(labelled).set_index("model_version")
    assert out.loc["m:1", "precision"] == pytest.approx(1 / 3)
    assert out.loc["m:1", "labelled"] == 3
    assert out.loc["m:2", "precision"] == 1.0
    # detection 5 was relabelled: the latest event counts, once
    assert out.loc["a:1", "labelled"] == 1 and out.loc["a:1", "precision"] == 1.0
    assert backend.precision_by_version(pd.DataFrame()).empty


def test_precision_from_real_store(seeded_store) -> None:
    df = seeded_store.detections()
    dfp = df[df["detector"] == "dfp"]
    for det_id, user in zip(dfp["detection_id"], dfp["user"], strict=True):
        label = "true_positive" if user == "alice@example.com" else "false_positive"
        seeded_store.add_label(int(det_id), label, user="analyst")
    prec = backend.precision_by_version(seeded_store.labelled("dfp")).set_index("model_version")
    assert prec.loc["dfp-duo-alice_40example.com:3", "precision"] == 1.0
    assert prec.loc["dfp-azure-generic:1", "precision"] == 0.0


@pytest.fixture(scope="module")
def mlflow_client(registry_uri: str) -> MlflowClient:
    """An MLflow client on the session's SQLite registry."""
    return MlflowClient(tracking_uri=registry_uri, registry_uri=registry_uri)


def _recall(r: float, f1: float = 0.9) -> dict[str, float]:
    """ABP metrics as abp-train logs them: recall at the target FPR decides, F1 is recorded."""
    return {"target_fpr_recall": r, "f1": f1}


def test_abp_gate_promotes_only_better_models(mlflow_client) -> None:
    settings = Settings(abp_min_recall=0.9, abp_target_fpr=0.001)
    name = f"abp-nvsmi-{uuid.uuid4().hex[:6]}"
    # v3 has the best F1 but too little recall at the target FPR: the gate must refuse it
    versions = [_recall(0.95), _recall(0.97, 0.5), _recall(0.80, 0.99), _recall(0.93)]
    make_model(mlflow_client, name, versions)
    mlflow_client.set_registered_model_alias(name, "production", "1")
    event = backend.promote(mlflow_client, settings, name, 2, "alice")
    assert event["kind"] == "promote" and event["gate_passed"] and event["from_version"] == 1
    assert "recall at FPR <= 0.001 0.9700" in event["gate"]
    assert backend.production_version(mlflow_client, name) == 2
    with pytest.raises(backend.BackendError, match="below the minimum 0.9000"):
        backend.promote(mlflow_client, settings, name, 3, "alice")
    with pytest.raises(backend.BackendError, match="worse than production v2"):
        backend.promote(mlflow_client, settings, name, 4, "alice")
    assert backend.production_version(mlflow_client, name) == 2
    with pytest.raises(backend.BackendError, match="needs a reason"):
        backend.promote(mlflow_client, settings, name, 1, "alice", force=True)
    event = backend.promote(
        mlflow_client, settings, name, 1, "bob", force=True, reason="v2 misses new miners"
    )
    assert event["kind"] == "rollback" and event["forced"] and not event["gate_passed"]
    assert backend.production_version(mlflow_client, name) == 1
    hist = backend.promotion_history(mlflow_client, name)
    assert list(hist["to_version"]) == [1, 2]
    assert list(hist["by"]) == ["bob", "alice"]
    assert hist["reason"].iloc[0] == "v2 misses new miners"
    tags = mlflow_client.get_model_version(name, "1").tags
    assert tags["promoted_by"] == "bob" and tags["promotion_forced"] == "true"
    versions = backend.model_versions(mlflow_client, name)
    assert list(versions["version"]) == [4, 3, 2, 1]
    assert versions.set_index("version").loc[1, "aliases"] == "production"
    assert versions.set_index("version").loc[3, "metric.target_fpr_recall"] == pytest.approx(0.8)


def test_dfp_gate_uses_validation_loss_with_tolerance(mlflow_client) -> None:
    settings = Settings()
    name = f"dfp-duo-{uuid.uuid4().hex[:6]}"
    make_model(mlflow_client, name, [{"val_loss": 1.0}, {"val_loss": 1.04}, {"val_loss": 1.2}])
    mlflow_client.set_registered_model_alias(name, "production", "1")
    assert backend.gate_check(mlflow_client, settings, name, 2)[0]
    ok, why = backend.gate_check(mlflow_client, settings, name, 3)
    assert not ok and "worse than production v1" in why
    ok, why = backend.gate_check(mlflow_client, settings, name, 1)
    assert not ok and "already holds" in why


def test_gate_without_metric_refuses(mlflow_client) -> None:
    name = f"abp-nvsmi-{uuid.uuid4().hex[:6]}"
    make_model(mlflow_client, name, [{"accuracy": 0.99}])
    ok, why = backend.gate_check(mlflow_client, Settings(), name, 1)
    assert not ok and "no recall at the target FPR" in why
    with pytest.raises(backend.BackendError, match="sign in"):
        backend.promote(mlflow_client, Settings(), name, 1, "")


def test_ui_gate_is_the_training_gate_rule(mlflow_client) -> None:
    from secml.abp.gate import decide

    settings = Settings(abp_min_recall=0.6, abp_target_fpr=0.002)
    name = f"abp-nvsmi-{uuid.uuid4().hex[:6]}"
    make_model(mlflow_client, name, [_recall(0.7), _recall(0.65), _recall(0.75)])
    mlflow_client.set_registered_model_alias(name, "production", "1")
    for v, recall in ((2, 0.65), (3, 0.75)):
        expected = decide(recall, 0.6, 0.002, 0.9, "1", 0.7, same_data=False)
        assert backend.gate_check(mlflow_client, settings, name, v) == expected
    assert not backend.gate_check(mlflow_client, settings, name, 2)[0]
    assert backend.gate_check(mlflow_client, settings, name, 3)[0]


def test_history_includes_the_training_gates_automatic_promotions(mlflow_client) -> None:
    name = f"dfp-duo-{uuid.uuid4().hex[:6]}"
    make_model(mlflow_client, name, [{"val_loss": 1.0}, {"val_loss": 0.9}, {"val_loss": 2.0}])
    # what secml.dfp.train.promote_if_not_worse writes when it moves the alias by itself
    mlflow_client.set_model_version_tag(name, "1", "gate", "promoted")
    mlflow_client.set_model_version_tag(name, "2", "gate", "promoted")
    mlflow_client.set_model_version_tag(name, "2", "gate_champion", f"{name}:1")
    mlflow_client.set_model_version_tag(name, "3", "gate", "rejected")
    mlflow_client.set_registered_model_alias(name, "production", "2")
    backend.promote(mlflow_client, Settings(), name, 1, "erin", force=True, reason="drift")
    hist = backend.promotion_history(mlflow_client, name)
    assert list(hist["to_version"]) == [1, 2, 1]
    assert list(hist["kind"]) == ["rollback", "automatic", "automatic"]
    assert hist["by"].iloc[1] == "training gate (automatic)"
    assert hist["from_version"].iloc[1] == 1
    assert 3 not in set(hist["to_version"]), "a rejected version never held production"


def test_registered_models_lists_aliases(mlflow_client) -> None:
    name = f"dfp-azure-{uuid.uuid4().hex[:6]}"
    make_model(mlflow_client, name, [{"val_loss": 1.0}, {"val_loss": 0.9}])
    mlflow_client.set_registered_model_alias(name, "production", "2")
    row = backend.registered_models(mlflow_client).set_index("name").loc[name]
    assert row["production"] == 2 and row["latest_version"] == 2


def test_control_examples_validate() -> None:
    examples = backend.control_examples()
    assert examples, "control_messages/ holds examples"
    for name, text in examples.items():
        assert backend.parse_message_text(text)["inputs"], name


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"inputs": [', "not JSON: .* line 1"),
        ('{"inputs": [{"tasks": [{"type": "explode"}]}]}', "invalid control message"),
    ],
)
def test_bad_control_messages_are_named(text: str, match: str) -> None:
    with pytest.raises(backend.BackendError, match=match):
        backend.parse_message_text(text)


def test_prometheus_range_parses_series_and_errors() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["query"] == "bad(":
            return httpx.Response(400, json={"status": "error", "error": "parse error"})
        body = {
            "status": "success",
            "data": {
                "resultType": "matrix",
                "result": [
                    {"metric": {"job": "gateway"}, "values": [[1.7e9, "1"], [1.7e9 + 30, "2"]]},
                    {"metric": {"job": "triton"}, "values": [[1.7e9, "5"]]},
                ],
            },
        }
        return httpx.Response(200, json=body)

    http = httpx.Client(transport=httpx.MockTransport(handler))
    df = backend.prometheus_range(http, "http://prom", "up", 60, 30)
    assert sorted(df.columns) == ["job=gateway", "job=triton"]
    assert df["job=gateway"].sum() == 3.0
    with pytest.raises(backend.BackendError, match="parse error"):
        backend.prometheus_range(http, "http://prom", "bad(", 60, 30)


def test_detection_rows_are_valid_for_the_store(seeded_store) -> None:
    assert seeded_store.count() == len(detection_rows())


def test_broker_reachable() -> None:
    import socket

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert backend.broker_reachable(f"127.0.0.1:1,127.0.0.1:{port}")
    assert not backend.broker_reachable(f"127.0.0.1:{port}")
    assert not backend.broker_reachable("no-port-here")
