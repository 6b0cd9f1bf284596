"""Gateway behaviour: auth, validation, errors, metrics (fake Triton), then against real Triton."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from secml.abp.features import to_matrix
from secml.settings import get_settings
from secml.store import DetectionStore, event_id
from serving.app import app, get_triton
from serving.detectors import ABP_KEEP, abp_event_ids
from serving.triton import TritonClient, TritonModelError

from .conftest import DFP_OTHER_USERS, DFP_USER, api_headers, duo_records


class FakeTriton(TritonClient):
    """Answers like the ABP Triton model (SCORE, THRESHOLD, VERSION per row) without a server:
    a fault double for the error paths; the real model is tested below."""

    def __init__(self, anomaly_every: int = 2, error: Exception | None = None) -> None:
        super().__init__("127.0.0.1:9", timeout_s=1)
        self.anomaly_every = anomaly_every
        self.error = error
        self.calls: list[tuple[str, int]] = []

    async def infer(self, model: str, inputs: list, outputs: list[str] | None = None) -> dict:
        if self.error is not None:
            raise self.error
        assert inputs[0].name == "FEATURES" and inputs[0].array.dtype == np.float32
        n = inputs[0].shape[0]
        self.calls.append((model, n))
        score = np.array([0.9 if i % self.anomaly_every == 0 else 0.1 for i in range(n)])
        return {
            "SCORE": score.astype(np.float32).reshape(-1, 1),
            "THRESHOLD": np.full((n, 1), 0.5, dtype=np.float32),
            "VERSION": np.full((n, 1), 7, dtype=np.int64),
            "model_version": "2",
        }


@pytest.fixture
def client() -> Iterator[TestClient]:
    """The gateway in-process (lifespan run), Triton replaced per test."""
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()


def use_triton(fake: TritonClient) -> None:
    """Route the gateway's Triton calls to ``fake``."""
    app.dependency_overrides[get_triton] = lambda: fake


@pytest.fixture
def nvsmi(abp_records) -> list[dict[str, Any]]:
    """A few valid nvidia-smi records."""
    return abp_records[0][:6]


def predict(client: TestClient, body: dict, key: str | None = "default") -> Any:
    """POST /predict with the right (or a given) API key."""
    headers = (
        api_headers(get_settings()) if key == "default" else ({"X-API-Key": key} if key else {})
    )
    return client.post("/predict", json=body, headers=headers)


def test_health_docs_and_metrics(client: TestClient):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "/ready" in spec["paths"]
    text = client.get("/metrics").text
    assert "gateway_predictions_total" in text
    assert "gateway_triton_request_duration_seconds" in text


@pytest.mark.parametrize("key", [None, "wrong", ""])
def test_bad_api_key_is_401(client: TestClient, key: str | None, nvsmi):
    use_triton(FakeTriton())
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi}, key=key)
    assert r.status_code == 401
    assert "X-API-Key" in r.json()["detail"]


@pytest.mark.parametrize("pair", [("abp", "duo"), ("dfp", "nvsmi"), ("xgb", "nvsmi")])
def test_unknown_detector_or_source_is_404_listing_known(client: TestClient, pair, nvsmi):
    use_triton(FakeTriton())
    r = predict(client, {"detector": pair[0], "source": pair[1], "records": nvsmi})
    assert r.status_code == 404
    known = r.json()["detail"]["known"]
    assert {"detector": "abp", "source": "nvsmi"} in known
    assert {"detector": "dfp", "source": "azure"} in known


def test_invalid_record_is_422_naming_index_and_field(client: TestClient, nvsmi):
    fake = FakeTriton()
    use_triton(fake)
    bad = [dict(r) for r in nvsmi]
    bad[3]["nvidia_smi_log.gpu.power_readings.power_draw"] = "lots of W"
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": bad})
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", "records", 3, "nvidia_smi_log.gpu.power_readings.power_draw"]
    assert "record 3" in err["msg"]
    assert fake.calls == []  # never reached Triton


