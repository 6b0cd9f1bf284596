"""The ABP evasion report of model versions: recall against the attacker's budget (hash rate kept).

Shared by the Models and Compare runs pages. A version's report is the ``evasion.json`` artifact
of the MLflow run its ``evasion_run_id`` tag names (``training/abp_evasion.py`` writes it when
the training flow promotes a version; ``python -m secml.abp.evasion`` for any version).
"""

from __future__ import annotations

import logging
from typing import Any

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from secml.abp import evasion as ev

log = logging.getLogger(__name__)

# Attacker budgets of the plotted frontier: the miner keeps at least this share of its hash rate.
GRID = np.round(np.linspace(0.05, 1.0, 20), 2)
X_TITLE = "attacker's budget: hash rate kept by the miner (% of its full rate)"
Y_TITLE = "recall (% of mining samples flagged)"
KNOBS = ("power_limit", "core_clock", "mem_clock", "duty", "intensity")


def is_abp(name: str, versions: pd.DataFrame) -> bool:
    """Whether ``name`` is an ABP model (evasion reports apply): by name or by a report tag."""
    return name.startswith("abp") or f"tag.{ev.TAG}" in versions.columns


@st.cache_data(show_spinner=False, ttl=600)
def _load(_client: Any, tracking_uri: str, run_id: str) -> dict[str, Any]:
    """``evasion.json`` of ``run_id`` (cached: a run's artifact never changes)."""
    return ev.load_report(_client, run_id)


def reports(
    client: Any, tracking_uri: str, name: str, versions: list[int]
) -> tuple[dict[int, tuple[str, dict[str, Any]]], dict[int, str]]:
    """Per version ``(run_id, report)``; and per version without one, why not."""
    found: dict[int, tuple[str, dict[str, Any]]] = {}
    missing: dict[int, str] = {}
    for v in versions:
        try:
            run_id = ev.report_run_id(client, name, v)
        except Exception as exc:
            missing[v] = f"its tags could not be read ({exc})"
            continue
        if not run_id:
            missing[v] = "no evasion report (no `evasion_run_id` tag)"
            continue
        try:
            found[v] = (run_id, _load(client, tracking_uri, run_id))
        except Exception as exc:
            log.warning("evasion report %s of %s v%s unreadable: %s", run_id, name, v, exc)
            missing[v] = f"its evasion run {run_id} has no readable `evasion.json` ({exc})"
    return found, missing


def frontier_frame(found: dict[int, tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """Long frame: per version and budget on ``GRID``, the lowest recall (both in %)."""
    rows = []
    for v, (_, rep) in found.items():
        for b, r in zip(GRID, ev.frontier_curve(rep["configs"], GRID), strict=True):
            if np.isfinite(r):
                rows.append({"version": f"v{v}", "hash_rate_kept": 100 * b, "recall": 100 * r})
    return pd.DataFrame(rows, columns=["version", "hash_rate_kept", "recall"])


def budget_table(found: dict[int, tuple[str, dict[str, Any]]]) -> pd.DataFrame:
    """The reports' own frontier: lowest recall per budget, one column per version."""
    budgets = sorted({b for _, rep in found.values() for b in rep.get("frontier", {})}, key=float)
    table = pd.DataFrame({"hash rate kept ≥": [f"{float(b):.0%}" for b in budgets]})
    for v, (_, rep) in found.items():
        front = rep.get("frontier", {})
        table[f"v{v}"] = [front.get(b, {}).get("worst_recall", np.nan) for b in budgets]
    return table


def chart(found: dict[int, tuple[str, dict[str, Any]]], settings_tried: bool) -> alt.Chart:
    """Frontier per version (step line); with ``settings_tried`` each setting as a point."""
    x = alt.X("hash_rate_kept:Q", title=X_TITLE, scale=alt.Scale(domain=[0, 100]))
    y = alt.Y("recall:Q", title=Y_TITLE, scale=alt.Scale(domain=[0, 100]))
    color = alt.Color("version:N", title="version")
    layers = [
        alt.Chart(frontier_frame(found))
        .mark_line(interpolate="step-after", point=True)
        .encode(x=x, y=y, color=color,
                tooltip=["version", alt.Tooltip("hash_rate_kept", title="budget %", format=".0f"),
                         alt.Tooltip("recall", title="lowest recall %", format=".1f")])
    ]  # fmt: skip
    if settings_tried:
        pts = pd.DataFrame([
            {"version": f"v{v}", "hash_rate_kept": 100 * c["hashrate_kept"],
             "recall": 100 * c["recall"], **{k: round(c[k], 2) for k in KNOBS if k in c}}
            for v, (_, rep) in found.items() for c in rep["configs"]
        ])  # fmt: skip
        knobs = [k for k in KNOBS if k in pts.columns]
        tips = ["version", "hash_rate_kept", "recall", *knobs]
        dots = alt.Chart(pts).mark_circle(size=25, opacity=0.35)
        layers.insert(0, dots.encode(x=x, y=y, color=color, tooltip=tips))
    return alt.layer(*layers).properties(
        height=320, title="Recall against the attacker's budget (lowest recall of any setting)"
    )


def render(client: Any, settings: Any, name: str, versions: list[int], key: str) -> None:
    """The evasion reports of ``versions`` of ``name``: chart, per-budget table, links."""
    uri = str(settings.mlflow_tracking_uri)
    found, missing = reports(client, uri, name, versions)
    for v, why in missing.items():
        st.info(
            f"{name} v{v}: {why}. A report is made when the training flow promotes a version; "
            f"for this one run the `abp-evasion/default` deployment with version={v}, or "
            f"`python -m secml.abp.evasion --model models:/{name}/{v}`."
        )
    if not found:
        return
    st.altair_chart(chart(found, settings_tried=len(found) == 1), width="stretch")
    st.dataframe(
        budget_table(found), hide_index=True, key=f"{key}_table",
        column_config={f"v{v}": st.column_config.NumberColumn(f"v{v} lowest recall",
                                                              format="%.3f") for v in found},
    )  # fmt: skip
    base = uri.rstrip("/")
    for v, (run_id, rep) in found.items():
        st.caption(
            f"v{v}: {len(rep['configs'])} settings on {rep['rows']} plain-miner samples of "
            f"{rep['gpus']} GPUs; no-attack recall {rep['baseline_recall']:.3f} · "
            f"[evasion run in MLflow]({base}/#/runs/{run_id})"
        )
