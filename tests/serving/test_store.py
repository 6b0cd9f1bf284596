"""Detections store on SQLite and on the machine's real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
import pytest

from secml.store import LABELLED_COLUMNS, DetectionStore, StoreError, event_id


def _row(i: int, **kw) -> dict:
    """One detection row."""
    base = {
        "detector": "dfp",
        "source": "duo",
        "record": {"user": {"name": f"u{i % 3}"}, "n": i},
        "score": float(i),
        "model_version": f"dfp-duo-generic:{1 + i % 2}",
        "user": f"u{i % 3}",
        "event_time": f"2026-11-0{1 + i % 5}T10:00:00Z",
        "details": {"top_features": [{"feature": "reason", "z": 3.2}]},
    }
    return base | kw


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request, tmp_path) -> Iterator[DetectionStore]:
    """A fresh store on SQLite (file) or PostgreSQL (unique table prefix, dropped after)."""
    if request.param == "sqlite":
        s = DetectionStore(f"sqlite:///{tmp_path / 'det.db'}")
    else:
        url = request.getfixturevalue("postgres_url")
        s = DetectionStore(url, table_prefix=f"t{uuid.uuid4().hex[:8]}_")
    yield s
    s.drop_tables()
    s.close()


def test_event_id_is_canonical():
    a = {"b": 1, "a": {"y": [1, 2], "x": "é"}}
    b = {"a": {"x": "é", "y": [1, 2]}, "b": 1}
    assert event_id(a) == event_id(b)
    assert event_id(a) != event_id({**a, "b": 2})
    assert len(event_id(a)) == 64
    # the documented definition: sha256 of sorted-keys compact JSON
    import hashlib
    import json

    canon = json.dumps(a, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert event_id(a) == hashlib.sha256(canon.encode()).hexdigest()


def test_add_and_filter(store: DetectionStore):
    ids = store.add_detections([_row(i) for i in range(10)])
    assert ids == sorted(ids) and len(set(ids)) == 10
    df = store.detections(limit=None)
    assert len(df) == 10
    assert list(df["detection_id"]) == sorted(ids, reverse=True)  # newest first
    assert df.iloc[0]["record"] == {"user": {"name": "u0"}, "n": 9}
    assert df.iloc[0]["event_id"] == event_id({"user": {"name": "u0"}, "n": 9})
    assert df.iloc[0]["details"]["top_features"][0]["feature"] == "reason"
    assert str(df["event_time"].dt.tz) == "UTC"
    assert len(store.detections(user="u1", limit=None)) == 3
    assert len(store.detections(min_score=7, limit=None)) == 3
    assert len(store.detections(since="2026-11-04", limit=None)) == 4
    assert len(store.detections(until=datetime(2026, 11, 2, tzinfo=UTC), limit=None)) == 2
    assert len(store.detections(limit=4)) == 4
    assert store.detections(detector="abp", limit=None).empty
    assert store.count() == 10


def test_labels_are_append_only_latest_wins(store: DetectionStore):
    ids = store.add_detections([_row(i) for i in range(3)])
    store.add_label(ids[0], "true_positive", "ann", "looks bad")
    store.add_label(ids[0], "false_positive", "bob", "travel")
    store.add_label(ids[2], "true_positive", "ann")
    hist = store.labels_history(ids[0])
    assert list(hist["label"]) == ["true_positive", "false_positive"]
    assert list(hist["labelled_by"]) == ["ann", "bob"]
    lab = store.labelled("dfp")
    assert set(LABELLED_COLUMNS) <= set(lab.columns)
    assert sorted(lab["detection_id"]) == sorted([ids[0], ids[2]])
    first = lab.set_index("detection_id").loc[ids[0]]
    assert first["label"] == "false_positive" and first["labelled_by"] == "bob"
    assert first["note"] == "travel"
    assert store.labelled("dfp", source="azure").empty
    assert store.labelled("abp").empty
    assert pd.isna(store.detections(limit=None).set_index("detection_id").loc[ids[1], "label"])


@pytest.mark.parametrize(
    "bad,needle",
    [
        ({"detector": "dfp"}, "missing field(s) source, record, score, model_version"),
        (_row(0, record="text"), "'record' must be a dict"),
        (_row(0, score="high"), "'score' is not a number"),
        (_row(0, score=float("nan")), "'score' must be finite"),
        (_row(0, event_time="yesterday-ish"), "event_time"),
    ],
)
def test_bad_rows_are_rejected_naming_row_and_field(store: DetectionStore, bad, needle):
    with pytest.raises(StoreError, match="row 1") as exc:
        store.add_detections([_row(0), bad])
    assert needle in str(exc.value)
    assert store.count() == 0  # nothing half-written


def test_bad_labels(store: DetectionStore):
    (i,) = store.add_detections([_row(0)])
    with pytest.raises(StoreError, match="true_positive"):
        store.add_label(i, "maybe", "ann")  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="user"):
        store.add_label(i, "true_positive", " ")
    with pytest.raises(KeyError, match=str(i + 100)):
        store.add_label(i + 100, "true_positive", "ann")
    assert store.labels_history(i).empty


def test_ping_and_reopen(store: DetectionStore):
    assert store.ping()
    store.add_detections([_row(1)])
    again = DetectionStore(store.url, table_prefix=store.table_prefix)
    assert again.count() == 1
    again.close()
    dead = DetectionStore("postgresql+psycopg://nobody@127.0.0.1:1/none", create=False)
    assert not dead.ping()


def test_returned_ids_follow_row_order(store: DetectionStore):
    rows = [_row(i, score=float(i), record={"i": i}) for i in range(120)]
    ids = store.add_detections(rows)
    df = store.detections(limit=None).set_index("detection_id")
    assert [df.loc[i, "record"]["i"] for i in ids] == list(range(120))
    assert [df.loc[i, "score"] for i in ids] == [float(i) for i in range(120)]


# ---------------------------------------------------------------- events (duplicates grouped)


def _dup_rows() -> list[dict]:
    """Three records: r0 scored 3 times (rising score), r1 twice, r2 once (ABP)."""
    rows = []
    for n, score in ((0, 2.0), (1, 5.0), (0, 3.0), (0, 9.0), (1, 1.0)):
        rows.append(_row(n, score=score, event_time="2026-11-02T10:00:00Z"))
    rows.append(
        _row(7, detector="abp", source="nvsmi", user="GPU-1", score=0.9,
             event_time="2026-11-03T11:30:00Z")
    )  # fmt: skip
    return rows


def test_events_group_duplicates_and_keep_the_highest_score(store: DetectionStore):
    ids = store.add_detections(_dup_rows())
    page = store.events(sort="score")
    assert page.total == 3
    df = page.rows
    assert list(df["n_detections"]) == [3, 2, 1] or sorted(df["n_detections"]) == [1, 2, 3]
    by_user = df.set_index("event_id")
    r0 = by_user.loc[event_id(_row(0)["record"])]
    assert r0["n_detections"] == 3 and r0["score"] == 9.0
    assert r0["detection_id"] == ids[3]  # the latest detection represents the event
    assert list(df["score"]) == sorted(df["score"], reverse=True)
    asc = store.events(sort="score", descending=False).rows
    assert list(asc["score"]) == sorted(asc["score"])
    assert store.events(detectors=["abp"]).total == 1
    assert store.events(min_score=5).total == 2  # r1's best score is 5
    assert store.events(user_contains="gpu").total == 1
    assert store.events(since="2026-11-03").total == 1


def test_event_label_applies_to_every_duplicate(store: DetectionStore):
    ids = store.add_detections(_dup_rows())
    carried = store.label_event(ids[0], "true_positive", "ana", "seen it")
    assert carried == ids[3], "the event's latest detection carries the label"
    assert store.events(label="unlabelled").total == 2
    labelled = store.events(label="true_positive").rows
    assert len(labelled) == 1 and labelled.iloc[0]["labelled_by"] == "ana"
    dets = store.event_detections(ids[2])
    assert sorted(dets["detection_id"]) == sorted([ids[0], ids[2], ids[3]])
    assert set(dets["label"]) == {"true_positive"}
    # a later label on another duplicate wins for the whole event
    store.add_label(ids[0], "false_positive", "bo")
    assert store.events(label="false_positive").total == 1
    assert store.events(label="true_positive").total == 0
    assert list(store.event_labels(ids[3])["label"]) == ["true_positive", "false_positive"]
    # training still reads one labelled row per label event, never the 3 copies
    assert len(store.labelled("dfp")) == 2
    # a new duplicate of a labelled record arrives: the event stays labelled
    store.add_detections([_row(0, score=1.0, event_time="2026-11-02T10:00:00Z")])
    assert store.events(label="unlabelled").total == 2
    (fp,) = store.events(label="false_positive").rows.itertuples()
    assert fp.n_detections == 4 and fp.event_id == event_id(_row(0)["record"])


def test_events_paging_and_bad_arguments(store: DetectionStore):
    store.add_detections([_row(i) for i in range(23)])
    seen = []
    for n in (1, 2, 3):
        p = store.events(page=n, page_size=10)
        assert p.total == 23 and p.pages == 3
        seen += list(p.rows["detection_id"])
    assert len(seen) == 23 and len(set(seen)) == 23
    assert seen == sorted(seen, reverse=True)
    assert store.events(page=4, page_size=10).rows.empty
    for kw, needle in (
        ({"sort": "record"}, "sort must be one of"),
        ({"page_size": 0}, "page_size must be"),
        ({"page": 0}, "page must be"),
        ({"label": "maybe"}, "label filter must be one of"),
    ):
        with pytest.raises(StoreError, match=needle):
            store.events(**kw)
    with pytest.raises(KeyError, match="no detection with id 999999"):
        store.event_detections(999999)


def test_summary_and_timeline(store: DetectionStore):
    ids = store.add_detections(_dup_rows())
    store.label_event(ids[1], "false_positive", "ana")
    summ = store.summary().set_index("detector")
    assert summ.loc["dfp"].to_dict() == {
        "detections": 5, "events": 2, "unlabelled": 1, "true_positive": 0, "false_positive": 1
    }  # fmt: skip
    assert summ.loc["abp", "events"] == 1 and summ.loc["abp", "unlabelled"] == 1
    tl = store.timeline("hour")
    got = {(t.isoformat(), d): n for t, d, n in tl.itertuples(index=False)}
    assert got == {("2026-11-02T10:00:00+00:00", "dfp"): 5, ("2026-11-03T11:00:00+00:00", "abp"): 1}
    day = store.timeline("day", since="2026-11-03")
    assert list(day["detections"]) == [1] and str(day["time"][0]) == "2026-11-03 00:00:00+00:00"


def test_older_store_file_gains_the_event_index(tmp_path):
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'old.db'}"
    s = DetectionStore(url)
    s.add_detections([_row(1)])
    with s.engine.begin() as conn:
        conn.execute(sa.text("DROP INDEX ix_detections_event_cover"))
    s.close()
    again = DetectionStore(url)
    names = {i["name"] for i in sa.inspect(again.engine).get_indexes("detections")}
    assert "ix_detections_event_cover" in names
    assert again.events().total == 1
    again.close()


def test_records_round_trip_whatever_json_they_hold(store: DetectionStore):
    """NaN and infinities are stored as null (strict JSON, which PostgreSQL requires); an
    integer beyond 64 bits, a non-string key and a value JSON lacks (a datetime, as text)
    survive too."""
    when = datetime(2026, 11, 1, 10, tzinfo=UTC)
    rows = [
        _row(0, record={"power": float("nan"), "nested": [float("inf"), 1.5]}),
        _row(1, record={"serial": 2**70, 7: "seven", "seen": when}),
    ]
    store.add_detections(rows)
    got = store.detections(limit=None).sort_values("score")["record"].tolist()
    assert got[0] == {"power": None, "nested": [None, 1.5]}
    assert got[1] == {"serial": 2**70, "7": "seven", "seen": str(when)}


def test_rows_written_with_nan_before_stay_readable(tmp_path):
    """Rows an older store wrote with the standard library (``NaN`` in the JSON text) read."""
    import sqlite3

    path = tmp_path / "old.db"
    s = DetectionStore(f"sqlite:///{path}")
    (i,) = s.add_detections([_row(0)])
    with sqlite3.connect(path) as con:
        con.execute("UPDATE detections SET details = ? WHERE id = ?", ('{"z": NaN}', i))
    details = s.detections(limit=None)["details"].iloc[0]
    assert details["z"] != details["z"]  # NaN
    s.close()
