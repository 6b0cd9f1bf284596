"""AppTest of the Detections page: filter, open, label one and in bulk."""

from __future__ import annotations

from ..conftest import page_app, texts


def test_lists_and_filters_detections(seeded_store) -> None:
    at = page_app("detections").run()
    assert not at.exception
    assert "4 detections match, 4 unlabelled." in texts(at.caption)
    at.multiselect(key="f_detector").select("dfp").run()
    assert "3 detections match, 3 unlabelled." in texts(at.caption)
    at.multiselect(key="f_source").select("azure").run()
    assert "1 detections match, 1 unlabelled." in texts(at.caption)
    at.number_input(key="f_score").set_value(3.0).run()
    assert "0 detections match, 0 unlabelled." in texts(at.caption)


def test_open_detection_shows_event_zscores_model_history_and_labels(seeded_store) -> None:
    df = seeded_store.detections()
    det_id = int(df[df["score"] == 4.7]["detection_id"].iloc[0])
    at = page_app("detections", user="carol").run()
    at.selectbox(key="open_detection").select(det_id).run()
    assert not at.exception
    assert texts(at.metric) == ["4.700"]
    facts = texts(at.markdown)
    assert any(
        "**Scored by** `dfp-duo-alice_40example.com:3`" in m and "**User** `alice@example.com`" in m
        for m in facts
    ), facts
    assert at.json, "the raw event is shown"
    assert "Not labelled yet." in texts(at.caption)
    assert "**Recent history of alice@example.com** (1 other detections)" in texts(at.markdown)
    assert len(at.get("vega_lite_chart")) == 1, "the z-score chart is drawn"
    assert "This detector reports no per-feature z-scores." not in texts(at.caption)
    at.radio(key=f"label-{det_id}-l").set_value("true_positive")
    at.text_input(key=f"label-{det_id}-n").input("new country, new device")
    at.button[0].click().run()
    assert not at.exception
    assert f"Stored True positive for detection(s) #{det_id}" in texts(at.success)
    hist = seeded_store.labels_history(det_id)
    assert list(hist["label"]) == ["true_positive"]
    assert list(hist["labelled_by"]) == ["carol"]
    assert list(hist["note"]) == ["new country, new device"]
    # a rerun (widget refresh) keeps the stored label and shows it as the latest
    at.selectbox(key="open_detection").select(det_id).run()
    assert any("Latest label: **True positive** by carol" in i for i in texts(at.info))
    at.toggle(key="f_unlabelled").set_value(True).run()
    assert "3 detections match, 3 unlabelled." in texts(at.caption)


def test_label_needs_a_signed_in_user(seeded_store) -> None:
    at = page_app("detections", user="").run()
    at.selectbox(key="open_detection").select(1).run()
    at.button[0].click().run()
    assert any("sign in first" in e for e in texts(at.error))
    assert seeded_store.labels_history(1).empty


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
    table = at.dataframe[0].value
    # select the first and third rows of the table, as a click on their checkboxes does
    at.session_state["det_table"] = {"selection": {"rows": [0, 2], "columns": [], "cells": []}}
    at.run()
    assert "**Bulk label 2 selected detections**" in texts(at.markdown)
    at.radio(key="label-bulk-l").set_value("false_positive")
    at.text_input(key="label-bulk-n").input("known render farm")
    next(b for b in at.button if b.label == "Save label for 2 detection(s)").click().run()
    assert not at.exception
    picked = [int(table.iloc[i]["detection_id"]) for i in (0, 2)]
    for det_id in picked:
        hist = seeded_store.labels_history(det_id)
        assert list(hist["label"]) == ["false_positive"]
        assert list(hist["labelled_by"]) == ["erin"]
        assert list(hist["note"]) == ["known render farm"]
    others = set(table["detection_id"].astype(int)) - set(picked)
    assert all(seeded_store.labels_history(i).empty for i in others)
