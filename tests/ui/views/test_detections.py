"""AppTest of the Detections page: one row per event, server-side paging/sort/filter, URL state,
DFP expected-vs-actual, labels that apply to the event, bulk labels."""

from __future__ import annotations

from secml.store import event_id

from ..conftest import detection_rows, frame_with, page_app, texts


def _caption(at) -> str:
    """The pager's caption ("Page x of y · n events match")."""
    return next(c for c in texts(at.caption) if "events match" in c)


def _qp(at, name: str) -> str | None:
    """One URL query parameter of the AppTest run (a single value)."""
    value = at.query_params.get(name)
    return value[-1] if isinstance(value, list) else value


def _with_duplicates(store) -> list[int]:
    """The seeded rows, the first one scored twice more (as repeated traffic does)."""
    first = detection_rows()[0]
    return store.add_detections([first | {"score": 3.0}, first | {"score": 5.5}])


def test_one_row_per_event_and_filters(seeded_store) -> None:
    dup_ids = _with_duplicates(seeded_store)
    at = page_app("detections").run()
    assert not at.exception
    assert _caption(at) == "Page 1 of 1 · 4 events match"
    table = frame_with(at, "n_detections")
    assert len(table) == 4, "6 detections of 4 records are 4 rows"
    alice = table[table["score"] == 5.5].iloc[0]
    assert alice["n_detections"] == 3 and alice["detection_id"] == dup_ids[-1]
    at.multiselect(key="f_detector").select("dfp").run()
    assert _caption(at) == "Page 1 of 1 · 3 events match"
    assert _qp(at, "detector") == "dfp"
    at.multiselect(key="f_source").select("azure").run()
    assert _caption(at) == "Page 1 of 1 · 1 events match"
    at.number_input(key="f_score").set_value(3.0).run()
    assert _caption(at) == "Page 1 of 1 · 0 events match"
    assert _qp(at, "min_score") == "3"


def test_sort_and_pages_run_in_the_store(ui_settings) -> None:
    from secml.store import DetectionStore

    store = DetectionStore(str(ui_settings.store_url))
    base = detection_rows()[2]
    store.add_detections(
        [base | {"score": float(i), "record": {**base["record"], "n": i}} for i in range(120)]
    )
    at = page_app("detections").run()
    assert _caption(at) == "Page 1 of 3 · 120 events match"
    at.selectbox(key="f_sort").select("score").run()
    assert list(frame_with(at, "n_detections")["score"][:3]) == [119.0, 118.0, 117.0]
    next(b for b in at.button if b.label == "Next ›").click().run()
    assert _caption(at) == "Page 2 of 3 · 120 events match"
    assert list(frame_with(at, "n_detections")["score"][:2]) == [69.0, 68.0]
    assert _qp(at, "page") == "2" and _qp(at, "sort") == "score"
    at.selectbox(key="f_order").select("asc").run()
    assert _caption(at) == "Page 2 of 3 · 120 events match"
    assert list(frame_with(at, "n_detections")["score"][:2]) == [50.0, 51.0]
    at.selectbox(key="f_label").select("unlabelled").run()
    assert _caption(at) == "Page 1 of 3 · 120 events match", "a new filter goes back to page 1"


def test_url_opens_the_same_view_after_a_reload(seeded_store) -> None:
    dfp = seeded_store.detections(detector="dfp")
    det_id = int(dfp[dfp["score"] == 4.7]["detection_id"].iloc[0])
    at = page_app("detections")
    for k, v in {"detector": "dfp", "label": "unlabelled", "sort": "score",
                 "detection": str(det_id)}.items():  # fmt: skip
        at.query_params[k] = v
    at.run()
    assert not at.exception
    assert at.multiselect(key="f_detector").value == ["dfp"]
    assert at.selectbox(key="f_label").value == "unlabelled"
    assert at.selectbox(key="f_sort").value == "score"
    assert _caption(at) == "Page 1 of 1 · 3 events match"
    assert f"Detection #{det_id}" in texts(at.subheader)
    assert _qp(at, "detection") == str(det_id), "the open detection stays in the URL"


def test_bad_url_parameters_are_named_and_ignored(seeded_store) -> None:
    at = page_app("detections")
    at.query_params["min_score"] = "lots"
    at.query_params["detection"] = "abc"
    at.run()
    assert not at.exception
    warnings = texts(at.warning)
    assert any("min_score='lots'" in w for w in warnings), warnings
    assert any("detection='abc'" in w for w in warnings), warnings
    assert _caption(at) == "Page 1 of 1 · 4 events match"


def test_dfp_detail_shows_expected_vs_actual_and_threshold(seeded_store) -> None:
    (det_id,) = seeded_store.add_detections(
        [
            detection_rows()[1]
            | {
                "record": {"n": 99},
                "details": {
                    "threshold": 2.0,
                    "mean_abs_z": 3.4,
                    "score_kind": "mean_abs_z",
                    "top_features": [
                        {"feature": "locationcity", "z": 6.1, "value": "Lagos",
                         "expected": "Lyon"},
                        {"feature": "logcount", "z": -2.5, "value": 41, "expected": 3.2},
                    ],
                },
            }
        ]
    )  # fmt: skip
    at = page_app("detections")
    at.query_params["detection"] = str(det_id)
    at.run()
    assert not at.exception
    assert texts(at.metric)[:3] == ["2.300", "2.000", "3.40"]
    table = frame_with(at, "expected")
    assert list(table["feature"]) == ["locationcity", "logcount"]
    assert list(table["actual"]) == ["Lagos", "41"] and list(table["expected"]) == ["Lyon", "3.2"]
    assert list(table["abs_z"]) == [6.1, 2.5]
    assert len(at.get("vega_lite_chart")) == 1, "the |z| chart is drawn"


