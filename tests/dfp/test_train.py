"""DFP training: promotion gate, labelled-anomaly exclusion, registration in a real MLflow."""

from __future__ import annotations

import math
import uuid

import pandas as pd
import pytest

from secml.dfp.train import (
    PRODUCTION_ALIAS,
    exclude_confirmed_anomalies,
    feature_config,
    gate_passes,
    train_user,
)
from secml.naming import model_name_to_user, user_to_model_name
from secml.settings import Settings
from secml.store import DetectionStore

TINY = {"encoder_layers": [16], "decoder_layers": [16], "max_epochs": 3, "device": "cpu"}


def test_gate_tolerance() -> None:
    """Promote when no champion, when better, or when worse within the tolerance only."""
    assert gate_passes(1.0, None, 0.05)
    assert gate_passes(0.9, 1.0, 0.0)
    assert gate_passes(1.04, 1.0, 0.05)
    assert not gate_passes(1.06, 1.0, 0.05)
    assert not gate_passes(math.nan, 1.0, 0.05)
    assert gate_passes(2.0, math.nan, 0.05)


def test_feature_config_per_source() -> None:
    """Feature kinds come from the schema; an unknown source is named."""
    duo = feature_config("duo")
    assert duo.binary[0] == "result" and "locincrement" in duo.numeric
    assert "new_country" in duo.binary and "hour_gap" in duo.numeric
    assert "appDisplayName" in feature_config("azure").categorical
    with pytest.raises(ValueError, match="'okta'"):
        feature_config("okta")


def test_confirmed_anomalies_left_out(small_duo_frame: pd.DataFrame, tmp_path) -> None:
    """Rows whose latest label is true_positive are dropped; false positives stay in."""
    store = DetectionStore(f"sqlite:///{tmp_path / 'det.db'}")
    rows = small_duo_frame.head(4)
    ids = store.add_detections(
        [
            {
                "detector": "dfp",
                "source": "duo",
                "event_id": r["event_id"],
                "record": r["_raw"],
                "score": 5.0,
                "model_version": "dfp-duo-generic:1",
                "user": r["username"],
            }
            for r in rows.to_dict("records")
        ]
    )
    store.add_label(ids[0], "true_positive", "ana")
    store.add_label(ids[1], "false_positive", "ana")
    store.add_label(ids[2], "true_positive", "ana")
    store.add_label(ids[2], "false_positive", "bo")  # relabelled: the latest counts
    kept = exclude_confirmed_anomalies(small_duo_frame, "duo", store)
    assert len(kept) == len(small_duo_frame) - 1
    assert rows.event_id.iloc[0] not in set(kept.event_id)
    assert set(rows.event_id.iloc[1:]) <= set(kept.event_id)
    assert len(exclude_confirmed_anomalies(small_duo_frame, "azure", store)) == len(small_duo_frame)


@pytest.mark.integration
def test_train_registers_tags_and_gates(mlflow_server: Settings, small_duo_frame) -> None:
    """A version is registered under the user's model name with its window and row count;
    production moves only when the gate passes."""
    from mlflow import MlflowClient

    user = f"gate.{uuid.uuid4().hex[:6]}@example.com"
    df = small_duo_frame.assign(username=user)
    good = {**TINY, "max_epochs": 20, "batch_size": 16, "lr": 3e-3}
    first = train_user(df, "duo", user, good, mlflow_server)
    assert first.model_name == user_to_model_name("duo", user)
    assert model_name_to_user(first.model_name) == ("duo", user)
    assert first.promoted and first.champion_version is None
    client = MlflowClient(mlflow_server.mlflow_tracking_uri)
    mv = client.get_model_version(first.model_name, first.version)
    assert mv.tags["row_count"] == str(len(df))
    assert mv.tags["data_window_start"] == df.timestamp.min().isoformat()
    assert mv.tags["data_window_end"] == df.timestamp.max().isoformat()
    assert float(mv.tags["val_loss"]) == pytest.approx(first.val_loss, rel=1e-4)
    assert client.get_run(mv.run_id).data.metrics["val_loss"] == pytest.approx(first.val_loss)
    prod = client.get_model_version_by_alias(first.model_name, PRODUCTION_ALIAS)
    assert prod.version == first.version

    # an untrained model (lr 0) is worse: registered but not promoted
    worse = train_user(df, "duo", user, {**TINY, "lr": 0.0, "max_epochs": 1}, mlflow_server)
    assert worse.val_loss > first.val_loss * 1.05
    assert not worse.promoted and worse.champion_version == first.version
    prod = client.get_model_version_by_alias(first.model_name, PRODUCTION_ALIAS)
    assert prod.version == first.version
    assert client.get_model_version(first.model_name, worse.version).tags["gate"] == "rejected"

    # with a generous tolerance the same kind of model passes
    lax = mlflow_server.model_copy(update={"dfp_promotion_tolerance": 100.0})
    ok = train_user(df, "duo", user, {**TINY, "lr": 0.0, "max_epochs": 1}, lax)
    assert ok.promoted
    prod = client.get_model_version_by_alias(first.model_name, PRODUCTION_ALIAS)
    assert prod.version == ok.version


def test_train_refuses_empty_frame(small_duo_frame: pd.DataFrame) -> None:
    """No rows, no model: the error names the user and source."""
    with pytest.raises(ValueError, match=r"'nobody'.*'duo'"):
        train_user(small_duo_frame.iloc[:0], "duo", "nobody", TINY, Settings())
