"""Detections: one row per event, paged, sorted and filtered in the store; open one, label it.

Every filter, the sort, the page and the open detection live in the URL's query parameters
(``/detections?label=unlabelled&sort=score&page=3&detection=42``), so a reload or a shared
link shows the same view. A record scored many times is one event: its label is the event's.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from secml.abp.alerts import EPISODE_SOURCE
from ui import backend, clients, urlstate

log = logging.getLogger(__name__)

LABEL_NAMES = {"true_positive": "True positive", "false_positive": "False positive"}
DETECTORS = ("abp", "dfp")
SOURCES = ("azure", "duo", "nvsmi", "nvsmi-episode")
LABEL_FILTER = {
    "all": "All",
    "unlabelled": "Unlabelled",
    "labelled": "Labelled",
    "true_positive": "True positive",
    "false_positive": "False positive",
}
SORTS = {
    "last_seen": "Last seen",
    "score": "Score",
    "event_time": "Event time",
    "n_detections": "Times scored",
    "user": "User / GPU",
}
# widget key -> (query parameter, kind)
_PARAMS = {
    "f_detector": ("detector", "list"),
    "f_source": ("source", "list"),
    "f_user": ("user", "str"),
    "f_label": ("label", "str"),
    "f_score": ("min_score", "float"),
    "f_since": ("since", "date"),
    "f_until": ("until", "date"),
    "f_sort": ("sort", "str"),
    "f_order": ("order", "str"),
    "f_page": ("page", "int"),
}
_DEFAULTS: dict[str, Any] = {
    "f_detector": [],
    "f_source": [],
    "f_user": "",
    "f_label": "all",
    "f_score": 0.0,
    "f_since": None,
    "f_until": None,
    "f_sort": "last_seen",
    "f_order": "desc",
    "f_page": 1,
}


def _params() -> list[urlstate.Param]:
    """The filters, the sort and the page as URL parameters (``urlstate``)."""
    choices = {"f_detector": DETECTORS, "f_source": SOURCES, "f_label": list(LABEL_FILTER),
               "f_sort": list(SORTS), "f_order": ["asc", "desc"]}  # fmt: skip
    return [
        urlstate.Param(key, name, kind, _DEFAULTS[key], choices.get(key))
        for key, (name, kind) in _PARAMS.items()
    ]


def state_from_url() -> None:
    """Seed the widgets from the URL the first time this page runs in a session (reload, link)."""
    urlstate.seed(_params())


def state_to_url(detection: int | None) -> None:
    """Write the widgets' values (those not at their default) and the open detection to the URL."""
    urlstate.write(_params(), {"detection": str(detection)} if detection is not None else None)


def open_detection() -> int | None:
    """The detection the URL opens (``?detection=<id>``), or None."""
    raw = st.query_params.get("detection")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        st.warning(f"Ignored URL parameter detection={raw!r}: not a detection id.")
        return None


def _reset_page() -> None:
    """A filter changed: back to page 1."""
    st.session_state["f_page"] = 1


def _filters() -> dict[str, Any]:
    """Draw the filter bar; return ``DetectionStore.events`` keyword arguments."""
    c1, c2, c3, c4 = st.columns([1, 1, 2, 1])
    c1.multiselect("Detector", DETECTORS, key="f_detector", on_change=_reset_page)
    c2.multiselect("Source", SOURCES, key="f_source", on_change=_reset_page)
    c3.text_input("User or GPU contains", key="f_user", on_change=_reset_page)
    c4.selectbox(
        "Label", list(LABEL_FILTER), format_func=LABEL_FILTER.get, key="f_label",
        on_change=_reset_page,
    )  # fmt: skip
    c5, c6, c7, c8, c9 = st.columns(5)
    c5.number_input("Minimum score", step=0.5, key="f_score", on_change=_reset_page)
    c6.date_input("Event time from (UTC)", key="f_since", on_change=_reset_page)
    c7.date_input("Event time to (UTC)", key="f_until", on_change=_reset_page)
    c8.selectbox("Sort by", list(SORTS), format_func=SORTS.get, key="f_sort")
    c9.selectbox(
        "Order", ["desc", "asc"], format_func={"desc": "Descending", "asc": "Ascending"}.get,
        key="f_order",
    )  # fmt: skip
    since, until = st.session_state["f_since"], st.session_state["f_until"]
    label = st.session_state["f_label"]
    return {
        "detectors": st.session_state["f_detector"],
        "sources": st.session_state["f_source"],
        "user_contains": st.session_state["f_user"].strip() or None,
        "label": None if label == "all" else label,
        "min_score": st.session_state["f_score"] or None,
        "since": datetime.combine(since, time.min, tzinfo=UTC) if since else None,
        "until": datetime.combine(until, time.max, tzinfo=UTC) if until else None,
        "sort": st.session_state["f_sort"],
        "descending": st.session_state["f_order"] == "desc",
    }


