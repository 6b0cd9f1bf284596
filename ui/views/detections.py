"""Detections: filter, open one (event, z-scores, model version, user history), label them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from ui import backend, clients

log = logging.getLogger(__name__)

LABEL_NAMES = {"true_positive": "True positive", "false_positive": "False positive"}


def load(store: Any, limit: int = 5000) -> pd.DataFrame:
    """The latest ``limit`` detections with their current label, newest first."""
    return store.detections(limit=limit).reset_index(drop=True)


def _options(df: pd.DataFrame, col: str) -> list[str]:
    """Sorted distinct values of a column (empty when absent)."""
    return sorted(df[col].dropna().astype(str).unique()) if col in df.columns else []


def _filters(df: pd.DataFrame) -> pd.DataFrame:
    """Draw the filter bar and return the filtered detections."""
    c1, c2, c3 = st.columns(3)
    detectors = c1.multiselect("Detector", _options(df, "detector"), key="f_detector")
    sources = c2.multiselect("Source", _options(df, "source"), key="f_source")
    users = c3.multiselect("User", _options(df, "user"), key="f_user")
    c4, c5, c6 = st.columns(3)
    raw = df["event_time"] if "event_time" in df.columns else pd.Series(dtype="object")
    times = pd.to_datetime(raw, utc=True, errors="coerce").dropna()
    today = datetime.now(UTC).date()
    first = times.min().date() if len(times) else today - timedelta(days=30)
    last = max(times.max().date(), today) if len(times) else today
    days = c4.date_input("Event time", value=(first, last), key="f_time")
    scol = backend.score_column(df)
    min_score = c5.number_input(
        f"Minimum {scol or 'score'}", value=0.0, step=0.5, key="f_score", disabled=scol is None
    )
    unlabelled = c6.toggle("Unlabelled only", value=False, key="f_unlabelled")
    start = end = None
    if isinstance(days, tuple | list) and len(days) == 2:
        start = datetime.combine(days[0], time.min, tzinfo=UTC)
        end = datetime.combine(days[1], time.max, tzinfo=UTC)
    return backend.filter_detections(
        df,
        detectors=detectors,
        sources=sources,
        users=users,
        start=start,
        end=end,
        min_score=min_score if scol else None,
        unlabelled_only=unlabelled,
    )


def _describe(row: pd.Series, idc: str, scol: str | None) -> str:
    """One-line label of a detection for the picker."""
    score = f" · {scol} {float(row[scol]):.2f}" if scol and pd.notna(row.get(scol)) else ""
    label = f" · {row['label']}" if isinstance(row.get("label"), str) else ""
    return (
        f"#{int(row[idc])} · {row.get('detector', '?')}/{row.get('source', '?')} · "
        f"{row.get('user', '?')}{score}{label}"
    )


def _label_form(store: Any, ids: list[int], key: str, user: str) -> None:
    """A form that appends a label event for each id (stored at once, server-side)."""
    with st.form(key, clear_on_submit=True):
        label = st.radio(
            "Label", list(LABEL_NAMES), format_func=LABEL_NAMES.get, horizontal=True, key=f"{key}-l"
        )
        note = st.text_input("Note", key=f"{key}-n")
        submitted = st.form_submit_button(f"Save label for {len(ids)} detection(s)")
    if submitted:
        try:
            done = backend.label_detections(store, ids, label, user=user, note=note)
        except Exception as exc:
            log.exception("labelling failed")
            st.error(f"The label was not stored: {exc}")
            return
        st.session_state["last_labelled"] = {"ids": done, "label": label}
        st.rerun()


def _detail(store: Any, df: pd.DataFrame, det_id: int, user: str) -> None:
    """The page of one detection."""
    idc = backend.detection_id_column(df)
    row = df[df[idc] == det_id].iloc[0]
    st.subheader(f"Detection #{det_id}")
    scol = backend.score_column(df)
    c1, c2 = st.columns([1, 3])
    c1.metric(scol or "score", f"{float(row[scol]):.3f}" if scol else "n/a")
    c2.markdown(
        f"**Detector** `{row.get('detector', '?')}` · **Source** `{row.get('source', '?')}`  \n"
        f"**User** `{row.get('user') or '-'}` · **Event time** `{row.get('event_time', '?')}`  \n"
        f"**Scored by** `{row.get('model_version', '?')}`"
    )
    label = row.get("label")
    if isinstance(label, str):
        st.info(
            f"Latest label: **{LABEL_NAMES.get(label, label)}** by {row.get('labelled_by', '?')} "
            f"at {row.get('labelled_at', '?')}"
        )
    else:
        st.caption("Not labelled yet.")
    history = store.labels_history(det_id) if hasattr(store, "labels_history") else None
    if history is not None and len(history) > 1:
        with st.expander(f"Label history ({len(history)} events, the latest counts)"):
            st.dataframe(history, hide_index=True)
    left, right = st.columns(2)
    with left:
        st.markdown("**Event**")
        st.json(backend._as_dict(row.get("record")) or row.get("record"), expanded=True)
    with right:
        zs = backend.z_scores(row.to_dict())
        st.markdown("**Per-feature z-scores**")
        if zs:
            st.bar_chart(pd.Series(zs, name="|z|").sort_values(ascending=False), horizontal=True)
        else:
            st.caption("This detector reports no per-feature z-scores.")
    _label_form(store, [det_id], f"label-{det_id}", user)
    if isinstance(row.get("user"), str):
        hist = df[(df["user"] == row["user"]) & (df[idc] != det_id)].head(20)
        st.markdown(f"**Recent history of {row['user']}** ({len(hist)} other detections)")
        cols = [c for c in ("event_time", idc, "detector", scol, "model_version", "label") if c]
        st.dataframe(hist[[c for c in cols if c in hist.columns]], hide_index=True)


def render() -> None:
    """Render the Detections page."""
    st.title("Detections")
    settings = clients.settings()
    user = clients.current_user()
    try:
        store = clients.store(str(settings.store_url))
        df = load(store)
    except Exception as exc:
        log.exception("store unavailable")
        st.error(f"The detections store at {settings.store_url} is not available: {exc}")
        return
    done = st.session_state.pop("last_labelled", None)
    if done:
        st.success(
            f"Stored {LABEL_NAMES[done['label']]} for detection(s) "
            + ", ".join(f"#{i}" for i in done["ids"])
        )
    if df.empty:
        st.info("No detections yet. `make demo` sends traffic that produces some.")
        return
    shown = _filters(df)
    idc = backend.detection_id_column(df)
    scol = backend.score_column(df)
    n_unl = int(shown["label"].isna().sum()) if "label" in shown.columns else len(shown)
    st.caption(f"{len(shown)} detections match, {n_unl} unlabelled.")
    cols = [idc, "event_time", "detector", "source", "user", scol, "model_version", "label"]
    table = shown[[c for c in cols if c and c in shown.columns]]
    sel = st.dataframe(
        table, hide_index=True, on_select="rerun", selection_mode="multi-row", key="det_table"
    )
    picked = [int(table.iloc[i][idc]) for i in (sel.selection.rows if sel else [])]
    if len(picked) > 1:
        st.markdown(f"**Bulk label {len(picked)} selected detections**")
        _label_form(store, picked, "label-bulk", user)
    ids = [int(i) for i in shown[idc]]
    if not ids:
        return
    choice = st.selectbox(
        "Open detection",
        ids,
        index=None,
        format_func=lambda i: _describe(shown[shown[idc] == i].iloc[0], idc, scol),
        placeholder="Choose a detection (or click one row above)",
        key="open_detection",
    )
    target = choice if choice is not None else (picked[0] if len(picked) == 1 else None)
    if target is not None:
        st.divider()
        _detail(store, df, int(target), user)
