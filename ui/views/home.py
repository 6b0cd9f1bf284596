"""Home: the state of every service of the platform."""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from ui import clients

log = logging.getLogger(__name__)


def service_table() -> pd.DataFrame:
    """One row per service: name, URL, state (from the launcher's health checks)."""
    from secml.stack import service_states

    rows = [
        {"service": s.name, "url": s.url, "state": s.state}
        for s in service_states(clients.settings())
    ]
    return pd.DataFrame(rows, columns=["service", "url", "state"])


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
    up = int(table["state"].astype(str).str.lower().isin(["healthy", "up", "running"]).sum())
    st.metric("Services healthy", f"{up} / {len(table)}")
    st.dataframe(
        table,
        hide_index=True,
        column_config={"url": st.column_config.LinkColumn("url")},
        key="services",
    )
