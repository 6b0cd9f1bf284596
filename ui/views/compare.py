"""Compare runs: two or more versions of a model, their metrics side by side, their plots.

Metrics are grouped by name (per mining profile / attack type, per GPU model, FPR per benign
kind, overall) as the training and evaluation runs log them; the versions' plots (ROC curve,
per-profile rates, score distributions where logged) sit next to each other; MLflow's own
compare view is one click away; for ABP models, the versions' evasion reports (recall against
the hash rate a miner keeps) on one chart. ``?model=<name>&versions=3,5`` opens a comparison
directly.
"""

from __future__ import annotations

import logging
from typing import Any

import altair as alt
import streamlit as st

from ui import backend, clients, urlstate
from ui.views import evasion

log = logging.getLogger(__name__)


def _plots(client: Any, runs: dict[int, tuple[str, str]]) -> None:
    """Each version's logged plots in one column per version."""
    by_version = {v: backend.version_plots(client, run) for v, (run, _) in runs.items()}
    names = sorted({p for paths in by_version.values() for p in paths})
    if not names:
        st.caption("These runs logged no plots.")
        return
    for name in names:
        st.markdown(f"**{name.removeprefix('plots/')}**")
        cols = st.columns(len(runs))
        for col, (v, (run, _)) in zip(cols, runs.items(), strict=True):
            if name in by_version[v]:
                try:
                    path = client.download_artifacts(run, name)
                    col.image(path, caption=f"v{v}")
                except Exception as exc:
                    col.caption(f"v{v}: {exc}")
            else:
                col.caption(f"v{v}: not logged")


def _metric_tables(table: Any, chosen: list[int]) -> None:
    """The versions' metrics side by side per group, with a bar chart of the rates."""
    vcols = [f"v{v}" for v in chosen]
    for group in ["overall", *(g for g, _ in backend.METRIC_GROUPS)]:
        part = table[table["group"] == group]
        if part.empty:
            continue
        st.subheader(group.capitalize() if group == "overall" else group)
        st.dataframe(
            part[["metric", *vcols]], hide_index=True, key=f"cmp_{group}",
            column_config={c: st.column_config.NumberColumn(c, format="%.4f") for c in vcols},
        )  # fmt: skip
        rates = part[part["metric"].str.match(r"^(recall|specificity|fpr|precision)")]
        if group != "overall" and not rates.empty:
            long = rates.melt("metric", vcols, var_name="version", value_name="value")
            chart = (
                alt.Chart(long)
                .mark_bar()
                .encode(
                    x=alt.X("value:Q", title="rate (0–1)", scale=alt.Scale(domain=[0, 1])),
                    y=alt.Y("metric:N", title=None),
                    yOffset="version:N",
                    color=alt.Color("version:N", title="version"),
                    tooltip=["metric", "version", alt.Tooltip("value", format=".4f")],
                )
                .properties(height=max(120, 18 * len(long)))
            )
            st.altair_chart(chart, width="stretch")


def render() -> None:
    """Render the Compare runs page."""
    st.title("Compare runs")
    settings = clients.settings()
    client = clients.mlflow(str(settings.mlflow_tracking_uri))
    try:
        models = backend.registered_models(client)
    except Exception as exc:
        log.exception("mlflow unavailable")
        st.error(f"The MLflow registry at {settings.mlflow_tracking_uri} is not available: {exc}")
        return
    if models.empty:
        st.info("No registered models yet: run a training deployment.")
        return
    names = list(models["name"])
    model_param = urlstate.Param("cmp_model", "model", default=names[0], choices=names)
    urlstate.seed([model_param])
    name = st.selectbox("Model", names, key="cmp_model")
    versions = backend.model_versions(client, name)
    available = [int(v) for v in versions["version"]] if not versions.empty else []
    versions_param = urlstate.Param(
        "cmp_versions", "versions", "int_list", default=available[:2], choices=available
    )
    if not set(st.session_state.get("cmp_versions", [])) <= set(available):
        st.session_state["cmp_versions"] = available[:2]  # another model: its first two
    urlstate.seed([versions_param])
    chosen = st.multiselect("Versions (two or more)", available, key="cmp_versions")
    # both always written: a link names what it compares even at the defaults
    st.query_params.from_dict(
        {"model": name, "versions": urlstate.to_text(versions_param, chosen)} if chosen else {}
    )
    if len(chosen) < 2:
        st.info("Pick at least two versions to compare.")
        return
    try:
        table = backend.compare_versions(client, name, chosen)
        runs = backend.version_runs(client, name, chosen)
    except Exception as exc:
        log.exception("comparison failed")
        st.error(f"Could not read the versions' runs from MLflow: {exc}")
        return
    if runs:
        st.markdown(
            f"[Open these runs in MLflow's compare view]"
            f"({backend.mlflow_compare_url(settings, runs)})"
        )
    if table.empty:
        st.caption("These versions' runs logged no metrics.")
    else:
        _metric_tables(table, chosen)
    if evasion.is_abp(name, versions):
        st.subheader("Robustness: recall against the attacker's budget")
        evasion.render(client, settings, name, chosen, key="cmp_evasion")
    if not table.empty:
        st.subheader("Plots")
        _plots(client, runs)
