"""AppTest of the Labels page: precision per model version from the analysts' labels."""

from __future__ import annotations

from ..conftest import frame_with, page_app, texts


def test_no_labels_yet(seeded_store) -> None:
    at = page_app("labels").run()
    assert not at.exception
    assert any("No labels yet" in i for i in texts(at.info))


def test_precision_per_model_version(seeded_store) -> None:
    df = seeded_store.detections()
    by_score = dict(zip(df["score"], df["detection_id"].astype(int), strict=True))
    seeded_store.add_label(by_score[4.7], "true_positive", user="alice")
    seeded_store.add_label(by_score[2.3], "true_positive", user="alice")
    seeded_store.add_label(by_score[2.3], "false_positive", user="bob")  # latest counts
    seeded_store.add_label(by_score[0.98], "true_positive", user="bob")
    at = page_app("labels").run()
    assert not at.exception
    prec = frame_with(at, "precision").set_index("model_version")
    assert prec.loc["dfp-duo-alice_40example.com:3", "precision"] == 0.5
    assert prec.loc["dfp-duo-alice_40example.com:3", "labelled"] == 2
    assert prec.loc["abp-nvsmi-xgb:2", "precision"] == 1.0
    assert "dfp-azure-generic:1" not in prec.index  # never labelled
    latest = at.dataframe[-1].value
    assert len(latest) == 3
    assert set(latest["labelled_by"]) == {"alice", "bob"}
    assert any("left out of the user's training window" in m for m in texts(at.markdown))
