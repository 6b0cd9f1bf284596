"""Home: the analyst's triage — events per detector, unlabelled work, detections over time,
alerts firing in Prometheus — then the state of every service of the platform."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import altair as alt
import pandas as pd
import streamlit as st

from ui import backend, clients, urlstate

log = logging.getLogger(__name__)

READY = ("ready", "healthy", "up", "running")


def service_table() -> pd.DataFrame:
    """One row per service: name, URL, state (from the launcher's health checks)."""
    from secml.stack import service_states

    rows = [
        {
            "service": s.name,
            "url": s.url,
            "state": s.state,
            "pid": getattr(s, "pid", None),
            "memory_mb": getattr(s, "rss_mb", None),
        }
        for s in service_states(clients.settings())
    ]
    return pd.DataFrame(rows, columns=["service", "url", "state", "pid", "memory_mb"])


WINDOWS = {"24 hours": (1, "hour"), "7 days": (7, "hour"), "30 days": (30, "day"),
           "all time": (None, "day")}  # fmt: skip
# ``?window=`` text -> window of the detections-over-time chart
WINDOW_PARAM = {"24h": "24 hours", "7d": "7 days", "30d": "30 days", "all": "all time"}
PARAMS = [urlstate.Param("home_window", "window", default="7 days", choices=WINDOW_PARAM)]


def _counts(store) -> None:
    """Per detector: events, unlabelled events, detections; links to the unlabelled queue."""
    summary = store.summary()
    if summary.empty:
        st.info("No detections yet. `make demo` sends traffic that produces some.")
        return
    cols = st.columns(len(summary) + 1)
    cols[0].metric("Unlabelled events", f"{int(summary['unlabelled'].sum()):,}")
    for col, row in zip(cols[1:], summary.itertuples(), strict=True):
        col.metric(
            f"{row.detector.upper()} events",
            f"{row.events:,}",
            help=f"{row.detections:,} detections (a record scored again counts once)",
        )
        col.markdown(
            f"[{row.unlabelled:,} unlabelled {row.detector.upper()} events →]"
            f"(detections?detector={row.detector}&label=unlabelled)"
        )
    st.dataframe(summary, hide_index=True, key="triage_counts")


def _timeline(store) -> None:
    """Detections over time per detector (bars per hour or day)."""
    urlstate.seed(PARAMS)
    c1, _ = st.columns([1, 3])
    window = c1.selectbox("Window", list(WINDOWS), key="home_window")
    urlstate.write(PARAMS)
    days, bucket = WINDOWS[window]
    since = datetime.now(UTC) - timedelta(days=days) if days else None
    tl = store.timeline(bucket, since=since)
    if tl.empty:
        st.caption(f"No detections in the last {window}.")
        return
    chart = (
        alt.Chart(tl)
        .mark_bar()
        .encode(
            x=alt.X("time:T", title=f"event time (UTC, per {bucket})"),
            y=alt.Y("detections:Q", title=f"detections per {bucket}", stack=True),
            color=alt.Color("detector:N", title="detector"),
            tooltip=[alt.Tooltip("time:T", title=bucket), "detector", "detections"],
        )
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch")


def _alerts(settings) -> None:
    """Alerts firing (and pending) in Prometheus now."""
    try:
        alerts = backend.prometheus_alerts(clients.http(), str(settings.prometheus_url))
    except Exception as exc:
        st.warning(f"Prometheus at {settings.prometheus_url} is not available: {exc}")
        return
    firing = int((alerts["state"] == "firing").sum())
    if alerts.empty:
        st.success("No alerts firing.")
        return
    st.metric("Alerts firing", firing, help="pending alerts are listed too")
    st.dataframe(alerts, hide_index=True, key="alerts")


def render() -> None:
    """Render the Home page."""
    st.title("Security ML platform")
    st.caption("DFP login fingerprinting and ABP GPU-mining detection: label, retrain, promote.")
    settings = clients.settings()
    st.subheader("Triage")
    try:
        store = clients.store(str(settings.store_url))
        _counts(store)
        st.subheader("Detections over time")
        _timeline(store)
    except Exception as exc:
        log.exception("store unavailable")
        st.error(f"The detections store at {settings.store_url} is not available: {exc}")
    st.subheader("Alerts")
    _alerts(settings)
    st.subheader("Services")
    try:
        table = service_table()
    except ImportError as exc:
        st.error(f"The service launcher (secml.stack) is not available: {exc}")
        return
    except Exception as exc:
        log.exception("service states failed")
        st.error(f"Could not read the service states: {exc}")
        return
    up = int(table["state"].astype(str).str.lower().isin(READY).sum())
    st.metric("Services ready", f"{up} / {len(table)}")
    if up < len(table):
        st.caption("`make up` starts every service; `make status` prints this table.")
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "url": st.column_config.LinkColumn("url"),
            "memory_mb": st.column_config.NumberColumn("memory (MB)", format="%.0f"),
        },
        key="services",
    )
