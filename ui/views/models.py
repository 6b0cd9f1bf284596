"""Models: the MLflow registry — versions, aliases, metrics, promotions; promote or roll back."""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from ui import backend, clients, urlstate
from ui.views import evasion

log = logging.getLogger(__name__)


def _promote_form(client: Any, settings: Any, name: str, versions: list[int], user: str) -> None:
    """Promote or roll back ``production`` through the gate, or forced with a reason."""
    prod = backend.production_version(client, name)
    others = [v for v in versions if v != prod]
    if not others:
        st.caption("No other version to promote.")
        return
    with st.form(f"promote-{name}"):
        version = st.selectbox("Version to put in production", others, key=f"p_ver_{name}")
        force = st.checkbox("Force past the gate", key=f"p_force_{name}")
        reason = st.text_input("Reason (required when forced)", key=f"p_reason_{name}")
        submitted = st.form_submit_button("Move production")
    if not submitted:
        return
    try:
        event = backend.promote(
            client, settings, name, int(version), user, force=force, reason=reason
        )
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    except Exception as exc:
        log.exception("promotion failed")
        st.error(f"MLflow refused the promotion: {exc}")
        return
    st.session_state["last_promotion"] = event
    st.rerun()


def _robustness(client: Any, settings: Any, name: str, versions: list[int]) -> None:
    """One version's evasion report (default: production): recall against hash rate kept."""
    st.subheader("Robustness: recall against the attacker's budget")
    prod = backend.production_version(client, name)
    chosen = st.selectbox(
        "Version", versions, index=versions.index(prod) if prod in versions else 0,
        key=f"ev_ver_{name}", format_func=lambda v: f"v{v}" + (" (production)" * (v == prod)),
    )  # fmt: skip
    evasion.render(client, settings, name, [int(chosen)], key=f"ev_{name}")


def render() -> None:
    """Render the Models page."""
    st.title("Models")
    settings = clients.settings()
    client = clients.mlflow(str(settings.mlflow_tracking_uri))
    filter_param = urlstate.Param("m_filter", "filter", default="")
    urlstate.seed([filter_param])
    needle = st.text_input(
        "Filter by name", key="m_filter", placeholder="abp-, dfp-duo-, a user's name…"
    )
    try:
        models = backend.registered_models(client, needle)
    except Exception as exc:
        log.exception("mlflow unavailable")
        st.error(f"The MLflow registry at {settings.mlflow_tracking_uri} is not available: {exc}")
        return
    event = st.session_state.pop("last_promotion", None)
    if event:
        st.success(
            f"production: v{event['from_version']} → v{event['to_version']} ({event['kind']}, "
            f"{'forced' if event['forced'] else 'gate passed'})"
        )
    if models.empty:
        urlstate.write([filter_param])
        if needle:
            st.info(f"No registered model name contains {needle!r}.")
        else:
            st.info("No registered models yet: run a training deployment.")
        return
    st.dataframe(models, hide_index=True, key="models")
    names = list(models["name"])
    urlstate.seed([urlstate.Param("m_name", "model", default=names[0], choices=names)])
    name = st.selectbox("Model", names, key="m_name")
    urlstate.write([filter_param], {"model": name})  # a link always names its model
    st.markdown(f"[Open {name} in MLflow]({backend.mlflow_model_url(settings, name)})")
    versions = backend.model_versions(client, name)
    st.subheader("Versions")
    st.dataframe(versions, hide_index=True, key="versions")
    if evasion.is_abp(name, versions) and not versions.empty:
        _robustness(client, settings, name, [int(v) for v in versions["version"]])
    st.subheader("Promote or roll back production")
    _promote_form(
        client, settings, name, [int(v) for v in versions["version"]], clients.current_user()
    )
    st.subheader("Promotion history")
    hist = backend.promotion_history(client, name)
    if hist.empty:
        st.caption("No promotions recorded from this app yet.")
    else:
        st.dataframe(hist, hide_index=True, key="history")