def _label_form(store: Any, ids: list[int], key: str, user: str) -> None:
    """A form that labels each event once (stored at once, server-side)."""
    with st.form(key, clear_on_submit=True):
        label = st.radio(
            "Label", list(LABEL_NAMES), format_func=LABEL_NAMES.get, horizontal=True, key=f"{key}-l"
        )
        note = st.text_input("Note", key=f"{key}-n")
        submitted = st.form_submit_button(f"Save label for {len(ids)} event(s)")
    if submitted:
        try:
            done = backend.label_events(store, ids, label, user=user, note=note)
        except Exception as exc:
            log.exception("labelling failed")
            st.error(f"The label was not stored: {exc}")
            return
        st.session_state["last_labelled"] = {"ids": done, "label": label}
        st.rerun()


@st.cache_resource(show_spinner="Loading the model from MLflow…", max_entries=8)
def _booster(tracking_uri: str, model_version: str) -> Any:
    """The ABP booster of one registered version (cached per process)."""
    return backend.load_abp_booster(tracking_uri, model_version)


def _episode_detail(row: pd.Series) -> None:
    """A GPU episode alert: its span and counts; its label covers every sample of the span."""
    rec = backend.as_dict(row.get("record"))
    details = backend.as_dict(row.get("details"))
    c1, c2, c3 = st.columns(3)
    c1.metric("Highest mining probability", f"{float(rec.get('max_score', row['score'])):.3f}")
    c2.metric("Flagged samples", f"{rec.get('flagged', '?')} of {rec.get('samples', '?')}")
    thr = details.get("threshold")
    c3.metric("Threshold", "?" if thr is None else f"{float(thr):.3f}")
    st.markdown(f"GPU `{rec.get('uuid')}` from **{rec.get('start')}** to **{rec.get('end')}**.")
    st.caption(
        "A label here labels every sample of this GPU in that span for the next abp-train "
        "(pass the logs it was scored from in its data; logs without a labels.csv train only "
        "where such labels cover them)."
    )


def _abp_detail(row: pd.Series) -> None:
    """Probability, threshold and the SHAP contributions behind an ABP detection."""
    if row.get("source") == EPISODE_SOURCE:
        _episode_detail(row)
        return
    settings = clients.settings()
    try:
        booster = _booster(str(settings.mlflow_tracking_uri), str(row["model_version"]))
        ex = backend.abp_explanation(booster, row.to_dict())
    except Exception as exc:
        log.warning("no ABP explanation for #%s: %s", row["detection_id"], exc)
        st.warning(f"No explanation: {exc}")
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("Mining probability", f"{ex.probability:.3f}")
    c2.metric("Threshold", f"{ex.threshold:.3f}")
    c3.metric("Decision", "mining" if ex.flagged else "benign")
    st.markdown("**Why: the columns that moved the score most** (SHAP values, log-odds)")
    top = ex.top(10)
    chart = (
        alt.Chart(top.assign(direction=top["contribution"].map(_direction)))
        .mark_bar()
        .encode(
            x=alt.X("contribution:Q", title="contribution to the mining log-odds"),
            y=alt.Y("feature:N", sort=None, title="nvidia-smi column or derived ratio"),
            color=alt.Color("direction:N", title="pushes towards"),
            tooltip=["feature", "value", alt.Tooltip("contribution", format=".3f")],
        )
        .properties(height=28 * len(top) + 40)
    )
    st.altair_chart(chart, width="stretch")
    st.caption(
        f"Base log-odds {ex.bias:+.3f} + contributions = {ex.margin:+.3f} → probability "
        f"{ex.probability:.3f}; flagged at ≥ {ex.threshold:.3f}."
        + (" Temporal columns read this record alone." if ex.temporal_from_record_alone else "")
    )
    st.dataframe(top, hide_index=True, key="abp_contrib")


