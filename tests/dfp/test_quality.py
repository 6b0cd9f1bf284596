"""DFP quality: the evaluation command, analysts' labels in the risk model, the generic model."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from secml.dfp import quality
from secml.dfp.model import AutoEncoder
from secml.dfp.scoring import RISK_INPUTS, RiskModel, labelled_rows, risk_details
from training import dfp_eval

TINY = {"encoder_layers": [16], "decoder_layers": [16], "max_epochs": 2}


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    """Risk rows from a small training-generator data set."""
    return quality.reference_rows("duo", users=16, days=12)


def test_reference_rows_have_attacks_and_hard_negatives(reference: pd.DataFrame) -> None:
    """The reference set labels attacks and keeps benign drift (new countries, devices)."""
    assert set(RISK_INPUTS) <= set(reference.columns)
    y = reference["y"]
    assert 0 < y.mean() < 0.5
    benign = reference[y == 0]
    assert benign["new_country"].sum() > 0 and benign["new_device"].sum() > 0
    assert reference.loc[y == 1, "fails_recent"].max() >= 5  # push bombing is in there


def test_analyst_labels_move_the_risk(reference: pd.DataFrame) -> None:
    """Confirmed false positives of one pattern lower that pattern's risk; the labels come
    back from stored detection details."""
    base = quality.train_risk(reference)
    pattern = reference[reference["y"] == 1].head(1).copy()
    row = {**{f: float(pattern[f].iloc[0]) for f in RISK_INPUTS}}
    details = risk_details({**row, "risk": 0.9, "risk_threshold": 0.6, "reasons": "x"})
    stored = pd.DataFrame({"details": [details] * 30, "label": ["false_positive"] * 30})
    labelled = labelled_rows(stored)
    assert len(labelled) == 30 and labelled["y"].sum() == 0
    relearnt = quality.train_risk(reference, labelled)
    assert relearnt.score(pattern)[0] < base.score(pattern)[0]
    old = pd.DataFrame({"details": [{"top": []}], "label": ["true_positive"]})
    assert labelled_rows(old).empty  # detections stored before the risk model are skipped


def test_generic_model_carries_a_calibrated_risk(reference: pd.DataFrame, tmp_path: Path) -> None:
    """fit_generic trains on the days before the held-out ones, calibrates there, saves both."""
    from secml.dfp.generator import generate
    from secml.dfp.schema import process_records

    gen = generate("duo", n_users=6, days=12, n_attacks=0, seed=4)
    df = process_records(gen.records, "duo", {})
    risk = quality.train_risk(reference)
    model = quality.fit_generic(df, "duo", params=TINY, alert_rate=0.01, risk=risk)
    assert model.risk is not None and model.risk.threshold >= 0.5
    assert model.risk.alert_rate == 0.01 and model.risk.n_calibration > 0
    assert risk.alert_rate is None  # the given model is copied, not changed
    loaded = AutoEncoder.load(model.save(tmp_path / "g"))
    assert isinstance(loaded.risk, RiskModel)
    assert loaded.risk.threshold == pytest.approx(model.risk.threshold)


TINY_EVAL = [
    *("--source", "duo", "--seeds", "0", "--users", "14", "--train-users", "14"),
    *("--days", "12", "--holdout-days", "3", "--max-epochs", "2"),
]


def test_eval_command_reports_every_detector(tmp_path: Path, caplog) -> None:
    """training.dfp_eval end to end on a tiny independent set: every table, every baseline."""
    with caplog.at_level(logging.INFO, logger="training.dfp_eval"):
        rc = dfp_eval.main([*TINY_EVAL, "--work", str(tmp_path), "--no-mlflow"])
    assert rc == 0
    text = caplog.text
    for part in ("## duo: overall", "recall per attack type", "FPR per benign kind", "own-model"):
        assert part in text
    for det in quality.DETECTORS:
        assert f"| {det} |" in text
    assert "password_spray" in text and "travel" in text


def test_summary_and_kinds_count_what_they_say() -> None:
    """Metrics on a hand-made frame: two incidents, one caught; one benign kind flagged."""
    scored = pd.DataFrame(
        {
            "attack_type": ["ato", "ato", "ato", None, None, None, None],
            "attack_id": ["a1", "a1", "a2", None, None, None, None],
            "kind": ["ato", "ato", "ato", "travel", "travel", "ordinary", "ordinary"],
            "alert_x": [True, False, False, True, False, False, False],
            "score_x": [0.9, 0.4, 0.3, 0.8, 0.1, 0.2, 0.1],
            "own_model": [True] * 7,
        }
    )
    s = quality.summary(scored, "x")
    assert s["precision"] == 0.5 and s["recall"] == pytest.approx(1 / 3)
    assert s["fpr"] == 0.25 and s["alerts_per_1k_benign"] == 250.0
    k = quality.by_kind(scored, "x").set_index("kind")
    assert k.loc["ato", "incident_recall"] == 0.5 and k.loc["ato", "incidents"] == 2
    assert k.loc["travel", "fpr"] == 0.5 and k.loc["ordinary", "fpr"] == 0.0
    assert np.isnan(k.loc["travel", "event_recall"])


@pytest.mark.integration
def test_eval_is_logged_to_mlflow(mlflow_server, tmp_path: Path) -> None:
    """The figures land in MLflow's dfp-eval experiment: metrics per detector and the report."""
    from mlflow import MlflowClient

    assert dfp_eval.main([*TINY_EVAL, "--work", str(tmp_path)]) == 0
    client = MlflowClient(mlflow_server.mlflow_tracking_uri)
    exp = client.get_experiment_by_name(dfp_eval.EXPERIMENT)
    run = client.search_runs([exp.experiment_id], order_by=["start_time DESC"])[0]
    for det in quality.DETECTORS:
        assert f"duo.{det}.f1" in run.data.metrics
    assert "duo.secml.fpr.ordinary" in run.data.metrics
    files = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert "report.md" in files and "tables" in files
