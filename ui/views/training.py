"""Training: start the Prefect deployments and watch their runs change state.

The deployment, the start mode and the example message live in the URL
(``/training?deployment=dfp-infer/default&mode=message&example=duo-inference-payload.json``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pandas as pd
import streamlit as st

from ui import backend, clients, urlstate

log = logging.getLogger(__name__)

MODES = {"parameters": "parameters", "message": "control message"}  # ``?mode=`` -> radio


def url_params() -> list[urlstate.Param]:
    """The Training page's choices kept in the URL."""
    examples = list(backend.control_examples())
    return [
        urlstate.Param("t_deployment", "deployment", default=backend.DEPLOYMENTS[0],
                       choices=backend.DEPLOYMENTS),
        urlstate.Param("t_mode", "mode", default="parameters", choices=MODES),
        urlstate.Param("t_example", "example", default=(examples or [None])[0], choices=examples),
    ]  # fmt: skip


def _defaults(properties: dict[str, Any]) -> dict[str, Any]:
    """Default values of a deployment's parameters (those that have one)."""
    return {k: v["default"] for k, v in properties.items() if "default" in v}


def _start_form(settings: Any) -> None:
    """Pick a deployment, parameters or a control message, and start a run."""
    deployment = st.selectbox("Deployment", backend.DEPLOYMENTS, key="t_deployment")
    try:
        with clients.prefect(str(settings.prefect_api_url)) as client:
            props = backend.deployment_parameters(client, deployment)
    except backend.BackendError as exc:
        st.warning(str(exc))
        return
    except Exception as exc:
        log.exception("prefect unavailable")
        st.error(f"Prefect at {settings.prefect_api_url} is not available: {exc}")
        return
    mode = st.radio("Start with", ["parameters", "control message"], horizontal=True, key="t_mode")
    message = None
    if mode == "control message":
        if backend.message_parameter(props) is None:
            st.warning(f"{deployment} takes no control message; use parameters.")
            return
        examples = backend.control_examples()
        if not examples:
            st.warning(f"No example control messages in {backend.CONTROL_DIR}.")
            return
        name = st.selectbox("Example", list(examples), key="t_example")
        text = st.text_area("Control message", examples[name], height=260, key=f"t_msg_{name}")
        params_text = "{}"
    else:
        params_text = st.text_area(
            "Parameters (JSON)",
            json.dumps(_defaults(props), indent=2, default=str),
            height=200,
            key=f"t_params_{deployment}",
        )
        st.caption("Parameters: " + (", ".join(sorted(props)) or "none"))
    if not st.button("Start run", type="primary", key="t_start"):
        return
    if not params_text.strip():
        st.error(
            "The parameters box is empty: no run was started. Write `{}` to start with the "
            "flow's defaults."
        )
        return
    try:
        params = json.loads(params_text)
        if not isinstance(params, dict):
            raise backend.BackendError("parameters must be a JSON object")
        if mode == "control message":
            message = backend.parse_message_text(text)
        with clients.prefect(str(settings.prefect_api_url)) as client:
            run = backend.start_run(client, settings, deployment, params, message)
    except json.JSONDecodeError as exc:
        st.error(f"Parameters are not JSON: {exc.msg} at line {exc.lineno}")
        return
    except Exception as exc:
        log.exception("start failed")
        st.error(f"Could not start {deployment}: {exc}")
        return
    st.session_state.setdefault("t_started", []).insert(0, run.id)
    st.success(f"Started {run.name} ({run.state}) — [open in Prefect]({run.url})")


@st.fragment(run_every=clients.settings().ui_refresh_s)
def _started(settings: Any) -> None:
    """The runs started from this session, their state now, and where to follow them."""
    ids = st.session_state.get("t_started", [])[:5]
    if not ids:
        return
    st.subheader("Started from here")
    mlflow = str(settings.mlflow_tracking_uri).rstrip("/")
    try:
        with clients.prefect(str(settings.prefect_api_url)) as client:
            runs = [backend.run_status(client, settings, i) for i in ids]
    except Exception as exc:
        st.error(f"Could not read the runs' state from {settings.prefect_api_url}: {exc}")
        return
    for r in runs:
        icon = {"Completed": "✅", "Failed": "❌", "Crashed": "❌", "Cancelled": "⏹"}.get(
            r.state, "⏳"
        )
        st.markdown(
            f"{icon} **{r.name}** ({r.deployment}) — state **{r.state}** · "
            f"[Prefect run]({r.url}) · [MLflow experiments]({mlflow}/#/experiments)"
        )


@st.fragment(run_every=clients.settings().ui_refresh_s)
def _runs(settings: Any) -> None:
    """Recent runs, refreshed every few seconds."""
    try:
        with clients.prefect(str(settings.prefect_api_url)) as client:
            runs = backend.recent_runs(client, settings)
    except Exception as exc:
        st.error(f"Could not read flow runs from {settings.prefect_api_url}: {exc}")
        return
    if not runs:
        st.caption("No runs yet.")
        return
    df = pd.DataFrame(
        [
            {
                "created": r.created,
                "deployment": r.deployment,
                "run": r.name,
                "state": r.state,
                "prefect": r.url,
            }
            for r in runs
        ]
    )
    st.dataframe(
        df,
        hide_index=True,
        column_config={"prefect": st.column_config.LinkColumn("prefect", display_text="open")},
        key="runs",
    )


def render() -> None:
    """Render the Training page."""
    st.title("Training")
    settings = clients.settings()
    st.markdown(
        f"[Prefect UI]({backend.prefect_ui_url(settings)}) · "
        f"[MLflow experiments]({str(settings.mlflow_tracking_uri).rstrip('/')}/#/experiments) · "
        f"[MLflow models]({str(settings.mlflow_tracking_uri).rstrip('/')}/#/models)"
    )
    params = url_params()
    urlstate.seed(params)
    problem = backend.prefect_problem(clients.http(), settings)
    if problem:
        st.error(problem + " (`make up` starts it; SECML_PREFECT_API_URL moves it)")
        return
    _start_form(settings)
    message_mode = st.session_state.get("t_mode") == MODES["message"]
    urlstate.write([p for p in params if p.key != "t_example" or message_mode])
    _started(settings)
    st.subheader("Recent runs")
    _runs(settings)
