"""Keep the anomalies: the risk model's calibrated decision, or ``mean_abs_z`` > a threshold.

Scored frames carry ``anomaly`` from the risk model that travels with the generic model
(``secml.dfp.scoring.apply_risk``). A threshold given explicitly, or models without a risk
model, fall back to Morpheus's rule ``mean_abs_z > threshold`` (default 2.0).
"""

from __future__ import annotations

import logging

import pandas as pd

from secml.settings import get_settings

log = logging.getLogger(__name__)


def filter_anomalies(
    scored: pd.DataFrame, threshold: float | None = None, column: str = "mean_abs_z"
) -> pd.DataFrame:
    """Rows of ``scored`` that are anomalies (see the module docstring)."""
    if threshold is None and "anomaly" in scored.columns and "risk" in scored.columns:
        if scored["risk"].notna().all():
            out = scored[scored["anomaly"].astype(bool)]
            log.info("filter: %d of %d events above their risk threshold", len(out), len(scored))
            return out
    if column not in scored.columns:
        raise KeyError(f"filter: scored frame has no {column!r} column (run inference first)")
    thr = get_settings().dfp_z_threshold if threshold is None else float(threshold)
    values = pd.to_numeric(scored[column], errors="coerce")
    if values.isna().any():
        bad = int(values.isna().to_numpy().nonzero()[0][0])
        raise ValueError(
            f"filter: row {bad} has no numeric {column!r} ({scored[column].iloc[bad]!r})"
        )
    out = scored[values > thr]
    log.info("filter: %d of %d events above %s > %.3g", len(out), len(scored), column, thr)
    return out
