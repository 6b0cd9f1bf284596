"""Control messages: compose from an example, validate, publish to the Kafka topic.

The example started from lives in the URL (``/control?example=duo-inference-payload.json``).
"""

from __future__ import annotations

import logging
from typing import Any

import streamlit as st

from ui import backend, clients, urlstate

log = logging.getLogger(__name__)


def render() -> None:
    """Render the Control messages page."""
    st.title("Control messages")
    settings = clients.settings()
    st.caption(
        f"Published to topic `{settings.kafka_control_topic}` on {settings.kafka_bootstrap_servers}"
    )
    examples = backend.control_examples()
    if not examples:
        st.warning(f"No example control messages in {backend.CONTROL_DIR}.")
        return
    params = [urlstate.Param("c_example", "example", default=next(iter(examples)),
                             choices=list(examples))]  # fmt: skip
    urlstate.seed(params)
    name = st.selectbox("Start from example", list(examples), key="c_example")
    urlstate.write(params)
    text = st.text_area("Message (JSON)", examples[name], height=360, key=f"c_text_{name}")
    c1, c2 = st.columns(2)
    validate = c1.button("Validate", key="c_validate")
    publish = c2.button("Publish", type="primary", key="c_publish")
    if validate or publish:
        _act(settings, text, publish)
    _status(settings)


def _act(settings: Any, text: str, publish: bool) -> None:
    """Validate, and publish when asked."""
    validate = not publish
    try:
        message = backend.parse_message_text(text)
    except backend.BackendError as exc:
        st.error(str(exc))
        return
    except ImportError as exc:
        st.error(f"Control message validation (secml.control) is not available: {exc}")
        return
    if validate:
        st.success("Valid control message.")
        return
    if not backend.broker_reachable(str(settings.kafka_bootstrap_servers)):
        st.error(
            f"Could not publish to {settings.kafka_bootstrap_servers}: no Kafka broker answers "
            "there (`make up` starts one; SECML_KAFKA_BOOTSTRAP_SERVERS moves it)."
        )
        return
    try:
        from training.producer import publish as publish_message

        producer = clients.kafka_producer(str(settings.kafka_bootstrap_servers))
        result = publish_message(message, settings, producer=producer, timeout_s=15.0)
    except Exception as exc:
        log.exception("publish failed")
        st.error(f"Could not publish to {settings.kafka_bootstrap_servers}: {exc}")
        return
    log.info("%s published control message %s", clients.current_user(), result)
    st.success(f"Published message `{result}` to `{settings.kafka_control_topic}`")
    try:
        keys = backend.message_dispatch_keys(message, result)
    except Exception as exc:  # the consumer will dead-letter it and say why
        log.warning("no dispatch plan for %s: %s", result, exc)
        keys = []
    st.session_state["c_published"] = {"id": result, "keys": keys}


@st.fragment(run_every=clients.settings().ui_refresh_s)
def _status(settings: Any) -> None:
    """What became of the last published message: the flow runs the consumer created."""
    sent = st.session_state.get("c_published")
    if not sent:
        return
    st.subheader(f"Status of message `{sent['id']}`")
    if not sent["keys"]:
        st.info("This message asks for no flow run (load only): nothing to follow.")
        return
    try:
        with clients.prefect(str(settings.prefect_api_url)) as client:
            runs = backend.message_runs(client, settings, sent["keys"])
    except Exception as exc:
        st.warning(f"Could not ask Prefect at {settings.prefect_api_url} for its runs: {exc}")
        return
    if not runs:
        st.info(
            f"Waiting for the control-message consumer to create {len(sent['keys'])} run(s) "
            "(`make status` shows whether it runs; rejected messages go to the dead-letter "
            "topic)."
        )
        return
    mlflow = str(settings.mlflow_tracking_uri).rstrip("/")
    for r in runs:
        st.markdown(
            f"**{r.deployment}** — run {r.name}: **{r.state}** · [Prefect run]({r.url}) · "
            f"[MLflow experiments]({mlflow}/#/experiments)"
        )