def test_label_applies_to_the_event(seeded_store) -> None:
    dup_ids = _with_duplicates(seeded_store)
    at = page_app("detections", user="carol")
    at.query_params["detection"] = str(dup_ids[0])
    at.run()
    assert any("scored **3** time(s)" in m for m in texts(at.markdown))
    assert "Not labelled yet." in texts(at.caption)
    at.radio(key=f"label-{dup_ids[0]}-l").set_value("true_positive")
    at.text_input(key=f"label-{dup_ids[0]}-n").input("new country, new device")
    next(b for b in at.button if b.label == "Save label for 1 event(s)").click().run()
    assert not at.exception
    assert f"Stored True positive for event(s) of detection(s) #{dup_ids[0]}" in texts(at.success)
    assert any("Latest label: **True positive** by carol" in i for i in texts(at.info))
    # one label event, on the event's latest detection; the event counts as labelled
    hist = seeded_store.event_labels(dup_ids[0])
    assert list(hist["detection_id"]) == [dup_ids[-1]] and list(hist["labelled_by"]) == ["carol"]
    alice = event_id(detection_rows()[0]["record"])
    assert list(seeded_store.events(label="true_positive").rows["event_id"]) == [alice]
    at.selectbox(key="f_label").select("unlabelled").run()
    assert _caption(at) == "Page 1 of 1 · 3 events match"


def test_label_needs_a_signed_in_user(seeded_store) -> None:
    at = page_app("detections", user="")
    at.query_params["detection"] = "1"
    at.run()
    next(b for b in at.button if b.label == "Save label for 1 event(s)").click().run()
    assert any("sign in first" in e for e in texts(at.error))
    assert seeded_store.event_labels(1).empty


def test_unknown_detection_is_named(seeded_store) -> None:
    at = page_app("detections")
    at.query_params["detection"] = "9999"
    at.run()
    assert not at.exception
    assert "There is no detection #9999." in texts(at.error)


def test_empty_store_says_how_to_get_detections(ui_settings) -> None:
    at = page_app("detections").run()
    assert any("make demo" in i for i in texts(at.info))


def test_unreachable_store_is_reported(monkeypatch, ui_settings) -> None:
    from secml.settings import get_settings

    monkeypatch.setenv("SECML_STORE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/none")
    get_settings.cache_clear()
    at = page_app("detections").run()
    assert not at.exception
    assert any("is not available" in e for e in texts(at.error))


def test_bulk_label_selected_rows(seeded_store) -> None:
    at = page_app("detections", user="erin").run()
    table = frame_with(at, "n_detections")
    # select the first and third rows of the table, as a click on their checkboxes does
    at.session_state["det_table"] = {"selection": {"rows": [0, 2], "columns": [], "cells": []}}
    at.run()
    assert "**Bulk label 2 selected events**" in texts(at.markdown)
    at.radio(key="label-bulk-l").set_value("false_positive")
    at.text_input(key="label-bulk-n").input("known render farm")
    next(b for b in at.button if b.label == "Save label for 2 event(s)").click().run()
    assert not at.exception
    picked = [int(table.iloc[i]["detection_id"]) for i in (0, 2)]
    for det_id in picked:
        hist = seeded_store.event_labels(det_id)
        assert list(hist["label"]) == ["false_positive"]
        assert list(hist["labelled_by"]) == ["erin"]
        assert list(hist["note"]) == ["known render farm"]
    others = set(table["detection_id"].astype(int)) - set(picked)
    assert all(seeded_store.event_labels(i).empty for i in others)


def test_an_episode_alert_shows_its_span_and_what_its_label_covers(seeded_store) -> None:
    """An ABP episode alert (``abp_pipeline --store-alerts``) is not one nvidia-smi record: the
    page shows its GPU, span and counts instead of a SHAP explanation, and can filter on it."""
    from secml.abp.alerts import Episode

    ep = Episode("GPU-ep-1", "Mon Nov 02 10:00:00 2026", "Mon Nov 02 10:30:00 2026", 61, 58, 0.998)
    (det_id,) = seeded_store.add_detections([ep.detection("abp-nvsmi-xgb:3", threshold=0.97)])
    at = page_app("detections")
    at.query_params["detection"] = str(det_id)
    at.run()
    assert not at.exception
    assert texts(at.metric)[:3] == ["0.998", "58 of 61", "0.970"]
    assert any("GPU-ep-1" in m and "10:30:00" in m for m in texts(at.markdown))
    assert any("labels every sample of this GPU in that span" in c for c in texts(at.caption))
    assert not texts(at.warning), "no explanation is attempted for an episode"
    at.multiselect(key="f_source").select("nvsmi-episode").run()
    assert _caption(at) == "Page 1 of 1 · 1 events match"
