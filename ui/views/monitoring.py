"""Monitoring: the Grafana dashboards' panels, drawn from the same queries against Prometheus.

The dashboard and the window live in the URL
(``/monitoring?dashboard=Platform+overview&window=6h``).
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from ui import backend, clients, urlstate

log = logging.getLogger(__name__)

WINDOWS = {"15 minutes": 15, "1 hour": 60, "6 hours": 360, "24 hours": 1440}
# ``?window=`` text -> window
WINDOW_PARAM = {"15m": "15 minutes", "1h": "1 hour", "6h": "6 hours", "24h": "24 hours"}


def dashboards() -> list[dict[str, Any]]:
    """The dashboards of ``monitoring/grafana/dashboards`` as JSON objects."""
    from secml.monitoring import load_dashboards

    return load_dashboards()


# Grafana unit ids -> words for the y axis
UNITS = {
    "rps": "per second",
    "reqps": "requests per second",
    "ops": "operations per second",
    "percentunit": "share (0-1)",
    "s": "seconds",
    "ms": "milliseconds",
    "short": "count",
}


def panel_units(board: dict[str, Any]) -> dict[str, str]:
    """Panel title -> y-axis unit in words, from the dashboard's ``fieldConfig``."""
    out = {}
    for p in board.get("panels", []):
        for q in [p, *(p.get("panels") or [])]:
            unit = (q.get("fieldConfig") or {}).get("defaults", {}).get("unit", "short")
            out[str(q.get("title"))] = UNITS.get(unit, unit)
    return out


def _panel(settings: Any, title: str, exprs: list[str], minutes: int, unit: str) -> None:
    """Draw one panel: a line chart of every query's series, or why there is none.

    The PromQL is never the message: an empty panel says it has no data in the window.
    """
    step = max(15, minutes * 60 // 240)
    st.markdown(f"**{title}**")
    empty = 0
    for expr in exprs:
        try:
            df = backend.prometheus_range(
                clients.http(), str(settings.prometheus_url), expr, minutes, step
            )
        except Exception as exc:
            log.warning("panel %r: %s", title, exc)
            st.caption(f"Could not query Prometheus at {settings.prometheus_url}: {exc}")
            return
        if df.empty:
            empty += 1
            continue
        df.index.name = "time (UTC)"
        st.line_chart(df, height=220, x_label="time (UTC)", y_label=unit)
    if empty == len(exprs):
        st.caption("No data in this window yet: the services it watches have not reported it.")


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
    params = [
        urlstate.Param("mon_board", "dashboard", default=titles[0], choices=titles),
        urlstate.Param("mon_window", "window", default="1 hour", choices=WINDOW_PARAM),
    ]
    urlstate.seed(params)
    c1, c2 = st.columns(2)
    title = c1.selectbox("Dashboard", titles, key="mon_board")
    window = c2.selectbox("Window", list(WINDOWS), key="mon_window")
    urlstate.write(params)
    try:
        panels = backend.dashboard_panels(boards[titles.index(title)])
    except ValueError as exc:
        st.error(f"Dashboard {title!r} has a query Prometheus cannot run: {exc}")
        return
    units = panel_units(boards[titles.index(title)])
    cols = st.columns(2)
    for i, (panel_title, exprs) in enumerate(panels):
        with cols[i % 2]:
            _panel(settings, panel_title, exprs, WINDOWS[window], units.get(panel_title, "count"))