def test_invalid_dfp_record_names_index_and_field(client: TestClient):
    use_triton(FakeTriton())
    recs = duo_records(n_per_user=2)
    recs[2] = {k: v for k, v in recs[2].items() if k != "result"}
    recs[4]["user"] = "not an object"
    r = predict(client, {"detector": "dfp", "source": "duo", "records": recs})
    assert r.status_code == 422
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", "records", 2, "result"] in locs
    assert ["body", "records", 4, "user"] in locs


@pytest.mark.parametrize(
    "body,where",
    [
        ({"detector": "abp", "source": "nvsmi"}, "records"),
        ({"detector": "abp", "source": "nvsmi", "records": [1, 2]}, "records"),
        ({"detector": "abp", "records": [{}]}, "source"),
    ],
)
def test_malformed_body_is_422(client: TestClient, body, where):
    use_triton(FakeTriton())
    r = predict(client, body)
    assert r.status_code == 422
    assert any(where in e["loc"] for e in r.json()["detail"])


def test_empty_and_oversized_batches(client: TestClient, nvsmi, monkeypatch):
    use_triton(FakeTriton())
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": []})
    assert r.status_code == 422
    monkeypatch.setenv("SECML_GATEWAY_MAX_BATCH", "4")
    get_settings.cache_clear()
    try:
        r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi})
    finally:
        monkeypatch.delenv("SECML_GATEWAY_MAX_BATCH")
        get_settings.cache_clear()
    assert r.status_code == 413
    assert "4" in r.json()["detail"]


def test_answers_per_record_and_stores_anomalies(client: TestClient, nvsmi):
    fake = FakeTriton(anomaly_every=2)
    use_triton(fake)
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi})
    assert r.status_code == 200, r.text
    body = r.json()
    assert fake.calls == [("abp_nvsmi_xgb", len(nvsmi))]
    assert body["n_records"] == len(nvsmi) and body["n_anomalies"] == 3
    res = body["results"]
    assert [x["index"] for x in res] == list(range(len(nvsmi)))
    assert res[0]["decision"] == "mining" and res[1]["decision"] == "benign"
    assert res[0]["model_version"] == "abp-nvsmi-xgb:7"
    assert res[0]["event_id"] == abp_event_ids(nvsmi[:1])[0]
    assert len({x["event_id"] for x in res}) == len(nvsmi)
    ids = [x["detection_id"] for x in res if x["anomaly"]]
    assert all(isinstance(i, int) for i in ids)
    assert all(x["detection_id"] is None for x in res if not x["anomaly"])
    stored = DetectionStore(get_settings().store_url).detections(detector="abp", limit=None)
    row = stored[stored["detection_id"] == ids[0]].iloc[0]
    # a bounded copy (SECML_GATEWAY_RECORD_MAX_BYTES): the keys the model reads, and a note
    kept = dict(row["record"])
    assert kept.pop("_truncated")["keys"] == len(nvsmi[0])
    assert kept == {k: v for k, v in nvsmi[0].items() if k in ABP_KEEP}
    np.testing.assert_array_equal(to_matrix([kept]), to_matrix([nvsmi[0]]))
    assert row["model_version"] == "abp-nvsmi-xgb:7"
    metrics = client.get("/metrics").text
    assert 'gateway_predictions_total{detector="abp",outcome="anomaly",source="nvsmi"}' in metrics
    assert 'gateway_model_version_info{detector="abp",model="abp-nvsmi-xgb"' in metrics


def test_triton_down_is_503_with_retry_after(client: TestClient, nvsmi):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    use_triton(TritonClient(f"127.0.0.1:{port}", timeout_s=2))
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi})
    assert r.status_code == 503
    assert int(r.headers["Retry-After"]) > 0
    assert "unavailable" in r.json()["detail"]
    assert client.get("/ready").status_code == 503


