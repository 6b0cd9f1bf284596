"""Score processed DFP events with each user's production model, else the generic one.

The output keeps every input column and adds, per feature, ``<ft>_loss``, ``<ft>_z_loss``,
``<ft>_pred``, then ``max_abs_z``, ``mean_abs_z`` and ``model_version`` (``<name>:<version>``).
"""

from __future__ import annotations

import logging

import pandas as pd

from secml.dfp.registry import ModelRegistry, get_registry
from secml.settings import Settings

log = logging.getLogger(__name__)


def score_events(
    df: pd.DataFrame,
    source: str,
    registry: ModelRegistry | None = None,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Score every row of ``df`` (needs ``username`` and the feature columns) in input order."""
    if "username" not in df.columns:
        raise KeyError("inference frame is missing column 'username'")
    registry = registry or get_registry(source, settings)
    if registry.source != source:
        raise ValueError(f"registry is for source {registry.source!r}, data is {source!r}")
    if df.empty:
        return df.copy()
    parts = []
    by_model: dict[str, list[pd.DataFrame]] = {}
    models = {}
    work = df.reset_index(drop=True)
    for user, rows in work.groupby("username", sort=False):
        model, label = registry.model_for_user(str(user))
        models[label] = model
        by_model.setdefault(label, []).append(rows)
    for label, frames in by_model.items():
        rows = pd.concat(frames) if len(frames) > 1 else frames[0]
        scores = models[label].score(rows)
        scores["model_version"] = label
        parts.append(scores)
    scored = pd.concat(parts).sort_index()
    kept = work.drop(columns=[c for c in scored.columns if c in work.columns])
    out = pd.concat([kept, scored], axis=1)
    out.index = df.index
    log.info(
        "scored %d %s events from %d users with %d models",
        len(df),
        source,
        df["username"].nunique(),
        len(by_model),
    )
    return out
