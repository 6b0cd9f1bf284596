"""Home: the state of every service of the platform."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from ui import clients

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


def render() -> None:
    """Render the Home page."""
    st.title("Security ML platform")
    st.caption("DFP login fingerprinting and ABP GPU-mining detection: label, retrain, promote.")
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