def test_triton_silent_is_504_within_timeout(client: TestClient, nvsmi):
    """A Triton that accepts but never answers: the request ends at the timeout."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        use_triton(TritonClient(f"127.0.0.1:{srv.getsockname()[1]}", timeout_s=1.0))
        r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi})
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        srv.close()
    assert r.status_code == 504
    assert "Retry-After" in r.headers


def test_model_not_synced_is_404(client: TestClient, nvsmi):
    err = TritonModelError("abp_nvsmi_xgb", 500, "NOT_SYNCED: abp-nvsmi-xgb has no production")
    use_triton(FakeTriton(error=err))
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": nvsmi})
    assert r.status_code == 404
    assert "no production version synced" in r.json()["detail"]["message"]


# ------------------------------------------------------------------ real Triton + MLflow
@pytest.mark.integration
def test_abp_through_real_triton(synced, client: TestClient, abp_records, abp_production):
    import uuid

    from secml.abp.model import predict as abp_predict
    from tests.serving.conftest import renamed

    # GPUs new to the served model's per-GPU history, as in the fresh in-process run below
    records = renamed(abp_records[0][:200], uuid.uuid4().hex[:8])
    r = predict(client, {"detector": "abp", "source": "nvsmi", "records": records})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    mining, scores = abp_predict(abp_production["booster"], records)
    assert [x["anomaly"] for x in res] == [bool(m) for m in mining]
    assert [x["score"] for x in res] == pytest.approx([float(s) for s in scores], abs=1e-6)
    assert {x["model_version"] for x in res} == {f"abp-nvsmi-xgb:{abp_production['version']}"}
    assert any(x["anomaly"] for x in res), "the sample holds mining GPUs"


@pytest.mark.integration
def test_dfp_own_model_and_generic_fallback(synced, client: TestClient, dfp_production):
    recs = duo_records(n_per_user=4, seed=3)
    r = predict(client, {"detector": "dfp", "source": "duo", "records": recs})
    assert r.status_code == 200, r.text
    res = r.json()["results"]
    own, generic = dfp_production["own"], dfp_production["generic"]
    by_user = {}
    for rec, x in zip(recs, res, strict=True):
        by_user.setdefault(rec["user"]["name"], set()).add(x["model_version"])
    assert by_user[DFP_USER] == {own.model_version}
    for u in DFP_OTHER_USERS:
        assert by_user[u] == {generic.model_version}
    x = res[0]
    assert len(x["top_features"]) == 3
    assert x["top_features"][0]["z"] >= x["top_features"][-1]["z"]
    # the score is the calibrated risk of the model that travels with the generic model
    assert x["details"]["score_kind"] == "risk" and 0.0 <= x["score"] <= 1.0
    assert x["details"]["threshold"] >= 0.5
    assert x["anomaly"] == (x["score"] > x["details"]["threshold"])
    assert x["decision"] in ("anomalous", "normal")
    assert {"new_country", "hour_gap", "fails_recent"} <= set(x["details"]["history"])


@pytest.mark.integration
def test_dfp_new_country_raises_score(synced, client: TestClient):
    """Direction: the same login from an unseen place and device scores higher."""
    recs = duo_records(n_per_user=10, seed=11, users=(DFP_USER,))
    odd = json.loads(json.dumps(recs[-1]))
    odd["access_device"]["location"] = {"city": "Lagos", "state": "Lagos", "country": "Nigeria"}
    odd["access_device"]["browser"] = "Opera"
    odd["access_device"]["os"] = "Linux"
    odd["auth_device"]["name"] = "unknown-phone"
    odd["result"] = "fraud"
    store = DetectionStore(get_settings().store_url or "")
    store.delete_user_states("duo", [DFP_USER])
    base = predict(client, {"detector": "dfp", "source": "duo", "records": recs}).json()
    store.delete_user_states("duo", [DFP_USER])  # the same history again, not twice over
    moved = predict(client, {"detector": "dfp", "source": "duo", "records": recs[:-1] + [odd]})
    assert moved.status_code == 200, moved.text
    last = moved.json()["results"][-1]
    assert last["score"] > base["results"][-1]["score"]
    assert last["details"]["history"]["new_country"] == 1.0


@pytest.mark.integration
def test_dfp_one_login_alone_scores_as_in_the_days_batch(synced, client: TestClient):
    """POST /predict of single logins, one after another, gives each the score it gets inside
    the whole day's batch: both start from the same stored history state."""
    from secml.dfp.history import UserState
    from secml.dfp.schema import process_records

    history = duo_records(n_per_user=30, seed=5, users=(DFP_USER,))
    day = duo_records(n_per_user=40, seed=6, users=(DFP_USER,))[30:]  # a later day
    odd = json.loads(json.dumps(day[3]))
    odd["access_device"]["location"] = {"city": "Hanoi", "state": "Hanoi", "country": "Vietnam"}
    day[3] = odd
    states: dict[str, UserState] = {}
    process_records(history, "duo", states)
    store = DetectionStore(get_settings().store_url or "")
    snapshot = {u: s.to_dict() for u, s in states.items()}

    store.save_user_states("duo", snapshot)
    batch = predict(client, {"detector": "dfp", "source": "duo", "records": day})
    assert batch.status_code == 200, batch.text
    after_batch = store.load_user_states("duo", [DFP_USER])[DFP_USER]

    store.save_user_states("duo", snapshot)
    alone = []
    for rec in sorted(day, key=lambda r: r["timestamp"]):
        r = predict(client, {"detector": "dfp", "source": "duo", "records": [rec]})
        assert r.status_code == 200, r.text
        alone.append((event_id(rec), r.json()["results"][0]))
    by_id = {x["event_id"]: x for x in batch.json()["results"]}
    for eid, x in alone:
        b = by_id[eid]
        assert x["score"] == pytest.approx(b["score"], abs=1e-6)
        # the autoencoder runs in float32: one row or many rows round differently
        assert x["details"]["mean_abs_z"] == pytest.approx(b["details"]["mean_abs_z"], rel=1e-5)
        assert x["details"]["history"] == b["details"]["history"]
    assert store.load_user_states("duo", [DFP_USER])[DFP_USER] == after_batch
    assert after_batch["n"] == snapshot[DFP_USER]["n"] + len(day)
    assert any(x["details"]["history"]["new_country"] == 1.0 for _, x in alone)


