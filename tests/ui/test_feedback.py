"""Labels feed training: label in the app, retrain, and see the labelled events handled.

ABP uses analysts' labels as training data; DFP leaves confirmed anomalies (true positives)
out of the user's training window.
"""

from __future__ import annotations

import csv
import json
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from secml.settings import Settings
from ui import backend, clients

from .conftest import page_app, texts

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _label_in_app(det_id: int, label: str, user: str = "analyst") -> None:
    """Open the detection on the Detections page and store a label, as an analyst does."""
    at = page_app("detections", user=user)
    at.query_params["detection"] = str(det_id)  # the deep link an alert or a colleague sends
    at.run()
    at.radio(key=f"label-{det_id}-l").set_value(label)
    at.text_input(key=f"label-{det_id}-n").input(f"{label} from the feedback test")
    next(b for b in at.button if b.label == "Save label for 1 event(s)").click().run()
    assert not at.exception
    assert any(f"#{det_id}" in s for s in texts(at.success)), texts(at.error)


def _duo_events(user: str, n: int) -> list[dict[str, Any]]:
    """``n`` Duo records of one user, the last from a new country and device."""
    from secml.dfp.generator import duo_record

    rng = random.Random(7)
    start = datetime(2026, 11, 2, 8, tzinfo=UTC)
    out = []
    for i in range(n):
        odd = i == n - 1
        out.append(
            duo_record(
                user=user,
                when=start + timedelta(hours=3 * i),
                browser="Firefox" if odd else "Chrome",
                os="Linux" if odd else "Mac OS X",
                auth_device="unknown phone" if odd else "alice iPhone",
                city="Lagos" if odd else "Austin",
                state="Lagos" if odd else "Texas",
                country="NG" if odd else "US",
                result="success",
                reason="user_approved",
                rng=rng,
            )
        )
    return out


def test_dfp_leaves_confirmed_anomalies_out_of_training(seeded_store) -> None:
    from secml.dfp.schema import process_records
    from secml.dfp.train import exclude_confirmed_anomalies

    records = _duo_events("alice@example.com", 12)
    takeover, odd_but_benign = records[-1], records[3]
    ids = seeded_store.add_detections(
        [
            {
                "detector": "dfp",
                "source": "duo",
                "user": "alice@example.com",
                "event_time": datetime.fromtimestamp(rec["timestamp"], UTC),
                "score": score,
                "model_version": "dfp-duo-alice_40example.com:1",
                "record": rec,
            }
            for rec, score in ((takeover, 5.5), (odd_but_benign, 2.2))
        ]
    )
    _label_in_app(ids[0], "true_positive")
    _label_in_app(ids[1], "false_positive")
    events = process_records(records, "duo")
    window = exclude_confirmed_anomalies(events, "duo", seeded_store)
    from secml.store import event_id

    assert event_id(takeover) not in set(window["event_id"])
    assert event_id(odd_but_benign) in set(window["event_id"])  # a false positive stays
    assert len(window) == len(records) - 1
    # a label for another source does not touch duo's window
    assert len(exclude_confirmed_anomalies(events, "azure", seeded_store)) == len(records)


def _abp_data(tmp: Path) -> tuple[Path, Path, dict[str, Any]]:
    """A small seeded nvsmi data set and one benign record (by its ground truth)."""
    from secml.abp import generator

    data, labels = generator.generate(tmp, gpus=8, hours=1.0, seed=3, interval_s=60.0)
    with labels.open() as fd:
        rows = list(csv.DictReader(fd))
    benign_line = next(int(r["line"]) for r in rows if r["mining"] == "0")
    with data.open() as fd:
        record = json.loads(fd.readlines()[benign_line - 1])
    return data, labels, record


def _wait_final(settings: Settings, run_id: str, timeout_s: float = 480.0) -> str:
    """Poll Prefect until the run reaches a final state; return it."""
    deadline = time.monotonic() + timeout_s
    while True:
        with clients.prefect(str(settings.prefect_api_url)) as client:
            state = client.read_flow_run(run_id).state
        if state and state.type.value in FINAL:
            return state.type.value
        assert time.monotonic() < deadline, f"flow run {run_id} still {state} after {timeout_s}s"
        time.sleep(3)


@pytest.mark.integration
def test_abp_label_retrain_from_the_app_uses_the_labelled_row(
    prefect_worker: Settings, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from secml.store import DetectionStore

    settings = prefect_worker
    data, labels, record = _abp_data(tmp_path / "abp")
    store = DetectionStore(str(settings.store_url))
    det_id = store.add_detections(
        [
            {
                "detector": "abp",
                "source": "nvsmi",
                "event_time": datetime.now(UTC),
                "score": 0.91,
                "model_version": "abp-nvsmi-xgb:1",
                "record": record,
            }
        ]
    )[0]
    # ground truth says benign; the analyst knows better and confirms mining
    _label_in_app(det_id, "true_positive")

    model = f"abp-nvsmi-feedback-{int(time.time())}"
    params = {
        "data": [str(data)],
        "labels": [str(labels)],
        "n_estimators": 20,
        "model_name": model,
        "min_f1": 0.0,
    }
    at = page_app("training").run()
    assert not at.exception, at.exception
    at.selectbox(key="t_deployment").select("abp-train/default").run()
    at.text_area(key="t_params_abp-train/default").input(json.dumps(params))
    at.button(key="t_start").click().run()
    assert not at.exception
    started = [s for s in texts(at.success) if s.startswith("Started ")]
    assert started, texts(at.error)
    run_id = started[0].rsplit("/runs/flow-run/", 1)[1].rstrip(")")
    assert _wait_final(settings, run_id) == "COMPLETED"

    at = page_app("training").run()
    with clients.prefect(str(settings.prefect_api_url)) as client:
        runs = {r.id: r for r in backend.recent_runs(client, settings)}
    assert runs[run_id].state == "Completed"

    ml = MlflowClient(str(settings.mlflow_tracking_uri))
    latest = max(ml.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    tags = ml.get_run(latest.run_id).data.tags
    assert int(tags["analyst_labels"]) >= 1, tags
