"""Score processed DFP events with each user's production model, else the generic one.

The output keeps every input column and adds, per feature, ``<ft>_loss``, ``<ft>_z_loss``,
``<ft>_pred``, then ``max_abs_z``, ``mean_abs_z``, ``model_version`` (``<name>:<version>``),
``ae_surprisal`` (how rare ``mean_abs_z`` is for the model that scored the event), and the
risk columns of ``secml.dfp.scoring.apply_risk`` (``risk``, ``risk_threshold``, ``anomaly``,
``reasons``, ``risk_top``) from the risk model that travels with the generic model.
"""

from __future__ import annotations

import logging

import pandas as pd

from secml.dfp.registry import ModelRegistry, NoModelError, get_registry
from secml.dfp.scoring import RISK_COLUMNS, apply_risk
from secml.naming import GENERIC_USER
from secml.settings import Settings, get_settings

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
    work = df.reset_index(drop=True).drop(columns=list(RISK_COLUMNS), errors="ignore")
    for user, rows in work.groupby("username", sort=False):
        model, label = registry.model_for_user(str(user))
        models[label] = model
        by_model.setdefault(label, []).append(rows)
    for label, frames in by_model.items():
        rows = pd.concat(frames) if len(frames) > 1 else frames[0]
        scores = models[label].score(rows)
        scores["model_version"] = label
        scores["ae_surprisal"] = models[label].surprisal(scores["mean_abs_z"].to_numpy())
        parts.append(scores)
    scored = pd.concat(parts).sort_index()
    kept = work.drop(columns=[c for c in scored.columns if c in work.columns])
    out = pd.concat([kept, scored], axis=1)
    out.index = df.index
    settings = settings or get_settings()
    out = apply_risk(out, _risk_model(registry), settings.dfp_z_threshold)
    log.info(
        "scored %d %s events from %d users with %d models",
        len(df),
        source,
        df["username"].nunique(),
        len(by_model),
    )
    return out


def _risk_model(registry: ModelRegistry) -> object | None:
    """The risk model attached to the source's generic production model, if any."""
    try:
        generic, _ = registry.model_for_user(GENERIC_USER)
    except NoModelError:
        return None
    if generic.risk is None:
        log.warning(
            "the generic %s model has no risk model: anomalies are mean_abs_z > threshold",
            registry.source,
        )
    return generic.risk