@pytest.mark.integration
def test_ready_lists_served_models(synced, client: TestClient):
    r = client.get("/ready")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["triton"] and body["store"]
    assert {"abp_nvsmi_xgb", "dfp", "echo"} <= set(body["models"])


@pytest.mark.integration
def test_gateway_recovers_by_itself_when_triton_returns(
    synced, client: TestClient, nvsmi, tmp_path
):
    """503 + Retry-After while a private Triton is down; the same gateway answers once it is up."""
    import shutil

    from secml.settings import Settings
    from secml.stack import Stack, free_ports

    http_port, grpc_port, metrics_port = free_ports(3, 30000, 31999)
    repo = tmp_path / "repo"
    for model in ("echo", "abp_nvsmi_xgb"):
        shutil.copytree(synced.triton_model_repository / model, repo / model)
    s = Settings(
        run_dir=tmp_path / "run",
        triton_model_repository=repo,
        triton_http_port=http_port,
        triton_grpc_port=grpc_port,
        triton_metrics_port=metrics_port,
    )
    use_triton(TritonClient(s.triton_grpc_url or "", timeout_s=10))
    body = {"detector": "abp", "source": "nvsmi", "records": nvsmi}
    down = predict(client, body)
    assert down.status_code == 503 and "Retry-After" in down.headers
    stack = Stack(s)
    try:
        stack.up(["triton"])
        first = predict(client, body)
        assert first.status_code == 200, first.text
        stack.down(["triton"])
        again = predict(client, body)
        assert again.status_code == 503 and "Retry-After" in again.headers
        # same ports, fresh run dir (the stopped server's stub binary may still be busy)
        stack = Stack(s.model_copy(update={"run_dir": tmp_path / "run2"}))
        stack.up(["triton"])
        back = predict(client, body)
        assert back.status_code == 200, back.text
        assert back.json()["n_records"] == len(nvsmi)
    finally:
        stack.down(timeout_s=10)