def _direction(c: float) -> str:
    """Which way a contribution pushes the ABP score."""
    return "mining" if c > 0 else "benign"


def _dfp_detail(row: pd.Series) -> None:
    """Expected vs actual per feature, |z| and the threshold behind a DFP detection."""
    table, facts = backend.dfp_expected_actual(row.to_dict())
    c1, c2, c3 = st.columns(3)
    kind = "risk" if facts["score_kind"] == "risk" else "mean |z|"
    c1.metric(f"Score ({kind})", f"{float(row['score']):.3f}")
    thr = facts["threshold"]
    c2.metric("Threshold", "n/a" if thr is None else f"{float(thr):.3f}")
    if facts["mean_abs_z"] is not None:
        c3.metric("Mean |z|", f"{float(facts['mean_abs_z']):.2f}")
    if facts["reasons"]:
        st.info(f"Why: {facts['reasons']}")
    if table.empty:
        st.caption("This detection carries no per-feature scores.")
        return
    st.markdown("**Expected vs actual** (what the user's model reconstructed vs what it saw)")
    if (table["expected"] == "").all():
        st.caption("This detection was stored without expected values (batch output).")
    st.dataframe(
        table,
        hide_index=True,
        column_config={"abs_z": st.column_config.NumberColumn("|z|", format="%.2f")},
        key="dfp_expected",
    )
    chart = (
        alt.Chart(table.dropna(subset=["abs_z"]))
        .mark_bar()
        .encode(
            x=alt.X("abs_z:Q", title="|z| (standard deviations above the user's usual loss)"),
            y=alt.Y("feature:N", sort="-x", title="feature"),
            tooltip=["feature", "actual", "expected", alt.Tooltip("abs_z", format=".2f")],
        )
        .properties(height=28 * len(table) + 40)
    )
    st.altair_chart(chart, width="stretch")


def _detail(store: Any, det_id: int, user: str) -> None:
    """The page of one detection's event."""
    try:
        dets = store.event_detections(det_id)
    except KeyError:
        st.error(f"There is no detection #{det_id}.")
        return
    row = dets[dets["detection_id"] == det_id].iloc[0]
    settings = clients.settings()
    st.subheader(f"Detection #{det_id}")
    link = f"{str(settings.ui_url).rstrip('/')}/detections?detection={det_id}"
    st.markdown(
        f"**Detector** `{row['detector']}` · **Source** `{row['source']}` · "
        f"**User** `{row['user'] or '-'}` · **Event time** `{row['event_time']}`  \n"
        f"**Scored by** `{row['model_version']}` · this record was scored "
        f"**{len(dets)}** time(s) · [link to this detection]({link})"
    )
    label = row.get("label")
    if isinstance(label, str):
        st.info(
            f"Latest label: **{LABEL_NAMES.get(label, label)}** by {row['labelled_by']} "
            f"at {row['labelled_at']} (applies to the event)"
        )
    else:
        st.caption("Not labelled yet.")
    if row["detector"] == "abp":
        _abp_detail(row)
    else:
        _dfp_detail(row)
    _label_form(store, [det_id], f"label-{det_id}", user)
    history = store.event_labels(det_id)
    if len(history) > 1:
        with st.expander(f"Label history ({len(history)} events, the latest counts)"):
            st.dataframe(history, hide_index=True)
    if len(dets) > 1:
        with st.expander(f"All {len(dets)} detections of this record"):
            cols = ["detection_id", "created_at", "score", "model_version"]
            st.dataframe(dets[cols], hide_index=True)
    with st.expander("Raw record"):
        st.json(backend.as_dict(row["record"]) or row["record"], expanded=False)
    if isinstance(row["user"], str) and row["user"]:
        hist = store.events(users=[row["user"]], page_size=11).rows
        hist = hist[hist["detection_id"] != det_id].head(10)
        st.markdown(f"**Other recent events of {row['user']}** ({len(hist)} shown)")
        cols = ["event_time", "detection_id", "score", "n_detections", "model_version", "label"]
        st.dataframe(hist[cols], hide_index=True, key="user_history")


