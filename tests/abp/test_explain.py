"""ABP explanations: SHAP values from XGBoost add up to the score the detector reports."""

from __future__ import annotations

import numpy as np
import pytest

from secml.abp import model as m
from secml.abp.explain import explain
from secml.abp.features import DERIVED, FEATURES, to_matrix


def test_contributions_sum_to_the_reported_probability(fleet) -> None:
    recs = [fleet.records[int(i)] for i in fleet.test_idx[:40]]
    probs = m.score(fleet.booster, to_matrix(recs))
    for rec, p in zip(recs, probs, strict=True):
        ex = explain(fleet.booster, rec)
        assert ex.probability == pytest.approx(float(p), abs=1e-5)
        assert ex.margin == pytest.approx(ex.bias + ex.contributions["contribution"].sum())
        assert ex.threshold == m.booster_threshold(fleet.booster)
        assert ex.flagged == (float(p) >= ex.threshold)


def test_a_row_with_utilisation_na_is_explained_by_the_model_that_scored_it(fleet) -> None:
    """MIG rows are scored by the booster's N/A model; their explanation sums to that score."""
    keys = ("utilization.gpu_util", "utilization.memory_util")
    recs = [
        {**fleet.records[int(i)], **{f"nvidia_smi_log.gpu.{k}": "N/A" for k in keys}}
        for i in fleet.test_idx[:60:6]
    ]
    probs = m.score(fleet.booster, to_matrix(recs))
    for rec, p in zip(recs, probs, strict=True):
        ex = explain(fleet.booster, rec)
        assert ex.probability == pytest.approx(float(p), abs=1e-5)
        assert ex.margin == pytest.approx(ex.bias + ex.contributions["contribution"].sum())
        util = ex.contributions.set_index("feature").loc["utilization.gpu_util"]
        assert np.isnan(util["value"]) and util["contribution"] == 0.0


def test_columns_are_what_the_booster_sees_including_derived(fleet) -> None:
    ex = explain(fleet.booster, fleet.records[int(fleet.test_idx[0])], threshold=0.3)
    names = set(ex.contributions["feature"])
    assert len(ex.contributions) == len(FEATURES) + len(DERIVED)
    assert {d.removeprefix("nvidia_smi_log.gpu.") for d in DERIVED} <= names
    assert ex.threshold == 0.3
    mags = ex.contributions["contribution"].abs().to_numpy()
    assert (np.diff(mags) <= 1e-12).all(), "sorted by |contribution|"


def test_a_miner_is_pushed_up_by_its_top_contributions(fleet) -> None:
    y = fleet.ds.y[fleet.test_idx]
    probs = m.score_dataset(fleet.booster, fleet.ds.subset(fleet.test_idx))
    miner = int(fleet.test_idx[int(np.argmax(np.where(y == 1, probs, -1)))])
    ex = explain(fleet.booster, fleet.records[miner])
    assert ex.flagged
    assert ex.top(3)["contribution"].sum() > 0
    benign = int(fleet.test_idx[int(np.argmin(np.where(y == 0, probs, 2)))])
    assert explain(fleet.booster, fleet.records[benign]).top(3)["contribution"].sum() < 0
