"""Segment-level alerts: one per GPU mining episode."""

from __future__ import annotations

import csv
import json

import pytest

from secml.abp.alerts import EpisodeTracker
from training import abp_pipeline as pipe


def _feed(tracker: EpisodeTracker, uuid: str | None, flags: list[int], start: int = 0) -> list:
    n = len(flags)
    times = [f"t{start + i}" for i in range(n)]
    return tracker.update(
        [uuid] * n, times, [0.9 if f else 0.1 for f in flags], [bool(f) for f in flags]
    )


def test_pauses_shorter_than_the_gap_stay_in_one_episode() -> None:
    tr = EpisodeTracker(gap=3)
    closed = _feed(tr, "A", [0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 1])
    assert len(closed) == 1
    ep = closed[0]
    assert (ep.start, ep.end, ep.flagged, ep.samples) == ("t1", "t5", 3, 5)
    (last,) = tr.flush()
    assert (last.start, last.flagged) == ("t10", 1)
    assert tr.flush() == []


def test_episodes_are_kept_per_gpu_across_calls() -> None:
    tr = EpisodeTracker(gap=2)
    assert _feed(tr, "A", [1, 1]) == [] and _feed(tr, "B", [1]) == []
    closed = _feed(tr, "A", [0, 0, 1], start=2)
    assert [(e.uuid, e.start, e.end) for e in closed] == [("A", "t0", "t1")]
    assert sorted(e.uuid for e in tr.flush()) == ["A", "B"]
    assert len(_feed(tr, None, [1, 0, 1])) == 2  # no uuid: each flag alone
    with pytest.raises(ValueError, match="gap"):
        EpisodeTracker(gap=0)


def test_pipeline_writes_one_alert_per_mining_episode(fleet, tmp_path) -> None:
    out, alerts = tmp_path / "scored.jsonlines", tmp_path / "alerts.jsonlines"
    summary = pipe.run([str(fleet.data)], str(out), pipe.local_scorer(str(fleet.model_path))[0],
                       progress=False, alerts=str(alerts), alert_gap=5)  # fmt: skip
    eps = [json.loads(x) for x in alerts.read_text().splitlines()]
    assert summary.alerts == len(eps) > 0
    assert summary.flagged == sum(e["flagged"] for e in eps)  # every flag in one episode
    assert len(eps) < summary.flagged / 5  # far fewer alerts than flagged samples
    with fleet.labels.open(newline="") as fh:
        mining_gpus = {r["uuid"] for r in csv.DictReader(fh) if r["mining"] == "1"}
    assert {e["uuid"] for e in eps} >= mining_gpus  # every GPU that mined raised an alert


def test_an_episode_is_one_row_of_the_detections_store(tmp_path) -> None:
    """A duty-cycled run becomes one stored alert (not one per sample) that reads back whole."""
    from secml.store import DetectionStore

    tr = EpisodeTracker(gap=5)
    flags = [True, True, False, False, True, True, False, True]
    times = [f"2026-12-02T10:{i:02d}:00+00:00" for i in range(len(flags))]
    tr.update(["gpu-a"] * len(flags), times, [0.9] * len(flags), flags)
    (ep,) = tr.flush()
    store = DetectionStore(f"sqlite:///{tmp_path / 'det.db'}")
    (det_id,) = store.add_detections([ep.detection("7", threshold=0.42)])
    got = store.detections(detector="abp")
    assert len(got) == 1 and int(got.iloc[0]["detection_id"]) == det_id
    row = got.iloc[0]
    assert row["source"] == "nvsmi-episode" and row["user"] == "gpu-a"
    assert row["record"]["flagged"] == 5 and row["record"]["samples"] == 8
    assert row["details"]["threshold"] == 0.42
    store.close()


def test_the_cli_stores_one_detection_per_episode(fleet, tmp_path, monkeypatch) -> None:
    """``--store-alerts``: the episodes of the alerts file, one detections-store row each."""
    from secml.settings import get_settings
    from secml.store import DetectionStore

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    monkeypatch.setenv("SECML_STORE_URL", url)
    get_settings.cache_clear()
    try:
        out, alerts = tmp_path / "scored.jsonlines", tmp_path / "alerts.jsonlines"
        code = pipe.main(["--input", str(fleet.data), "--output", str(out), "--model",
                          str(fleet.model_path), "--no-progress", "--alerts", str(alerts),
                          "--store-alerts"])  # fmt: skip
        assert code == 0
    finally:
        get_settings.cache_clear()
    eps = [json.loads(x) for x in alerts.read_text().splitlines()]
    store = DetectionStore(url)
    got = store.detections(detector="abp", limit=None)
    assert len(got) == len(eps) > 0
    assert set(got["source"]) == {"nvsmi-episode"}
    key = lambda e: (e["uuid"], e["start"], e["flagged"])  # noqa: E731
    assert sorted(map(key, got["record"])) == sorted(map(key, eps))
    store.close()
