"""Monitoring: the Grafana dashboards' panels, drawn from the same queries against Prometheus."""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from ui import backend, clients

log = logging.getLogger(__name__)

WINDOWS = {"15 minutes": 15, "1 hour": 60, "6 hours": 360, "24 hours": 1440}


def dashboards() -> list[dict[str, Any]]:
    """The dashboards of ``monitoring/grafana/dashboards`` as JSON objects."""
    from secml.monitoring import load_dashboards

    return load_dashboards()


def _panel(settings: Any, title: str, exprs: list[str], minutes: int) -> None:
    """Draw one panel: a line chart of every query's series."""
    step = max(15, minutes * 60 // 240)
    st.markdown(f"**{title}**")
    for expr in exprs:
        try:
            df = backend.prometheus_range(
                clients.http(), str(settings.prometheus_url), expr, minutes, step
            )
        except Exception as exc:
            st.caption(f"`{expr}`: {exc}")
            continue
        if df.empty:
            st.caption(f"`{expr}`: no data yet")
        else:
            st.line_chart(df, height=220)


def render() -> None:
    """Render the Monitoring page."""
    st.title("Monitoring")
    settings = clients.settings()
    st.caption(f"Panels of the Grafana dashboards, queried from {settings.prometheus_url}")
    try:
        boards = dashboards()
    except Exception as exc:
        log.exception("dashboards unavailable")
        st.error(f"Could not load the Grafana dashboards: {exc}")
        return
    if not boards:
        st.info("No dashboards in monitoring/grafana/dashboards yet.")
        return
    titles = [b.get("title", f"dashboard {i}") for i, b in enumerate(boards)]
    c1, c2 = st.columns(2)
    title = c1.selectbox("Dashboard", titles, key="mon_board")
    window = c2.selectbox("Window", list(WINDOWS), index=1, key="mon_window")
    try:
        panels = backend.dashboard_panels(boards[titles.index(title)])
    except ValueError as exc:
        st.error(f"Dashboard {title!r} has a query Prometheus cannot run: {exc}")
        return
    cols = st.columns(2)
    for i, (panel_title, exprs) in enumerate(panels):
        with cols[i % 2]:
            _panel(settings, panel_title, exprs, WINDOWS[window])