def _close() -> None:
    """Close the open detection (before the rerun draws the page)."""
    st.session_state["open_id"] = None
    st.query_params.pop("detection", None)


def _step(delta: int) -> None:
    """Previous / next page (a callback: runs before the page draws its widgets)."""
    st.session_state["f_page"] = max(1, int(st.session_state["f_page"]) + delta)


def _pager(total: int, pages: int) -> None:
    """Previous / page number / next."""
    c1, c2, c3, c4 = st.columns([1, 1, 1, 4])
    page = int(st.session_state["f_page"])
    c1.button("‹ Previous", disabled=page <= 1, key="p_prev", on_click=_step, args=(-1,))
    c2.number_input("Page", min_value=1, max_value=pages, step=1, key="f_page")
    c3.button("Next ›", disabled=page >= pages, key="p_next", on_click=_step, args=(1,))
    c4.caption(f"Page {page} of {pages} · {total:,} events match")


def render() -> None:
    """Render the Detections page."""
    st.title("Detections")
    settings = clients.settings()
    user = clients.current_user()
    state_from_url()
    det_id = open_detection()
    try:
        store = clients.store(str(settings.store_url))
    except Exception as exc:
        log.exception("store unavailable")
        st.error(f"The detections store at {settings.store_url} is not available: {exc}")
        return
    done = st.session_state.pop("last_labelled", None)
    if done:
        st.success(
            f"Stored {LABEL_NAMES[done['label']]} for event(s) of detection(s) "
            + ", ".join(f"#{i}" for i in done["ids"])
        )
    query = _filters()
    size = int(settings.ui_page_size)
    try:
        result = store.events(**query, page=int(st.session_state["f_page"]), page_size=size)
        if result.page > result.pages:  # past the end (fewer events now): the last page
            st.session_state["f_page"] = result.pages
            result = store.events(**query, page=result.pages, page_size=size)
    except Exception as exc:
        log.exception("store query failed")
        st.error(f"The detections store at {settings.store_url} is not available: {exc}")
        return
    _pager(result.total, result.pages)
    if result.total == 0:
        st.info("No events match. `make demo` sends traffic that produces some.")
    table = result.rows[
        ["detection_id", "last_seen", "event_time", "detector", "source", "user", "score",
         "n_detections", "model_version", "label"]
    ]  # fmt: skip
    sel = st.dataframe(
        table,
        hide_index=True,
        on_select="rerun",
        selection_mode="multi-row",
        key="det_table",
        column_config={
            "detection_id": st.column_config.NumberColumn("detection", format="#%d"),
            "n_detections": st.column_config.NumberColumn("times scored"),
            "score": st.column_config.NumberColumn("score", format="%.3f"),
        },
    )
    picked = [int(table.iloc[i]["detection_id"]) for i in (sel.selection.rows if sel else [])]
    if len(picked) == 1 and picked[0] != det_id:
        det_id = picked[0]
    elif len(picked) > 1:
        st.markdown(f"**Bulk label {len(picked)} selected events**")
        _label_form(store, picked, "label-bulk", user)
    c1, c2 = st.columns([1, 5])
    typed = c1.number_input("Open detection #", min_value=1, step=1, value=None, key="open_id")
    if typed is not None and not picked:
        det_id = int(typed)
    if det_id is not None and not picked:
        c2.button("Close detection", key="close_det", on_click=_close)
    state_to_url(det_id)
    if det_id is not None:
        st.divider()
        _detail(store, det_id, user)
