"""Why the ABP classifier scored a record as it did: exact SHAP values from XGBoost.

``booster.predict(..., pred_contribs=True)`` gives, per row, one contribution per column the
booster sees plus a bias, in log-odds; they sum to the row's margin, and the mining probability
is ``sigmoid(margin)``. The matrix is built by ``secml.abp.model`` exactly as ``score`` builds it
(the 18 nvidia-smi columns, the derived ratios the booster was trained with, and its temporal
features when it has them), so the explanation is of the number the detector reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from secml.abp.features import PREFIX, to_matrix, util_blind
from secml.abp.model import (
    booster_derived,
    booster_features,
    booster_temporal,
    booster_threshold,
    model_inputs,
    na_booster,
    util_na,
)
from secml.abp.temporal import TemporalState


@dataclass(frozen=True)
class Explanation:
    """One record's mining probability, the threshold, and each column's contribution."""

    probability: float
    threshold: float
    bias: float  # log-odds before any column is read (the training data's base rate)
    margin: float  # bias + sum of contributions, in log-odds
    contributions: pd.DataFrame  # feature, value, contribution (log-odds), sorted by |c|
    temporal_from_record_alone: bool = False

    @property
    def flagged(self) -> bool:
        """Whether the probability reaches the threshold (the detector's decision)."""
        return self.probability >= self.threshold

    def top(self, k: int = 8) -> pd.DataFrame:
        """The ``k`` columns that moved the score most (either way)."""
        return self.contributions.head(k).reset_index(drop=True)


def short_name(feature: str) -> str:
    """A column name without the ``nvidia_smi_log.gpu.`` prefix."""
    return feature.removeprefix(PREFIX)


def contributions(
    booster: xgb.Booster, X: np.ndarray, T: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values (n, columns + 1; last column the bias) and the matrix the booster saw."""
    derived = booster_derived(booster)
    inputs = model_inputs(X, derived, T if booster_temporal(booster) else None)
    dm = xgb.DMatrix(inputs, missing=np.nan)
    contrib = np.asarray(booster.predict(dm, pred_contribs=True), dtype=np.float64)
    inner, na = na_booster(booster), util_na(X)
    if inner is not None and na.any():
        # rows with utilisation N/A are scored by the N/A model on the blind view: explain that
        blind = model_inputs(util_blind(np.asarray(X)[na]), derived)
        part = inner.predict(xgb.DMatrix(blind, missing=np.nan), pred_contribs=True)
        contrib[na] = 0.0
        contrib[np.ix_(na, list(range(blind.shape[1])) + [-1])] = part
        inputs = inputs.copy()
        inputs[na, : blind.shape[1]] = blind
    return contrib, inputs


def explain(
    booster: xgb.Booster,
    record: Mapping[str, Any],
    threshold: float | None = None,
    history: Sequence[Mapping[str, Any]] = (),
) -> Explanation:
    """Explain one raw nvidia-smi record (flattened, as the gateway receives it).

    ``threshold`` defaults to the one stored with the booster. A booster with temporal
    features reads the GPU's ``history`` (earlier records, oldest first) and then the record;
    without history its temporal columns see the record alone (flagged on the result).
    """
    records = [*history, record]
    X = to_matrix(records)
    T = None
    window = booster_temporal(booster)
    if window:
        uuids = [r.get(f"{PREFIX}uuid") for r in records]
        T = TemporalState(window).features(np.asarray(X, dtype=np.float32), uuids)
    contrib, inputs = contributions(booster, X, T)
    row, values = contrib[-1], inputs[-1]
    names = booster_features(booster)
    if len(names) != len(row) - 1:
        raise ValueError(
            f"booster gives {len(row) - 1} contributions but names {len(names)} columns"
        )
    margin = float(row.sum())
    table = pd.DataFrame(
        {
            "feature": [short_name(n) for n in names],
            "value": values.astype(np.float64),
            "contribution": row[:-1],
        }
    )
    table = table.reindex(table["contribution"].abs().sort_values(ascending=False).index)
    return Explanation(
        probability=1.0 / (1.0 + math.exp(-margin)),
        threshold=float(booster_threshold(booster) if threshold is None else threshold),
        bias=float(row[-1]),
        margin=margin,
        contributions=table.reset_index(drop=True),
        temporal_from_record_alone=bool(window) and not history,
    )
