"""The DFP risk model: monotone, calibrated, explained, saved and loaded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from secml.dfp.scoring import DECISION_FLOOR, RISK_INPUTS, RiskModel, explain


def frame(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Benign rows with rare novelty, attacks with novelty plus a second signal."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: np.zeros(n) for c in RISK_INPUTS})
    df["history_depth"] = rng.uniform(1.5, 3.0, n)
    df["events_recent"] = rng.integers(1, 4, n)
    df["ae_surprisal"] = rng.exponential(0.5, n)
    df["new_country"] = (rng.random(n) < 0.02).astype(float)
    y = rng.random(n) < 0.1
    df.loc[y, "new_country"] = 1
    df.loc[y, "new_browser_os"] = (rng.random(int(y.sum())) < 0.8).astype(float)
    df.loc[y, "hour_gap"] = rng.integers(0, 8, int(y.sum()))
    df["country"] = "Germany"
    return df.astype({c: float for c in RISK_INPUTS}), y.astype(int)


def test_risk_is_monotone_in_every_anomaly_feature() -> None:
    """Adding novelty or failures never lowers a login's risk."""
    df, y = frame(3000, 0)
    model = RiskModel().fit(df, y)
    base = df.head(200).copy()
    for col, sign in RISK_INPUTS.items():
        if sign != 1:
            continue
        more = base.copy()
        more[col] = more[col] + 1.0
        assert (model.score(more) >= model.score(base) - 1e-9).all(), col


def test_calibration_threshold_and_round_trip(tmp_path) -> None:
    """The threshold is the held-out quantile for the alert rate, never below the floor."""
    df, y = frame(3000, 1)
    model = RiskModel().fit(df, y)
    benign = df[y == 0]
    thr = model.calibrate(benign, 0.01)
    assert thr >= DECISION_FLOOR
    assert (model.score(benign) > thr).mean() <= 0.01
    loaded = RiskModel.load(model.save(tmp_path / "m"))
    np.testing.assert_allclose(loaded.score(df), model.score(df), rtol=0, atol=1e-7)
    assert loaded.threshold == pytest.approx(thr)
    with pytest.raises(ValueError, match="alert_rate"):
        model.calibrate(benign, 0.0)


def test_errors_name_the_problem() -> None:
    """Missing inputs, one class only and an untrained model are clear errors."""
    df, y = frame(200, 2)
    with pytest.raises(KeyError, match="new_app"):
        RiskModel.matrix(df.drop(columns=["new_app"]))
    with pytest.raises(ValueError, match="both attacks"):
        RiskModel().fit(df, np.zeros(len(df)))
    with pytest.raises(RuntimeError, match="not trained"):
        RiskModel().score(df)


def test_explanations_say_why_in_words() -> None:
    """An alert's top contributions are named and put into a sentence."""
    df, y = frame(3000, 3)
    model = RiskModel().fit(df, y)
    row = df.head(1).copy()
    row[["new_country", "new_browser_os"]] = 1.0
    row["hour_gap"] = 6.0
    [(top, words)] = explain(row, model.contributions(row))
    names = {t["feature"] for t in top}
    assert {"new_country", "new_browser_os"} <= names
    assert "first login from Germany" in words and "browser/OS" in words
