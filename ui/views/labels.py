"""Labels feeding training: label-based precision per model version, and the latest labels.

The detector filter lives in the URL (``/labels?detector=abp``).
"""

from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from ui import backend, clients, urlstate

log = logging.getLogger(__name__)

HOW_USED = {
    "abp": "ABP: labelled rows join the training data of the next `abp-train` run "
    "(true positive → mining = 1, false positive → mining = 0).",
    "dfp": "DFP: confirmed anomalies (true positives) are left out of the user's training window "
    "in the next `dfp-train` run, so the model does not learn the attack as normal.",
}
DETECTORS = ("abp", "dfp")
PARAMS = [urlstate.Param("l_detector", "detector", "list", default=[], choices=DETECTORS)]


def render() -> None:
    """Render the Labels page."""
    st.title("Labels feeding training")
    settings = clients.settings()
    urlstate.seed(PARAMS)
    chosen = st.multiselect("Detector", DETECTORS, key="l_detector", placeholder="All detectors")
    urlstate.write(PARAMS)
    try:
        store = clients.store(str(settings.store_url))
        detectors = sorted(store.detections()["detector"].dropna().unique())
        detectors = [d for d in detectors if not chosen or d in chosen]
        labelled = pd.concat([store.labelled(d) for d in detectors] or [pd.DataFrame()])
    except Exception as exc:
        log.exception("store unavailable")
        st.error(f"The detections store at {settings.store_url} is not available: {exc}")
        return
    for det in chosen or DETECTORS:
        st.markdown(f"- {HOW_USED[det]}")
    if labelled.empty:
        which = f" of {', '.join(chosen)}" if chosen else ""
        st.info(f"No labels{which} yet: label detections on the Detections page.")
        return
    prec = backend.precision_by_version(labelled)
    st.subheader("Label-based precision per model version")
    st.caption("precision = true positives / labelled detections scored by that version")
    st.dataframe(
        prec,
        hide_index=True,
        column_config={
            "precision": st.column_config.ProgressColumn(
                "precision", min_value=0.0, max_value=1.0, format="%.2f"
            )
        },
        key="precision",
    )
    if len(prec) > 1:
        chart = prec.assign(model=prec["detector"] + " · " + prec["model_version"].astype(str))
        st.bar_chart(chart.set_index("model")["precision"])
    st.subheader("Latest labels")
    cols = [
        "labelled_at",
        "labelled_by",
        "label",
        "detection_id",
        "detector",
        "source",
        "user",
        "model_version",
        "event_id",
    ]
    latest = labelled.drop_duplicates("detection_id", keep="last")
    if "labelled_at" in latest.columns:
        latest = latest.sort_values("labelled_at", ascending=False)
    st.dataframe(latest[[c for c in cols if c in latest.columns]], hide_index=True)
