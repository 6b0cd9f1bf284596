"""Analyst labels of GPU episode alerts feed the next ``abp-train``: every sample of a labelled
episode is a training row, unlabelled fleet logs included (before, such a label reached training
as a record without features and stopped the featurise step)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from secml.abp import model as m
from training import abp_flow
from training import abp_pipeline as pipe

STAMP = "%a %b %d %H:%M:%S %Y"


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime(STAMP)


def _episode(uuid: str, start: float, end: float) -> dict:
    return {"uuid": uuid, "start": _stamp(start), "end": _stamp(end), "samples": 1,
            "flagged": 1, "max_score": 0.99}  # fmt: skip


def test_labelled_episode_alerts_of_unlabelled_logs_become_training_rows(fleet, tmp_path) -> None:
    """Score a fleet's logs (no labels file beside them) into episode alerts in a real store;
    an analyst labels two of them; featurise turns each span into rows with that label."""
    from secml.store import DetectionStore

    site = tmp_path / "site"
    site.mkdir()
    logs = site / "nvsmi.jsonlines"
    shutil.copy(fleet.data, logs)  # a fleet's own logs: nothing labelled them
    url = f"sqlite:///{tmp_path / 'det.db'}"
    store = DetectionStore(url)
    scorer = pipe.local_scorer(str(fleet.model_path))[0]
    sink = lambda eps: store.add_detections([e.detection("t:1", 0.5) for e in eps])  # noqa: E731
    summary = pipe.run([str(logs)], str(tmp_path / "scored.jsonlines"), scorer,
                       progress=False, alert_sink=sink, alert_gap=5)  # fmt: skip
    assert summary.alerts >= 2
    eps = store.detections(detector="abp", limit=None)
    eps = eps[eps["record"].map(lambda r: r["samples"]) >= 3].reset_index(drop=True)
    assert len(eps) >= 2, "need two multi-sample episodes"
    tp, fp = eps.iloc[0], eps.iloc[1]
    store.add_label(int(tp["detection_id"]), "true_positive", "ana")
    store.add_label(int(fp["detection_id"]), "false_positive", "ana", "a render job")
    store.close()

    analyst = abp_flow.analyst_labels.fn(url)
    assert (len(analyst.samples), len(analyst.episodes), analyst.bad) == (0, 2, [])
    labels = abp_flow._default_labels([str(logs)])
    assert labels == []  # no labels.csv beside the logs: not an error
    ds, counts = abp_flow.featurise.fn([str(logs)], labels, analyst, "k")

    # exactly the samples of each labelled span, with the analyst's label
    want = {}
    for row, y in ((tp, 1), (fp, 0)):
        rec = row["record"]
        lo, hi = (m.parse_time(rec[k]).timestamp() for k in ("start", "end"))
        for r in fleet.records:
            t = m.parse_time(r[m.TIMESTAMP_KEY]).timestamp()
            if r[m.UUID_KEY] == rec["uuid"] and lo <= t <= hi:
                want[(rec["uuid"], t)] = y
    assert len(want) >= 6
    got = {(g, t): int(y) for g, t, y in zip(ds.gpu, ds.time, ds.y, strict=True)}
    assert got == want
    assert counts["episode_labelled"] == len(ds) == len(want)
    assert counts["unlabelled"] == len(fleet.records) - len(want)
    assert set(ds.profile) == {"analyst"}


def test_episode_labels_rank_between_sample_labels_and_labels_files(fleet) -> None:
    """A sample's own analyst label wins over its episode's; an episode's over labels.csv."""
    labels = m.read_labels(str(fleet.labels))
    gpu = fleet.records[0][m.UUID_KEY]
    recs = [r for r in fleet.records if r[m.UUID_KEY] == gpu][:12]
    times = [m.parse_time(r[m.TIMESTAMP_KEY]).timestamp() for r in recs]
    truth = [labels[m.record_key(r)][0] for r in recs]
    # the analyst says samples 2..9 are the opposite of the labels file's first label there
    flip = 1 - truth[2]
    ep = m.EpisodeLabel(gpu, times[2], times[9], flip)
    ds, counts = m.build_dataset(recs, labels, [(recs[5], 1 - flip)], episodes=[ep])
    order = np.argsort(ds.time)
    y = ds.y[order].tolist()
    assert y[:2] == truth[:2] and y[10:] == truth[10:]  # outside the span: the file's labels
    assert y[2:5] == [flip] * 3 and y[6:10] == [flip] * 4
    assert y[5] == 1 - flip  # the sample's own label
    assert counts["episode_labelled"] == 7 and counts["analyst_overrides"] == 1
    # the later of two overlapping episode labels wins (a relabelled alert)
    later = m.EpisodeLabel(gpu, times[0], times[11], 1 - flip)
    ds2, _ = m.build_dataset(recs, labels, episodes=[ep, later])
    assert set(ds2.y.tolist()) == {1 - flip}


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ("not a record", "must be an object"),
        ({"start": "Mon Nov 02 10:00:00 2026", "end": "Mon Nov 02 10:05:00 2026"}, "no GPU uuid"),
        ({"uuid": "GPU-1", "start": "yesterday", "end": "Mon Nov 02 10:05:00 2026"}, "bad start"),
        ({"uuid": "GPU-1", "start": "Mon Nov 02 10:05:00 2026", "end": "Mon Nov 02 10:00:00 2026"},
         "before start"),
    ],
)  # fmt: skip
def test_a_malformed_episode_record_is_named(record, match) -> None:
    with pytest.raises(m.DataError, match=match):
        m.EpisodeLabel.of(record, 1)


def test_a_bad_episode_label_is_left_out_and_the_others_kept() -> None:
    """Labelled detections of both kinds: sample records stay samples, episodes become spans,
    a broken episode record is reported by detection id and skipped."""
    sample = {"nvidia_smi_log.gpu.uuid": "GPU-s", "nvidia_smi_log.timestamp": "x"}
    df = pd.DataFrame(
        {
            "detection_id": [1, 2, 3, 4],
            "source": ["nvsmi", "nvsmi-episode", "nvsmi-episode", "nvsmi-episode"],
            "record": [sample, _episode("GPU-a", 0, 600), {"uuid": "GPU-b"}, "{not json"],
            "label": ["true_positive", "false_positive", "true_positive", "true_positive"],
        }
    )
    got = abp_flow.split_labels(df)
    assert got.samples == [(sample, 1)]
    assert got.episodes == [m.EpisodeLabel("GPU-a", 0.0, 600.0, 0)]
    assert len(got) == 2 and len(got.bad) == 2
    assert got.bad[0].startswith("detection 3: episode of GPU-b: bad start/end")
    assert got.bad[1].startswith("detection 4: ")
