"""Evaluation: metrics per attack type against benign events; two strategies compared."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from secml.dfp import generator as g
from secml.dfp.evaluate import (
    METRIC_COLUMNS,
    attack_metrics,
    collateral,
    compare,
    read_labels,
    score_strategies,
    to_markdown,
)
from secml.dfp.schema import process_records


def _scores() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six benign events and two attack types with known scores."""
    scores = pd.DataFrame(
        {
            "event_id": [f"b{i}" for i in range(6)] + ["t1", "t2", "f1", "f2"],
            "mean_abs_z": [0.1, 0.5, 1.0, 1.5, 2.5, 0.2, 3.0, 4.0, 0.3, 2.2],
        }
    )
    labels = pd.DataFrame(
        {
            "event_id": ["t1", "t2", "f1", "f2"],
            "attack_type": ["account_takeover", "account_takeover", "mfa_fatigue", "mfa_fatigue"],
        }
    )
    return scores, labels


def test_attack_metrics_by_hand() -> None:
    """Precision/recall/AUC per type match a hand computation."""
    scores, labels = _scores()
    table = attack_metrics(scores, labels, threshold=2.0).set_index("attack_type")
    assert list(table.reset_index().columns) == METRIC_COLUMNS
    ato = table.loc["account_takeover"]
    assert ato["detected"] == 2 and ato["benign_flagged"] == 1
    assert ato["precision"] == pytest.approx(2 / 3) and ato["recall"] == 1.0
    assert ato["roc_auc"] == pytest.approx(1.0)
    fat = table.loc["mfa_fatigue"]
    assert fat["recall"] == 0.5 and fat["precision"] == pytest.approx(0.5)
    # f1 (0.3) beats b0 (0.1) and b5 (0.2): 2/6; f2 (2.2) beats 5 of 6
    assert fat["roc_auc"] == pytest.approx((2 / 6 + 5 / 6) / 2)
    assert table.loc["all", "attack_events"] == 4 and table.loc["all", "benign_events"] == 6


def test_compare_and_markdown() -> None:
    """compare stacks strategies; the Markdown table has one line per row plus the header."""
    scores, labels = _scores()
    table = compare({"a": scores, "b": scores.assign(mean_abs_z=0.0)}, labels, 2.0)
    assert set(table["strategy"]) == {"a", "b"}
    b_all = table[(table["strategy"] == "b") & (table["attack_type"] == "all")].iloc[0]
    assert b_all["detected"] == 0 and math.isnan(b_all["precision"])
    md = to_markdown(table)
    assert md.count("\n") == len(table) + 1 and "| strategy |" in md


def test_read_labels_checks_columns(tmp_path: Path) -> None:
    """A labels file without the needed columns is refused by name."""
    bad = tmp_path / "labels.csv"
    bad.write_text("id,kind\n1,x\n")
    with pytest.raises(ValueError, match="attack_type"):
        read_labels(bad)


def test_score_strategies_end_to_end() -> None:
    """Generated data: both strategies score every test event; per-user models are used."""
    gen = g.generate("duo", n_users=3, days=4, seed=5, attack_days=1, n_attacks=5)
    df = process_records(gen.records, "duo")
    cut = df["timestamp"].max().floor("D")
    train, test = df[df["timestamp"] < cut], df[df["timestamp"] >= cut]
    scored = score_strategies(
        train, test, "duo", min_events=30, params={"max_epochs": 2, "device": "cpu"}
    )
    assert set(scored) == {"per_user+generic", "generic"}
    for frame in scored.values():
        assert len(frame) == len(test) and frame["mean_abs_z"].notna().all()
    assert scored["per_user+generic"]["own_model"].any()
    own = scored["per_user+generic"]["own_model"].to_numpy()
    diff = scored["per_user+generic"]["mean_abs_z"] != scored["generic"]["mean_abs_z"]
    assert diff[own].all() and not diff[~own].any()
    labels = pd.DataFrame(gen.labels)
    table = compare(scored, labels)
    assert set(table["attack_type"]) >= {"all"} and len(table) >= 4


def test_collateral_events_excluded_on_request() -> None:
    """Benign events after an attack on the same user and day can be left out of negatives."""
    t = pd.Timestamp("2022-08-30T10:00", tz="UTC")
    scores = pd.DataFrame(
        {
            "event_id": ["b0", "a1", "b2", "b3", "b4"],
            "username": ["u", "u", "u", "v", "u"],
            "timestamp": [
                t,
                t + pd.Timedelta("1h"),
                t + pd.Timedelta("2h"),
                t + pd.Timedelta("3h"),
                t + pd.Timedelta("1D"),
            ],
            "mean_abs_z": [0.1, 3.0, 2.5, 0.2, 0.3],
        }
    )
    labels = pd.DataFrame({"event_id": ["a1"], "attack_type": ["account_takeover"]})
    assert list(collateral(scores, labels)) == [False, False, True, False, False]
    strict = attack_metrics(scores, labels, 2.0).set_index("attack_type").loc["all"]
    clean = attack_metrics(scores, labels, 2.0, exclude_collateral=True)
    clean = clean.set_index("attack_type").loc["all"]
    assert strict["benign_flagged"] == 1 and strict["precision"] == pytest.approx(0.5)
    assert clean["benign_flagged"] == 0 and clean["precision"] == 1.0
    assert clean["benign_events"] == 3
