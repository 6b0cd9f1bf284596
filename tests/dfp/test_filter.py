"""Filter, post-process and writer: anomalies above the threshold, exactly DESIGN.md's columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from secml.dfp.filter import filter_anomalies
from secml.dfp.postprocess import SCORE_COLUMNS, feature_columns, postprocess
from secml.dfp.schema import FEATURES
from secml.dfp.writer import infer_format, write_detections


def _scored(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """A processed frame with fake scores (mean_abs_z from 0 to 4)."""
    df = frame.copy()
    for col in feature_columns(source):
        df[col] = "x" if col.endswith("_pred") else 0.5
    df["max_abs_z"] = np.linspace(0, 8, len(df))
    df["mean_abs_z"] = np.linspace(0, 4, len(df))
    df["model_version"] = f"dfp-{source}-generic:3"
    return df


def test_filter_strictly_above_default_threshold(small_duo_frame: pd.DataFrame) -> None:
    """Default threshold 2.0 from settings; equal is not above."""
    df = _scored(small_duo_frame, "duo")
    df.loc[df.index[0], "mean_abs_z"] = 2.0
    out = filter_anomalies(df)
    assert (out["mean_abs_z"] > 2.0).all()
    assert len(out) == int((df["mean_abs_z"] > 2.0).sum())
    assert len(filter_anomalies(df, threshold=3.5)) == int((df["mean_abs_z"] > 3.5).sum())


def test_filter_errors(small_duo_frame: pd.DataFrame) -> None:
    """A missing or non-numeric score is named."""
    with pytest.raises(KeyError, match="mean_abs_z"):
        filter_anomalies(small_duo_frame)
    df = _scored(small_duo_frame, "duo")
    df["mean_abs_z"] = df["mean_abs_z"].astype(object)
    df.loc[df.index[4], "mean_abs_z"] = "high"
    with pytest.raises(ValueError, match="row 4"):
        filter_anomalies(df)


@pytest.mark.parametrize("source", ["duo", "azure"])
def test_postprocess_columns(source: str, request: pytest.FixtureRequest) -> None:
    """Input columns (raw, flattened), per-feature columns, then the four summary columns."""
    frame = request.getfixturevalue(f"small_{source}_frame")
    out = postprocess(_scored(frame, source), source)
    per_feature = [f"{ft}{s}" for ft in FEATURES[source].all for s in ("_loss", "_z_loss", "_pred")]
    raw_cols = list(pd.json_normalize(list(frame["_raw"])).columns)
    assert list(out.columns) == raw_cols + per_feature + list(SCORE_COLUMNS)
    first = frame["_raw"].iloc[0]
    if source == "duo":
        assert out["result"].iloc[0] == first["result"]  # the raw string, not the feature
        assert out["timestamp"].iloc[0] == first["timestamp"]
        assert out["user.name"].iloc[0] == first["user"]["name"]
    else:
        assert (
            out["properties.userPrincipalName"].iloc[0] == first["properties"]["userPrincipalName"]
        )
    assert out["event_time"].str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$").all()
    assert (pd.to_datetime(out["event_time"]) == frame["timestamp"].dt.floor("ms")).all()


def test_postprocess_missing_columns(small_duo_frame: pd.DataFrame) -> None:
    """Unscored frames are refused naming the missing columns."""
    with pytest.raises(KeyError, match="max_abs_z"):
        postprocess(small_duo_frame, "duo")


def test_writer_csv_and_jsonl(tmp_path: Path, small_azure_frame: pd.DataFrame) -> None:
    """CSV and JSON lines hold the same rows and columns; nested cells are JSON."""
    out = postprocess(filter_anomalies(_scored(small_azure_frame, "azure")), "azure")
    csv_path = write_detections(out, str(tmp_path / "o" / "det.csv"))
    jl_path = write_detections(out, str(tmp_path / "det.jsonl"))
    back = pd.read_csv(csv_path)
    assert list(back.columns) == list(out.columns) and len(back) == len(out)
    rows = [json.loads(line) for line in Path(jl_path).read_text().splitlines()]
    assert len(rows) == len(out) and list(rows[0]) == list(out.columns)
    assert rows[0]["mean_abs_z"] == pytest.approx(out["mean_abs_z"].iloc[0])
    assert infer_format("x.ndjson") == "jsonl"
    with pytest.raises(ValueError, match="format"):
        infer_format("x.parquet")


def test_writer_encodes_nested_cells_as_json(tmp_path: Path, small_duo_frame: pd.DataFrame) -> None:
    """Lists in the raw record (Duo ``user.groups``) are JSON in CSV, lists in JSON lines."""
    out = postprocess(_scored(small_duo_frame, "duo"), "duo")
    back = pd.read_csv(write_detections(out, str(tmp_path / "d.csv")))
    assert json.loads(back["user.groups"].iloc[0]) == out["user.groups"].iloc[0]
    line = Path(write_detections(out, str(tmp_path / "d.jsonl"))).read_text().splitlines()[0]
    assert json.loads(line)["user.groups"] == out["user.groups"].iloc[0]
