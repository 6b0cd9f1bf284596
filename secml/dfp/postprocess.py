"""Shape scored events into the detections output that DESIGN.md fixes.

Columns, in order: the input columns (the raw record flattened, nested keys joined by
``.``, in the order they first appear), then per feature ``<ft>_loss``, ``<ft>_z_loss``,
``<ft>_pred``, then ``max_abs_z``, ``mean_abs_z``, ``model_version`` (``<name>:<version>``)
and ``event_time`` (ISO 8601 UTC), then the risk model's ``ae_surprisal``, ``risk``,
``risk_threshold``, ``anomaly`` and ``reasons`` when the events were scored with one.
"""

from __future__ import annotations

import logging

import pandas as pd

from secml.dfp.schema import FEATURES, check_source

log = logging.getLogger(__name__)

SCORE_COLUMNS: tuple[str, ...] = ("max_abs_z", "mean_abs_z", "model_version", "event_time")
# The risk model's columns, written when the events were scored with one.
RISK_OUTPUT: tuple[str, ...] = ("ae_surprisal", "risk", "risk_threshold", "anomaly", "reasons")
FEATURE_SUFFIXES: tuple[str, ...] = ("_loss", "_z_loss", "_pred")


def feature_columns(source: str) -> list[str]:
    """``<ft>_loss``, ``<ft>_z_loss``, ``<ft>_pred`` for every feature of ``source``."""
    check_source(source)
    return [f"{ft}{sfx}" for ft in FEATURES[source].all for sfx in FEATURE_SUFFIXES]


def iso_utc(ts: pd.Series) -> pd.Series:
    """Timestamps as ISO 8601 UTC strings with milliseconds and ``Z``."""
    t = pd.to_datetime(ts, utc=True)
    return (
        t.dt.strftime("%Y-%m-%dT%H:%M:%S.") + (t.dt.microsecond // 1000).map("{:03d}".format) + "Z"
    )


def postprocess(scored: pd.DataFrame, source: str) -> pd.DataFrame:
    """Detections frame: flattened input columns + per-feature scores + summary columns."""
    needed = ["_raw", "timestamp", *feature_columns(source), *SCORE_COLUMNS[:3]]
    missing = [c for c in needed if c not in scored.columns]
    if missing:
        raise KeyError(f"postprocess: scored {source} frame is missing columns {missing}")
    if scored.empty:
        return pd.DataFrame(columns=list(feature_columns(source)) + list(SCORE_COLUMNS))
    inputs = pd.json_normalize(list(scored["_raw"]), sep=".")
    inputs.index = scored.index
    out = pd.concat(
        [
            inputs,
            scored[feature_columns(source)],
            scored[["max_abs_z", "mean_abs_z", "model_version"]],
        ],
        axis=1,
    )
    out["event_time"] = iso_utc(scored["timestamp"])
    for col in RISK_OUTPUT:
        if col in scored.columns:
            out[col] = scored[col]
    dup = out.columns[out.columns.duplicated()].tolist()
    if dup:
        raise ValueError(f"postprocess: input columns clash with output columns {dup}")
    return out.reset_index(drop=True)
